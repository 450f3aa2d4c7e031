"""dataset.py: folder dataset (recursive, unreadable files skipped with a warning) and the built-in photos."""
import numpy as np
import pytest
import torch
from PIL import Image

from dataset import BUILTIN_SPLITS, BuiltinPhotosDataset, ImageFolderDataset, load_builtin_photo


def test_folder_dataset_items(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.fromarray((np.random.rand(50, 80, 3) * 255).astype(np.uint8)).save(tmp_path / "a.jpg")
    Image.new("L", (30, 30), 128).save(tmp_path / "sub" / "b.png")
    ds = ImageFolderDataset(tmp_path, size=(32, 48), secret_size=20)
    assert len(ds) == 2
    for i in range(2):
        x, s = ds[i]
        assert x.shape == (3, 32, 48) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert s.shape == (20,) and set(s.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(ds[1][0], torch.full((3, 32, 48), 128 / 255))   # greyscale -> RGB


def test_unreadable_file_skipped_with_one_warning(tmp_path):
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"garbage")
    ds = ImageFolderDataset(tmp_path, size=(16, 16))
    with pytest.warns(UserWarning, match="b.png"):
        x, _ = ds[1]
    assert torch.allclose(x[0], torch.ones(16, 16))   # the readable neighbour, not a black image
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # a second read does not warn again
        ds[1]


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path)


def test_builtin_splits_are_disjoint_and_load():
    assert not set(BUILTIN_SPLITS["train"]) & set(BUILTIN_SPLITS["heldout"])
    for name in BUILTIN_SPLITS["all"]:
        img = load_builtin_photo(name)
        assert img.mode == "RGB" and min(img.size) >= 300


def test_builtin_dataset_random_crops():
    ds = BuiltinPhotosDataset(size=(64, 96), secret_size=100, split="heldout", length=7)
    assert len(ds) == 7
    a, s = ds[0]
    b, _ = ds[0]
    assert a.shape == (3, 64, 96) and s.shape == (100,) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, b)   # a fresh crop each read
    assert a.std() > 0.05          # natural content, not a flat image


def test_seeded_items_are_reproducible():
    ds = BuiltinPhotosDataset(size=(32, 32), secret_size=100, split="train", length=4)
    a, sa = ds[(1, 123)]
    b, sb = ds[(1, 123)]
    c, sc = ds[(1, 124)]
    assert torch.equal(a, b) and torch.equal(sa, sb)
    assert not torch.equal(a, c) and not torch.equal(sa, sc)


def test_random_crop_zooms_and_flips(tmp_path):
    """Random crops differ per seed, keep the size, and span zoomed-in and whole-photo views; draft decoding of a
    large JPEG still gives full-quality crops at the training size."""
    from PIL import Image
    from dataset import ImageFolderDataset
    rng = np.random.default_rng(0)
    big = Image.fromarray((rng.random((600, 900, 3)) * 255).astype(np.uint8)).resize((1800, 1200))
    big.save(tmp_path / "p.jpg", quality=95)
    ds = ImageFolderDataset(str(tmp_path), (64, 64), 100, min_scale=0.2)
    a, b = ds[(0, 1)][0], ds[(0, 2)][0]
    assert a.shape == (3, 64, 64) and not torch.equal(a, b)
    assert torch.equal(a, ds[(0, 1)][0])                       # deterministic per seed
    centre = ImageFolderDataset(str(tmp_path), (64, 64), 100)   # the original's centre crop without min_scale
    assert torch.equal(centre[(0, 1)][0], centre[(0, 2)][0])
