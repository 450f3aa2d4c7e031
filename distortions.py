"""Image distortions (no torch): what a photo goes through between the encoder and the decoder, simulated with
Pillow and numpy. Used by evaluate_pytorch.py (the distortion table and sweeps) and by the adaptive encoding
strength (`--strength auto`), which checks that a message survives simulated copies before it settles on a strength.

Each distortion is f(PIL RGB, numpy Generator) -> PIL RGB of the same size.
"""
import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

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


def homography(src, dst):
    """The projective maps taking 4 points to 4 points (cv2.getPerspectiveTransform, batched): src, dst (..., 4, 2)
    -> H (..., 3, 3) with H[2, 2] = 1 and H @ [x, y, 1] ~ [u, v, 1]. The repo's one homography solver (training's
    random warps in utils_pytorch use it too)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    zeros, ones = np.zeros_like(x), np.ones_like(x)
    rows_u = np.stack([x, y, ones, zeros, zeros, zeros, -x * u, -y * u], -1)      # (..., 4, 8)
    rows_v = np.stack([zeros, zeros, zeros, x, y, ones, -x * v, -y * v], -1)
    A = np.concatenate([rows_u, rows_v], -2)                                        # (..., 8, 8)
    b = np.concatenate([u, v], -1)[..., None]                                       # (..., 8, 1)
    h = np.linalg.solve(A, b)[..., 0]                                               # (..., 8)
    return np.concatenate([h, np.ones(h.shape[:-1] + (1,))], -1).reshape(h.shape[:-1] + (3, 3))


def perspective_coeffs(dst, src):
    """PIL PERSPECTIVE coefficients mapping output points dst (4, 2) to input points src (4, 2)."""
    return homography(dst, src).reshape(-1)[:8]


def perspective(frac):
    """Move each corner by up to frac of the size inward/outward at random, warp back to the full frame."""
    def f(img, rng):
        if frac == 0:
            return img
        W, H = img.size
        dst = np.array([[0, 0], [W, 0], [W, H], [0, H]], dtype=np.float64)
        src = dst + rng.uniform(-frac, frac, (4, 2)) * [W, H]
        return img.transform((W, H), Image.PERSPECTIVE, perspective_coeffs(dst, src), Image.BILINEAR,
                             fillcolor=(255, 255, 255))
    return f


def crop_border(frac):
    def f(img, rng):
        W, H = img.size
        dx, dy = int(W * frac / 2), int(H * frac / 2)
        return img.crop((dx, dy, W - dx, H - dy)).resize((W, H), Image.BICUBIC)
    return f


def print_photo(img, rng):
    """Print-and-photograph simulation (our design; no printer in the loop). In order:
    printing: ink gamut (contrast x0.85, gamma 1.1), dot gain (blur 0.5 px at print size);
    photographing: the print framed by hand (corners jittered by 3% of the size, the rest filled with a grey
    background), camera resolution (60% of the print's pixels), defocus (blur 1 px), uneven light (brightness x0.8-1.1
    with a linear gradient and 15% vignetting), white balance (per-channel gains 0.9-1.1), sensor noise (sigma 0.01),
    and the phone's JPEG (quality 80); finally resized back to the print's size, as a user crops the photo."""
    W, H = img.size
    x = np.asarray(img, np.float32) / 255
    x = 0.5 + 0.85 * (x - 0.5)
    x = np.clip(x, 0, 1) ** 1.1
    img = Image.fromarray((x * 255 + 0.5).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5))
    dst = np.array([[0, 0], [W, 0], [W, H], [0, H]], dtype=np.float64)
    src = dst + rng.uniform(-0.03, 0.03, (4, 2)) * [W, H]
    img = img.transform((W, H), Image.PERSPECTIVE, perspective_coeffs(dst, src), Image.BILINEAR,
                        fillcolor=(128, 128, 128))
    w, h = max(int(W * 0.6), 1), max(int(H * 0.6), 1)
    img = img.resize((w, h), Image.BILINEAR).filter(ImageFilter.GaussianBlur(1))
    x = np.asarray(img, np.float32) / 255
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = xx / max(w - 1, 1) - 0.5, yy / max(h - 1, 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    light = rng.uniform(0.8, 1.1) * (1 + 0.1 * (np.cos(angle) * u + np.sin(angle) * v)) * (1 - 0.3 * (u * u + v * v))
    x = x * light[..., None] * rng.uniform(0.9, 1.1, 3) + rng.normal(0, 0.01, x.shape)
    img = jpeg(80)(Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)), rng)
    return img.resize((W, H), Image.BICUBIC)


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
    "print_photo": print_photo,
}
