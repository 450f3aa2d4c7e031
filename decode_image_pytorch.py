"""Read hidden messages from images with a trained checkpoint (port of decode_image.py, any image size).

    python decode_image_pytorch.py pretrained/stegastamp_128.pth --image out/photo_hidden.png
    python decode_image_pytorch.py CKPT --images_dir out/ --json
Prints `path: 'Hello!' (corrected N bit errors)` or `path: no message found` per image; only BCH-verified messages
are reported. Exit code 1 if an image could not be read, 2 for a bad checkpoint or argument.
"""
import sys

from codec_io import add_decode_arguments, run_decode_cli
from stegastamp_pytorch import run_script, script_parser


def get_parser():
    return script_parser(__doc__, add_decode_arguments)


def main(args) -> int:
    return run_script(args, run_decode_cli)


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
