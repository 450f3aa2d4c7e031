"""Hide a message in images with a trained checkpoint (port of encode_image.py, any image size).

    python encode_image_pytorch.py pretrained/stegastamp_128.pth --image examples/chelsea.jpg --save_dir out --secret Hello
    python encode_image_pytorch.py CKPT --images_dir photos/ --save_dir out --secret abc --strength 1.5
    python encode_image_pytorch.py CKPT --image photo.jpg --fit      # the original: 400x400 centre crop
Writes <stem>_hidden.png (the encoded image, at the input's size) and <stem>_residual.png for each input.
"""
import sys

from codec_io import add_encode_arguments, run_encode_cli
from stegastamp_pytorch import run_script, script_parser


def get_parser():
    return script_parser(__doc__, add_encode_arguments)


def main(args) -> int:
    return run_script(args, run_encode_cli)


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
