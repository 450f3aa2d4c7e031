"""Read the hidden message from images (port of decode_image.py), with a PyTorch checkpoint or an ONNX export.

    python decode_image_pytorch.py pretrained/stegastamp_128.pth --image out/chelsea_hidden.png
    python decode_image_pytorch.py CKPT --images_dir out/ --json      # file, message, corrected_bits, confidence, bits
    python decode_image_pytorch.py pretrained/onnx --image out/chelsea_hidden.png     # the ONNX export, no torch
Prints `path: 'message' (corrected N bit errors)` or `path: no message found` per image (only BCH-verified
messages are reported). Exit codes: 0 all read (with or without a message), 1 some inputs unreadable, 2 bad model.
"""
import argparse
import json
import sys

from cli_common import add_decode_arguments, add_model_arguments, batches, input_paths, progress, report
from image_io import ImageLoadError
from inference import ModelLoadError, load_model


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_arguments(p)
    add_decode_arguments(p)
    return p


def decode_all(model, args) -> int:
    """The batch loop: decode, print a line (or collect JSON rows), report. -> exit code."""
    paths, skipped = input_paths(args, () if args.include_residuals else ("_residual.png",))
    failures, rows, bar = [], [], progress(len(paths), args.no_progress or args.json)
    for batch in batches(paths, args.batch_size, failures, bar):
        for (path, _), res in zip(batch, model.decode_batch([im for _, im in batch], tta=not args.no_tta)):
            # confidence describes a message; with none found there is nothing to be confident about
            rows.append({"file": path, "message": res.message, "corrected_bits": res.corrected_bits,
                         "confidence": round(res.confidence, 4) if res.ok else None, "bits": res.bits})
            if not args.json:
                text = (f"{path}: {res.message!r} (corrected {res.corrected_bits} bit errors)" if res.ok
                        else f"{path}: no message found")
                (bar.write if bar is not None else print)(text)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    found = sum(r["message"] is not None for r in rows)
    counts = f": {found} with a message, {len(rows) - found} without"   # the unreadable ones are 'failed'
    if args.json:
        rows += [{"file": p, "message": None, "error": msg} for p, msg in failures]
        print(json.dumps(rows, indent=1, ensure_ascii=False))
    return report(failures, len(paths), "decoded", sys.stderr, skipped, counts)


def main(args) -> int:
    try:
        model = load_model(args.model, args.device, args.bf16)
        return decode_all(model, args)
    except (ModelLoadError, ImageLoadError) as e:   # bad input: one line; anything else is a bug
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
