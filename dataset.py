"""Training data: images from a folder tree, or natural photos that ship inside installed packages (no download).

Both yield (image (3, H, W) float32 in [0,1], secret (L,) float32 in {0,1}), with fresh Bernoulli(0.5) bits each
time an item is read (the original draws a new random secret per sample). An item can be asked for as `ds[idx]`
(randomness from torch's global RNG) or as `ds[(idx, seed)]` (randomness from that seed alone), which makes training
data independent of DataLoader workers and exactly reproducible on resume (SeededSampler below makes the keys).

    ds = ImageFolderDataset("data/mirflickr", size=(400, 400), secret_size=100)
    ds = BuiltinPhotosDataset(size=(128, 128), secret_size=100, split="train", length=1000)
"""
import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from image_io import ImageLoadError, fit_image, image_to_array, list_images, load_image


def random_secret(secret_size: int, generator=None) -> torch.Tensor:
    """(L,) float32 Bernoulli(0.5) bits."""
    return torch.randint(0, 2, (secret_size,), generator=generator).float()


def split_key(key):
    """ds[idx] or ds[(idx, seed)] -> (idx, torch.Generator or None)."""
    if isinstance(key, (tuple, list)):
        idx, seed = key
        return int(idx), torch.Generator().manual_seed(int(seed))
    return int(key), None


def to_chw(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 in [0,1]."""
    return torch.from_numpy(image_to_array(img)).permute(2, 0, 1).contiguous()


class SeededSampler(Sampler):
    """Infinite stream of (index, seed) keys, a pure function of (seed, rank, item number).

    Samples with replacement like the original. Because every item's randomness (which image, crop, secret bits)
    comes from its own seed, the stream does not depend on DataLoader workers, and resuming at step s only needs
    start = s * batch_size: the resumed run sees exactly the data of an uninterrupted one.
    """

    def __init__(self, n, seed, rank=0, start=0):
        self.n, self.seed, self.rank, self.start = n, seed, rank, start

    def __iter__(self):
        k = self.start
        while True:
            item_seed = (self.seed * 1_000_003 + self.rank) * 1_000_000_007 + k
            g = torch.Generator().manual_seed(item_seed % (2 ** 63))
            yield int(torch.randint(self.n, (1,), generator=g)), int(torch.randint(2 ** 62, (1,), generator=g))
            k += 1


def random_crop(img: Image.Image, size, min_scale, gen=None, max_scale=1.0) -> Image.Image:
    """A random crop with the aspect of `size` (h, w), its side a U(min_scale, max_scale) share of the largest such
    crop, flipped left-right with p=0.5, resized to `size`. Zooms in (small crops, ~1:1 pixels) and out (the whole
    photo scaled down), so a few hundred photos give many thousands of distinct training images."""
    W, H = img.size
    h, w = size
    scale = float(torch.rand((), generator=gen)) * (max_scale - min_scale) + min_scale
    cw = min(W, int(H * w / h))
    cw = max(int(cw * scale), 1)
    ch = max(min(int(cw * h / w), H), 1)
    x0 = int(torch.randint(0, W - cw + 1, (), generator=gen))
    y0 = int(torch.randint(0, H - ch + 1, (), generator=gen))
    crop = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BICUBIC)
    if torch.rand((), generator=gen) < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return crop


def open_for_size(path, size, min_scale=1.0) -> Image.Image:
    """load_image, with JPEG draft mode asking only for the resolution the smallest crop needs (decodes at 1/2, 1/4,
    1/8 scale where that still leaves every crop at least `size`): cheap data loading from a pre-scaled corpus."""
    return load_image(path, draft=(int(max(size) / max(min_scale, 1e-3)) + 1,) * 2)


class ImageFolderDataset(Dataset):
    """Every image under `root` (recursive, the usual extensions), centre-cropped and resized like ImageOps.fit, or
    with min_scale < 1 a random crop (random_crop: crop side U(min_scale, 1) of the photo's, flips).

    Unreadable files are skipped: the first time one is met it is reported with one warning naming it, and the next
    readable file is returned in its place (never a silent black image, as the original did).
    """

    def __init__(self, root, size=(400, 400), secret_size=100, min_scale=None):
        self.paths = list_images(root)
        if not self.paths:
            raise ImageLoadError(f"{root}: no images found (looked for common image extensions, recursively)")
        self.size, self.secret_size, self.min_scale = tuple(size), secret_size, min_scale
        self._bad = set()   # per process: each DataLoader worker warns at most once per bad file

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key):
        idx, gen = split_key(key)
        for k in range(len(self.paths)):
            path = self.paths[(idx + k) % len(self.paths)]
            if path in self._bad:
                continue
            try:
                if self.min_scale is None:
                    img = fit_image(load_image(path), self.size)
                else:
                    img = random_crop(open_for_size(path, self.size, self.min_scale), self.size, self.min_scale, gen)
            except ImageLoadError as e:
                self._bad.add(path)
                warnings.warn(f"skipping unreadable image: {e}", stacklevel=2)
                continue
            return to_chw(img), random_secret(self.secret_size, gen)
        raise RuntimeError(f"none of the {len(self.paths)} images can be read")


#################################################################################
#                             Built-in photo source                             #
#################################################################################

def _skimage(name):
    def load():
        import skimage.data
        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img     # stereo_motorcycle returns (left, right, disparity)
        return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img   # grey photos -> RGB
    return load


def _sklearn(name):
    def load():
        from sklearn.datasets import load_sample_image
        return load_sample_image(name)
    return load


def _matplotlib(name):
    def load():
        import os
        import matplotlib
        return np.asarray(Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", name)).convert("RGB"))
    return load


# The photographs shipped inside scikit-image, scikit-learn and matplotlib (no download needed). The held-out split is
# never used for training, so models can be evaluated on photos they have not seen.
BUILTIN_PHOTOS = {
    "astronaut": _skimage("astronaut"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "retina": _skimage("retina"),
    "stereo_motorcycle": _skimage("stereo_motorcycle"),
    "flower": _sklearn("flower.jpg"),
    # grey photographs and textures (as RGB): more scenes to hide in than the 8 colour ones alone
    "camera": _skimage("camera"),
    "moon": _skimage("moon"),
    "coins": _skimage("coins"),
    "clock": _skimage("clock"),
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "chelsea": _skimage("chelsea"),
    "china": _sklearn("china.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
}
BUILTIN_SPLITS = {
    "train": ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
              "stereo_motorcycle", "flower", "camera", "moon", "coins", "clock", "brick", "grass", "gravel"),
    "heldout": ("chelsea", "china", "grace_hopper"),
}
BUILTIN_SPLITS["all"] = BUILTIN_SPLITS["train"] + BUILTIN_SPLITS["heldout"]


def load_builtin_photo(name: str) -> Image.Image:
    """One built-in photo by name -> PIL RGB at its native size."""
    if name not in BUILTIN_PHOTOS:
        raise ValueError(f"unknown built-in photo {name!r}; choose from {sorted(BUILTIN_PHOTOS)}")
    return Image.fromarray(np.asarray(BUILTIN_PHOTOS[name]()).astype(np.uint8)).convert("RGB")


class BuiltinPhotosDataset(Dataset):
    """Random crops and flips of the built-in photos: an offline source of natural images for demos and tests.

    Each item picks a photo (idx modulo the split), a random square-ish crop covering 30-100% of the shorter side,
    an optional horizontal flip, and resizes to `size`. `length` sets the nominal epoch length.
    """

    def __init__(self, size=(128, 128), secret_size=100, split="train", length=1000, min_scale=0.3):
        if split not in BUILTIN_SPLITS:
            raise ValueError(f"split={split!r}: choose from {sorted(BUILTIN_SPLITS)}")
        self.names = BUILTIN_SPLITS[split]
        self.photos = [load_builtin_photo(n) for n in self.names]
        self.size, self.secret_size = tuple(size), secret_size
        self.length, self.min_scale = length, min_scale

    def __len__(self):
        return self.length

    def __getitem__(self, key):
        idx, gen = split_key(key)
        crop = random_crop(self.photos[idx % len(self.photos)], self.size, self.min_scale, gen)
        return to_chw(crop), random_secret(self.secret_size, gen)
