"""train_pytorch.py end to end at a tiny size: checkpoints and TensorBoard events, exact resume, borders, DDP."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import train_pytorch
from models_pytorch import load_checkpoint, read_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--size", "32", "--batch_size", "2", "--lpips_backbone", "random", "--workers", "0", "--log_interval", "1",
        "--no_progress", "--img_interval", "2", "--no_im_loss_steps", "1", "--rnd_trans_ramp", "2",
        "--l2_loss_ramp", "2", "--lpips_loss_ramp", "2", "--G_loss_ramp", "2", "--l2_edge_delay", "1",
        "--l2_edge_ramp", "2", "--rnd_bri_ramp", "2", "--jpeg_quality_ramp", "2"]


def run(tmp_path, name, *extra):
    args = train_pytorch.get_parser().parse_args(
        [name, *TINY, "--logs_dir", str(tmp_path / "logs"), "--checkpoints_dir", str(tmp_path / "ckpt"), *extra])
    return train_pytorch.main(args)


def test_two_steps_write_checkpoint_and_events(tmp_path):
    assert run(tmp_path, "t", "--num_steps", "2") == 2
    final = tmp_path / "ckpt" / "t" / "t_final.pth"
    cfg, enc, dec = load_checkpoint(final)
    assert (cfg.height, cfg.secret_size) == (32, 100)
    ckpt = read_checkpoint(final)
    assert ckpt["step"] == 2 and ckpt["opt_g"] is not None and ckpt["discriminator"] is not None
    assert glob.glob(str(tmp_path / "logs" / "t" / "events.out.tfevents.*"))
    rows = [json.loads(line) for line in open(tmp_path / "logs" / "t" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]
    # step 2 is past the warm-up: every loss term is present and finite
    assert {"loss/secret", "loss/l2", "loss/lpips", "loss/G", "loss/D", "metric/bit_acc"} <= set(rows[1])
    assert all(torch.isfinite(torch.tensor(v)) for r in rows for v in r.values())


def _weights(path):
    ckpt = read_checkpoint(path)
    return {f"{part}.{k}": v for part in ("encoder", "decoder", "discriminator") for k, v in ckpt[part].items()}


def assert_resume_is_exact(tmp_path, flags):
    """4 steps in one run == 2 steps, then resumed to 4 (flags end with --init_from CKPT, which a resume drops)."""
    run(tmp_path, "whole", "--num_steps", "4", *flags)
    run(tmp_path, "part", "--num_steps", "2", *flags)
    run(tmp_path, "part", "--num_steps", "4", *flags[:-2], "--pretrained",
        str(tmp_path / "ckpt" / "part" / "part_final.pth"))
    a = _weights(tmp_path / "ckpt" / "whole" / "whole_final.pth")
    b = _weights(tmp_path / "ckpt" / "part" / "part_final.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_exact(tmp_path):
    run(tmp_path, "full", "--num_steps", "4", "--last_every", "2")
    run(tmp_path, "half", "--num_steps", "2", "--ckpt_every", "2")
    ckpts = sorted(os.listdir(tmp_path / "ckpt" / "half"))
    assert ckpts == ["half_final.pth", "half_last.pth"]        # the last step is written once (final), not again
    assert os.path.samefile(tmp_path / "ckpt" / "half" / "half_final.pth", tmp_path / "ckpt" / "half" / "half_last.pth")
    mid = _weights(tmp_path / "ckpt" / "half" / "half_final.pth")
    run(tmp_path, "half", "--num_steps", "4", "--pretrained", str(tmp_path / "ckpt" / "half" / "half_last.pth"))
    a, b = _weights(tmp_path / "ckpt" / "full" / "full_final.pth"), _weights(tmp_path / "ckpt" / "half" / "half_final.pth")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ...and the resumed half really trained: it differs from the step-2 state it started from
    assert any(not torch.equal(a[k], mid[k]) for k in a)


def test_resume_refuses_other_model_config(tmp_path):
    run(tmp_path, "a", "--num_steps", "1")
    with pytest.raises(SystemExit, match="holds a model with .*these flags give"):
        run(tmp_path, "a", "--num_steps", "2", "--size", "48", "--pretrained", str(tmp_path / "ckpt" / "a" / "a_final.pth"))


@pytest.mark.parametrize("borders", train_pytorch.BORDERS)
def test_every_border_mode_runs(tmp_path, borders):
    assert run(tmp_path, borders, "--num_steps", "2", "--borders", borders, "--no-tensorboard") == 2


def test_fill_borders_values():
    image = torch.rand(2, 3, 16, 16)
    M = torch.tensor([[1.0, 0, -4, 0, 1, 0, 0, 0]]).repeat(2, 2, 1)   # unwarp shifts right by 4: 4 empty columns
    white = train_pytorch.fill_borders(image, image, M, "white")
    black = train_pytorch.fill_borders(image, image, M, "black")
    assert torch.allclose(white[..., :4], torch.ones(1)) and black[..., :4].abs().max() < 1e-6
    other = train_pytorch.fill_borders(image, image, M, "image")
    assert torch.allclose(other[0, :, :, :4], image[1, :, :, :4], atol=1e-6)
    same, mask = train_pytorch.fill_borders(image, image, M, "white", with_mask=True)
    assert torch.equal(same, white) and mask[..., :4].abs().max() < 1e-6 and mask[..., 5:].min() > 1 - 1e-6


def test_gated_warmup_waits_for_accuracy(tmp_path):
    """With --secret_warmup_acc the warm-up does not end at no_im_loss_steps while the bits are unread."""
    run(tmp_path, "g", "--num_steps", "3", "--secret_warmup_acc", "0.99", "--gate_window", "1")
    rows = [json.loads(line) for line in open(tmp_path / "logs" / "g" / "metrics.jsonl")]
    assert all(r["ramp/warmup"] == 1.0 for r in rows) and "loss/l2" not in rows[-1]
    assert read_checkpoint(tmp_path / "ckpt" / "g" / "g_final.pth")["gate_step"] is None


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "train_pytorch.py"), "ddp", *TINY, "--num_steps", "4", "--device", "cpu", "--secret_warmup_acc", "0.5", "--gate_window", "1",
           "--logs_dir", str(tmp_path / "logs"), "--checkpoints_dir", str(tmp_path / "ckpt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ranks in sync: 2 processes" in res.stdout
    assert (tmp_path / "ckpt" / "ddp" / "ddp_final.pth").exists()


def test_loss_scales_follow_ramps_and_edge_delay():
    args = train_pytorch.get_parser().parse_args(["x"])   # train.py defaults
    s = train_pytorch.loss_scales(args, 10000)
    assert s["l2"] == pytest.approx(1.5 * 10000 / 20000) and s["secret"] == 1.0
    assert s["l2_edge_gain"] == 0.0                          # delayed until step 60000
    assert train_pytorch.loss_scales(args, 70000)["l2_edge_gain"] == pytest.approx(10 * 10000 / 20000)
    assert train_pytorch.loss_scales(args, 10**6)["G"] == 1.0
    args.no_gan = True
    assert train_pytorch.loss_scales(args, 10**6)["G"] == 0.0


def test_critic_is_trained_and_clipped(tmp_path):
    run(tmp_path, "c", "--num_steps", "3")
    ckpt = read_checkpoint(tmp_path / "ckpt" / "c" / "c_final.pth")
    weights = torch.cat([v.flatten() for k, v in ckpt["discriminator"].items()])
    assert weights.abs().max() <= 0.01 + 1e-7                 # WGAN weight clipping
    assert ckpt["opt_d"]["state"]                             # RMSprop has taken steps


def test_bf16_autocast_on_cpu(tmp_path):
    assert run(tmp_path, "amp", "--num_steps", "2", "--amp", "bf16", "--no-tensorboard") == 2
    rows = [json.loads(line) for line in open(tmp_path / "logs" / "amp" / "metrics.jsonl")]
    assert all(torch.isfinite(torch.tensor(v)) for r in rows for v in r.values())


def test_eval_only_on_a_finished_run(tmp_path, capsys):
    run(tmp_path, "e", "--num_steps", "2")
    capsys.readouterr()
    run(tmp_path, "e", "--num_steps", "2", "--eval_batches", "2", "--pretrained", str(tmp_path / "ckpt" / "e" / "e_final.pth"))
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("eval at step 2")]
    assert len(line) == 1 and "bit_acc 0." in line[0]


def test_init_from_loads_weights_and_starts_a_new_run(tmp_path, capsys):
    run(tmp_path, "src", "--num_steps", "2")
    src = tmp_path / "ckpt" / "src" / "src_final.pth"
    # lr 0: the generator keeps exactly the weights it was initialised with; the run starts at step 0
    assert run(tmp_path, "ft", "--num_steps", "2", "--lr", "0", "--init_from", str(src)) == 2
    a, b = read_checkpoint(src), read_checkpoint(tmp_path / "ckpt" / "ft" / "ft_final.pth")
    for part in ("encoder", "decoder"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert "initialised from the weights of" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="give one"):
        run(tmp_path, "ft2", "--num_steps", "2", "--init_from", str(src), "--pretrained", str(src))
    with pytest.raises(SystemExit, match="these flags give"):
        run(tmp_path, "ft3", "--num_steps", "2", "--size", "48", "--init_from", str(src))


def test_psnr_metric_ignores_the_filled_corners():
    image = torch.rand(2, 3, 16, 16)
    valid = torch.ones(2, 1, 16, 16)
    valid[:, :, :4, :4] = 0
    encoded = image.clone()
    encoded[:, :, :4, :4] = 1.0                 # the border fill: no model controls it
    out = {"logits": torch.zeros(2, 100), "encoded": encoded, "valid": valid}
    assert train_pytorch.metrics(out, image, torch.zeros(2, 100))["psnr"] > 90
    encoded[:, :, 8:, 8:] += 0.1                # a residual inside the valid area does count: 10 dB per decade
    m = train_pytorch.metrics(out, image, torch.zeros(2, 100))["psnr"]
    assert 20 < m < 40


def test_adaptive_image_loss_gain_follows_accuracy(tmp_path):
    """The gain rises while bit accuracy is above the target and falls while below; it is saved and resumed."""
    run(tmp_path, "up", "--num_steps", "4", "--adaptive_image_loss", "0.0", "--adaptive_rate", "1.0")
    run(tmp_path, "down", "--num_steps", "4", "--adaptive_image_loss", "1.0", "--adaptive_rate", "1.0")
    up = read_checkpoint(tmp_path / "ckpt" / "up" / "up_final.pth")["log_image_gain"]
    down = read_checkpoint(tmp_path / "ckpt" / "down" / "down_final.pth")["log_image_gain"]
    assert up > 0.5 and down < -0.5    # bit accuracy lies strictly between 0 and 1 on these batches
    rows = [json.loads(line) for line in open(tmp_path / "logs" / "up" / "metrics.jsonl")]
    # the logged weights are the ramped weights times the gain
    last = rows[-1]
    assert last["ramp/image_gain"] > 1 and abs(last["ramp/l2"] / last["ramp/image_gain"] - 1.5) < 1e-6


def test_texture_weight_is_high_on_flat_areas():
    img = torch.zeros(1, 3, 32, 32)
    img[..., :, 16:] = torch.rand(1, 3, 32, 16)           # left half flat, right half busy
    w = train_pytorch.texture_weight(img)
    assert w.shape == (1, 1, 32, 32) and abs(w.mean().item() - 1) < 1e-5
    assert w[..., :, :8].mean() > 3 * w[..., :, 24:].mean()
    loss_flat, _ = train_pytorch.image_loss(img + 0.1 * (torch.arange(32) < 16).float(), img, torch.ones(3),
                                            torch.zeros(32, 32), w)
    loss_busy, _ = train_pytorch.image_loss(img + 0.1 * (torch.arange(32) >= 16).float(), img, torch.ones(3),
                                            torch.zeros(32, 32), w)
    assert loss_flat > 3 * loss_busy                       # the same residual costs more on the flat half


def test_time_limit_stops_cleanly(tmp_path, capsys):
    steps = run(tmp_path, "t", "--num_steps", "1000", "--time_limit", "0")
    assert steps == 0 and (tmp_path / "ckpt" / "t" / "t_final.pth").exists()
    assert "--time_limit 0 min reached" in capsys.readouterr().out


def test_random_crop_training_data(tmp_path):
    from PIL import Image
    d = tmp_path / "photos"
    d.mkdir()
    Image.effect_mandelbrot((300, 200), (-2, -1.2, 1, 1.2), 50).convert("RGB").save(d / "a.jpg")
    assert run(tmp_path, "rc", "--num_steps", "1", "--train_path", str(d), "--random_crop", "0.3") == 1


def test_existing_run_is_not_replaced_without_overwrite(tmp_path):
    run(tmp_path, "r", "--num_steps", "1")
    before = (tmp_path / "logs" / "r" / "metrics.jsonl").read_text()
    with pytest.raises(SystemExit, match="--pretrained .*r_last.pth.*--overwrite"):
        run(tmp_path, "r", "--num_steps", "1")
    assert (tmp_path / "logs" / "r" / "metrics.jsonl").read_text() == before      # nothing appended
    run(tmp_path, "r", "--num_steps", "2", "--overwrite")
    rows = [json.loads(line) for line in open(tmp_path / "logs" / "r" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]                                       # the old log is gone


def test_migration_guide_train_command_runs_offline(tmp_path, monkeypatch, capsys):
    """`python train_pytorch.py my_experiment --secret_size 100 --num_steps 140000 --batch_size 4 --lr 0.0001` as
    written (plus --dry_run: 2 steps), with no torchvision download possible: LPIPS uses the bundled AlexNet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.chdir(tmp_path)
    argv = "my_experiment --secret_size 100 --num_steps 140000 --batch_size 4 --lr 0.0001".split()
    assert train_pytorch.main(train_pytorch.get_parser().parse_args(argv + ["--dry_run", "--workers", "0"])) == 2
    assert "lpips bundled" in capsys.readouterr().out
    assert (tmp_path / "checkpoints" / "my_experiment" / "my_experiment_final.pth").exists()


class _LinearCritic(torch.nn.Module):
    """A critic whose score is the mean pixel value times w: hand-computable gradients."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.005]))

    def forward(self, x):
        heat = x.mean(dim=1, keepdim=True) * self.w
        return heat.mean(), heat


def test_critic_step_minimises_real_minus_fake():
    """d_loss = mean D(real) - mean D(fake), and one step moves the critic to score fakes higher than reals
    (catches swapped real/fake terms or a flipped sign)."""
    critic = _LinearCritic()
    opt = torch.optim.RMSprop(critic.parameters(), lr=1e-3)
    real, fake = torch.full((2, 3, 8, 8), 0.8), torch.full((2, 3, 8, 8), 0.2)
    d_loss = train_pytorch.critic_step(critic, opt, {"real": real, "fake": fake})
    assert abs(d_loss.item() - 0.005 * (0.8 - 0.2)) < 1e-7          # before the update
    # gradient of d_loss wrt w is 0.8 - 0.2 > 0: w must fall (and stay inside the +-0.01 clip)
    assert critic.w.item() < 0.005 and critic.w.abs().item() <= 0.01


def test_total_loss_is_the_weighted_sum_of_its_terms():
    """total = secret_w * BCE + l2_w * L2 + lpips_w * LPIPS + G_w * G, each at its own weight (catches a dropped or
    swapped weight)."""
    from types import SimpleNamespace
    torch.manual_seed(0)
    image = torch.rand(2, 3, 16, 16)
    encoded = (image + 0.1 * torch.randn_like(image)).clamp(0, 1)
    secret = torch.randint(0, 2, (2, 100)).float()
    out = {"logits": torch.randn(2, 100), "encoded": encoded, "fake": encoded}
    scales = {"secret": 1.5, "l2": 2.0, "lpips": 3.0, "G": 0.25, "l2_edge_gain": 0.0}
    lpips_fn = lambda a, b, normalize: torch.full((2, 1, 1, 1), 0.125)
    args = SimpleNamespace(no_gan=False, texture_mask=False)
    critic = _LinearCritic()
    losses = train_pytorch.compute_losses(out, image, secret, critic, lpips_fn, scales, args,
                                          torch.zeros(16, 16), torch.tensor([1.0, 100.0, 100.0]))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], secret)
    yuv = lambda x: train_pytorch.rgb_to_yuv(x)
    per_ch = (yuv(encoded) - yuv(image)).pow(2).mean(dim=(0, 2, 3))
    l2 = per_ch[0] + 100 * per_ch[1] + 100 * per_ch[2]
    g = 0.005 * encoded.mean()
    expected = 1.5 * bce + 2.0 * l2 + 3.0 * 0.125 + 0.25 * g
    assert torch.allclose(losses["total"], expected, atol=1e-6)
    assert torch.allclose(losses["secret"], bce) and torch.allclose(losses["l2"], l2, atol=1e-6)


def test_edge_falloff_weights_the_border():
    """image_loss multiplies the difference by (1 + falloff) before squaring: a difference on the border costs
    (1 + gain)^2 times one in the centre."""
    image = torch.zeros(1, 3, 8, 8)
    falloff = torch.zeros(8, 8)
    falloff[0, :] = 1.0
    border, centre = image.clone(), image.clone()
    border[:, 0, 0, 3] = 0.5                       # R on the (weighted) top row
    centre[:, 0, 4, 3] = 0.5
    scales = torch.ones(3)
    lb, _ = train_pytorch.image_loss(border, image, scales, falloff * 3.0)
    lc, _ = train_pytorch.image_loss(centre, image, scales, falloff * 3.0)
    assert torch.allclose(lb, 16 * lc)


def test_bit_accuracy_counts_logits_above_zero_as_one():
    secret = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    out = {"logits": torch.tensor([[2.0, -1.0, -0.5, 0.3]]), "encoded": torch.zeros(1, 3, 4, 4),
           "valid": torch.ones(1, 1, 4, 4)}
    m = train_pytorch.metrics(out, torch.zeros(1, 3, 4, 4), secret)
    assert m["bit_acc"].item() == 0.5 and m["str_acc"].item() == 0.0


@pytest.mark.parametrize("mode", ["black", "white", "randomrgb", "random"])
def test_fill_borders_fills_every_channel(mode):
    image = torch.full((2, 3, 16, 16), 0.5)
    M = torch.tensor([[1.0, 0, -4, 0, 1, 0, 0, 0]]).repeat(2, 2, 1)   # 4 empty columns on the left
    torch.manual_seed(3)
    out = train_pytorch.fill_borders(image, image, M, mode)
    fill = out[..., :4]
    per_channel = fill.mean(dim=(0, 2, 3))
    if mode in ("black", "white"):
        assert torch.allclose(fill, torch.full_like(fill, 1.0 if mode == "white" else 0.0), atol=1e-6)
    elif mode == "random":                                            # one grey for all three channels
        assert torch.allclose(per_channel, per_channel[0].expand(3), atol=1e-6)
    else:                                                             # one colour: three different values
        assert len(set(per_channel.tolist())) == 3
    assert torch.allclose(out[..., 5:], image[..., 5:], atol=1e-6)  # the image itself untouched


def test_named_code_travels_to_checkpoint_onnx_and_both_backends(tmp_path, capsys):
    """A model trained with --code bch_100_robust: the code is in the checkpoint and the ONNX metadata, both
    backends use it with no flag (5-byte limit), and they read the same bits."""
    import export_onnx
    from onnx_inference import OnnxStegaStamp
    from stegastamp_pytorch import StegaStamp
    from PIL import Image
    run(tmp_path, "code", "--num_steps", "1", "--code", "bch_100_robust")
    ck = tmp_path / "ckpt" / "code" / "code_final.pth"
    assert read_checkpoint(ck)["model_config"]["code"] == "bch_100_robust"
    assert export_onnx.main(export_onnx.get_parser().parse_args([str(ck), "--out_dir", str(tmp_path / "onnx")])) == 0
    pt, ox = StegaStamp.load(ck, "cpu"), OnnxStegaStamp(str(tmp_path / "onnx"))
    assert pt.config["code"] == ox.config["code"] == "bch_100_robust"
    for m in (pt, ox):
        assert m.codec.data_bytes == 5 and m.codec.t == 8
        with pytest.raises(ValueError, match="at most 5 fit"):
            m.encode(Image.new("RGB", (64, 64)), "sixsix")
    img = Image.effect_mandelbrot((64, 48), (-2, -1.2, 1, 1.2), 30).convert("RGB")
    enc_pt, enc_ox = pt.encode(img, "five5")[0], ox.encode(img, "five5")[0]
    assert np.abs(np.asarray(enc_pt, int) - np.asarray(enc_ox, int)).max() <= 1
    assert pt.decode(enc_pt).bits == ox.decode(enc_pt).bits
    with pytest.raises(SystemExit, match="contradicts"):
        run(tmp_path, "bad", "--num_steps", "1", "--code", "bch_256", "--secret_size", "100")


def test_freeze_encoder_trains_the_decoder_for_a_scaled_residual(tmp_path, capsys):
    run(tmp_path, "src", "--num_steps", "2")
    src = read_checkpoint(tmp_path / "ckpt" / "src" / "src_final.pth")
    flags = ["--freeze_encoder", "--residual_scale", "0.5", "--residual_scale_ramp", "4",
             "--init_from", str(tmp_path / "ckpt" / "src" / "src_final.pth")]
    run(tmp_path, "fz", "--num_steps", "3", *flags)
    out = read_checkpoint(tmp_path / "ckpt" / "fz" / "fz_final.pth")
    # the last step (index 2) ran at scale 1 + (0.5 - 1) * 2/4 = 0.75, baked into the encoder's linear last layer only
    assert out["residual_scale"] == 0.75
    for k, v in src["encoder"].items():
        expect = v * 0.75 if k.startswith("residual.") else v
        assert torch.allclose(out["encoder"][k], expect, rtol=1e-6, atol=0), k
    assert any(not torch.equal(out["decoder"][k], v) for k, v in src["decoder"].items())   # the decoder trained
    # message loss only: no image-loss or critic terms are logged
    rows = [json.loads(line) for line in open(tmp_path / "logs" / "fz" / "metrics.jsonl")]
    assert "loss/l2" not in rows[-1] and "loss/D" not in rows[-1] and rows[-1]["ramp/residual_scale"] == 0.75
    import release_checkpoint   # the released fp16 file keeps the scale (provenance) and loads as a pair
    rel = tmp_path / "fz_release.pth"
    assert release_checkpoint.main(release_checkpoint.get_parser().parse_args(
        [str(tmp_path / "ckpt" / "fz" / "fz_final.pth"), str(rel)])) == 0
    assert read_checkpoint(rel)["residual_scale"] == 0.75 and load_checkpoint(rel)[0].height == 32
    assert_resume_is_exact(tmp_path, flags)   # across the ramp


@pytest.mark.parametrize("extra, match", [
    (["--residual_scale", "0.5"], "needs --freeze_encoder"),
    (["--freeze_encoder", "--residual_scale", "0"], "needs --freeze_encoder and a value > 0"),
    (["--freeze_encoder", "--secret_warmup_acc", "0.9"], "drop --secret_warmup_acc"),
])
def test_freeze_encoder_flag_errors(tmp_path, extra, match):
    with pytest.raises(SystemExit, match=match):
        run(tmp_path, "bad", "--num_steps", "1", *extra)


def test_residual_bound_anneals_and_travels_in_the_checkpoint(tmp_path):
    """--residual_bound: B*tanh(raw/B), the bound annealed log-linearly and saved as the one in force; inference
    applies it; an unbounded model can be fine-tuned into it."""
    run(tmp_path, "src", "--num_steps", "2")
    flags = ["--residual_bound", "0.02", "--residual_bound_start", "0.08", "--residual_bound_ramp", "4",
             "--init_from", str(tmp_path / "ckpt" / "src" / "src_final.pth")]
    run(tmp_path, "bd", "--num_steps", "3", *flags)
    # ramp steps 0, 1, 2 (no gate): the last step ran at 0.08 * (0.02 / 0.08) ** (2 / 4) = 0.04
    rows = [json.loads(line) for line in open(tmp_path / "logs" / "bd" / "metrics.jsonl")]
    assert rows[-1]["ramp/residual_bound"] == pytest.approx(0.04)
    cfg, enc, _ = load_checkpoint(tmp_path / "ckpt" / "bd" / "bd_final.pth")
    assert cfg.residual_bound == pytest.approx(0.04) and float(enc.bound) == pytest.approx(0.04)
    with torch.no_grad():
        r = enc(torch.randint(0, 2, (2, 100)).float(), torch.rand(2, 3, 32, 32))
        assert r.abs().max() <= 0.04 + 1e-7
        enc.bound.fill_(1e6)                     # a huge bound is the identity: the raw residual is larger
        assert enc(torch.randint(0, 2, (2, 100)).float(), torch.rand(2, 3, 32, 32)).abs().max() > 0.04
    pytest.importorskip("onnxruntime")            # the ONNX export holds the bound too
    import export_onnx
    import onnxruntime as ort
    assert export_onnx.main(export_onnx.get_parser().parse_args(
        [str(tmp_path / "ckpt" / "bd" / "bd_final.pth"), "--out_dir", str(tmp_path / "onnx")])) == 0
    s, x = torch.randint(0, 2, (2, 100)).float(), torch.rand(2, 3, 32, 32)
    got = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"secret": s.numpy(), "image": x.numpy()})[0]
    with torch.no_grad():
        enc.bound.fill_(0.04)
        assert np.abs(got - enc(s, x).numpy()).max() < 1e-5 and np.abs(got).max() <= 0.04 + 1e-6
    assert_resume_is_exact(tmp_path, flags)   # across the anneal
    with pytest.raises(SystemExit, match="needs 0 < B <= --residual_bound_start"):
        run(tmp_path, "bad", "--num_steps", "1", "--residual_bound", "0.6")
