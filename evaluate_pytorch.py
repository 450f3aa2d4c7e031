"""Evaluate a model on photos: image quality of the encoded photos and message recovery under distortions.

    python evaluate_pytorch.py pretrained/stegastamp_128.pth --images_dir my_photos/ --messages 5
    python evaluate_pytorch.py pretrained/stegastamp_128.pth --builtin heldout         # photos never trained on
    python evaluate_pytorch.py pretrained/onnx --onnx --images_dir my_photos/          # the same through ONNX
For each photo, seeded random 7-character secrets are hidden at full resolution; the encoded photo is distorted
(real Pillow JPEG, blur, noise, colour, resize, crop, perspective) and decoded. Reported per distortion: raw bit
accuracy, exact message recovery after BCH, and false positives (messages claimed on the unmarked photos).
"""
import argparse
import io
import sys

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from codec_io import list_images, load_image


def jpeg(q):
    def f(img, rng):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return f


def noise(sigma):
    def f(img, rng):
        arr = np.asarray(img, dtype=np.float32) / 255 + rng.normal(0, sigma, (img.size[1], img.size[0], 3))
        return Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8))
    return f


def perspective(frac):
    """Move each corner by up to frac of the size inward/outward at random, warp back to the full frame."""
    def f(img, rng):
        W, H = img.size
        dst = np.array([[0, 0], [W, 0], [W, H], [0, H]], dtype=np.float64)
        src = dst + rng.uniform(-frac, frac, (4, 2)) * [W, H]
        A = []   # solve the 8 coefficients mapping output (dst) -> input (src), PIL's PERSPECTIVE convention
        for (x, y), (u, v) in zip(dst, src):
            A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
            A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        coeffs = np.linalg.solve(np.array(A), src.reshape(-1))
        return img.transform((W, H), Image.PERSPECTIVE, coeffs, Image.BILINEAR, fillcolor=(255, 255, 255))
    return f


def crop_border(frac):
    def f(img, rng):
        W, H = img.size
        dx, dy = int(W * frac / 2), int(H * frac / 2)
        return img.crop((dx, dy, W - dx, H - dy)).resize((W, H), Image.BICUBIC)
    return f


DISTORTIONS = {
    "clean": lambda img, rng: img,
    "jpeg90": jpeg(90), "jpeg75": jpeg(75), "jpeg50": jpeg(50), "jpeg30": jpeg(30),
    "blur1": lambda img, rng: img.filter(ImageFilter.GaussianBlur(1)),
    "blur2": lambda img, rng: img.filter(ImageFilter.GaussianBlur(2)),
    "noise0.02": noise(0.02), "noise0.05": noise(0.05),
    "bright0.7": lambda img, rng: ImageEnhance.Brightness(img).enhance(0.7),
    "bright1.3": lambda img, rng: ImageEnhance.Brightness(img).enhance(1.3),
    "contrast0.6": lambda img, rng: ImageEnhance.Contrast(img).enhance(0.6),
    "grayscale": lambda img, rng: img.convert("L").convert("RGB"),
    "resize0.5": lambda img, rng: img.resize((img.size[0] // 2, img.size[1] // 2), Image.BICUBIC).resize(
        img.size, Image.BICUBIC),
    "crop10%": crop_border(0.10),
    "persp5%": perspective(0.05), "persp10%": perspective(0.10),
}


def psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / max(mse, 1e-10))


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="checkpoint (.pth), or an export_onnx.py folder with --onnx")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--images_dir", help="folder of photos to evaluate on (keep them out of training)")
    g.add_argument("--builtin", choices=("heldout", "train", "all"), help="the built-in photos of dataset.py")
    p.add_argument("--onnx", action="store_true", help="model is an ONNX folder (onnx_inference.OnnxStegaStamp)")
    p.add_argument("--messages", type=int, default=3, help="random secrets per photo")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--distortions", nargs="+", default=list(DISTORTIONS), choices=list(DISTORTIONS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--bf16", action="store_true", help="PyTorch model with bfloat16 weights (as the scripts' --bf16)")
    return p


def load_photos(args):
    if args.builtin:
        from dataset import BUILTIN_SPLITS, load_builtin_photo
        return [(n, load_builtin_photo(n)) for n in BUILTIN_SPLITS[args.builtin]]
    return [(p, load_image(p)) for p in list_images(args.images_dir)]


def main(args) -> int:
    if args.onnx:
        from onnx_inference import OnnxStegaStamp
        model = OnnxStegaStamp(args.model)
    else:
        from stegastamp_pytorch import StegaStamp
        model = StegaStamp.load(args.model, args.device, args.bf16)
    rng = np.random.default_rng(args.seed)
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    photos = load_photos(args)
    stats = {d: {"bits": [], "exact": 0, "n": 0} for d in args.distortions}
    quality, false_pos = [], 0
    for name, img in photos:
        false_pos += sum(r.ok for r in model.decode_batch([DISTORTIONS[d](img, rng) for d in args.distortions]))
        for _ in range(args.messages):
            secret = "".join(rng.choice(alphabet, 7))
            encoded, _ = model.encode(img, secret, strength=args.strength)
            quality.append(psnr(encoded, img))
            truth = model.codec.encode(secret)
            for d in args.distortions:
                x = model.model_input(DISTORTIONS[d](encoded, rng))[None].transpose(0, 3, 1, 2)
                bits = (model.run_decoder(x)[0] > 0).astype(np.float32)
                stats[d]["bits"].append(np.mean(bits == truth))
                stats[d]["exact"] += model.codec.decode(bits).message == secret
                stats[d]["n"] += 1
    n_clean = len(photos) * len(args.distortions)
    print(f"{len(photos)} photos x {args.messages} messages, strength {args.strength}; encoded vs cover PSNR "
          f"{np.mean(quality):.2f} dB (min {np.min(quality):.2f}); false positives on unmarked photos "
          f"{false_pos}/{n_clean}\n")
    print("| distortion | bit accuracy | exact recovery |\n|---|---|---|")
    for d, s in stats.items():
        print(f"| {d} | {np.mean(s['bits']):.4f} | {s['exact'] / s['n']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
