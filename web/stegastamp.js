// StegaStamp in the browser: encoder.onnx / decoder.onnx on onnxruntime-web (WASM; WebGPU where available), the
// same behaviour as the Python scripts (inference.StegaStampRunner): the whole image resized to the model size
// (Pillow's bicubic), the residual upsampled (bilinear) onto the untouched full-resolution photo, `strength`,
// BCH-verified decoding with the corrected-bit count and the confidence (mean |2p - 1| over the bits), and the
// same decoding views when the whole image gives no message ({tta: false}: the whole image only).
//
//   const model = await StegaStamp.load("../pretrained/onnx/");
//   const encoded = await model.encode(imageData, "Hello", {strength: 1});   // ImageData, same size
//   const result = await model.decode(encoded);   // {message, correctedBits, confidence} (message null: none)
//   await model.decode(photo, {tta: false});       // the whole image only, as the original
import * as ort from "./node_modules/onnxruntime-web/dist/ort.all.min.mjs";
import { SecretCodec } from "./secret_codec.js";

const METADATA_KEY = "stegastamp_model_config";   // written by export_onnx.py

// --- the model config from the ONNX file's metadata_props (ModelProto field 14), read with a minimal protobuf walk
function readVarint(buf, pos) {
  let result = 0, shift = 0, b;
  do { b = buf[pos++]; result += (b & 0x7f) * 2 ** shift; shift += 7; } while (b & 0x80);
  return [result, pos];
}

function fields(buf, start = 0, end = buf.length) {
  const out = [];
  let pos = start;
  while (pos < end) {
    let tag;
    [tag, pos] = readVarint(buf, pos);
    const field = Math.floor(tag / 8), wire = tag & 7;
    if (wire === 0) { [, pos] = readVarint(buf, pos); }
    else if (wire === 1) { pos += 8; }
    else if (wire === 5) { pos += 4; }
    else if (wire === 2) {
      let len;
      [len, pos] = readVarint(buf, pos);
      out.push({ field, start: pos, end: pos + len });
      pos += len;
    } else { throw new Error(`unsupported protobuf wire type ${wire}`); }
  }
  return out;
}

export function onnxMetadata(bytes) {
  const meta = {}, text = new TextDecoder();
  for (const f of fields(bytes)) {
    if (f.field !== 14) continue;   // metadata_props: StringStringEntryProto {key = 1, value = 2}
    const entry = {};
    for (const g of fields(bytes, f.start, f.end)) entry[g.field] = text.decode(bytes.subarray(g.start, g.end));
    meta[entry[1]] = entry[2];
  }
  return meta;
}

// --- Pillow's resampling (separable, antialiased when shrinking), on float RGB planes
const FILTERS = {
  bilinear: { support: 1, f: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; } },
  bicubic: {
    support: 2,
    f: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};

function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize, fscale = Math.max(scale, 1), support = filter.support * fscale;
  const taps = [];
  for (let x = 0; x < outSize; x++) {
    const center = (x + 0.5) * scale;
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    const w = [];
    let total = 0;
    for (let i = lo; i < hi; i++) { const v = filter.f((i - center + 0.5) / fscale); w.push(v); total += v; }
    taps.push({ lo, w: w.map((v) => (total ? v / total : 0)) });
  }
  return taps;
}

// planes: Float32Array(3 * h * w) (CHW) -> CHW at (outH, outW); each pass rounds to 8 bits like Pillow's
function resize(src, h, w, outH, outW, kind, round8 = true) {
  const filter = FILTERS[kind];
  const cx = coefficients(w, outW, filter), cy = coefficients(h, outH, filter);
  const q = round8 ? (v) => Math.min(255, Math.max(0, Math.round(v))) : (v) => v;
  const tmp = new Float32Array(3 * h * outW), out = new Float32Array(3 * outH * outW);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < outW; x++) {
        const { lo, w: wt } = cx[x];
        let s = 0;
        for (let k = 0; k < wt.length; k++) s += wt[k] * src[(c * h + y) * w + lo + k];
        tmp[(c * h + y) * outW + x] = q(s);
      }
    }
    for (let y = 0; y < outH; y++) {
      const { lo, w: wt } = cy[y];
      for (let x = 0; x < outW; x++) {
        let s = 0;
        for (let k = 0; k < wt.length; k++) s += wt[k] * tmp[(c * h + lo + k) * outW + x];
        out[(c * outH + y) * outW + x] = q(s);
      }
    }
  }
  return out;
}

function toPlanes(imageData) {   // RGBA bytes -> CHW floats in 0..255 (alpha composited on white, as load_image)
  const { width: w, height: h, data } = imageData;
  const out = new Float32Array(3 * h * w);
  for (let i = 0; i < h * w; i++) {
    const a = data[4 * i + 3] / 255;
    for (let c = 0; c < 3; c++) out[c * h * w + i] = data[4 * i + c] * a + 255 * (1 - a);
  }
  return out;
}

// The decoding views of inference.DECODE_VIEWS, tried in order when the whole image gives no message: > 0 crops
// that share of each side, < 0 pads each side by it with the edge pixels repeated.
const DECODE_VIEWS = [0.05, -0.03, 0.10, -0.06];

function decodeView(planes, h, w, frac) {   // -> [planes, h, w] of the view (as inference.decode_view)
  const dx = Math.floor(w * Math.abs(frac) + 0.5), dy = Math.floor(h * Math.abs(frac) + 0.5);
  const crop = frac > 0;
  const vw = crop ? w - 2 * dx : w + 2 * dx, vh = crop ? h - 2 * dy : h + 2 * dy;
  const out = new Float32Array(3 * vh * vw);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < vh; y++) {
      const sy = crop ? y + dy : Math.min(h - 1, Math.max(0, y - dy));
      for (let x = 0; x < vw; x++) {
        const sx = crop ? x + dx : Math.min(w - 1, Math.max(0, x - dx));
        out[(c * vh + y) * vw + x] = planes[(c * h + sy) * w + sx];
      }
    }
  }
  return [out, vh, vw];
}

export class StegaStamp {
  constructor(encoder, decoder, config) {
    this.encoder = encoder;
    this.decoder = decoder;
    this.config = config;
    this.size = [config.height, config.width];
    this.codec = new SecretCodec(config);
  }

  static async load(base = "../pretrained/onnx/", options = {}) {
    const providers = options.executionProviders || ["wasm"];
    ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
    if (options.numThreads) ort.env.wasm.numThreads = options.numThreads;
    const fetchBytes = async (name) => {
      const r = await fetch(new URL(name, new URL(base, location.href)));
      if (!r.ok) throw new Error(`cannot load ${name} from ${base} (HTTP ${r.status})`);
      return new Uint8Array(await r.arrayBuffer());
    };
    const [encBytes, decBytes] = await Promise.all([fetchBytes("encoder.onnx"), fetchBytes("decoder.onnx")]);
    const meta = onnxMetadata(decBytes);
    if (!meta[METADATA_KEY]) throw new Error(`decoder.onnx has no '${METADATA_KEY}' metadata (not from export_onnx.py)`);
    const config = JSON.parse(meta[METADATA_KEY]);
    const opts = { executionProviders: providers };
    const [enc, dec] = await Promise.all([ort.InferenceSession.create(encBytes, opts),
                                          ort.InferenceSession.create(decBytes, opts)]);
    return new StegaStamp(enc, dec, config);
  }

  modelInput(planes, h, w) {   // whole image -> model size, [0, 1]
    const [mh, mw] = this.size;
    const small = h === mh && w === mw ? planes : resize(planes, h, w, mh, mw, "bicubic");
    return Float32Array.from(small, (v) => v / 255);
  }

  async encode(imageData, text, { strength = 1 } = {}) {
    const bits = this.codec.encode(text);                 // throws on an empty or too long message
    const { width: w, height: h } = imageData;
    const [mh, mw] = this.size;
    const planes = toPlanes(imageData);
    const x = this.modelInput(planes, h, w);
    const out = await this.encoder.run({
      secret: new ort.Tensor("float32", Float32Array.from(bits), [1, bits.length]),
      image: new ort.Tensor("float32", x, [1, 3, mh, mw]),
    });
    const r = out.residual.data;
    // as inference.add_residual_full_res: residual -> uint8 around 128 -> bilinear to full size -> cover + r - 128
    const offset = Float32Array.from(r, (v) => Math.min(255, Math.max(0, Math.round(v * strength * 255) + 128)));
    const up = mh === h && mw === w ? offset : resize(offset, mh, mw, h, w, "bilinear");
    const result = new ImageData(w, h);
    for (let i = 0; i < h * w; i++) {
      for (let c = 0; c < 3; c++) {
        const v = Math.round(planes[c * h * w + i]) + up[c * h * w + i] - 128;
        result.data[4 * i + c] = Math.min(255, Math.max(0, v));
      }
      result.data[4 * i + 3] = 255;
    }
    return result;
  }

  async decode(imageData, { tta = true } = {}) {
    // tta: an image that gives no message whole is also read through DECODE_VIEWS (false: the whole image only)
    const { width: w, height: h } = imageData;
    const planes = toPlanes(imageData);
    let res = await this.read(planes, h, w);
    for (const frac of tta ? DECODE_VIEWS : []) {
      if (res.message !== null) break;
      const viewed = await this.read(...decodeView(planes, h, w, frac));
      if (viewed.message !== null) res = viewed;
    }
    return res;
  }

  async read(planes, h, w) {   // CHW planes in 0..255 -> {message, correctedBits, reason, confidence, bits}
    const [mh, mw] = this.size;
    const x = this.modelInput(planes, h, w);
    const out = await this.decoder.run({ image: new ort.Tensor("float32", x, [1, 3, mh, mw]) });
    const logits = out.logits.data;
    const p = Array.from(logits, (l) => 1 / (1 + Math.exp(-l)));
    const res = this.codec.decode(p.map((v) => (v > 0.5 ? 1 : 0)));
    const confidence = p.reduce((s, v) => s + Math.abs(2 * v - 1), 0) / p.length;
    return { message: res.message, correctedBits: res.correctedBits, reason: res.reason,
             confidence: res.message === null ? null : confidence, bits: p.map((v) => (v > 0.5 ? 1 : 0)).join("") };
  }
}
