"""Image I/O (no torch): any image file -> 8-bit RGB, atomic writes, folder listing, the size check.

    img = load_image("photo.jpg")              # PIL RGB, EXIF orientation applied; ImageLoadError with one line
    x = image_to_array(fit_image(img, (400, 400)))   # float32 (400, 400, 3) in [0,1]
    save_image(img, "out/photo.png")           # written atomically (temp file + rename)
"""
import os
import tempfile

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Extensions picked up by list_images and the training dataset (lower case, compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


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


MIN_SIDE = 16   # smaller images hold too few pixels to carry (or read) a message: refused with this minimum


def check_size(img, path):
    """Raise ImageLoadError when an image is too small to encode or decode."""
    if min(img.size) < MIN_SIDE:
        raise ImageLoadError(f"{path}: {img.size[0]}x{img.size[1]} is too small (at least {MIN_SIDE} px on each "
                             f"side; the models work at 128 px and up)")
    return img
