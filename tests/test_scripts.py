"""Encode / decode / export / ONNX inference end to end: CLIs, the shared runner, error handling, torch-free ONNX."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import decode_image_pytorch
import encode_image_pytorch
from image_io import load_image
from inference import StegaStampRunner
from models_pytorch import ModelConfig, StegaStampDecoder, StegaStampEncoder, load_checkpoint, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An (untrained) 80x80 checkpoint: enough for the plumbing; message recovery is tested with BlockRunner.
    80 px puts an odd size (5 -> 3) in the decoder's stride-2 chain, where TF padding is symmetric: the export must
    keep that right (400 px has 25 -> 13)."""
    cfg = ModelConfig(height=80, width=80)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "m.pth"
    save_checkpoint(path, cfg, StegaStampEncoder(cfg), StegaStampDecoder(cfg))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((90, 160, 3)) * 255).astype(np.uint8)).save(d / "wide.jpg")
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(d / "square.png")
    (d / "broken.png").write_bytes(b"not an image")
    return d


def cli(module, *argv):
    return module.main(module.get_parser().parse_args([str(a) for a in argv]))


class BlockRunner(StegaStampRunner):
    """A transparent stand-in for the networks: bit i is +-0.25 on its own block of the model-size image, read back
    from the block mean. Exercises resizing, full-resolution composition, strength and the codec for real."""

    def __init__(self):
        super().__init__({"height": 80, "width": 80, "secret_size": 100, "data_bytes": 7, "bch_t": 5,
                          "bch_prim_poly": 137})

    def run_encoder(self, secrets, images):
        blocks = (secrets * 2 - 1).reshape(-1, 1, 10, 10) * 0.25                     # (B, 1, 10, 10)
        return np.repeat(np.repeat(blocks, 8, 2), 8, 3).repeat(3, 1) + 0.5 - images   # image -> 0.5 +- 0.25

    def run_decoder(self, images):
        means = images.mean(1).reshape(-1, 10, 8, 10, 8).mean((2, 4))                 # (B, 10, 10)
        return (means.reshape(-1, 100) - 0.5) * 20


def test_runner_full_resolution_round_trip():
    runner, cover = BlockRunner(), Image.new("RGB", (400, 240), (128, 128, 128))
    encoded, residual = runner.encode(cover, "Hello!")
    assert encoded.size == residual.size == (400, 240)                 # full resolution kept
    res = runner.decode(encoded)
    assert res.message == "Hello!" and res.corrected_bits == 0 and res.confidence > 0.9
    fitted, _ = runner.encode(cover, "Hello!", fit=True)
    assert fitted.size == (80, 80) and runner.decode(fitted).message == "Hello!"
    weak, _ = runner.encode(cover, "Hello!", strength=0.5)             # strength scales the residual
    diff = lambda im: np.abs(np.asarray(im, float) - 128).mean()
    assert abs(diff(weak) / diff(encoded) - 0.5) < 0.05
    assert runner.decode(cover).message is None                        # nothing claimed on an unmarked image


def test_encode_decode_cli(ckpt, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(encode_image_pytorch, ckpt, "--image", photos / "wide.jpg", "--save_dir", out, "--secret", "Hi!") == 0
    hidden = out / "wide_hidden.png"
    assert load_image(hidden).size == (160, 90) and (out / "wide_residual.png").exists()   # input size kept
    assert cli(encode_image_pytorch, ckpt, "--image", photos / "wide.jpg", "--save_dir", tmp_path / "fit", "--fit") == 0
    assert load_image(tmp_path / "fit" / "wide_hidden.png").size == (80, 80)
    capsys.readouterr()
    assert cli(decode_image_pytorch, ckpt, "--image", hidden) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(hidden) + ": ") and ("no message found" in line or "corrected" in line)


def test_batch_mode_reports_failures_and_goes_on(ckpt, photos, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    assert cli(encode_image_pytorch, ckpt, "--images_dir", photos, "--save_dir", tmp_path, "--batch_size", 1) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "encoded 2 of 3 images, 1 failed" in err
    assert sorted(p.name for p in tmp_path.glob("*_hidden.png")) == ["square_hidden.png", "wide_hidden.png"]
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before      # inputs untouched
    assert cli(decode_image_pytorch, ckpt, "--images_dir", photos, "--json") == 1
    rows = json.loads(capsys.readouterr().out)
    assert {r["file"].rsplit("/", 1)[1] for r in rows} == {"wide.jpg", "square.png", "broken.png"}
    assert [r for r in rows if "error" in r][0]["message"] is None


def test_output_never_overwrites_an_input(ckpt, tmp_path, capsys):
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "a_hidden.png")   # would be a.png's output in the same folder
    before = (tmp_path / "a_hidden.png").read_bytes()
    assert cli(encode_image_pytorch, ckpt, "--images_dir", tmp_path, "--save_dir", tmp_path) == 1
    assert (tmp_path / "a_hidden.png").read_bytes() == before
    err = capsys.readouterr().err
    assert "a_hidden.png: skipped (an output of this tool" in err     # never taken as an input
    assert "exists (pass --overwrite to replace it)" in err


@pytest.mark.parametrize("argv,msg", [
    (["--secret", "12345678"], "8 bytes"),
    (["--image", "missing.jpg"], "no such file"),
])
def test_clear_errors(ckpt, photos, tmp_path, capsys, argv, msg):
    base = ["--image", photos / "square.png", "--save_dir", tmp_path]
    rc = cli(encode_image_pytorch, ckpt, *base, *argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and msg in err and err.count("error:") == 1


def test_bad_checkpoint_is_one_line(tmp_path, photos, capsys):
    (tmp_path / "bad.pth").write_bytes(b"junk")
    assert cli(decode_image_pytorch, tmp_path / "bad.pth", "--image", photos / "square.png") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


# ----------------------------------------------------------------------------- ONNX

@pytest.fixture(scope="module")
def onnx_dir(ckpt, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    import export_onnx
    out = tmp_path_factory.mktemp("onnx")
    cwd = tmp_path_factory.mktemp("cwd")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        assert export_onnx.main(export_onnx.get_parser().parse_args([str(ckpt), "--out_dir", str(out), "--int8",
                                                                      "--test"])) == 0
    finally:
        os.chdir(old)
    # ONNX Runtime's quantiser dumps temporary models into the working directory unless kept away from it
    assert sorted(os.listdir(cwd)) == []
    return out


def test_export_parity_and_metadata(ckpt, onnx_dir):
    import onnx
    import onnxruntime as ort
    model = onnx.load(onnx_dir / "decoder.onnx")
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert json.loads({p.key: p.value for p in model.metadata_props}["stegastamp_model_config"])["height"] == 80
    # TF 'same' padding lives in the convolutions (asymmetric at stride 2), not in Pad nodes; only ONNX's own ops
    encoder = onnx.load(onnx_dir / "encoder.onnx")
    for m in (model, encoder):
        for pad in [n for n in m.graph.node if n.op_type == "Pad"]:   # the encoder's one: channels only (aligned)
            pads = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == pad.input[1]))
            assert m is encoder and list(pads) == [0, 0, 0, 0, 0, 2, 0, 0]
        assert {o.domain for o in m.opset_import} <= {"", "ai.onnx"}
    # channel-aligned: the convolutions over the 6 input channels read 8 (conv1) and 72 (conv9), the extra ones zero
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in encoder.graph.initializer}
    conv_in = sorted(weights[n.input[1]].shape[1] for n in encoder.graph.node if n.op_type == "Conv")
    assert 8 in conv_in and 72 in conv_in and 6 not in conv_in and 70 not in conv_in
    conv_pads = [list(onnx.helper.get_attribute_value(a)) for n in encoder.graph.node if n.op_type == "Conv"
                 for a in n.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in conv_pads and [1, 1, 1, 1] in conv_pads
    cfg, enc, dec = load_checkpoint(ckpt)
    image = np.random.default_rng(0).random((2, 3, 80, 80), dtype=np.float32)
    secret = np.random.default_rng(1).integers(0, 2, (2, 100)).astype(np.float32)
    with torch.no_grad():
        ref = enc(torch.from_numpy(secret), torch.from_numpy(image)).numpy()
    out = ort.InferenceSession(str(onnx_dir / "encoder.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"secret": secret, "image": image})[0]
    assert np.abs(out - ref).max() < 1e-4
    sess = ort.InferenceSession(str(onnx_dir / "decoder.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):   # dynamic batch axis
        logits, bits = sess.run(None, {"image": np.random.rand(batch, 3, 80, 80).astype(np.float32)})
        assert logits.shape == (batch, 100) and set(np.unique(bits)) <= {0.0, 1.0}


def _run_without_torch(args, cwd):
    """Run onnx_inference.py in a fresh interpreter in which `import torch` fails."""
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.path.insert(0, %r); sys.argv = %r; "
            "runpy.run_path(%r, run_name='__main__')" % (ROOT, ["onnx_inference.py", *args],
                                                         os.path.join(ROOT, "onnx_inference.py")))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_onnx_inference_runs_without_torch_and_matches_pytorch(ckpt, onnx_dir, photos, tmp_path, capsys):
    res = _run_without_torch([str(onnx_dir), "--encode", "--image", str(photos / "wide.jpg"), "--save_dir",
                              str(tmp_path / "onnx"), "--secret", "Hi!"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert cli(encode_image_pytorch, ckpt, "--image", photos / "wide.jpg", "--save_dir", tmp_path / "pt",
               "--secret", "Hi!") == 0
    a = np.asarray(load_image(tmp_path / "onnx" / "wide_hidden.png"), dtype=int)
    b = np.asarray(load_image(tmp_path / "pt" / "wide_hidden.png"), dtype=int)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1                  # within 1/255
    res = _run_without_torch([str(onnx_dir), "--decode", "--images_dir", str(tmp_path / "pt"), "--json"], tmp_path)
    capsys.readouterr()
    cli(decode_image_pytorch, ckpt, "--images_dir", tmp_path / "pt", "--json")
    pt_rows = json.loads(capsys.readouterr().out)
    onnx_rows = json.loads(res.stdout)
    assert [r["message"] for r in onnx_rows] == [r["message"] for r in pt_rows]
    same = lambda a, b: a == b if a is None or b is None else abs(a - b) < 1e-3   # None: no message, no confidence
    assert all(same(x["confidence"], y["confidence"]) for x, y in zip(onnx_rows, pt_rows))


def test_onnx_inference_errors(tmp_path):
    res = _run_without_torch([str(tmp_path), "--decode", "--image", "x.png"], tmp_path)
    assert res.returncode == 2 and "run export_onnx.py first" in res.stderr


def test_full_resolution_composition_matches_float_maths():
    from inference import add_residual_full_res
    rng = np.random.default_rng(0)
    residual = (rng.standard_normal((40, 60, 3)) * 0.1).astype(np.float32)
    cover = Image.fromarray((rng.random((300, 200, 3)) * 255).astype(np.uint8))
    encoded, residual_img = add_residual_full_res(cover, residual)
    up = np.stack([np.asarray(Image.fromarray(residual[..., c], "F").resize(cover.size, Image.BILINEAR))
                   for c in range(3)], -1)                                  # float bilinear reference
    ref = np.clip(np.rint(np.asarray(cover, float) + up * 255), 0, 255)
    assert encoded.size == residual_img.size == cover.size
    assert np.abs(np.asarray(encoded, float) - ref).max() <= 1             # within 1/255
    assert np.abs(np.asarray(residual_img, float) - (128 + up * 255)).max() <= 1.5   # unrounded reference


def test_bf16_inference_matches_fp32(ckpt, photos):
    from stegastamp_pytorch import StegaStamp
    fp32, bf16 = StegaStamp.load(ckpt, "cpu"), StegaStamp.load(ckpt, "cpu", bf16=True)
    img = load_image(photos / "wide.jpg")
    a, b = (np.asarray(m.encode(img, "Hi!")[0], dtype=int) for m in (fp32, bf16))
    assert a.shape == b.shape and np.abs(a - b).mean() < 1.0          # bf16 residual: off by < 1 level on average
    x = np.random.default_rng(0).random((2, 3, 80, 80), dtype=np.float32)
    la, lb = fp32.run_decoder(x), bf16.run_decoder(x)
    assert lb.dtype == np.float32 and np.corrcoef(la.ravel(), lb.ravel())[0, 1] > 0.99


def test_evaluate_script_reports_every_distortion(ckpt, photos, tmp_path, capsys):
    import shutil
    import evaluate_pytorch
    for name in ("wide.jpg", "square.png", "broken.png"):
        shutil.copy(photos / name, tmp_path / name)
    out_dir = tmp_path / "eval"
    # the unreadable file is reported and skipped, the two photos are evaluated, the exit code says 1 failed
    assert evaluate_pytorch.main(evaluate_pytorch.get_parser().parse_args(
        [str(ckpt), "--images_dir", str(tmp_path), "--messages", "1", "--device", "cpu", "--no_lpips",
         "--out_dir", str(out_dir), "--plots"])) == 1
    captured = capsys.readouterr()
    out = captured.out
    assert "broken.png" in captured.err and "skipped" in captured.err and "2 photos x 1 messages" in out
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and not ln.startswith("| distortion")]
    assert [r.split(" | ")[0][2:] for r in rows] == list(evaluate_pytorch.DISTORTIONS)
    n = len(evaluate_pytorch.DISTORTIONS) * 2
    assert f"false positives 0/{n}" in out    # an untrained decoder claims nothing
    assert (out_dir / "results.md").read_text() in out
    res = json.loads((out_dir / "results.json").read_text())
    assert set(res["distortions"]) == set(evaluate_pytorch.DISTORTIONS) and res["quality"]["lpips"] is None
    assert set(res["sweeps"]) == {"jpeg", "perspective", "strength"}
    for name in ("plot_jpeg.png", "plot_perspective.png", "plot_strength.png"):
        assert Image.open(out_dir / name).size[0] > 200


def test_evaluate_bad_model_is_one_line(tmp_path, photos, capsys):
    import evaluate_pytorch
    assert cli(evaluate_pytorch, tmp_path / "missing.pth", "--images_dir", photos) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not found" in err and len(err.strip().splitlines()) == 1


def test_evaluate_measures_recovery_and_quality():
    """With a model that really hides the bits (BlockRunner), recovery is 1 where the bits survive and 0 where the
    residual is gone; PSNR follows the residual size."""
    import evaluate_pytorch as E
    rng = np.random.default_rng(0)
    photos = [("a", Image.fromarray((rng.random((120, 160, 3)) * 255).astype(np.uint8)))]
    dist = {"clean": E.DISTORTIONS["clean"], "jpeg90": E.jpeg(90), "grey": lambda img, r: Image.new("RGB", img.size)}
    res = E.evaluate(BlockRunner(), photos, dist, messages=2, quality=True)
    d = res["distortions"]
    assert d["clean"]["exact"] == 1.0 and d["clean"]["bit_acc"] == 1.0 and d["jpeg90"]["exact"] == 1.0
    assert d["grey"]["exact"] == 0.0 and 0.4 < d["grey"]["bit_acc"] < 0.6    # all-black image: bits are 0
    assert sum(s["false_pos"] for s in d.values()) == 0
    assert 0 < res["quality"]["ssim"] < 0.9 and res["quality"]["psnr"] < 20  # BlockRunner overwrites the photo


def test_print_photo_simulation_is_seeded_and_degrades():
    import distortions as D
    import evaluate_pytorch as E
    img = Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8))
    a = D.print_photo(img, np.random.default_rng(3))
    b = D.print_photo(img, np.random.default_rng(3))
    assert a.size == img.size and np.array_equal(np.asarray(a), np.asarray(b))
    assert E.psnr(a, img) < 20


def test_perspective_distortion_moves_content():
    import distortions
    img = Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8))
    rng = np.random.default_rng(1)
    same = distortions.perspective(0.0)(img, rng)
    moved = distortions.perspective(0.1)(img, rng)
    assert np.abs(np.asarray(same, int) - np.asarray(img, int)).max() <= 1
    assert np.abs(np.asarray(moved, int) - np.asarray(img, int)).mean() > 20


def test_strength_auto_picks_the_lowest_strength_that_survives(monkeypatch):
    """--strength auto: the chosen strength passes the simulated copies, the next lower candidate does not.
    The stand-in has no STN, so the checks are those it can survive (clean, JPEG 50, print-like noise)."""
    import inference as codec_io
    monkeypatch.setattr(codec_io, "AUTO_CHECKS", ("clean", "jpeg50", "noise0.05"))
    runner = BlockRunner()
    # block-sized random content competes with the hidden blocks: weak residuals lose bits, strong ones do not
    blocks = (np.random.default_rng(0).random((10, 10, 3)) * 255).astype(np.uint8)
    cover = Image.fromarray(blocks).resize((200, 160), Image.NEAREST)
    result = runner.encode(cover, "Hello!", strength="auto")
    assert result.verified is True and result.strength in codec_io.AUTO_STRENGTHS
    encoded, residual = result                                         # still unpacks as (encoded, residual)
    assert encoded.size == cover.size and runner.decode(encoded).message == "Hello!"
    i = codec_io.AUTO_STRENGTHS.index(result.strength)
    assert i > 0, "the stand-in model should need more than the lowest strength on a noisy photo"
    lower = runner.encode(cover, "Hello!", strength=codec_io.AUTO_STRENGTHS[i - 1])[0]
    assert not runner._reads_back(lower, "Hello!", codec_io.AUTO_CHECKS)
    assert runner._reads_back(encoded, "Hello!", codec_io.AUTO_CHECKS)
    fixed = runner.encode(cover, "Hello!", strength=1.0, verify=True)
    assert fixed.strength == 1.0 and fixed.verified is True
    blank = runner.encode(cover, "Hello!", strength=0.001, verify=True)   # too weak to survive 8-bit rounding
    assert blank.verified is False


def test_strength_argument_accepts_auto_and_positive_numbers():
    import argparse
    import cli_common as codec_io
    assert codec_io.strength_arg("auto") == "auto" and codec_io.strength_arg("1.5") == 1.5
    for bad in ("0", "-1", "strong"):
        with pytest.raises(argparse.ArgumentTypeError):
            codec_io.strength_arg(bad)


def _cli_args(add, *argv):
    import argparse
    p = argparse.ArgumentParser()
    add(p)
    return p.parse_args([str(a) for a in argv])


def test_batch_encode_mirrors_folders_and_never_loses_a_file(tmp_path, capsys):
    """Same stem in two folders -> two outputs; an existing output is kept without --overwrite; an image that
    already carries a message is refused without --force; a file Pillow refuses is that file's error only."""
    from cli_common import add_decode_arguments, add_encode_arguments
    from decode_image_pytorch import decode_all as run_decode_cli
    from encode_image_pytorch import encode_all as run_encode_cli
    runner = BlockRunner()
    src = tmp_path / "mix"
    (src / "sub").mkdir(parents=True)
    grey = Image.new("RGB", (120, 90), (128, 128, 128))
    grey.save(src / "coffee.png")
    grey.save(src / "sub" / "coffee.jpg")
    out = tmp_path / "out"
    args = _cli_args(add_encode_arguments, "--images_dir", src, "--save_dir", out, "--secret", "abc")
    assert run_encode_cli(runner, args) == 0
    assert (out / "coffee_hidden.png").exists() and (out / "sub" / "coffee_hidden.png").exists()
    # again: both outputs exist -> refused, untouched
    before = (out / "sub" / "coffee_hidden.png").read_bytes()
    assert run_encode_cli(runner, args) == 1
    assert (out / "sub" / "coffee_hidden.png").read_bytes() == before
    assert capsys.readouterr().err.count("exists (pass --overwrite") == 2
    # the encoded outputs as inputs: skipped by name; renamed, they are recognised by their message
    (out / "coffee_hidden.png").rename(out / "renamed.png")
    args2 = _cli_args(add_encode_arguments, "--images_dir", out, "--save_dir", tmp_path / "again", "--secret", "xyz")
    assert run_encode_cli(runner, args2) == 1
    err = capsys.readouterr().err
    assert "already carries the message 'abc' (pass --force" in err and "skipped (an output of this tool" in err
    assert not (tmp_path / "again" / "renamed_hidden.png").exists()
    args2.force = True
    assert run_encode_cli(runner, args2) == 0 and (tmp_path / "again" / "renamed_hidden.png").exists()
    # a decompression bomb (Pillow refuses it) is one file's error; the rest of the batch is encoded
    bomb_dir = tmp_path / "bomb"
    bomb_dir.mkdir()
    grey.save(bomb_dir / "a.png")
    Image.new("1", (14000, 14000)).save(bomb_dir / "b.png")           # 196 Mpx > 2 x Pillow's 89 Mpx limit
    grey.save(bomb_dir / "c.png")
    args3 = _cli_args(add_encode_arguments, "--images_dir", bomb_dir, "--save_dir", tmp_path / "o3", "--secret", "q")
    assert run_encode_cli(runner, args3) == 1
    err = capsys.readouterr().err
    assert "decompression-bomb" in err and "encoded 2 of 3 images, 1 failed" in err
    # decode: residuals skipped, summary counts messages / none / failures
    dargs = _cli_args(add_decode_arguments, "--images_dir", tmp_path / "o3", "--json")
    assert run_decode_cli(runner, dargs) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [os.path.basename(r["file"]) for r in rows] == ["a_hidden.png", "c_hidden.png"]
    assert all(r["message"] == "q" and r["confidence"] > 0.5 for r in rows)
    assert "decoded 2 of 2 images: 2 with a message, 0 without (2 outputs of this tool skipped)" in captured.err
    dargs = _cli_args(add_decode_arguments, "--images_dir", bomb_dir, "--json")
    assert run_decode_cli(runner, dargs) == 1
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [r["message"] for r in rows] == [None, None, None] and rows[0]["confidence"] is None
    assert "decoded 2 of 3 images: 0 with a message, 2 without, 1 failed" in captured.err


def test_bf16_falls_back_on_a_cpu_without_bf16(ckpt, monkeypatch):
    import stegastamp_pytorch
    monkeypatch.setattr(stegastamp_pytorch, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="--bf16 ignored"):
        model = stegastamp_pytorch.StegaStamp.load(ckpt, "cpu", bf16=True)
    assert model.dtype == torch.float32
    monkeypatch.setattr(stegastamp_pytorch, "cpu_has_bf16", lambda: True)
    assert stegastamp_pytorch.StegaStamp.load(ckpt, "cpu", bf16=True).dtype == torch.bfloat16


def test_migration_guide_commands_run_verbatim(ckpt, tmp_path, monkeypatch, capsys):
    """The commands users bring from the original README / migration notes, exactly as written there."""
    import shlex
    import shutil
    import export_onnx
    import onnx_inference
    run = lambda module, line: module.main(module.get_parser().parse_args(shlex.split(line)[2:]))
    a = tmp_path / "a"
    (a / "checkpoints" / "my_experiment").mkdir(parents=True)
    shutil.copy(ckpt, a / "checkpoints" / "my_experiment" / "my_experiment_final.pth")
    monkeypatch.chdir(a)
    assert run(export_onnx, "python export_onnx.py checkpoints/my_experiment/my_experiment_final.pth "
                            "--output_dir onnx_models/ --test") == 0
    assert (a / "onnx_models" / "encoder.onnx").exists() and (a / "onnx_models" / "decoder.onnx").exists()
    # the inference commands, with the shipped model in onnx_models/ and a photo as test.jpg
    b = tmp_path / "b"
    b.mkdir()
    shutil.copytree(os.path.join(ROOT, "pretrained", "onnx"), b / "onnx_models")
    shutil.copy(os.path.join(ROOT, "examples", "chelsea.jpg"), b / "test.jpg")
    monkeypatch.chdir(b)
    capsys.readouterr()
    assert run(onnx_inference, 'python onnx_inference.py onnx_models/encoder.onnx onnx_models/decoder.onnx --encode '
                               '--image test.jpg --secret "Hello" --output encoded.png') == 0
    assert Image.open(b / "encoded.png").size == Image.open(b / "test.jpg").size
    assert run(onnx_inference, "python onnx_inference.py onnx_models/encoder.onnx onnx_models/decoder.onnx --decode "
                               "--image encoded.png") == 0
    assert "encoded.png: 'Hello'" in capsys.readouterr().out
    assert run(onnx_inference, 'python onnx_inference.py onnx_models/encoder.onnx onnx_models/decoder.onnx --test '
                               '--image test.jpg --secret "Test" --output roundtrip.png') == 0
    assert "decoded: 'Test'" in capsys.readouterr().out and (b / "roundtrip.png").exists()


def awkward_folder(root):
    """Files a real photo folder holds: -> (folder, names that must be encoded, names that must fail)."""
    root.mkdir()
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((60, 90, 3)) * 255).astype(np.uint8)).resize((180, 120))
    good, bad = [], []

    def add(name, ok, write):
        write(root / name)
        (good if ok else bad).append(name)
    add("zero.jpg", False, lambda p: p.write_bytes(b""))
    buf = io.BytesIO()
    photo.save(buf, "JPEG")
    add("truncated.jpg", False, lambda p: p.write_bytes(buf.getvalue()[:200]))
    add("page.jpg", False, lambda p: p.write_text("<html><body>not a photo</body></html>"))
    add("tiny.png", False, lambda p: Image.new("RGB", (1, 1)).save(p))
    add("bomb.png", False, lambda p: Image.new("1", (14000, 14000)).save(p))
    (root / "folder.png").mkdir()                                        # a directory with an image name
    add("sixteen.png", True, lambda p: Image.fromarray((rng.random((120, 160)) * 65535).astype(np.uint16)).save(p))
    add("cmyk.jpg", True, lambda p: photo.convert("CMYK").save(p))
    add("palette.png", True, lambda p: photo.convert("P").save(p))
    add("animated.gif", True, lambda p: photo.save(p, save_all=True, append_images=[photo.rotate(90)]))
    exif = Image.Exif()
    exif[0x0112] = 6                                                     # stored sideways
    add("rotated.jpg", True, lambda p: photo.save(p, exif=exif))
    add("strip.png", True, lambda p: photo.resize((20, 2000)).save(p))
    add("with space é.png", True, lambda p: photo.save(p))
    return root, good, bad


def test_every_cli_survives_an_awkward_folder(tmp_path, capsys):
    """One batch over zero-byte, truncated, HTML, 1x1, bomb, 16-bit, CMYK, palette, animated, EXIF-rotated, 20x2000
    and accented files: each bad file is one error line, every good one is encoded and decoded, nothing is lost."""
    import evaluate_pytorch
    from cli_common import add_decode_arguments, add_encode_arguments
    from decode_image_pytorch import decode_all as run_decode_cli
    from encode_image_pytorch import encode_all as run_encode_cli
    from dataset import ImageFolderDataset
    folder, good, bad = awkward_folder(tmp_path / "awk")
    runner = BlockRunner()
    args = _cli_args(add_encode_arguments, "--images_dir", folder, "--save_dir", tmp_path / "out", "--secret", "ok")
    assert run_encode_cli(runner, args) == 1
    err = capsys.readouterr().err
    assert all(f"{name}" in err for name in bad) and f"encoded {len(good)} of {len(good) + len(bad)} images" in err
    outs = sorted(os.listdir(tmp_path / "out"))
    assert outs == sorted(f"{os.path.splitext(n)[0]}_{k}.png" for n in good for k in ("hidden", "residual"))
    with Image.open(tmp_path / "out" / "rotated_hidden.png") as im:
        assert im.size == (120, 180)                                     # EXIF orientation applied
    dargs = _cli_args(add_decode_arguments, "--images_dir", tmp_path / "out", "--json")
    assert run_decode_cli(runner, dargs) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(good) and all(r["message"] == "ok" for r in rows)
    dargs = _cli_args(add_decode_arguments, "--images_dir", folder, "--json")
    assert run_decode_cli(runner, dargs) == 1
    rows = json.loads(capsys.readouterr().out)
    assert sorted(os.path.basename(r["file"]) for r in rows) == sorted(good + bad)
    assert sum("error" in r for r in rows) == len(bad)
    try:
        import cv2  # noqa: F401
        import detect_decode
        assert detect_decode.main(detect_decode.get_parser().parse_args(
            ["--images_dir", str(folder), "--json", "--model", os.path.join(ROOT, "pretrained", "onnx")])) == 1
        rows = json.loads(capsys.readouterr().out)
        assert sorted(os.path.basename(r["file"]) for r in rows) == sorted(good + bad)
        assert sum("error" in r for r in rows) == len(bad)
    except ImportError:
        pass   # detect_decode.py needs OpenCV
    photos, errors = evaluate_pytorch.load_photos(evaluate_pytorch.get_parser().parse_args(
        ["m", "--images_dir", str(folder)]))
    assert len(photos) == len(good) and len(errors) == len(bad)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        ds = ImageFolderDataset(str(folder), (32, 32), 100)
        items = [ds[(i, i)][0] for i in range(len(ds.paths))]
    assert all(t.shape == (3, 32, 32) for t in items)


def test_raw_bits_round_trip(tmp_path, capsys):
    from cli_common import add_decode_arguments, add_encode_arguments
    from decode_image_pytorch import decode_all as run_decode_cli
    from encode_image_pytorch import encode_all as run_encode_cli
    runner = BlockRunner()
    Image.new("RGB", (120, 90), (128, 128, 128)).save(tmp_path / "g.png")
    bits = "".join(np.random.default_rng(1).choice(["0", "1"], 100))
    args = _cli_args(add_encode_arguments, "--image", tmp_path / "g.png", "--save_dir", tmp_path / "o", "--bits", bits,
                     "--verify")
    assert run_encode_cli(runner, args) == 0
    assert "(verified)" in capsys.readouterr().out
    assert run_decode_cli(runner, _cli_args(add_decode_arguments, "--image", tmp_path / "o" / "g_hidden.png",
                                            "--json")) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["bits"] == bits and row["message"] is None                  # raw bits: no code, no message
    args.bits = bits[:50]
    with pytest.raises(ValueError, match="exactly 100 zeros and ones"):
        run_encode_cli(runner, args)


def test_load_model_picks_the_backend_and_fails_in_one_line(ckpt, onnx_dir, tmp_path, capsys, monkeypatch):
    from inference import ModelLoadError, load_model
    from onnx_inference import OnnxStegaStamp
    from stegastamp_pytorch import StegaStamp
    assert isinstance(load_model(ckpt), StegaStamp)
    assert isinstance(load_model(onnx_dir), OnnxStegaStamp)
    assert isinstance(load_model([onnx_dir / "encoder.onnx", onnx_dir / "decoder.onnx"]), OnnxStegaStamp)
    for bad, why in ((onnx_dir / "encoder.onnx", "give its folder"), ([ckpt] * 3, "not 3"),
                     (tmp_path / "missing.pth", "not found"), (os.path.join(ROOT, "examples", "chelsea.jpg"),
                                                               r"not a PyTorch checkpoint \(a JPEG image\)")):
        with pytest.raises(ModelLoadError, match=why):
            load_model(bad)
    # the encode script takes an ONNX folder too; a bad model is one line and exit 2
    Image.new("RGB", (64, 48), (90, 120, 200)).save(tmp_path / "p.png")
    assert cli(encode_image_pytorch, onnx_dir, "--image", tmp_path / "p.png", "--save_dir", tmp_path / "o") == 0
    capsys.readouterr()
    assert cli(decode_image_pytorch, os.path.join(ROOT, "examples", "chelsea.jpg"), "--image", tmp_path / "p.png") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "JPEG" in err[0]
    # an internal error is not turned into a quiet exit code: it keeps its traceback
    monkeypatch.setattr(OnnxStegaStamp, "run_encoder", lambda self, s, i: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli(encode_image_pytorch, onnx_dir, "--image", tmp_path / "p.png", "--save_dir", tmp_path / "o2")


def test_readme_quick_start_golden(tmp_path, monkeypatch, capsys):
    """The README's first command with the shipped model, as written (after its pip install): 'Hello' hidden in
    examples/chelsea.jpg at full size and read back; the same image read through ONNX Runtime."""
    import re
    import shlex
    readme = open(os.path.join(ROOT, "README_PYTORCH.md"), encoding="utf-8").read()
    line = re.search(r"```bash\n(pip install -r requirements_pytorch.txt && python encode_image_pytorch.py.*)\n", readme)
    steps = [shlex.split(part) for part in line.group(1).split(" && ")[1:]]
    monkeypatch.chdir(tmp_path)
    for f in ("pretrained", "examples"):
        os.symlink(os.path.join(ROOT, f), tmp_path / f)
    for argv in steps:
        module = {"encode_image_pytorch.py": encode_image_pytorch, "decode_image_pytorch.py": decode_image_pytorch}[argv[1]]
        assert module.main(module.get_parser().parse_args(argv[2:])) == 0
    out = capsys.readouterr().out
    assert "out/chelsea_hidden.png: 'Hello' (corrected" in out
    assert Image.open(tmp_path / "out" / "chelsea_hidden.png").size == (451, 300)
    assert cli(decode_image_pytorch, os.path.join(ROOT, "pretrained", "onnx"), "--image",
               tmp_path / "out" / "chelsea_hidden.png") == 0
    assert "'Hello'" in capsys.readouterr().out


def test_bad_arguments_are_one_line(ckpt, tmp_path, capsys):
    import torch as _torch
    Image.new("RGB", (64, 48)).save(tmp_path / "p.png")
    if not _torch.cuda.is_available():
        assert cli(encode_image_pytorch, ckpt, "--image", tmp_path / "p.png", "--device", "cuda",
                   "--save_dir", tmp_path / "o") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["error: --device cuda: no CUDA GPU is available on this machine (use --device cpu)"]
    for flag, value, why in (("--batch_size", "0", "must be at least 1"), ("--strength", "0", "must be > 0")):
        with pytest.raises(SystemExit):
            encode_image_pytorch.get_parser().parse_args([str(ckpt), "--image", "x.png", flag, value])
        assert why in capsys.readouterr().err
    assert cli(encode_image_pytorch, ckpt, "--image", tmp_path / "p.png", "--secret", "", "--save_dir",
               tmp_path / "o") == 2
    assert "the secret is empty" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()                                # nothing written


def test_int8_models_load_and_stay_close(onnx_dir):
    """export_onnx.py --int8 writes a static-int8 encoder and a dynamic-int8 decoder; --int8 loads both."""
    from onnx_inference import OnnxStegaStamp
    assert (onnx_dir / "encoder_int8.onnx").exists() and (onnx_dir / "decoder_int8.onnx").exists()
    fp32, int8 = OnnxStegaStamp(str(onnx_dir)), OnnxStegaStamp(str(onnx_dir), int8=True)
    assert int8.config == fp32.config
    img = Image.effect_mandelbrot((96, 64), (-2, -1.2, 1, 1.2), 40).convert("RGB")
    a, b = np.asarray(fp32.encode(img, "abc")[0], int), np.asarray(int8.encode(img, "abc")[0], int)
    assert a.shape == b.shape and np.abs(a - b).mean() < 3


def test_benchmark_profile_counts_each_timed_run_once(onnx_dir):
    """benchmark_inference.py --profile: ONNX Runtime's kernel times per op type, per timed run, warm-ups dropped."""
    from benchmark_inference import kernel_ms_per_op, ort_profile

    def kernel(op, us):
        return {"cat": "Node", "name": f"{op}_node_kernel_time", "dur": us, "args": {"op_name": op}}
    # 2 slow warm-up runs, then 3 timed ones, each: Conv 1000 + 500 us (two nodes), Relu 100 us; plus a non-kernel event
    runs = [[kernel("Conv", 9000), kernel("Conv", 9000), kernel("Relu", 900)]] * 2 + \
        [[kernel("Conv", 1000), kernel("Conv", 500), kernel("Relu", 100)]] * 3
    events = [e for run in runs for e in run] + [{"cat": "Session", "name": "model_run", "dur": 99999}]
    assert kernel_ms_per_op(events, warmup=2, reps=3) == {"Conv": 1.5, "Relu": 0.1}
    x = np.random.default_rng(0).random((1, 3, 80, 80), dtype=np.float32)
    prof = ort_profile(str(onnx_dir / "decoder.onnx"), {"image": x}, threads=1, reps=2)
    assert {"Conv", "GridSample"} <= set(prof) and all(ms > 0 for ms in prof.values())


def test_encoding_verifies_by_default(tmp_path, capsys):
    """Each encoded file is decoded once and says whether its message reads back; an unreadable result is a warning
    (exit 0) or, with --strict, exit 1."""
    from cli_common import add_encode_arguments
    from encode_image_pytorch import encode_all
    Image.new("RGB", (120, 90), (128, 128, 128)).save(tmp_path / "g.png")
    args = _cli_args(add_encode_arguments, "--image", tmp_path / "g.png", "--save_dir", tmp_path / "o", "--secret", "ok")
    assert encode_all(BlockRunner(), args) == 0 and "(verified)" in capsys.readouterr().out
    weak = _cli_args(add_encode_arguments, "--image", tmp_path / "g.png", "--save_dir", tmp_path / "w", "--secret",
                     "ok", "--strength", "0.001")
    assert encode_all(BlockRunner(), weak) == 0
    assert "do not read back reliably" in capsys.readouterr().err
    weak.strict, weak.overwrite = True, True
    assert encode_all(BlockRunner(), weak) == 1


def test_decode_view_crops_and_pads_each_side():
    """The decoding views: a share of each side cropped off, or added with the edge pixels repeated."""
    from inference import decode_view
    img = Image.fromarray(np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3))    # W 20, H 10
    crop = decode_view(img, 0.1)
    assert crop.size == (16, 8) and np.array_equal(np.asarray(crop), np.asarray(img)[1:9, 2:18])
    pad = np.asarray(decode_view(img, -0.1))
    assert pad.shape == (12, 24, 3) and np.array_equal(pad[1:11, 2:22], np.asarray(img))
    assert np.array_equal(pad[1:11, 0], np.asarray(img)[:, 0]) and np.array_equal(pad[0, 2:22], np.asarray(img)[0])


def test_decoding_views_read_what_the_whole_image_misses(tmp_path, capsys):
    """An encoded image framed by a border (what a loose crop of a photo does): read whole, its blocks no longer line
    up and no message reads; its 'crop 10%' view is the encoded image again and reads. Only the image that missed is
    read through the views (one batched call), and --no_tta / tta=False keep the original's single read."""
    runner = BlockRunner()
    enc = runner.encode(Image.new("RGB", (160, 160), (120, 120, 120)), "Hello")[0]
    framed = Image.fromarray(np.pad(np.asarray(enc), ((20, 20), (20, 20), (0, 0)), mode="edge"))   # 200 x 200
    assert runner.decode(framed, tta=False).message is None
    calls, decode_logits = [], runner.decode_logits
    runner.decode_logits = lambda images: calls.append(len(images)) or decode_logits(images)
    assert [r.message for r in runner.decode_batch([enc, framed])] == ["Hello", "Hello"]
    assert calls == [2, 4]
    from cli_common import add_decode_arguments
    from decode_image_pytorch import decode_all
    framed.save(tmp_path / "framed.png")
    capsys.readouterr()
    assert decode_all(runner, _cli_args(add_decode_arguments, "--image", tmp_path / "framed.png")) == 0
    assert "'Hello'" in capsys.readouterr().out
    assert decode_all(runner, _cli_args(add_decode_arguments, "--image", tmp_path / "framed.png", "--no_tta")) == 0
    assert "no message found" in capsys.readouterr().out


@pytest.fixture(scope="module")
def shipped():
    from stegastamp_pytorch import StegaStamp
    return StegaStamp.load(os.path.join(ROOT, "pretrained", "stegastamp_128.pth"), "cpu")


def test_optimize_makes_a_fainter_residual_that_still_reads(shipped):
    """--optimize follows the decoder's gradients: the refined residual is weaker than the encoder's (higher PSNR)
    and its message reads back clean, after JPEG 50 and after a 5% perspective change; the strength then scales the
    refined residual, which is the same on every call (seeded views). A wrong sign, a loss on the wrong tensor, a
    no-op or an unseeded view fails one of these."""
    from distortions import DISTORTIONS
    from evaluate_pytorch import psnr
    cover = load_image(os.path.join(ROOT, "examples", "chelsea.jpg"))
    plain = shipped.encode(cover, "Hello")[0]
    refined = shipped.encode(cover, "Hello", optimize=40)[0]
    assert psnr(refined, cover) > psnr(plain, cover) + 1.0
    for d in ("clean", "jpeg50", "persp5%"):
        copy = DISTORTIONS[d](refined, np.random.default_rng(0))
        assert shipped.decode(copy, tta=False).message == "Hello", d
    half = shipped.encode(cover, "Hello", strength=0.5, optimize=40)[0]
    diff = lambda im: np.abs(np.asarray(im, float) - np.asarray(cover, float)).mean()
    assert diff(half) == pytest.approx(diff(refined) / 2, rel=0.05)


def test_auto_checks_the_refined_residual_against_the_harder_copies(shipped, monkeypatch):
    """--strength auto with --optimize checks AUTO_CHECKS_OPTIMIZED (10% perspective, brightness x1.3), without it
    AUTO_CHECKS: the list actually passed to the read-back check, recorded."""
    import inference as codec_io
    seen = []
    monkeypatch.setattr(type(shipped), "_reads_back", lambda self, im, s, checks, seed=0: seen.append(checks) or True)
    cover = load_image(os.path.join(ROOT, "examples", "chelsea.jpg")).resize((160, 120))
    assert shipped.encode(cover, "Hi", strength="auto").strength == codec_io.AUTO_STRENGTHS[0]
    shipped.encode(cover, "Hi", strength="auto", optimize=1)
    assert seen == [codec_io.AUTO_CHECKS, codec_io.AUTO_CHECKS_OPTIMIZED]
    assert {"persp10%", "bright1.3"} <= set(codec_io.AUTO_CHECKS_OPTIMIZED) - set(codec_io.AUTO_CHECKS)


def test_default_encoder_is_fainter_than_v6_with_the_same_decoder(shipped):
    """The default model (v7 since session 14, finetune_encoder.py) has v6's decoder bit for bit
    (pretrained/stegastamp_128_v6.pth) and an encoder whose residual is weaker on the example photo (its PSNR higher);
    the message reads back with either model, so stamps made with v6 still read with the default."""
    from evaluate_pytorch import psnr
    from models_pytorch import read_checkpoint
    from stegastamp_pytorch import StegaStamp
    path = os.path.join(ROOT, "pretrained", "stegastamp_128_v6.pth")
    old, new = read_checkpoint(path), read_checkpoint(os.path.join(ROOT, "pretrained", "stegastamp_128.pth"))
    assert all(torch.equal(old["decoder"][k], v) for k, v in new["decoder"].items())
    v6 = StegaStamp.load(path, "cpu")
    cover = load_image(os.path.join(ROOT, "examples", "chelsea.jpg"))
    encoded, encoded_v6 = shipped.encode(cover, "Hello")[0], v6.encode(cover, "Hello")[0]
    assert psnr(encoded, cover) > psnr(encoded_v6, cover) + 1.0
    assert v6.decode(encoded).message == "Hello" and shipped.decode(encoded_v6).message == "Hello"


def test_shipped_onnx_is_the_shipped_checkpoints_export(shipped):
    """pretrained/onnx/ must be pretrained/stegastamp_128.pth exported: the same residual (fp32 encoder), logits
    (decoder) and the int8 encoder's image reads back. A default model replaced without re-exporting (the browser,
    phones and onnx_inference.py would then ship another encoder than the PyTorch scripts) fails here."""
    from onnx_inference import OnnxStegaStamp
    onnx = OnnxStegaStamp(os.path.join(ROOT, "pretrained", "onnx"))
    int8 = OnnxStegaStamp(os.path.join(ROOT, "pretrained", "onnx"), int8=True)
    cover = load_image(os.path.join(ROOT, "examples", "chelsea.jpg"))
    a, b = (np.asarray(m.encode(cover, "Hello")[1], np.float32) for m in (shipped, onnx))
    assert np.abs(a - b).max() <= 1.0                                  # residual images, 0-255: rounding only
    encoded = int8.encode(cover, "Hello")[0]
    assert shipped.decode(encoded).message == "Hello" and onnx.decode(encoded).message == "Hello"


def test_optimize_needs_a_pytorch_model(ckpt, photos, tmp_path, capsys):
    """An ONNX model cannot follow gradients: --optimize is refused in one line before anything is written."""
    from onnx_inference import OnnxStegaStamp
    from inference import ModelLoadError
    onnx = OnnxStegaStamp(os.path.join(ROOT, "pretrained", "onnx"))
    with pytest.raises(ModelLoadError, match="--optimize needs a PyTorch checkpoint"):
        onnx.encode(load_image(photos / "wide.jpg"), "Hi", optimize=3)
    out = tmp_path / "out"
    code = cli(encode_image_pytorch, os.path.join(ROOT, "pretrained", "onnx"), "--images_dir", photos,
               "--save_dir", out, "--secret", "Hi", "--optimize", "3", "--no_progress")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--optimize needs a PyTorch checkpoint" in err[0]
    assert not out.exists() or not any(out.iterdir())
