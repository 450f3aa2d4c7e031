"""Hide and read messages with the exported ONNX networks: needs only numpy, Pillow, onnxruntime and bchlib (no torch).

    python onnx_inference.py pretrained/onnx --encode --image examples/chelsea.jpg --save_dir out --secret Hello
    python onnx_inference.py pretrained/onnx --decode --image out/photo_hidden.png [--json] [--int8]
    python onnx_inference.py pretrained/onnx --test                 # encode + decode round trip, prints the result
Same behaviour as encode_image_pytorch.py / decode_image_pytorch.py (full resolution, --strength, --fit, batches,
errors), through the shared codec_io.StegaStampRunner.
"""
import argparse
import json
import os
import sys

import numpy as np

from codec_io import (DecodeResult, ImageLoadError, StegaStampRunner, add_decode_arguments, add_encode_arguments,
                      add_input_arguments, run_decode_cli, run_encode_cli)

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
            names = ("encoder.onnx", "decoder_int8.onnx" if int8 else "decoder.onnx")
            paths = [os.path.join(onnx_dir, n) for n in names]
        for p in paths:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{p}: not found (run export_onnx.py{' --int8' if int8 else ''} first)")
        providers = providers or ["CPUExecutionProvider"]
        try:
            self.enc, self.dec = (ort.InferenceSession(p, providers=providers) for p in paths)
        except Exception as e:  # onnxruntime raises its own exception types for corrupt files
            raise ValueError(f"{onnx_dir}: cannot load the ONNX models ({str(e).splitlines()[0][:200]})") from None
        meta = self.dec.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ValueError(f"{paths[1]}: no '{METADATA_KEY}' metadata (not written by export_onnx.py)")
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
    from codec_io import load_image
    if image_path:
        img = load_image(image_path)
    else:  # smooth synthetic colours: no photo needed
        h, w = model.size
        yy, xx = np.mgrid[0:h * 2, 0:w * 3] / max(h, w)
        arr = np.stack([np.sin(3 * xx) * 0.4 + 0.5, np.cos(2 * yy) * 0.4 + 0.5, (xx + yy) / (xx + yy).max()], -1)
        img = Image.fromarray((arr * 255).astype(np.uint8))
    encoded, _ = model.encode(img, secret)
    if output:
        from codec_io import save_image
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
    p.add_argument("--int8", action="store_true", help="use decoder_int8.onnx")
    add_input_arguments(p, required=False)   # --test runs without an image (a synthetic one)
    add_encode_arguments(p, inputs=False)
    add_decode_arguments(p, inputs=False)
    return p


def main(args) -> int:
    try:
        if len(args.models) > 2:
            raise ValueError(f"give one folder or two files (encoder.onnx decoder.onnx), not {len(args.models)}")
        if len(args.models) == 2:
            model = OnnxStegaStamp(args.models[0], decoder_path=args.models[1])
        else:
            model = OnnxStegaStamp(args.models[0], int8=args.int8)
        if args.test:
            return self_test(model, args.image, args.secret if args.secret != "Stega!!" else "Hello!", args.output)
        if not (args.image or args.images_dir):
            raise ValueError("give --image or --images_dir")
        return run_encode_cli(model, args) if args.encode else run_decode_cli(model, args)
    except (FileNotFoundError, ImageLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
