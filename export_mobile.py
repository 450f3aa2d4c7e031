"""Export a checkpoint's encoder and decoder for phones: TensorFlow Lite (LiteRT) and Core ML, and check them.

    pip install -r requirements_mobile.txt          # litert-torch, ai-edge-litert, coremltools (best in its own venv)
    python export_mobile.py pretrained/stegastamp_128.pth --out_dir mobile --test

Writes, for an H x W model with an L-bit secret (128 x 128 and 100 bits for the shipped one):
  encoder.tflite, decoder.tflite                   LiteRT / TensorFlow Lite, converted by litert-torch (PyTorch ->
                                                   StableHLO -> TFLite, no ONNX or TensorFlow in between)
  StegaStampEncoder.mlpackage, StegaStampDecoder.mlpackage    Core ML ML programs (iOS 16 / macOS 13 and newer)
  model_config.json                                the model size and the message code (secret_codec.py's config)
Every model takes and gives NHWC float32 (the layout of Android bitmaps and iOS pixel buffers), batch 1:
  encoder: secret (1, L) in {0,1}, image (1, H, W, 3) RGB in [0,1] -> residual (1, H, W, 3), encoded (1, H, W, 3)
           (encoded = clip(image + residual, 0, 1); for a full-resolution photo add the residual upscaled instead,
           as inference.py does)
  decoder: image (1, H, W, 3) in [0,1] -> logits (1, L), bits (1, L) in {0,1}
In the .tflite files the inputs and outputs keep this order (signature serving_default, args_0.. / output_0..); in
the Core ML packages they carry the names above and the config sits in the user-defined metadata. --test runs the
TFLite models in the LiteRT interpreter against PyTorch on built-in held-out photos (bit agreement, max difference),
and checks the Core ML packages' structure (inputs, outputs, shapes, the decoder's resampling op); Core ML models can
only be run on macOS, where --test runs them too.
"""
import argparse
import importlib.util
import json
import os
import sys
import warnings
from dataclasses import asdict

import numpy as np
import torch
import torch.nn as nn

from image_io import atomic_write
from models_pytorch import CheckpointError, load_checkpoint


class EncoderNHWC(nn.Module):
    """(secret (1, L), image (1, H, W, 3)) -> (residual, encoded), NHWC."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, secret, image):
        image = image.permute(0, 3, 1, 2)
        residual = self.encoder(secret, image)
        return residual.permute(0, 2, 3, 1), torch.clamp(image + residual, 0, 1).permute(0, 2, 3, 1)


class DecoderNHWC(nn.Module):
    """image (1, H, W, 3) -> (logits (1, L), bits (1, L))."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, image):
        logits = self.decoder(image.permute(0, 3, 1, 2))
        return logits, (logits > 0).float()


def export_tflite(module, example, path):
    import litert_torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # the shape checks traced as constants: H and W are fixed per model
        model = litert_torch.convert(module.eval(), example)
    atomic_write(path, lambda tmp: model.export(tmp), ".tflite")


def export_coreml(module, example, names_in, names_out, path, cfg):
    import coremltools as ct
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval(), example)
    model = ct.convert(traced, inputs=[ct.TensorType(name=n, shape=tuple(x.shape)) for n, x in zip(names_in, example)],
                       outputs=[ct.TensorType(name=n) for n in names_out], convert_to="mlprogram",
                       minimum_deployment_target=ct.target.iOS16, compute_precision=ct.precision.FLOAT32)
    model.user_defined_metadata["stegastamp_model_config"] = json.dumps(asdict(cfg))
    model.short_description = f"StegaStamp {module.__class__.__name__[:7].lower()}, {cfg.height}x{cfg.width}, " \
                              f"{cfg.secret_size}-bit secret (NHWC float32 in [0,1])"
    model.save(path)                                         # a folder: written whole, then visible under its name
    return model


def tflite_run(path, inputs):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=path)
    it.allocate_tensors()
    for detail, x in zip(sorted(it.get_input_details(), key=lambda d: d["name"]), inputs):
        it.set_tensor(detail["index"], np.ascontiguousarray(x, np.float32))
    it.invoke()
    return [it.get_tensor(d["index"]) for d in sorted(it.get_output_details(), key=lambda d: d["name"])]


def check(cfg, encoder, decoder, out_dir, formats, n_photos=3):
    """TFLite vs PyTorch on real photos; Core ML structure (and predictions on macOS). -> True if all agree."""
    from dataset import BuiltinPhotosDataset
    from secret_codec import SecretCodec
    ds = BuiltinPhotosDataset((cfg.height, cfg.width), split="heldout")
    codec = SecretCodec.from_config(cfg)
    ok = True
    for i in range(n_photos):
        image = ds[(i, i)][0][None]
        secret = torch.from_numpy(codec.encode("Hello!"[: codec.data_bytes]))[None]
        with torch.no_grad():
            residual, encoded = (t.numpy() for t in EncoderNHWC(encoder)(secret, image.permute(0, 2, 3, 1)))
            logits, _ = (t.numpy() for t in DecoderNHWC(decoder)(torch.from_numpy(encoded)))
        if "tflite" in formats:
            r_l, e_l = tflite_run(os.path.join(out_dir, "encoder.tflite"), [secret.numpy(), image.permute(0, 2, 3, 1).numpy()])
            lg_l, bits_l = tflite_run(os.path.join(out_dir, "decoder.tflite"), [encoded])
            agree = float(np.mean(bits_l == (logits > 0)))
            print(f"photo {i} | TFLite encoder: residual max |diff| {np.abs(r_l - residual).max():.2e} | decoder: "
                  f"logits max |diff| {np.abs(lg_l - logits).max():.2e}, bit agreement with PyTorch {agree:.4f} | "
                  f"message {codec.decode(bits_l[0]).message!r}")
            ok &= agree == 1.0 and np.abs(r_l - residual).max() < 1e-3
    if "coreml" in formats:
        import coremltools as ct
        for name, ins, outs in (("StegaStampEncoder", {"secret": [1, cfg.secret_size], "image": [1, cfg.height, cfg.width, 3]},
                                 ("residual", "encoded")),
                                ("StegaStampDecoder", {"image": [1, cfg.height, cfg.width, 3]}, ("logits", "bits"))):
            path = os.path.join(out_dir, name + ".mlpackage")
            spec = ct.utils.load_spec(path)
            got_in = {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input}
            got_out = [o.name for o in spec.description.output]
            ops = {op.type for f in spec.mlProgram.functions.values() for b in f.block_specializations.values()
                   for op in b.operations}
            meta = json.loads(spec.description.metadata.userDefined["stegastamp_model_config"])
            good = got_in == ins and got_out == list(outs) and meta == asdict(cfg)
            if name == "StegaStampDecoder":
                good &= "resample" in ops                       # the spatial transformer's grid sampling
            print(f"{name}.mlpackage | inputs {got_in} | outputs {got_out} | {len(ops)} op types"
                  + (" | resample (the STN) present" if "resample" in ops else "") + f" | {'ok' if good else 'MISMATCH'}")
            ok &= good
        if sys.platform == "darwin":
            enc_ml = ct.models.MLModel(os.path.join(out_dir, "StegaStampEncoder.mlpackage"))
            dec_ml = ct.models.MLModel(os.path.join(out_dir, "StegaStampDecoder.mlpackage"))
            out = enc_ml.predict({"secret": secret.numpy(), "image": image.permute(0, 2, 3, 1).numpy()})
            bits = dec_ml.predict({"image": out["encoded"]})["bits"]
            print(f"Core ML round trip: {codec.decode(bits[0]).message!r}")
            ok &= codec.decode(bits[0]).ok
        else:
            print("Core ML packages cannot be run on this OS (only on macOS / iOS): checked structurally")
    return ok


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="checkpoint (.pth) written by train_pytorch.py")
    p.add_argument("--out_dir", default="mobile", help="folder for the .tflite files, .mlpackage folders and config")
    p.add_argument("--formats", nargs="+", choices=("tflite", "coreml"), default=["tflite", "coreml"],
                   help="which formats to write")
    p.add_argument("--test", action="store_true", help="check the exported models against PyTorch")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --out_dir")
    return p


def main(args) -> int:
    try:
        cfg, encoder, decoder = load_checkpoint(args.model, "cpu")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    missing = [pkg for pkg, fmt in (("litert_torch", "tflite"), ("ai_edge_litert", "tflite"), ("coremltools", "coreml"))
               if fmt in args.formats and importlib.util.find_spec(pkg) is None]
    if missing:
        print(f"error: {', '.join(missing)} not installed: pip install -r requirements_mobile.txt", file=sys.stderr)
        return 2
    names = {"tflite": ["encoder.tflite", "decoder.tflite"],
             "coreml": ["StegaStampEncoder.mlpackage", "StegaStampDecoder.mlpackage"]}
    targets = [os.path.join(args.out_dir, f) for fmt in args.formats for f in names[fmt]]
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not args.overwrite:
        print(f"error: {existing[0]} exists (pass --overwrite to replace it)", file=sys.stderr)
        return 2
    os.makedirs(args.out_dir, exist_ok=True)
    secret = torch.randint(0, 2, (1, cfg.secret_size)).float()
    image = torch.rand(1, cfg.height, cfg.width, 3)
    enc, dec = EncoderNHWC(encoder), DecoderNHWC(decoder)
    if "tflite" in args.formats:
        export_tflite(enc, (secret, image), os.path.join(args.out_dir, "encoder.tflite"))
        export_tflite(dec, (image,), os.path.join(args.out_dir, "decoder.tflite"))
    if "coreml" in args.formats:
        import shutil
        for t in existing:
            if t.endswith(".mlpackage"):
                shutil.rmtree(t)
        export_coreml(enc, (secret, image), ["secret", "image"], ["residual", "encoded"],
                      os.path.join(args.out_dir, "StegaStampEncoder.mlpackage"), cfg)
        export_coreml(dec, (image,), ["image"], ["logits", "bits"],
                      os.path.join(args.out_dir, "StegaStampDecoder.mlpackage"), cfg)
    config = os.path.join(args.out_dir, "model_config.json")
    atomic_write(config, lambda tmp: open(tmp, "w").write(json.dumps(asdict(cfg), indent=1) + "\n"), ".json")
    for t in targets + [config]:
        size = os.path.getsize(t) if os.path.isfile(t) else sum(
            os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(t) for f in fs)
        print(f"wrote {t} ({size / 2 ** 20:.1f} MiB)")
    if args.test and not check(cfg, encoder, decoder, args.out_dir, args.formats):
        print("error: an exported model disagrees with PyTorch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
