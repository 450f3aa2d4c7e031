// The page: file inputs, buttons and messages around stegastamp.js. Exposes window.stegastamp for scripts and tests:
//   await window.stegastamp.ready
//   window.stegastamp.encode(imageData, text, {strength}) -> Promise<ImageData>
//   window.stegastamp.decode(imageData, {tta}) -> Promise<{message, correctedBits, confidence}>
import { StegaStamp } from "./stegastamp.js";

const $ = (id) => document.getElementById(id);
const status = (text, kind = "") => { $("status").textContent = text; $("status").className = kind; };

async function imageDataFromFile(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (e) {
    throw new Error(`${file.name}: not an image this browser can read`);
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  return ctx.getImageData(0, 0, bitmap.width, bitmap.height);
}

const params = new URLSearchParams(location.search);
const threads = Number(params.get("threads")) || (self.crossOriginIsolated ? 2 : 1);
const ready = StegaStamp.load(params.get("models") || "../pretrained/onnx/", { numThreads: threads });
window.stegastamp = {
  ready: ready.then(() => true),
  encode: async (imageData, text, opts) => (await ready).encode(imageData, text, opts),
  decode: async (imageData, opts) => (await ready).decode(imageData, opts),
  threads,
};

ready.then((model) => {
  status(`Ready: ${model.size[0]}×${model.size[1]} model, ${model.config.secret_size} bits, ` +
         `up to ${model.config.data_bytes} bytes per message (${threads} WASM thread${threads > 1 ? "s" : ""}).`, "ok");
  $("encode-button").disabled = false;
}).catch((e) => status(`Could not load the models: ${e.message}`, "error"));

$("encode-button").addEventListener("click", async () => {
  const file = $("encode-file").files[0];
  if (!file) return status("Choose a photo to hide the message in.", "error");
  try {
    status("Hiding the message…");
    const image = await imageDataFromFile(file);
    const strength = Number($("strength").value) || 1;
    const t0 = performance.now();
    const encoded = await window.stegastamp.encode(image, $("message").value, { strength });
    const ms = performance.now() - t0;
    const canvas = $("encoded-canvas");
    canvas.width = encoded.width; canvas.height = encoded.height; canvas.hidden = false;
    canvas.getContext("2d").putImageData(encoded, 0, 0);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    const link = $("download");
    link.href = URL.createObjectURL(blob);
    link.download = file.name.replace(/\.[^.]*$/, "") + "_hidden.png";
    link.hidden = false;
    status(`Hidden "${$("message").value}" in ${encoded.width}×${encoded.height} (${ms.toFixed(0)} ms). ` +
           "Download the PNG (JPEG would also work, PNG keeps it exact).", "ok");
  } catch (e) {
    status(e.message, "error");
  }
});

$("decode-file").addEventListener("change", async () => {
  const file = $("decode-file").files[0];
  if (!file) return;
  try {
    status("Reading…");
    const res = await window.stegastamp.decode(await imageDataFromFile(file));
    const text = res.message === null ? "No message found."
      : `Message: "${res.message}" (corrected ${res.correctedBits} bit errors, confidence ${res.confidence.toFixed(3)})`;
    $("decoded").textContent = text;
    status(text, res.message === null ? "" : "ok");
  } catch (e) {
    status(e.message, "error");
  }
});
