"""Hide and read messages with the exported ONNX networks: needs only numpy, Pillow, onnxruntime and bchlib (no torch).

    python onnx_inference.py pretrained/onnx --encode --image examples/chelsea.jpg --save_dir out --secret Hello
    python onnx_inference.py pretrained/onnx --decode --image out/photo_hidden.png [--json] [--int8]
    python onnx_inference.py pretrained/onnx --test                 # encode + decode round trip, prints the result
The same batch loops as encode_image_pytorch.py / decode_image_pytorch.py (which also take an ONNX folder): full
resolution, --strength (auto too), --fit, batches, per-file errors; the model code comes from the ONNX metadata.
"""
import argparse
import json
import os
import sys

import numpy as np

from cli_common import add_decode_arguments, add_encode_arguments, add_input_arguments
from image_io import ImageLoadError
from inference import ModelLoadError, StegaStampRunner, load_model
from secret_codec import DecodeResult, SecretError

METADATA_KEY = "stegastamp_model_config"   # written by export_onnx.py


class OnnxStegaStamp(StegaStampRunner):
    """encoder.onnx + decoder.onnx (or decoder_int8.onnx) behind encode(image, secret) / decode(image)."""

    def __init__(self, onnx_dir, int8=False, providers=None, decoder_path=None):
        """onnx_dir: the export folder, or (with decoder_path) the encoder .onnx file itself."""
        import onnxruntime as ort
        if decoder_path is not None:   # the two-file form: encoder.onnx decoder.onnx
            paths = [onnx_dir, decoder_path]
            onnx_dir = os.path.dirname(decoder_path) or "."
        else:
            names = ("encoder_int8.onnx", "decoder_int8.onnx") if int8 else ("encoder.onnx", "decoder.onnx")
            paths = [os.path.join(onnx_dir, n) for n in names]
        for p in paths:
            if not os.path.isfile(p):
                raise ModelLoadError(f"{p}: not found (run export_onnx.py{' --int8' if int8 else ''} first)")
        providers = providers or ["CPUExecutionProvider"]
        try:
            self.enc, self.dec = (ort.InferenceSession(p, providers=providers) for p in paths)
        except Exception as e:  # onnxruntime raises its own exception types for corrupt files
            raise ModelLoadError(f"{onnx_dir}: cannot load the ONNX models ({str(e).splitlines()[0][:200]})") from None
        meta = self.dec.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ModelLoadError(f"{paths[1]}: no '{METADATA_KEY}' metadata (not written by export_onnx.py)")
        super().__init__(json.loads(meta[METADATA_KEY]))

    def run_encoder(self, secrets, images):
        residual, _ = self.enc.run(None, {"secret": np.asarray(secrets, np.float32),
                                          "image": np.ascontiguousarray(images, np.float32)})
        return residual

    def run_decoder(self, images):
        logits, _ = self.dec.run(None, {"image": np.ascontiguousarray(images, np.float32)})
        return logits


def self_test(model: OnnxStegaStamp, image_path=None, secret="Hello!", output=None) -> int:
    """Encode `secret` into an image (a synthetic one if none is given), decode it, and report; output: also save
    the encoded image there."""
    from PIL import Image
    from image_io import load_image
    if image_path:
        img = load_image(image_path)
    else:  # smooth synthetic colours: no photo needed
        h, w = model.size
        yy, xx = np.mgrid[0:h * 2, 0:w * 3] / max(h, w)
        arr = np.stack([np.sin(3 * xx) * 0.4 + 0.5, np.cos(2 * yy) * 0.4 + 0.5, (xx + yy) / (xx + yy).max()], -1)
        img = Image.fromarray((arr * 255).astype(np.uint8))
    encoded, _ = model.encode(img, secret)
    if output:
        from image_io import save_image
        save_image(encoded, output)
        print(f"wrote {output}")
    res: DecodeResult = model.decode(encoded)
    print(f"model {model.size[0]}x{model.size[1]}, {model.codec.secret_size} bits; image {img.size[0]}x{img.size[1]}")
    print(f"decoded: {res.message!r} (corrected {res.corrected_bits} bit errors, confidence {res.confidence:.3f})"
          if res.ok else f"decoded: no message found ({res.reason})")
    return 0 if res.message == secret else 1


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="the export_onnx.py folder, or the two files: encoder.onnx decoder.onnx")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--encode", action="store_true", help="hide --secret in the input image(s)")
    mode.add_argument("--decode", action="store_true", help="read the message from the input image(s)")
    mode.add_argument("--test", action="store_true", help="round trip on --image, or on a synthetic image")
    p.add_argument("--int8", action="store_true",
                   help="use encoder_int8.onnx and decoder_int8.onnx (export_onnx.py --int8): ~2x faster encoding")
    add_input_arguments(p, required=False)   # --test runs without an image (a synthetic one)
    add_encode_arguments(p, inputs=False)
    add_decode_arguments(p, inputs=False)
    return p


def main(args) -> int:
    from decode_image_pytorch import decode_all
    from encode_image_pytorch import encode_all
    try:
        if any(m.endswith(".pth") for m in args.models):
            raise ModelLoadError(f"{args.models[0]}: a PyTorch checkpoint: use encode_image_pytorch.py / "
                                 f"decode_image_pytorch.py, or export it with export_onnx.py")
        if len(args.models) == 1 and not os.path.isdir(args.models[0]):
            raise ModelLoadError(f"{args.models[0]}: not an export_onnx.py folder (give the folder, or both files: "
                                 f"encoder.onnx decoder.onnx)")
        model = load_model(args.models, int8=args.int8)   # ONNX Runtime: a folder or a file pair
        if args.test:
            return self_test(model, args.image, args.secret if args.secret != "Stega!!" else "Hello!", args.output)
        if not (args.image or args.images_dir):
            raise ImageLoadError("give --image or --images_dir")
        return encode_all(model, args) if args.encode else decode_all(model, args)
    except (ModelLoadError, ImageLoadError, SecretError) as e:   # bad input: one line; anything else is a bug
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
