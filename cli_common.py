"""What the command-line scripts share (no torch): their input/output flags, the input list, output paths that never
collide, batching with per-file errors, the summary line. encode_image_pytorch.py, decode_image_pytorch.py and
onnx_inference.py are the scripts.
"""
import argparse
import os

from image_io import ImageLoadError, check_size, list_images, load_image


def add_input_arguments(parser, required=True):
    g = parser.add_mutually_exclusive_group(required=required)
    g.add_argument("--image", help="one image file")
    g.add_argument("--images_dir", help="a folder of images (recursive)")
    parser.add_argument("--batch_size", type=positive_int, default=8, help="images per network call")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")


def add_encode_arguments(parser, inputs=True):
    """The encode flags; inputs=False leaves out --image/--images_dir/... (a caller that adds them itself)."""
    if inputs:
        add_input_arguments(parser)
    parser.add_argument("--save_dir", default="out",
                        help="writes <stem>_hidden.png and <stem>_residual.png here (with --images_dir, in the "
                             "input's sub-folders)")
    parser.add_argument("--output", default=None,
                        help="with --image: the encoded image's path (the residual goes beside it as "
                             "<name>_residual.png); overrides --save_dir")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    parser.add_argument("--force", action="store_true",
                        help="stamp an image that already carries a readable message (refused by default)")
    parser.add_argument("--secret", default="Stega!!",
                        help="text to hide: 1 to 7 UTF-8 bytes with the shipped model (its code sets the limit); "
                             "trailing spaces are dropped on decoding (the original pads short secrets with spaces)")
    parser.add_argument("--bits", default=None,
                        help="hide these raw bits instead of --secret: a string of the model's secret_size 0/1 "
                             "characters, no error correction (bring your own code); decode with --json to read them")
    parser.add_argument("--strength", type=strength_arg, default=1.0,
                        help="scales the residual (1 = as trained), or 'auto': per image the lowest strength at "
                             "which the message survives simulated JPEG 50, 5%% perspective and print-and-photograph "
                             "copies (slower: a few decoder calls per image)")
    parser.add_argument("--optimize", type=non_negative_int, default=0, metavar="STEPS",
                        help="refine each residual for STEPS gradient steps against the decoder, under random "
                             "camera-like copies: a fainter, more robust stamp (PyTorch checkpoints only; ~0.05 s a "
                             "step on 2 CPU cores; 100 is a good value; README 'Encode-time optimisation')")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="decode each encoded image once and say whether the message reads back (a failure is a "
                             "warning, exit 1 with --strict); --no-verify skips it. --strength auto always checks")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a message does not read back")
    parser.add_argument("--fit", action="store_true",
                        help="original behaviour: centre-crop and resize to the model size (default: keep the "
                             "input's full resolution)")


def int_at_least(text, minimum):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least {minimum}")
    return value


def positive_int(text):
    """argparse type: an integer >= 1."""
    return int_at_least(text, 1)


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    return int_at_least(text, 0)


def strength_arg(text):
    """argparse type of --strength: a positive number or 'auto'."""
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number or 'auto'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return value


def add_decode_arguments(parser, inputs=True):
    if inputs:
        add_input_arguments(parser)
    parser.add_argument("--include_residuals", action="store_true",
                        help="with --images_dir, also decode *_residual.png files (skipped by default)")
    parser.add_argument("--json", action="store_true", help="print one JSON list of results instead of text lines")
    parser.add_argument("--no_tta", action="store_true",
                        help="read each image whole only, as the original (default: an image that gives no message "
                             "is also read cropped by 5%% and 10%% and padded by 3%% and 6%% per side; README "
                             "'Encoding and decoding')")


OUTPUT_SUFFIXES = ("_hidden.png", "_residual.png")   # what the encoder writes


def input_paths(args, skip_suffixes=()) -> tuple:
    """-> (paths to process, paths skipped because their names end with one of skip_suffixes)."""
    if args.image:
        return [args.image], []
    paths = list_images(args.images_dir)
    if not paths:
        raise ImageLoadError(f"{args.images_dir}: no images found")
    skipped = [p for p in paths if p.endswith(skip_suffixes)] if skip_suffixes else []
    paths = [p for p in paths if p not in set(skipped)]
    if not paths:
        raise ImageLoadError(f"{args.images_dir}: no images to process ({len(skipped)} outputs of this tool skipped)")
    return paths, skipped


def output_paths(path, args):
    """<save_dir>/<sub-folder of the input under --images_dir>/<stem>_hidden.png and _residual.png: the input tree
    is mirrored, so photos of the same name in different folders never share an output."""
    if getattr(args, "output", None):
        return [args.output, os.path.splitext(args.output)[0] + "_residual.png"]
    sub = os.path.dirname(os.path.relpath(path, args.images_dir)) if args.images_dir else ""
    stem = os.path.splitext(os.path.basename(path))[0]
    return [os.path.join(args.save_dir, sub, f"{stem}_{kind}.png") for kind in ("hidden", "residual")]


def progress(total, disable):
    import sys
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or disable or total < 2 or not sys.stderr.isatty():
        return None
    return tqdm(total=total, unit="img")


def batches(paths, batch_size, failures, bar):
    """Yield (paths, PIL images) batches of readable files; unreadable ones go to `failures` with their error."""
    batch = []
    for path in paths:
        try:
            batch.append((path, check_size(load_image(path), path)))
        except ImageLoadError as e:
            failures.append((path, str(e)))
            if bar is not None:
                bar.update(1)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def report(failures, n, what, err, skipped=(), counts=""):
    for _, msg in failures:
        print(f"error: {msg}", file=err)
    if n > 1 or failures or skipped:
        print(f"{what} {n - len(failures)} of {n} images" + counts + (f", {len(failures)} failed" if failures else "")
              + (f" ({len(skipped)} outputs of this tool skipped)" if skipped else ""), file=err)
    return 1 if failures else 0


def unmarked(runner, batch):
    """Split a batch of (path, PIL) into those without a readable message and (path, DecodeResult) of the others."""
    results = runner.decode_batch([im for _, im in batch])
    return ([b for b, r in zip(batch, results) if not r.ok],
            [(b[0], r) for b, r in zip(batch, results) if r.ok])


def add_model_arguments(parser):
    parser.add_argument("model", help="a checkpoint (.pth) written by train_pytorch.py / release_checkpoint.py, or "
                                      "an export_onnx.py folder (runs on ONNX Runtime, no torch needed)")
    parser.add_argument("--device", default=None, help="PyTorch only: cuda or cpu (default: cuda if available)")
    parser.add_argument("--bf16", action="store_true",
                        help="PyTorch only: bfloat16 weights, NHWC: faster on CPUs with native bf16 (AVX512-BF16/"
                             "AMX; README 'Measured') and on GPUs; ignored with a warning on other CPUs, where bf16 "
                             "is emulated")
