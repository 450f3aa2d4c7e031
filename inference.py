"""Hide and read messages with a model, whichever backend runs it (no torch needed for ONNX).

    from inference import load_model
    from image_io import load_image
    model = load_model("pretrained/stegastamp_128.pth")     # or "pretrained/onnx" (ONNX Runtime, no torch)
    encoded, residual = model.encode(load_image("photo.jpg"), "Hello!")   # PIL images at the photo's full size
    model.decode(encoded)                                   # DecodeResult(message='Hello!', corrected_bits=0, ...)

load_model returns a StegaStampRunner: stegastamp_pytorch.StegaStamp for a .pth checkpoint (torch imported only
then) or onnx_inference.OnnxStegaStamp for an export_onnx.py folder or an (encoder.onnx, decoder.onnx) pair. Both
raise ModelLoadError with one line for a model they cannot load, and share everything around the networks below.
"""
import os
from abc import ABC, abstractmethod

import numpy as np
from PIL import Image, ImageChops

from image_io import array_to_image, fit_image, image_to_array
from secret_codec import DecodeResult, SecretCodec, SecretError


class ModelLoadError(ValueError):
    """A model path that cannot be loaded (missing, not a model, corrupt, wrong kind). The message is one line."""


def load_model(path, device=None, bf16=False, int8=False) -> "StegaStampRunner":
    """A .pth checkpoint (PyTorch), an export_onnx.py folder, or a pair [encoder.onnx, decoder.onnx] (ONNX Runtime)
    -> a ready model. Raises ModelLoadError."""
    if isinstance(path, (list, tuple)):
        if len(path) == 1:
            path = path[0]
        elif len(path) == 2:
            from onnx_inference import OnnxStegaStamp
            return OnnxStegaStamp(path[0], decoder_path=path[1])
        else:
            raise ModelLoadError(f"give one model (a .pth or an ONNX folder) or two files (encoder.onnx decoder.onnx),"
                                 f" not {len(path)}")
    path = os.fspath(path)
    if os.path.isdir(path):
        from onnx_inference import OnnxStegaStamp
        return OnnxStegaStamp(path, int8=int8)
    if path.endswith(".onnx"):
        raise ModelLoadError(f"{path}: an ONNX model: give its folder, or both files (encoder.onnx decoder.onnx)")
    try:
        from stegastamp_pytorch import StegaStamp
    except ImportError as e:
        raise ModelLoadError(f"{path}: a PyTorch checkpoint needs torch ({e}); without torch, use the ONNX export "
                             f"(export_onnx.py) and pass its folder") from None
    return StegaStamp.load(path, device, bf16)


def add_residual_full_res(cover: Image.Image, residual: np.ndarray):
    """Upsample a model-size residual (h, w, 3) (signed, in [0,1] units) onto a full-resolution PIL cover.
    -> (encoded PIL, residual PIL with 128 = no change), both at the cover's size.

    Done in 8-bit inside Pillow, so a 12-megapixel photo takes a fraction of a second rather than seconds of
    float32 numpy: the residual is stored as uint8 around 128 (exact after rounding, for |residual| <= 127/255,
    far beyond what a trained encoder produces), upsampled bilinearly (linear, so the offset survives), and
    ImageChops.add computes clip(cover + residual_up - 128) in one step with no intermediate clipping.
    """
    offset = np.clip(np.rint(residual * 255.0) + 128, 0, 255).astype(np.uint8)          # (h, w, 3)
    residual_up = Image.fromarray(offset, "RGB").resize(cover.size, Image.BILINEAR)     # (H, W) full resolution
    return ImageChops.add(cover, residual_up, scale=1.0, offset=-128), residual_up


def bit_string(bits) -> str:
    """0/1 values (or booleans) -> '0101...'."""
    return "".join("01"[int(b)] for b in bits)


class RawBits(str):
    """A secret given as raw bits ('0101...', the model's secret_size of them): hidden as is, no error correction
    (for users who bring their own code)."""


class Encoded(tuple):
    """(encoded PIL, residual PIL), as before, plus what the encoder knows about the result:
    .strength (the residual scale used) and .verified (None: not checked; True/False: the message read back from the
    encoded image, and with strength='auto' from every simulated copy, with the BCH margin)."""

    def __new__(cls, encoded, residual, strength, verified=None):
        self = super().__new__(cls, (encoded, residual))
        self.strength, self.verified = float(strength), verified
        return self


# --strength auto: the strengths tried, lowest first, and the simulated copies the message must survive.
AUTO_STRENGTHS = (0.5, 0.65, 0.8, 1.0, 1.25, 1.5, 2.0)
AUTO_CHECKS = ("clean", "jpeg50", "persp5%", "print_photo")
# With --optimize the refined residual is checked against two more of the listed distortions as well (10%
# perspective, brightness x1.3): with AUTO_CHECKS alone auto scaled it down until those failed (0.857 and 0.897 on
# the validation photos). Chosen on data/select (docs/encode_optimize/rule.md).
AUTO_CHECKS_OPTIMIZED = ("clean", "jpeg50", "persp10%", "bright1.3", "print_photo")
AUTO_MARGIN = 2          # a copy counts as read only with at most t - AUTO_MARGIN corrected bit errors (3 of 5)
AUTO_SIM_SIDE = 512      # copies are simulated at this long side: the decoder sees 128 px anyway

# --optimize N (our addition; PyTorch models only): after the encoder, each image's residual is refined for N Adam
# steps against the model's own decoder, which reads OPT_VIEWS random camera-like copies of the encoded image per step
# (utils_pytorch.random_views: corners moved by up to OPT_PERSP of the size, then the training noise layer at full
# strength with JPEG down to quality 50). The loss asks every bit of every view for a logit margin of OPT_MARGIN and
# costs the residual's energy (relative to the encoder's, weight OPT_ENERGY): the residual shrinks wherever the
# message is read with margin to spare and grows where a view fails. Constants chosen on training photos
# (data/select); README "Encode-time optimisation" has the measurements. OPT_ENERGY 0.4 since session 17, for the
# default model v11, whose encoder makes about 0.89x v7's residual energy (v7 used 0.5, v6 1.0: chosen for each by the
# rule of docs/encode_optimize/rule.md).
OPT_VIEWS = 8
OPT_PERSP = 0.1
OPT_MARGIN = 2.0
OPT_ENERGY = 0.4
OPT_LR = 2e-3

# Decoding views (our addition; decode_batch(..., tta=False) and the scripts' --no_tta read the whole image only, as
# the original): when the whole image gives no BCH-verified message, it is read again cropped by 5% of each side,
# padded by 3% (its edge pixels repeated), cropped by 10% and padded by 6%, and the first view that reads wins. A
# photo cropped or framed a little differently from the encoded image then still lines up with what the decoder was
# trained on. Chosen on training photos (data/select); README "Default model" has the effect and the false positives.
DECODE_VIEWS = (0.05, -0.03, 0.10, -0.06)   # > 0: crop that share of each side; < 0: pad each side by it


def decode_view(img: Image.Image, frac: float) -> Image.Image:
    """The image cropped by `frac` of its width/height on each side (frac > 0), or padded by -frac with its edge
    pixels repeated (frac < 0)."""
    W, H = img.size
    dx, dy = int(W * abs(frac) + 0.5), int(H * abs(frac) + 0.5)     # as web/stegastamp.js: Math.round
    if frac > 0:
        return img.crop((dx, dy, W - dx, H - dy))
    return Image.fromarray(np.pad(np.asarray(img), ((dy, dy), (dx, dx), (0, 0)), mode="edge"))


def sim_size(img: Image.Image) -> Image.Image:
    """The image scaled down to AUTO_SIM_SIDE on its long side (unchanged when already smaller)."""
    if max(img.size) <= AUTO_SIM_SIDE:
        return img
    k = AUTO_SIM_SIDE / max(img.size)
    return img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.BILINEAR)


class StegaStampRunner(ABC):
    """Everything around the networks: secret codec, resizing, full-resolution composition, bit decoding.

    Subclasses (StegaStamp in stegastamp_pytorch.py, OnnxStegaStamp in onnx_inference.py) implement two calls on
    numpy batches: run_encoder(secrets (B, L), images (B, 3, h, w) in [0,1]) -> residuals (B, 3, h, w) and
    run_decoder(images (B, 3, h, w) in [0,1]) -> logits (B, L). Both paths thus produce the same images and messages.

    Encoding keeps the input's full resolution by default: the model sees the whole image resized to its size (h, w),
    and its residual is upsampled back onto the untouched full-resolution cover (the TrustMark approach), so a
    4000x3000 photo stays 4000x3000 and sharp. fit=True reproduces the original: centre crop and resize to (h, w).
    Decoding resizes the whole image to (h, w), which undoes the full-resolution encoding's stretch.
    """

    def __init__(self, config: dict):
        self.config = dict(config)
        self.size = (int(config["height"]), int(config["width"]))
        self.codec = SecretCodec.from_config(config)

    @abstractmethod
    def run_encoder(self, secrets: np.ndarray, images: np.ndarray) -> np.ndarray:
        """secrets (B, L) in {0,1}, images (B, 3, h, w) in [0,1] -> residuals (B, 3, h, w), float32."""

    @abstractmethod
    def run_decoder(self, images: np.ndarray) -> np.ndarray:
        """images (B, 3, h, w) in [0,1] -> logits (B, L), float32."""

    def model_input(self, img: Image.Image) -> np.ndarray:
        """PIL RGB at any size -> float32 (h, w, 3) in [0,1] at the model size (whole image, aspect not kept)."""
        h, w = self.size
        return image_to_array(img if img.size == (w, h) else img.resize((w, h), Image.BICUBIC))

    def secret_bits(self, secret) -> np.ndarray:
        """A text (through the model's code) or raw bits ('0101...' as RawBits, or a 0/1 array) -> (L,) float32."""
        if isinstance(secret, str) and not isinstance(secret, RawBits):
            return self.codec.encode(secret)
        bits = np.array([int(c) for c in secret] if isinstance(secret, str) else secret, dtype=np.float32)
        if bits.shape != (self.codec.secret_size,) or not np.isin(bits, (0, 1)).all():
            raise SecretError(f"raw bits: need exactly {self.codec.secret_size} zeros and ones, got {bits.size} "
                             f"values")
        return bits

    def _compose(self, cover, x, r, strength):
        """cover PIL, its model-size array x (h, w, 3), residual r (h, w, 3) -> (encoded PIL, residual PIL)."""
        if cover.size != (self.size[1], self.size[0]):
            return add_residual_full_res(cover, r * strength)                        # (H, W) full resolution
        return array_to_image(x + r * strength), array_to_image(r * strength + 0.5)   # grey = no change

    can_optimize = False   # StegaStamp (PyTorch) has optimize_residual; ONNX Runtime computes no gradients

    def check_optimize(self, optimize):
        """Raise ModelLoadError now (before any work) when this model cannot run optimize > 0 steps."""
        if optimize and not self.can_optimize:
            raise ModelLoadError("--optimize needs a PyTorch checkpoint (.pth): it follows the decoder's gradients, "
                                 "which ONNX Runtime does not compute")

    def encode_batch(self, images, secrets, strength=1.0, fit=False, verify=False, optimize=0):
        """Lists of PIL images and texts -> list of Encoded (encoded PIL, residual PIL; .strength, .verified), each
        at the cover's size. The residual image is strength * residual + 0.5 (grey = no change), like the
        original's residual PNG.

        strength='auto': per image, the lowest of AUTO_STRENGTHS at which the message reads back (with a BCH margin)
        from the encoded image and from simulated copies of it (AUTO_CHECKS: JPEG 50, 5% perspective, the
        print-and-photograph simulation; with optimize AUTO_CHECKS_OPTIMIZED: 10% perspective in place of 5%, and
        brightness x1.3); the highest when none passes (.verified False). verify=True decodes the
        encoded image once and sets .verified. optimize=N: refine each residual for N steps first (OPT_* above;
        PyTorch models only); the strength then scales the refined residual."""
        bits = np.stack([self.secret_bits(s) for s in secrets])                      # (B, L); raises on long text
        covers = [fit_image(im, self.size) if fit else im for im in images]
        x = np.stack([self.model_input(c) for c in covers])                          # (B, h, w, 3)
        self.check_optimize(optimize)
        r = self.run_encoder(bits, x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)   # (B, h, w, 3), unbounded
        if optimize:
            r = np.stack([self.optimize_residual(c, xi, ri, b, optimize) for c, xi, ri, b in zip(covers, x, r, bits)])
        if strength == "auto":
            checks = AUTO_CHECKS_OPTIMIZED if optimize else AUTO_CHECKS
            return [self._encode_auto(c, xi, ri, s, checks) for c, xi, ri, s in zip(covers, x, r, secrets)]
        out = [Encoded(*self._compose(c, xi, ri, float(strength)), strength) for c, xi, ri in zip(covers, x, r)]
        if verify:
            for e, s, res in zip(out, secrets, self.decode_batch([e[0] for e in out])):
                e.verified = self._matches(res, s)
        return out

    def _matches(self, res, secret, margin=0):
        """Did a decode read `secret` back? Text: the BCH-verified message, with at most t - margin corrections.
        Raw bits: every bit (no code to correct them)."""
        if isinstance(secret, str) and not isinstance(secret, RawBits):
            return res.message == secret and res.corrected_bits <= self.codec.t - margin
        return res.bits == bit_string(self.secret_bits(secret))

    def _reads_back(self, encoded, secret, checks, seed=0):
        """Does `secret` read back, within the BCH margin, from every simulated copy of `encoded`?"""
        from distortions import DISTORTIONS   # numpy + Pillow only
        small = sim_size(encoded)
        copies = [DISTORTIONS[c](small, np.random.default_rng(seed + i)) for i, c in enumerate(checks)]
        # read as the decode scripts read (with the decoding views): on data/select this chose lower strengths (+0.3 dB)
        # and read more messages than reading the copies whole did
        return all(self._matches(res, secret, AUTO_MARGIN) for res in self.decode_batch(copies))

    def _encode_auto(self, cover, x, r, secret, checks=AUTO_CHECKS):
        """Try each strength on the cover scaled to the simulation size (cheap however large the photo), then
        compose the chosen strength once at full resolution."""
        small = sim_size(cover)
        for strength in AUTO_STRENGTHS:
            if self._reads_back(self._compose(small, x, r, strength)[0], secret, checks):
                return Encoded(*self._compose(cover, x, r, strength), strength, True)
        return Encoded(*self._compose(cover, x, r, strength), strength, False)

    def encode(self, image: Image.Image, secret: str, strength=1.0, fit: bool = False, verify: bool = False,
               optimize: int = 0):
        """One PIL image + text -> Encoded (encoded PIL, residual PIL; .strength, .verified). strength: a number
        or 'auto'; optimize: refinement steps (see encode_batch)."""
        return self.encode_batch([image], [secret], strength, fit, verify, optimize)[0]

    def decode_logits(self, images) -> np.ndarray:
        """List of PIL images (any sizes) -> decoder logits (B, L) float64, in one network call; bits = logits > 0."""
        x = np.stack([self.model_input(im) for im in images]).transpose(0, 3, 1, 2)  # (B, 3, h, w)
        return np.asarray(self.run_decoder(x), dtype=np.float64)

    def read_logits(self, logits) -> list:
        """Decoder logits (B, L) -> list of DecodeResult (BCH-verified message or None, corrected bits, confidence)."""
        prob = 0.5 * (1 + np.tanh(np.asarray(logits, np.float64) / 2))           # sigmoid, no overflow
        results = []
        for p in prob:
            res = self.codec.decode((p > 0.5).astype(np.float32))
            results.append(DecodeResult(res.message, res.corrected_bits, res.reason,
                                        float(np.mean(np.abs(2 * p - 1))), bit_string(p > 0.5)))
        return results

    def retry_views(self, images, results) -> list:
        """The images whose result holds no message, read again through DECODE_VIEWS (one batched call); the first
        view that reads replaces the result. Only BCH-verified views count, so raw bits for a code of the user's own
        are those of the whole image (decode them with tta=False to be sure no view is ever taken)."""
        retry = [i for i, r in enumerate(results) if not r.ok]
        if not retry:
            return results
        views = self.read_logits(self.decode_logits([decode_view(images[i], f) for i in retry for f in DECODE_VIEWS]))
        results, k = list(results), len(DECODE_VIEWS)
        for n, i in enumerate(retry):
            results[i] = next((r for r in views[n * k:(n + 1) * k] if r.ok), results[i])
        return results

    def decode_batch(self, images, tta=True):
        """List of PIL images -> list of DecodeResult (message or None, corrected bits, confidence, bits). tta: an
        image that gives no message whole is also read through DECODE_VIEWS (tta=False: the whole image only)."""
        results = self.read_logits(self.decode_logits(images))
        return self.retry_views(images, results) if tta else results

    def decode(self, image: Image.Image, tta=True) -> DecodeResult:
        return self.decode_batch([image], tta)[0]
