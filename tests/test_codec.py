"""Secret codec (the original's BCH layout, secret_codec.py) and image I/O (image_io.py)."""
import numpy as np
import pytest
from PIL import Image

from secret_codec import SecretCodec
from image_io import (ImageLoadError, array_to_image, fit_image, image_to_array, list_images,
                      load_image, save_image)


@pytest.fixture(scope="module")
def codec():
    return SecretCodec()


def flip(bits, idx):
    out = bits.copy()
    out[idx] = 1 - out[idx]
    return out


def test_layout_matches_original(codec):
    # 7 data bytes + 5 ECC bytes = 96 bits, then 4 zero pad bits (encode_image.py)
    assert (codec.ecc_bytes, codec.packet_bits, codec.secret_size) == (5, 96, 100)
    bits = codec.encode("Hello!")
    assert bits.shape == (100,) and bits.dtype == np.float32 and set(np.unique(bits)) <= {0.0, 1.0}
    assert not bits[96:].any()
    # data bits are the UTF-8 bytes, space padded, MSB first
    assert np.packbits(bits[:56].astype(np.uint8)).tobytes() == b"Hello! "


@pytest.mark.parametrize("text", ["Hello!", "1234567", "ünï", "a"])
def test_round_trip(codec, text):
    assert codec.decode(codec.encode(text)) .message == text
    assert codec.decode(codec.encode(text)).corrected_bits == 0


def test_empty_secret_is_refused(codec):
    with pytest.raises(ValueError, match="the secret is empty"):
        codec.encode("")


def test_too_long_in_bytes_is_refused(codec):
    with pytest.raises(ValueError, match="9 bytes"):
        codec.encode("ü" * 4 + "a")  # 5 characters but 9 bytes: the original's character count would accept it


@pytest.mark.parametrize("n_flips", [1, 2, 3, 4, 5])
def test_up_to_t_flips_always_corrected(codec, n_flips):
    rng = np.random.default_rng(n_flips)
    bits = codec.encode("Stega!")
    for _ in range(300):
        idx = rng.choice(codec.code_bits, n_flips, replace=False)  # anywhere in the data or ECC bits BCH uses
        res = codec.decode(flip(bits, idx))
        assert res.message == "Stega!" and res.corrected_bits == n_flips


def test_flips_inside_ecc_bytes_corrected(codec):
    bits = codec.encode("abc")
    res = codec.decode(flip(bits, np.arange(56, 61)))  # five flips, all in the ECC
    assert res.message == "abc" and res.corrected_bits == 5
    res = codec.decode(flip(bits, np.arange(91, 96)))  # the 5 unused ECC bits: ignored, nothing to correct
    assert res.message == "abc" and res.corrected_bits == 0
    res = codec.decode(flip(bits, [0, 10, 56, 70, 90, 95]))  # five used + one unused
    assert res.message == "abc" and res.corrected_bits == 5


def test_layout_code_bits(codec):
    assert codec.code_bits == 56 + 35


def test_nonzero_pad_bits_rejected(codec):
    res = codec.decode(flip(codec.encode("abc"), [98]))
    assert res.message is None and "pad" in res.reason


def test_blank_image_bits_are_not_a_message(codec):
    """All-zero bits (a black or flat image through a decoder) form a valid BCH codeword; they must not count."""
    zeros = np.zeros(100, np.float32)
    assert codec.decode(zeros).message is None and "blank" in codec.decode(zeros).reason
    near = zeros.copy()
    near[[3, 40, 77]] = 1                      # within t flips of the all-zero codeword: still not a message
    assert codec.decode(near).message is None
    with pytest.raises(ValueError, match="reserved"):
        codec.encode("\x00" * 7)
    assert codec.decode(codec.encode("\x00a")).message == "\x00a"   # NUL inside a real message is fine


def test_beyond_t_never_returns_an_unverified_message(codec):
    """6-10 flips: failure, or a message whose codeword lies within t flips of what was received (BCH-verified).
    Mis-correction to a *different* valid codeword is possible; its measured rate is documented in the README."""
    rng = np.random.default_rng(0)
    bits = codec.encode("Stega!")
    wrong = total = 0
    for n in range(6, 11):
        for _ in range(400):
            received = flip(bits, rng.choice(codec.code_bits, n, replace=False))
            res = codec.decode(received)
            total += 1
            if res.message is None:
                continue
            codeword = codec.encode(res.message)
            used = slice(0, codec.code_bits)
            assert np.sum(codeword[used] != received[used]) <= codec.t == 5
            wrong += res.message != "Stega!"
    assert wrong / total < 0.01  # measured 0.1% over 25k trials (see README, Secret codec)


def test_wrong_length_raises(codec):
    with pytest.raises(ValueError, match="expected 100 bits"):
        codec.decode(np.zeros(99))


def test_other_code_is_a_config_change():
    codec = SecretCodec(secret_size=127, data_bytes=10, bch_t=4, bch_prim_poly=137)
    assert codec.decode(codec.encode("0123456789")).message == "0123456789"
    with pytest.raises(ValueError, match="do not fit"):
        SecretCodec(secret_size=90)


# ----------------------------------------------------------------------------- image I/O

def _save(tmp_path, name, img, **kw):
    p = tmp_path / name
    img.save(p, **kw)
    return p


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_load_image_any_mode_gives_rgb(tmp_path, mode):
    rgb = Image.fromarray((np.random.rand(20, 30, 3) * 255).astype(np.uint8))
    if mode == "I;16":
        img = Image.fromarray((np.random.rand(20, 30) * 65535).astype(np.uint16))
    else:
        img = rgb.convert(mode)
    ext = "tiff" if mode == "CMYK" else "png"
    out = load_image(_save(tmp_path, f"x.{ext}", img))
    assert out.mode == "RGB" and out.size == (30, 20)


def test_16bit_grey_is_scaled_not_clipped(tmp_path):
    img = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    out = np.asarray(load_image(_save(tmp_path, "g.png", img)))
    assert abs(int(out[0, 0, 0]) - 128) <= 1


def test_alpha_composited_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(_save(tmp_path, "a.png", img))).min() == 255


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    p = tmp_path / "o.jpg"
    img.save(p, exif=exif)
    assert load_image(p).size == (20, 40)


def test_load_errors_are_one_line(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    good = _save(tmp_path, "t.png", Image.new("RGB", (64, 64), (10, 20, 30)))
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    for name, what in [("missing.png", "no such file"), ("bad.png", "not an image"), ("trunc.png", "corrupt")]:
        with pytest.raises(ImageLoadError, match=what) as e:
            load_image(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)


def test_fit_array_round_trip_and_atomic_save(tmp_path):
    img = Image.fromarray((np.random.rand(300, 500, 3) * 255).astype(np.uint8))
    fitted = fit_image(img, (64, 96))
    assert fitted.size == (96, 64)
    arr = image_to_array(fitted)
    assert arr.shape == (64, 96, 3) and arr.dtype == np.float32 and 0 <= arr.min() and arr.max() <= 1
    save_image(arr, tmp_path / "sub" / "o.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "sub" / "o.png")), np.asarray(array_to_image(arr)))
    assert [p.name for p in tmp_path.rglob("*")] == ["sub", "o.png"]  # no temp file left behind


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    from image_io import atomic_write, atomic_write_text
    atomic_write_text(tmp_path / "r.md", "old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        atomic_write(tmp_path / "r.md", broken)
    assert (tmp_path / "r.md").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.md"]


def test_list_images(tmp_path):
    for rel in ["a.jpg", "b.PNG", "sub/c.webp", "notes.txt", ".hidden.png"]:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    names = [p.replace(str(tmp_path) + "/", "") for p in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "sub/c.webp"]
    assert [p.rsplit("/", 1)[1] for p in list_images(tmp_path, recursive=False)] == ["a.jpg", "b.PNG"]


@pytest.mark.parametrize("name", sorted(__import__("secret_codec").CODES))
def test_named_codes_correct_t_errors(name):
    from secret_codec import CODES
    codec = SecretCodec(*CODES[name])
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefghij"), codec.data_bytes))
    bits = codec.encode(text)
    assert bits.shape == (CODES[name][0],)
    flipped = bits.copy()
    idx = rng.choice(codec.code_bits, codec.t, replace=False)
    flipped[idx] = 1 - flipped[idx]
    res = codec.decode(flipped)
    assert res.message == text and res.corrected_bits == codec.t
    with pytest.raises(ValueError, match=f"at most {codec.data_bytes} fit"):
        codec.encode("x" * (codec.data_bytes + 1))
