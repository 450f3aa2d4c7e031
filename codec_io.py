"""Secret codec (text <-> BCH-protected bits) and image I/O, shared by the PyTorch and ONNX paths.

This module must stay importable without torch: `onnx_inference.py` runs where only numpy, Pillow, onnxruntime and
bchlib are installed. Everything here works on numpy arrays and PIL images.

    codec = SecretCodec()                      # the original layout: 7 data bytes + BCH(t=5, poly 137) + 4 pad bits
    bits = codec.encode("Hello!")              # float32 (100,) in {0,1}
    result = codec.decode(bits)                # DecodeResult(message='Hello!', corrected_bits=0)
    img = load_image("photo.jpg")              # PIL RGB, EXIF orientation applied
    x = image_to_array(fit_image(img, (400, 400)))   # float32 (400, 400, 3) in [0,1]
"""
import os
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Extensions picked up by list_images and the training dataset (lower case, compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


#################################################################################
#                                 Secret codec                                  #
#################################################################################

@dataclass(frozen=True)
class DecodeResult:
    """What a decoded bit vector says. `message` is None when no BCH-verified message was found."""
    message: Optional[str]
    corrected_bits: Optional[int] = None   # bit errors BCH located and fixed (data + ECC), None on failure
    reason: str = ""                       # why decoding failed, empty on success

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
        if len(data) > self.data_bytes:
            raise ValueError(f"secret {text!r} is {len(data)} bytes in UTF-8; at most {self.data_bytes} fit "
                             f"(one byte per ASCII character, more for others)")
        # Pad with spaces as the original does; decode strips them again.
        data = bytearray(data + b" " * (self.data_bytes - len(data)))
        ecc = self.bch.encode(data)
        packet = np.frombuffer(bytes(data + ecc), dtype=np.uint8)
        bits = np.unpackbits(packet)  # (packet_bits,), MSB first per byte like format(x, '08b')
        out = np.zeros(self.secret_size, dtype=np.float32)
        out[: self.packet_bits] = bits
        return out

    def decode(self, bits: Sequence[float]) -> DecodeResult:
        """Bits (secret_size,) in {0,1} (or probabilities, thresholded at 0.5) -> DecodeResult.

        A message is returned only if BCH located at most t errors, the corrected data re-encodes to a codeword within
        t flips of the received bits, it is valid UTF-8, and the pad bits are all zero (the check detector.py does).
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


def load_image(path) -> Image.Image:
    """Read any image file -> PIL RGB (8 bit), EXIF orientation applied. Raises ImageLoadError with one line."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageLoadError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ImageLoadError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as img:
            img.load()  # decode now so truncated files fail here, not later
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file (or a format Pillow cannot read)") from None
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
    arr = np.clip(np.rint(np.asarray(arr, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def save_image(img, path, **save_kwargs) -> None:
    """Write a PIL image or a float (H, W, 3) array in [0,1] atomically: a temp file in the same folder, then rename.

    A crash mid-write never leaves a truncated file under `path`. The format follows the extension.
    """
    if isinstance(img, np.ndarray):
        img = array_to_image(img)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image extension")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format=fmt, **save_kwargs)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
