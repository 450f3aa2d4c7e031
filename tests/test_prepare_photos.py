"""prepare_photos.py without the network: Qt resource bundles, JPEG carving, filters, de-duplication, the split."""
import csv
import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import prepare_photos as P


def photo(seed, size=(320, 260)):
    """A colourful 'photo' with many colours (passes the drawing filter)."""
    rng = np.random.default_rng(seed)
    small = (rng.random((size[1] // 20, size[0] // 20, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def jpeg_bytes(img, q=90):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    return buf.getvalue()


def make_rcc(files):
    """A version-3 Qt resource bundle holding {name: bytes} in one folder 'res', zlib-compressed."""
    names, name_off = b"", {}
    for n in ["res", *files]:
        name_off[n] = len(names)
        u = n.encode("utf-16-be")
        names += struct.pack(">HI", len(n), 0) + u
    data, data_off = b"", {}
    for n, blob in files.items():
        data_off[n] = len(data)
        z = struct.pack(">I", len(blob)) + zlib.compress(blob)
        data += struct.pack(">I", len(z)) + z
    node = lambda *f: struct.pack(*f) + b"\0" * 8                   # + modification time (version >= 2)
    tree = node(">IHII", 0, 2, 1, 1)                                   # root: 1 child at index 1
    tree += node(">IHII", name_off["res"], 2, len(files), 2)          # res/: children from index 2
    for n in files:
        tree += node(">IHHHI", name_off[n], 1, 0, 0, data_off[n])
    header = 24
    return (b"qres" + struct.pack(">IIIII", 3, header, header + len(tree), header + len(tree) + len(data), 0)
            + tree + data + names)


def test_read_rcc_returns_every_file(tmp_path):
    a, b = jpeg_bytes(photo(1)), b"not a photo"
    path = tmp_path / "x.rcc"
    path.write_bytes(make_rcc({"a.webp": a, "b.txt": b}))
    assert P.read_rcc(str(path)) == {"/res/a.webp": a, "/res/b.txt": b}
    (tmp_path / "bad.rcc").write_bytes(b"nope")
    with pytest.raises(ValueError):
        P.read_rcc(str(tmp_path / "bad.rcc"))


def test_carve_largest_jpeg(tmp_path):
    small, large = jpeg_bytes(photo(1, (64, 48))), jpeg_bytes(photo(2, (400, 300)))
    path = tmp_path / "w.edj"
    path.write_bytes(b"EET\0" + small + b"\0junk\xff\xd9" + large + b"tail")
    blob = P.carve_largest_jpeg(str(path))
    assert blob == large and Image.open(io.BytesIO(blob)).size == (400, 300)


def test_filters_and_hash():
    assert P.is_colour_photo(photo(1), 256)[0]
    assert not P.is_colour_photo(photo(1).convert("L").convert("RGB"), 256)[0]      # greyscale
    assert not P.is_colour_photo(photo(1, (300, 200)), 256)[0]                       # too small
    flat = Image.new("RGB", (400, 300), (200, 30, 30))
    flat.paste((30, 30, 200), (0, 0, 200, 150))
    assert not P.is_colour_photo(flat, 256)[0]                                       # a drawing: few colours
    h = P.dhash(photo(3))
    assert bin(h ^ P.dhash(photo(3).resize((200, 160)))).count("1") <= 6             # a rescaled copy matches
    assert bin(h ^ P.dhash(photo(4))).count("1") > 10


def test_groups_keep_pairs_and_series_together():
    g = lambda n: P.group_key("pkg", n)
    assert g("aloeL") == g("aloeR") and g("rocks2-l") == g("rocks2-r") and g("left") == g("right")
    assert g("bar55") == g("bar55_2") and g("kcas3") == g("kcas10")
    assert g("castle") != g("canyon")
    assert P.split_of("pkg/x", 20) == P.split_of("pkg/x", 20)                      # deterministic
    share = np.mean([P.split_of(f"pkg/{i}", 20) == "val" for i in range(2000)])
    assert 0.17 < share < 0.23


def test_main_builds_corpus_manifest_and_split(tmp_path, monkeypatch):
    """End to end on a fake package: photos kept, a non-photo and a duplicate dropped, stereo pair on one side,
    manifest complete, no overwrite without --overwrite."""
    pkg = tmp_path / "unpacked"
    (pkg / "pics").mkdir(parents=True)
    for i in range(12):
        photo(10 + i, (700, 500)).save(pkg / "pics" / f"scene{chr(97 + i)}.jpg")
    photo(10, (700, 500)).save(pkg / "pics" / "zcopy.jpg")                         # duplicate of scenea
    photo(50, (700, 500)).save(pkg / "pics" / "viewL.png")
    photo(51, (700, 500)).save(pkg / "pics" / "viewR.png")
    photo(60).convert("L").save(pkg / "pics" / "grey.jpg")
    monkeypatch.setattr(P, "SOURCES", {"fakepkg": ("apt", "1.0", "MIT", [("pics/*", ["*skip*"])])})
    monkeypatch.setattr(P, "fetch", lambda package, registry, version, cache: str(tmp_path / "fakepkg_1.0_all.deb"))
    monkeypatch.setattr(P, "unpack", lambda archive, dest: str(pkg))
    out = tmp_path / "corpus"
    assert P.main([str(out), "--short_side", "256", "--val_percent", "30", "--split_file", ""]) == 0
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert len(rows) == 14                                                          # 12 + stereo pair
    assert {r["package"] for r in rows} == {"fakepkg"} and all(r["licence"] == "MIT" for r in rows)
    for r in rows:
        with Image.open(out / r["file"]) as im:
            assert min(im.size) == 256 and r["stored_size"] == f"{im.width}x{im.height}"
    pair = [r["split"] for r in rows if "view" in r["file"]]
    assert len(pair) == 2 and pair[0] == pair[1]
    assert {"train", "val"} == {r["split"] for r in rows}
    dropped = (out / "dropped.txt").read_text()
    assert "zcopy.jpg\tnear-duplicate" in dropped and "grey.jpg\tgreyscale" in dropped
    with pytest.raises(SystemExit):
        P.main([str(out)])                                                          # refuses to overwrite
