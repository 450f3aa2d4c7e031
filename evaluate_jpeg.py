"""Compare the differentiable JPEG (utils_pytorch.jpeg_compress_decompress) with Pillow's real JPEG.

    python evaluate_jpeg.py                       # astronaut at 256 px, qualities 25/50/75/95
    python evaluate_jpeg.py --photo chelsea --size 400
Prints PSNR between our output and Pillow's for both table orientations (the original's transposed tables and
libjpeg's), with true rounding, and Pillow's distance from the uncompressed input for scale.
"""
import argparse

import numpy as np
import torch
from PIL import Image

from dataset import BUILTIN_PHOTOS, load_builtin_photo
from distortions import jpeg
from evaluate_pytorch import psnr
from utils_pytorch import jpeg_compress_decompress, quality_to_factor


def to_tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--photo", default="astronaut", choices=sorted(BUILTIN_PHOTOS), help="built-in photo to test on")
    p.add_argument("--size", type=int, default=256, help="side of the square crop in pixels")
    p.add_argument("--qualities", type=int, nargs="+", default=[25, 50, 75, 95], help="JPEG qualities to compare")
    return p


def main(args):
    img = load_builtin_photo(args.photo).resize((args.size, args.size), Image.BICUBIC)
    x = to_tensor(img)
    print("| quality | ours (libjpeg tables) vs Pillow | ours (original tables) vs Pillow | Pillow vs input |")
    print("|---|---|---|---|")
    for q in args.qualities:
        real = to_tensor(jpeg(q)(img, None))   # Pillow's JPEG, as in the evaluation suite
        ours = {t: jpeg_compress_decompress(x, rounding="ste", factor=quality_to_factor(q), tables=t)
                for t in ("libjpeg", "original")}
        print(f"| {q} | {psnr(ours['libjpeg'], real, 1.0):.1f} dB | {psnr(ours['original'], real, 1.0):.1f} dB | "
              f"{psnr(x, real, 1.0):.1f} dB |")


if __name__ == "__main__":
    main(get_parser().parse_args())
