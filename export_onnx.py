"""Export a checkpoint's encoder and decoder (or a stamp detector) to ONNX (single files, opset 17) and check them.

    python export_onnx.py pretrained/stegastamp_128.pth --out_dir pretrained/onnx --test
    python export_onnx.py CKPT --out_dir onnx --int8 --test      # also an int8 (dynamic quantisation) decoder
    python export_onnx.py checkpoints/det/det_final.pth --out_dir pretrained/onnx --test   # -> detector.onnx
Writes encoder.onnx (secret (B, L), image (B, 3, H, W) in [0,1] -> residual, encoded = clip(image + residual)) and
decoder.onnx (image -> logits (B, L), bits in {0,1}), dynamic batch. The model config travels in each file's
metadata, so onnx_inference.py needs nothing else. The encoder is exported channel-aligned (its 6 input channels
padded with zero channels to 8: StegaStampEncoder.channel_aligned), the same function in faster convolutions.
A detector checkpoint (train_detector.py) gives detector.onnx: frame (B, 3, H, W) in [0,1], H and W any multiples
of 16 -> mask logits (B, 1, H, W), its config in the metadata; a zoom detector (train_detector.py --zoom) gives
zoom_detector.onnx, the same but for one candidate quad's view (detect_decode.zoom_view).
"""
import argparse
import json
import os
import sys
import tempfile
import warnings
from dataclasses import asdict

import numpy as np
import torch
import torch.nn as nn

from image_io import atomic_write
from secret_codec import SecretCodec
from models_pytorch import (CheckpointError, checkpoint_kind, detector_from_checkpoint, models_from_checkpoint,
                            read_checkpoint)
from onnx_inference import METADATA_KEY   # the reader defines the key (onnx_inference.py is torch-free)

DETECTOR_METADATA_KEY = "stegastamp_detector_config"


class EncoderExport(nn.Module):
    """(secret (B, L), image (B, 3, H, W) in [0,1]) -> (residual, encoded = clip(image + residual, 0, 1))."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, secret, image):
        residual = self.encoder(secret, image)
        return residual, torch.clamp(image + residual, 0, 1)   # the TF deploy graph's `stegastamp` output


class DecoderExport(nn.Module):
    """image (B, 3, H, W) in [0,1] -> (logits (B, L), bits = round(sigmoid(logits)) in {0,1})."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, image):
        logits = self.decoder(image)
        return logits, (logits > 0).float()


def _export(module, inputs, names_in, names_out, path, cfg, opset, dynamic=None, key=METADATA_KEY):
    """TorchScript-based exporter: our STN's hand-built affine grid exports at opset 16/17; batch axis dynamic
    (or the axes `dynamic` names); `cfg` goes into the metadata under `key`."""
    import onnx
    dynamic = dynamic or {n: {0: "batch"} for n in names_in + names_out}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The tracer warns about the shape checks and TF-padding arithmetic: they depend only on H and W, which are
        # fixed per model, so tracing them as constants is intended.
        warnings.simplefilter("ignore")
        raw = os.path.join(tmp, "model.onnx")
        torch.onnx.export(module, inputs, raw, input_names=names_in, output_names=names_out, opset_version=opset,
                          dynamic_axes=dynamic, dynamo=False)
        model = fold_pads(constant_folded(raw, os.path.join(tmp, "folded.onnx")))
    meta = model.metadata_props.add()
    meta.key, meta.value = key, json.dumps(asdict(cfg))
    onnx.checker.check_model(model, full_check=True)
    atomic_write(path, lambda tmp: onnx.save(model, tmp), ".onnx")   # under 2 GB: one file, no external data


def constant_folded(src, dst):
    """ONNX Runtime's basic graph optimisations (constant folding, no-op removal: standard ONNX ops only, nothing
    specific to a machine or a provider) saved as a model: the tracer builds each F.pad's pads from a chain of
    Constant/Reshape/Slice/Cast nodes that this turns into one initializer. -> the loaded onnx model."""
    import onnx
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = dst
    ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    model = onnx.load(dst)
    del model.opset_import[:]                               # ONNX Runtime lists all of its own domains: keep ours
    model.opset_import.extend(onnx.load(src, load_external_data=False).opset_import)
    return model


def fold_pads(model):
    """Every zero-padding Pad that feeds a single Conv (Conv2dSame's TF 'same' padding, asymmetric for stride 2) is
    folded into that Conv's own pads attribute: the same result with one op less, and ONNX Runtime then keeps its
    blocked memory layout across the convolutions instead of converting around each Pad (and int8 quantisation
    needs no Quantize/Dequantize pair around it)."""
    from onnx import helper, numpy_helper
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    users = {}
    for n in g.node:
        for name in n.input:
            users.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in g.output}
    folded = []
    for pad in g.node:
        if pad.op_type != "Pad" or pad.output[0] in graph_outputs or len(users.get(pad.output[0], [])) != 1:
            continue
        conv = users[pad.output[0]][0]
        attrs = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        conv_attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        pads = consts.get(pad.input[1]) if len(pad.input) > 1 else None
        value = consts.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(1)
        if (conv.op_type != "Conv" or conv.input[0] != pad.output[0] or attrs.get("mode", b"constant") != b"constant"
                or pads is None or value is None or np.any(value != 0) or pads.shape != (8,) or np.any(pads < 0)
                or np.any(pads[[0, 1, 4, 5]] != 0) or conv_attrs.get("auto_pad", b"NOTSET") != b"NOTSET"):
            continue
        old = list(conv_attrs.get("pads", [0, 0, 0, 0]))   # [top, left, bottom, right]
        new = [int(pads[2]) + old[0], int(pads[3]) + old[1], int(pads[6]) + old[2], int(pads[7]) + old[3]]
        for a in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        g.node.remove(pad)
    used = {name for n in g.node for name in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    return model


def quantize_int8(src, dst):
    """Dynamic int8 quantisation of the weights (the decoder's dense layers hold ~98% of its bytes)."""
    import logging
    from onnxruntime.quantization import QuantType, quantize_dynamic
    logging.getLogger().setLevel(logging.ERROR)   # its "consider pre-processing" advice is for conv-heavy models
    atomic_write(dst, lambda tmp: quantize_dynamic(src, tmp, weight_type=QuantType.QInt8,
                                                   op_types_to_quantize=["MatMul", "Gemm"]), ".onnx")


def quantize_encoder_int8(src, dst, cfg, n_calib=16):
    """Static int8 quantisation of the encoder (QDQ: int8 weights per channel and uint8 activations), with the
    activation ranges calibrated on built-in training photos and random messages; the metadata is kept."""
    import logging
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from dataset import BuiltinPhotosDataset
    logging.getLogger().setLevel(logging.ERROR)
    ds = BuiltinPhotosDataset((cfg.height, cfg.width), cfg.secret_size, split="train")
    feeds = [{"secret": ds[(i, i)][1].numpy()[None], "image": ds[(i, i)][0].numpy()[None]} for i in range(n_calib)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre, out = os.path.join(tmp, "pre.onnx"), os.path.join(tmp, "q.onnx")
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        cwd = os.getcwd()
        os.chdir(tmp)   # when its symbolic shape inference gives up, ONNX Runtime dumps a model into the cwd
        try:
            quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            os.chdir(cwd)
        model = onnx.load(out)
        del model.metadata_props[:]
        model.metadata_props.extend(onnx.load(src).metadata_props)
        atomic_write(dst, lambda tmp_path: onnx.save(model, tmp_path), ".onnx")


def compare(cfg, encoder, decoder, out_dir, int8):
    """ONNX Runtime vs PyTorch on random and real inputs: max |diff| and bit agreement."""
    import onnxruntime as ort
    from dataset import BuiltinPhotosDataset
    rng = np.random.default_rng(0)
    real = torch.stack([BuiltinPhotosDataset((cfg.height, cfg.width), split="heldout")[(i, i)][0] for i in range(3)])
    secrets = np.stack([SecretCodec.from_config(cfg).encode(t) for t in ("Hello!", "abc", "1234567")])
    cases = {"random": (rng.random((3, 3, cfg.height, cfg.width), dtype=np.float32), rng.integers(0, 2, (3, cfg.secret_size)).astype(np.float32)),
             "photos": (real.numpy(), secrets)}
    opts = ort.SessionOptions()
    enc = ort.InferenceSession(os.path.join(out_dir, "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
    decs = {"fp32": "decoder.onnx", **({"int8": "decoder_int8.onnx"} if int8 else {})}
    enc8 = ort.InferenceSession(os.path.join(out_dir, "encoder_int8.onnx"), opts,
                                providers=["CPUExecutionProvider"]) if int8 else None
    ok = True
    for name, (images, secret) in cases.items():
        with torch.no_grad():
            r_t = encoder(torch.from_numpy(secret), torch.from_numpy(images)).numpy()
            encoded = np.clip(images + r_t, 0, 1).astype(np.float32)
            logits_t = decoder(torch.from_numpy(encoded)).numpy()
        r_o, _ = enc.run(None, {"secret": secret, "image": images})
        d_r = np.abs(r_o - r_t).max()
        print(f"{name:>6} | encoder residual max |diff| {d_r:.2e}")
        ok &= d_r < 1e-3
        if enc8 is not None:
            r_8, _ = enc8.run(None, {"secret": secret, "image": images})
            with torch.no_grad():
                bits_8 = decoder(torch.from_numpy(np.clip(images + r_8, 0, 1).astype(np.float32))).numpy() > 0
            print(f"{name:>6} | encoder int8: residual max |diff| {np.abs(r_8 - r_t).max():.2e}, bits its images "
                  f"decode to vs fp32 encoder's {np.mean(bits_8 == (logits_t > 0)):.4f}")
        for kind, fname in decs.items():
            dec = ort.InferenceSession(os.path.join(out_dir, fname), opts, providers=["CPUExecutionProvider"])
            logits_o, bits_o = dec.run(None, {"image": encoded})
            agree = np.mean(bits_o == (logits_t > 0))
            print(f"{name:>6} | decoder {kind}: logits max |diff| {np.abs(logits_o - logits_t).max():.2e}, "
                  f"bit agreement with PyTorch {agree:.4f}")
            ok &= kind != "fp32" or agree == 1.0
    return ok


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="checkpoint (.pth) written by train_pytorch.py (or by train_detector.py)")
    p.add_argument("--output_dir", "--out_dir", dest="out_dir", default="onnx",
                   help="writes encoder.onnx and decoder.onnx here")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument("--int8", action="store_true",
                   help="also write encoder_int8.onnx (static QDQ int8, calibrated on built-in training photos) and "
                        "decoder_int8.onnx (dynamic int8 of the dense layers); onnx_inference.py --int8 uses them")
    p.add_argument("--test", action="store_true", help="compare ONNX Runtime with PyTorch after exporting")
    return p


def export_detector(args, cfg, detector) -> int:
    """detector.onnx (a zoom detector: zoom_detector.onnx) with dynamic batch, height and width; --test compares ONNX
    Runtime with PyTorch."""
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "zoom_detector.onnx" if cfg.zoom else "detector.onnx")
    axes = {0: "batch", 2: "height", 3: "width"}
    _export(detector, (torch.rand(1, 3, 224, 384),), ["frame"], ["mask_logits"], path, cfg, args.opset,
            {"frame": axes, "mask_logits": axes}, DETECTOR_METADATA_KEY)
    print(f"wrote {path} ({os.path.getsize(path) / 2 ** 20:.1f} MiB)")
    if args.test:
        import onnxruntime as ort
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        for shape in ((1, 3, 224, 384), (2, 3, 384, 256)):
            frame = np.random.default_rng(0).random(shape, dtype=np.float32)
            with torch.no_grad():
                ref = detector(torch.from_numpy(frame)).numpy()
            out = sess.run(None, {"frame": frame})[0]
            agree = np.mean((out > 0) == (ref > 0))
            print(f"{shape}: mask logits max |diff| {np.abs(out - ref).max():.2e}, pixel agreement {agree:.5f}")
            if agree < 0.999:
                print("error: ONNX Runtime disagrees with PyTorch", file=sys.stderr)
                return 1
    return 0


def main(args) -> int:
    try:
        ckpt = read_checkpoint(args.model, kind="any")                       # read once, whichever it holds
        if checkpoint_kind(ckpt) == "detector":
            return export_detector(args, *detector_from_checkpoint(ckpt, args.model))
        cfg, encoder, decoder = models_from_checkpoint(ckpt, args.model, "cpu")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out_dir, exist_ok=True)
    image = torch.rand(2, 3, cfg.height, cfg.width)
    secret = torch.randint(0, 2, (2, cfg.secret_size)).float()
    enc_path, dec_path = (os.path.join(args.out_dir, f) for f in ("encoder.onnx", "decoder.onnx"))
    aligned = encoder.channel_aligned()   # the same function, in convolutions ONNX Runtime runs much faster
    _export(EncoderExport(aligned).eval(), (secret, image), ["secret", "image"], ["residual", "encoded"], enc_path,
            cfg, args.opset)
    _export(DecoderExport(decoder).eval(), (image,), ["image"], ["logits", "bits"], dec_path, cfg, args.opset)
    written = [enc_path, dec_path]
    if args.int8:
        quantize_int8(dec_path, os.path.join(args.out_dir, "decoder_int8.onnx"))
        quantize_encoder_int8(enc_path, os.path.join(args.out_dir, "encoder_int8.onnx"), cfg)
        written += [os.path.join(args.out_dir, f) for f in ("encoder_int8.onnx", "decoder_int8.onnx")]
    for path in written:
        print(f"wrote {path} ({os.path.getsize(path) / 2 ** 20:.1f} MiB)")
    if args.test and not compare(cfg, encoder, decoder, args.out_dir, args.int8):
        print("error: ONNX Runtime disagrees with PyTorch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
