"""Secret codec (text <-> BCH-protected bits) and image I/O, shared by the PyTorch and ONNX paths.

This module must stay importable without torch: `onnx_inference.py` runs where only numpy, Pillow, onnxruntime and
bchlib are installed. Everything here works on numpy arrays and PIL images.

    codec = SecretCodec()                      # the original layout: 7 data bytes + BCH(t=5, poly 137) + 4 pad bits
    bits = codec.encode("Hello!")              # float32 (100,) in {0,1}
    result = codec.decode(bits)                # DecodeResult(message='Hello!', corrected_bits=0)
    img = load_image("photo.jpg")              # PIL RGB, EXIF orientation applied
    x = image_to_array(fit_image(img, (400, 400)))   # float32 (400, 400, 3) in [0,1]
"""
import argparse
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

# Extensions picked up by list_images and the training dataset (lower case, compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


#################################################################################
#                                 Secret codec                                  #
#################################################################################

# Named message codes: name -> (secret_size, data_bytes, bch_t, bch_prim_poly). Chosen once at training time
# (train_pytorch.py --code) and carried in the checkpoint and the ONNX metadata. BCH over GF(2^m) protects at most
# n = 2^m - 1 bits (data + ECC); what is left of secret_size is zero pad bits, a further check on decoding.
CODES = {
    "bch_100": (100, 7, 5, 137),          # the original: 7 bytes, 5 correctable bit errors, GF(2^7)
    "bch_100_robust": (100, 5, 8, 137),   # 5 bytes, 8 errors: for harsh channels (print, phone camera)
    "bch_100_long": (100, 9, 3, 137),     # 9 bytes, 3 errors: longer text on clean channels
    "bch_256": (256, 23, 8, 285),         # 256-bit model: 23 bytes, 8 errors, GF(2^8)
    "bch_256_robust": (256, 20, 12, 285),  # 256-bit model: 20 bytes, 12 errors
}


@dataclass(frozen=True)
class DecodeResult:
    """What a decoded bit vector says. `message` is None when no BCH-verified message was found."""
    message: Optional[str]
    corrected_bits: Optional[int] = None   # bit errors BCH located and fixed (data + ECC), None on failure
    reason: str = ""                       # why decoding failed, empty on success
    confidence: Optional[float] = None     # mean |2p - 1| over the bits (1 = every bit certain), set by a model
    bits: Optional[str] = None             # the raw hard bits read ('0101...'), set by a model

    @property
    def ok(self) -> bool:
        return self.message is not None


class SecretCodec:
    """Packs a short UTF-8 text into `secret_size` bits with BCH error correction (port of encode/decode_image.py).

    Layout (SPEC §1.12), computed from the code, not hard-coded:
        [data_bytes * 8 data bits | ecc_bytes * 8 ECC bits | zero pad bits up to secret_size], MSB first per byte.
    With the defaults: 56 + 40 + 4 = 100 bits; BCH over GF(2^7) (prim_poly 137 = x^7+x^3+1) corrects up to t=5 flips
    among the 56 data + 35 ECC bits it uses (the last 5 bits of the ECC bytes are unused).
    """

    def __init__(self, secret_size: int = 100, data_bytes: int = 7, bch_t: int = 5, bch_prim_poly: int = 137):
        import bchlib  # imported here so that importing codec_io (e.g. for image I/O) never needs the C extension
        # bchlib >= 1.0 takes (t, prim_poly); the pre-1.0 BCH(137, 5) order raises "invalid parameters".
        self.bch = bchlib.BCH(t=bch_t, prim_poly=bch_prim_poly)
        self.secret_size, self.data_bytes, self.t = secret_size, data_bytes, bch_t
        self.ecc_bytes = self.bch.ecc_bytes
        self.packet_bits = 8 * (data_bytes + self.ecc_bytes)
        # BCH reads only the first ecc_bits of the ECC bytes (35 of 40 by default); the rest of the last ECC byte is
        # ignored on decode, so a flip there is harmless and not counted in corrected_bits.
        self.code_bits = 8 * data_bytes + self.bch.ecc_bits
        if self.packet_bits > secret_size:
            raise ValueError(f"{data_bytes} data bytes + {self.ecc_bytes} ECC bytes = {self.packet_bits} bits "
                             f"do not fit in secret_size={secret_size}")
        # The data and ECC bits must fit in one BCH codeword of n = 2^m - 1 bits.
        if 8 * data_bytes + self.bch.ecc_bits > self.bch.n:
            raise ValueError(f"{data_bytes} data bytes exceed the BCH code length n={self.bch.n}")

    @classmethod
    def from_config(cls, cfg) -> "SecretCodec":
        """Build from a ModelConfig (or any object / dict with the same field names)."""
        get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
        return cls(get("secret_size"), get("data_bytes"), get("bch_t"), get("bch_prim_poly"))

    def encode(self, text: str) -> np.ndarray:
        """Text (at most `data_bytes` bytes of UTF-8) -> float32 (secret_size,) in {0,1}."""
        data = text.encode("utf-8")
        if not data:
            raise ValueError(f"the secret is empty: give 1 to {self.data_bytes} characters (UTF-8 bytes)")
        if len(data) > self.data_bytes:
            raise ValueError(f"secret {text!r} is {len(data)} bytes in UTF-8; at most {self.data_bytes} fit "
                             f"(one byte per ASCII character, more for others)")
        # Pad with spaces as the original does; decode strips them again.
        data = bytearray(data + b" " * (self.data_bytes - len(data)))
        if not any(data):
            raise ValueError("an all-NUL secret is reserved: it is what a blank image decodes to")
        ecc = self.bch.encode(data)
        packet = np.frombuffer(bytes(data + ecc), dtype=np.uint8)
        bits = np.unpackbits(packet)  # (packet_bits,), MSB first per byte like format(x, '08b')
        out = np.zeros(self.secret_size, dtype=np.float32)
        out[: self.packet_bits] = bits
        return out

    def decode(self, bits: Sequence[float]) -> DecodeResult:
        """Bits (secret_size,) in {0,1} (or probabilities, thresholded at 0.5) -> DecodeResult.

        A message is returned only if BCH located at most t errors, the corrected data re-encodes to a codeword within
        t flips of the received bits, it is valid UTF-8 and not all zero (all-zero bits are what a black or flat image
        gives), and the pad bits are all zero (the check detector.py does).
        Trailing pad spaces are stripped.
        """
        bits = np.asarray(bits, dtype=np.float32).reshape(-1)
        if bits.size != self.secret_size:
            raise ValueError(f"expected {self.secret_size} bits, got {bits.size}")
        hard = (bits > 0.5).astype(np.uint8)
        if hard[self.packet_bits:].any():
            return DecodeResult(None, reason="pad bits are not zero")
        packet = bytearray(np.packbits(hard[: self.packet_bits]).tobytes())
        data, ecc = packet[: self.data_bytes], packet[self.data_bytes:]
        try:
            nerr = self.bch.decode(data, ecc)
        except ValueError as e:  # bchlib raises on some inputs it cannot handle (bchlib issue #40)
            return DecodeResult(None, reason=f"BCH error: {e}")
        if nerr < 0:
            return DecodeResult(None, reason="too many bit errors for BCH")
        # bchlib >= 1.0: decode() only locates the errors; correct() applies them in place.
        self.bch.correct(data, ecc)
        # Verify: the corrected data must re-encode to the corrected ECC, within t flips of what was received. bchlib
        # can report success on inputs beyond t and return a non-codeword (seen in tests with 6-10 flips).
        fixed = np.unpackbits(np.frombuffer(bytes(data + self.bch.encode(data)), dtype=np.uint8))
        distance = int(np.sum(fixed[: self.code_bits] != hard[: self.code_bits]))
        if distance > self.t:
            return DecodeResult(None, reason="BCH correction did not yield a codeword within t flips")
        if not any(data):   # all-zero data (and ECC) is the codeword a black or flat image reads as: not a message
            return DecodeResult(None, reason="all-zero data: a blank image, not a message")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return DecodeResult(None, reason="corrected data is not UTF-8")
        return DecodeResult(text.rstrip(" "), corrected_bits=distance)


#################################################################################
#                                   Image I/O                                   #
#################################################################################

class ImageLoadError(ValueError):
    """An input file is missing, not an image, or corrupt. The message is one line naming the file."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Alpha is composited onto white (what a viewer shows on paper)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale the 16-bit range to 8 bits (Pillow's own convert('L') would clip at 255).
        arr = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = arr * 255.0 if arr.size and arr.max() <= 1.0 else arr  # float images are usually [0,1]
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")  # handles L, 1, P, CMYK, YCbCr, LAB, HSV


def load_image(path, draft=None) -> Image.Image:
    """Read any image file -> PIL RGB (8 bit), EXIF orientation applied. Raises ImageLoadError with one line.
    draft=(w, h): a JPEG may be decoded at 1/2, 1/4 or 1/8 scale, never below that size (Pillow's draft mode)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageLoadError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ImageLoadError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as img:
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", tuple(draft))
            img.load()  # decode now so truncated files fail here, not later
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as e:  # Pillow's guard against huge images: that file's error, not a crash
        raise ImageLoadError(f"{path}: refused by Pillow's decompression-bomb guard ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data
        raise ImageLoadError(f"{path}: corrupt image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def fit_image(img: Image.Image, size) -> Image.Image:
    """Centre-crop to the aspect ratio of size=(height, width), then resize (the original's ImageOps.fit, BICUBIC)."""
    height, width = size
    return ImageOps.fit(img, (width, height), method=Image.BICUBIC)


def image_to_array(img: Image.Image) -> np.ndarray:
    """PIL RGB -> float32 (H, W, 3) in [0,1]."""
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def array_to_image(arr: np.ndarray) -> Image.Image:
    """float (H, W, 3) in [0,1] -> PIL RGB. Rounds to nearest (the original truncated with astype(uint8))."""
    out = np.array(arr, dtype=np.float32) * 255.0      # a float32 copy; in-place ops below (12-megapixel inputs)
    np.clip(out, 0, 255, out=out)
    np.rint(out, out=out)
    return Image.fromarray(out.astype(np.uint8), "RGB")


def atomic_write(path, write, suffix="") -> None:
    """write(tmp_path) into a temp file in the destination folder, then os.replace onto `path`: a crash never
    leaves a truncated file under `path`. The file gets the usual permissions (umask), not mkstemp's 0600."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write, os.path.splitext(os.fspath(path))[1])


def save_image(img, path, **save_kwargs) -> None:
    """Write a PIL image or a float (H, W, 3) array in [0,1] atomically (atomic_write). The format follows the
    extension."""
    if isinstance(img, np.ndarray):
        img = array_to_image(img)
    path = os.fspath(path)
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image extension")
    atomic_write(path, lambda tmp: img.save(tmp, format=fmt, **save_kwargs), os.path.splitext(path)[1])


def list_images(folder, recursive: bool = True) -> list:
    """Sorted paths of the files under `folder` whose extension is in IMAGE_EXTENSIONS (hidden files skipped)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ImageLoadError(f"{folder}: no such directory")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found += [os.path.join(root, f) for f in files
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return sorted(found)


#################################################################################
#          Encode / decode pipeline, shared by the PyTorch and ONNX paths        #
#################################################################################

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
AUTO_MARGIN = 2          # a copy counts as read only with at most t - AUTO_MARGIN corrected bit errors (3 of 5)
AUTO_SIM_SIDE = 512      # copies are simulated at this long side: the decoder sees 128 px anyway


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
            raise ValueError(f"raw bits: need exactly {self.codec.secret_size} zeros and ones, got {bits.size} "
                             f"values")
        return bits

    def _compose(self, cover, x, r, strength):
        """cover PIL, its model-size array x (h, w, 3), residual r (h, w, 3) -> (encoded PIL, residual PIL)."""
        if cover.size != (self.size[1], self.size[0]):
            return add_residual_full_res(cover, r * strength)                        # (H, W) full resolution
        return array_to_image(x + r * strength), array_to_image(r * strength + 0.5)   # grey = no change

    def encode_batch(self, images, secrets, strength=1.0, fit=False, verify=False):
        """Lists of PIL images and texts -> list of Encoded (encoded PIL, residual PIL; .strength, .verified), each
        at the cover's size. The residual image is strength * residual + 0.5 (grey = no change), like the
        original's residual PNG.

        strength='auto': per image, the lowest of AUTO_STRENGTHS at which the message reads back (with a BCH margin)
        from the encoded image and from simulated copies of it (AUTO_CHECKS: JPEG 50, 5% perspective, the
        print-and-photograph simulation); the highest when none passes (.verified False). verify=True decodes the
        encoded image once and sets .verified."""
        bits = np.stack([self.secret_bits(s) for s in secrets])                      # (B, L); raises on long text
        covers = [fit_image(im, self.size) if fit else im for im in images]
        x = np.stack([self.model_input(c) for c in covers])                          # (B, h, w, 3)
        r = self.run_encoder(bits, x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)   # (B, h, w, 3), unbounded
        if strength == "auto":
            return [self._encode_auto(c, xi, ri, s) for c, xi, ri, s in zip(covers, x, r, secrets)]
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
        return res.bits == "".join("01"[int(b)] for b in self.secret_bits(secret))

    def _reads_back(self, encoded, secret, checks, seed=0):
        """Does `secret` read back, within the BCH margin, from every simulated copy of `encoded`?"""
        from distortions import DISTORTIONS   # numpy + Pillow only
        small = encoded
        if max(encoded.size) > AUTO_SIM_SIDE:
            k = AUTO_SIM_SIDE / max(encoded.size)
            small = encoded.resize((max(1, round(encoded.width * k)), max(1, round(encoded.height * k))),
                                   Image.BILINEAR)
        copies = [DISTORTIONS[c](small, np.random.default_rng(seed + i)) for i, c in enumerate(checks)]
        return all(self._matches(res, secret, AUTO_MARGIN) for res in self.decode_batch(copies))

    def _encode_auto(self, cover, x, r, secret):
        for strength in AUTO_STRENGTHS:
            encoded, residual = self._compose(cover, x, r, strength)
            if self._reads_back(encoded, secret, AUTO_CHECKS):
                return Encoded(encoded, residual, strength, True)
        return Encoded(encoded, residual, strength, False)

    def encode(self, image: Image.Image, secret: str, strength=1.0, fit: bool = False, verify: bool = False):
        """One PIL image + text -> Encoded (encoded PIL, residual PIL; .strength, .verified). strength: a number
        or 'auto' (see encode_batch)."""
        return self.encode_batch([image], [secret], strength, fit, verify)[0]

    def decode_logits(self, images) -> np.ndarray:
        """List of PIL images (any sizes) -> decoder logits (B, L) float64, in one network call; bits = logits > 0."""
        x = np.stack([self.model_input(im) for im in images]).transpose(0, 3, 1, 2)  # (B, 3, h, w)
        return np.asarray(self.run_decoder(x), dtype=np.float64)

    def decode_batch(self, images):
        """List of PIL images -> list of DecodeResult (message or None, corrected bits, confidence)."""
        logits = self.decode_logits(images)                                          # (B, L)
        prob = 0.5 * (1 + np.tanh(logits / 2))                                      # sigmoid, no overflow
        results = []
        for p in prob:
            res = self.codec.decode((p > 0.5).astype(np.float32))
            results.append(DecodeResult(res.message, res.corrected_bits, res.reason,
                                        float(np.mean(np.abs(2 * p - 1))), "".join("01"[int(b)] for b in p > 0.5)))
        return results

    def decode(self, image: Image.Image) -> DecodeResult:
        return self.decode_batch([image])[0]


#################################################################################
#                 Command-line front end (encode / decode scripts)              #
#################################################################################

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
                        help="text to hide: 1 to 7 UTF-8 bytes; trailing spaces are dropped on decoding (the "
                             "original pads short secrets with spaces)")
    parser.add_argument("--bits", default=None,
                        help="hide these raw bits instead of --secret: a string of the model's secret_size 0/1 "
                             "characters, no error correction (bring your own code); decode with --json to read them")
    parser.add_argument("--strength", type=strength_arg, default=1.0,
                        help="scales the residual (1 = as trained), or 'auto': per image the lowest strength at "
                             "which the message survives simulated JPEG 50, 5%% perspective and print-and-photograph "
                             "copies (slower: a few decoder calls per image)")
    parser.add_argument("--verify", action="store_true",
                        help="decode each encoded image and report whether the message reads back (always on with "
                             "--strength auto)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a message does not read back")
    parser.add_argument("--fit", action="store_true",
                        help="original behaviour: centre-crop and resize to the model size (default: keep the "
                             "input's full resolution)")


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


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


def _progress(total, disable):
    import sys
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or disable or total < 2 or not sys.stderr.isatty():
        return None
    return tqdm(total=total, unit="img")


MIN_SIDE = 16   # smaller images hold too few pixels to carry (or read) a message: refused with this minimum


def check_size(img, path):
    """Raise ImageLoadError when an image is too small to encode or decode."""
    if min(img.size) < MIN_SIDE:
        raise ImageLoadError(f"{path}: {img.size[0]}x{img.size[1]} is too small (at least {MIN_SIDE} px on each "
                             f"side; the models work at 128 px and up)")
    return img


def _batches(paths, batch_size, failures, bar):
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


def _report(failures, n, what, err, skipped=(), counts=""):
    for _, msg in failures:
        print(f"error: {msg}", file=err)
    if n > 1 or failures or skipped:
        print(f"{what} {n - len(failures)} of {n} images" + counts + (f", {len(failures)} failed" if failures else "")
              + (f" ({len(skipped)} outputs of this tool skipped)" if skipped else ""), file=err)
    return 1 if failures else 0


def _unmarked(runner, batch):
    """Split a batch of (path, PIL) into those without a readable message and (path, DecodeResult) of the others."""
    results = runner.decode_batch([im for _, im in batch])
    return ([b for b, r in zip(batch, results) if not r.ok],
            [(b[0], r) for b, r in zip(batch, results) if r.ok])


def run_encode_cli(runner: StegaStampRunner, args) -> int:
    """Encode every input, write <stem>_hidden.png / <stem>_residual.png atomically; report failures; exit code."""
    import sys
    secret = RawBits(args.bits) if getattr(args, "bits", None) else args.secret
    runner.secret_bits(secret)  # a secret that does not fit fails before any work
    if getattr(args, "output", None) and not args.image:
        raise ValueError("--output names one file: use it with --image (with --images_dir, use --save_dir)")
    paths, skipped = input_paths(args, OUTPUT_SUFFIXES)
    for p in skipped:
        print(f"{p}: skipped (an output of this tool; rename it to encode it)", file=sys.stderr)
    inputs = {os.path.realpath(p) for p in paths}
    failures, unverified, bar = [], [], _progress(len(paths), args.no_progress)
    verify = getattr(args, "verify", False)
    pending = []
    for path in paths:   # cheap checks first: nothing is encoded that could not be written
        outs = output_paths(path, args)
        if any(os.path.realpath(o) in inputs for o in outs):
            failures.append((path, f"{path}: refusing to overwrite an input file with {outs[0]}"))
        elif not getattr(args, "overwrite", False) and any(os.path.exists(o) for o in outs):
            failures.append((path, f"{outs[0]} exists (pass --overwrite to replace it)"))
        else:
            pending.append(path)
    if bar is not None:
        bar.update(len(paths) - len(pending))
    for batch in _batches(pending, args.batch_size, failures, bar):
        if not getattr(args, "force", False):   # an image that already carries a message is not stamped twice
            batch, marked = _unmarked(runner, batch)
            for path, res in marked:
                failures.append((path, f"{path}: already carries the message {res.message!r} "
                                       f"(pass --force to stamp it again)"))
            if not batch:
                continue
        results = runner.encode_batch([im for _, im in batch], [secret] * len(batch), args.strength, args.fit,
                                      verify)
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
    code = _report(failures, len(paths), "encoded", sys.stderr, skipped)
    if unverified:
        print(f"warning: {len(unverified)} of {len(paths)} encoded images do not read back reliably "
              f"(try a higher --strength)", file=sys.stderr)
        if getattr(args, "strict", False):
            code = max(code, 1)
    return code


def run_decode_cli(runner: StegaStampRunner, args) -> int:
    """Decode every input; print `path: 'msg' (corrected N bit errors)` / `path: no message found`, or JSON."""
    import json
    import sys
    paths, skipped = input_paths(args, () if getattr(args, "include_residuals", False) else ("_residual.png",))
    failures, rows, bar = [], [], _progress(len(paths), args.no_progress or args.json)
    for batch in _batches(paths, args.batch_size, failures, bar):
        for (path, _), res in zip(batch, runner.decode_batch([im for _, im in batch])):
            # confidence describes a message; with none found there is nothing to be confident about
            rows.append({"file": path, "message": res.message, "corrected_bits": res.corrected_bits,
                         "confidence": round(res.confidence, 4) if res.ok else None, "bits": res.bits})
            if not args.json:
                text = (f"{path}: {res.message!r} (corrected {res.corrected_bits} bit errors)" if res.ok
                        else f"{path}: no message found")
                (bar.write if bar is not None else print)(text)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    found = sum(r["message"] is not None for r in rows)
    counts = f": {found} with a message, {len(rows) - found} without"   # the unreadable ones are 'failed'
    if args.json:
        rows += [{"file": p, "message": None, "error": msg} for p, msg in failures]
        print(json.dumps(rows, indent=1, ensure_ascii=False))
    return _report(failures, len(paths), "decoded", sys.stderr, skipped, counts)
