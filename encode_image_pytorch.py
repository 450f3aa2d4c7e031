"""Hide a message in images (port of encode_image.py, any image size), with a PyTorch checkpoint or an ONNX export.

    python encode_image_pytorch.py pretrained/stegastamp_128.pth --image examples/chelsea.jpg --save_dir out --secret Hello
    python encode_image_pytorch.py CKPT --images_dir photos/ --save_dir out --secret abc --strength auto
    python encode_image_pytorch.py CKPT --image photo.jpg --output marked.png --secret Hi
    python encode_image_pytorch.py CKPT --image photo.jpg --secret Hi --optimize 100   # fainter and more robust
    python encode_image_pytorch.py pretrained/onnx --image photo.jpg --secret Hi     # the ONNX export, no torch needed
    python encode_image_pytorch.py CKPT --image photo.jpg --fit      # the original: centre crop at the model size
Writes <stem>_hidden.png (the encoded image, at the input's size) and <stem>_residual.png for each input.
Exit codes: 0 all encoded, 1 some inputs failed (each named on stderr), 2 bad model or argument.
"""
import argparse
import os
import sys

from cli_common import (OUTPUT_SUFFIXES, add_encode_arguments, add_model_arguments, batches, input_paths,
                        output_paths, progress, report, unmarked)
from image_io import ImageLoadError, save_image
from inference import ModelLoadError, RawBits, load_model
from secret_codec import SecretError


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_arguments(p)
    add_encode_arguments(p)
    return p


def encode_all(model, args) -> int:
    """The batch loop: check every output path, encode, verify, save, report. -> exit code."""
    secret = RawBits(args.bits) if args.bits else args.secret
    model.secret_bits(secret)                      # a secret that does not fit fails before any work
    model.check_optimize(args.optimize)            # so does --optimize with a model that cannot follow gradients
    if args.output and not args.image:
        raise SecretError("--output names one file: use it with --image (with --images_dir, use --save_dir)")
    paths, skipped = input_paths(args, OUTPUT_SUFFIXES)
    for p in skipped:
        print(f"{p}: skipped (an output of this tool; rename it to encode it)", file=sys.stderr)
    inputs = {os.path.realpath(p) for p in paths}
    failures, unverified, bar = [], [], progress(len(paths), args.no_progress)
    pending = []
    for path in paths:                             # cheap checks first: nothing is encoded that could not be written
        outs = output_paths(path, args)
        if any(os.path.realpath(o) in inputs for o in outs):
            failures.append((path, f"{path}: refusing to overwrite an input file with {outs[0]}"))
        elif not args.overwrite and any(os.path.exists(o) for o in outs):
            failures.append((path, f"{outs[0]} exists (pass --overwrite to replace it)"))
        else:
            pending.append(path)
    if bar is not None:
        bar.update(len(paths) - len(pending))
    for batch in batches(pending, args.batch_size, failures, bar):
        if not args.force:                         # an image that already carries a message is not stamped twice
            batch, marked = unmarked(model, batch)
            for path, res in marked:
                failures.append((path, f"{path}: already carries the message {res.message!r} "
                                       f"(pass --force to stamp it again)"))
            if not batch:
                continue
        results = model.encode_batch([im for _, im in batch], [secret] * len(batch), args.strength, args.fit,
                                     args.verify, args.optimize)
        for (path, _), result in zip(batch, results):
            encoded, residual = result
            outs = output_paths(path, args)
            try:
                save_image(encoded, outs[0], compress_level=1)   # fast PNG: 12-megapixel outputs stay quick
                save_image(residual, outs[1], compress_level=1)
            except OSError as e:
                failures.append((path, f"{outs[0]}: cannot write ({e.strerror or e})"))
                continue
            note = f" (strength {result.strength:g})" if args.strength == "auto" else ""
            if result.verified is False:
                unverified.append(path)
                note += " WARNING: the message does not read back" + (
                    " from every simulated copy, even at the highest strength" if args.strength == "auto" else "")
            elif result.verified:
                note += " (verified)"
            if bar is None:
                print(f"{path} -> {outs[0]}{note}")
            elif result.verified is False:
                bar.write(f"{path} -> {outs[0]}{note}")
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    code = report(failures, len(paths), "encoded", sys.stderr, skipped)
    if unverified:
        print(f"warning: {len(unverified)} of {len(paths)} encoded images do not read back reliably "
              f"(try a higher --strength)", file=sys.stderr)
        if args.strict:
            code = max(code, 1)
    return code


def main(args) -> int:
    try:
        model = load_model(args.model, args.device, args.bf16)
        return encode_all(model, args)
    except (ModelLoadError, ImageLoadError, SecretError) as e:   # bad input: one line; anything else is a bug
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
