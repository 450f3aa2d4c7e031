"""finetune_encoder.py at a tiny size: only the encoder moves, its energy cost pulls the residual down, the starting
encoder is kept as the reference, resume is exact, and a checkpoint without a reference is refused in one line."""
import contextlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

import finetune_encoder
from models_pytorch import ModelConfig, StegaStampDecoder, StegaStampEncoder, read_checkpoint, save_checkpoint


@pytest.fixture
def setup(tmp_path):
    cfg = ModelConfig(height=32, width=32)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "init.pth", cfg, StegaStampEncoder(cfg), StegaStampDecoder(cfg))
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(photos / f"p{i}.jpg")
    return tmp_path


def run(tmp, name, *extra):
    args = finetune_encoder.get_parser().parse_args(
        [name, "--train_path", str(tmp / "photos"), "--batch_size", "2", "--log_interval", "1", "--no_progress",
         "--no-tensorboard", "--energy_weight", "10", "--lr", "1e-3", "--checkpoints_dir", str(tmp / "ckpt"),
         "--logs_dir", str(tmp / "logs"), *extra])
    return finetune_encoder.main(args)


def test_only_the_encoder_moves_and_resume_is_exact(setup):
    init = str(setup / "init.pth")
    assert run(setup, "whole", "--num_steps", "4", "--init_from", init) == 0
    start, whole = read_checkpoint(init), read_checkpoint(setup / "ckpt" / "whole" / "whole_final.pth")
    assert whole["step"] == 4
    assert all(torch.equal(start["decoder"][k], v) for k, v in whole["decoder"].items())           # frozen
    assert all(torch.equal(start["encoder"][k], v) for k, v in whole["reference_encoder"].items())  # kept
    assert any(not torch.equal(start["encoder"][k], v) for k, v in whole["encoder"].items())        # trained
    rows = [json.loads(line) for line in open(setup / "logs" / "whole" / "metrics.jsonl")]
    energy = [r["loss/energy_ratio"] for r in rows]
    assert energy[0] == pytest.approx(1.0) and energy[-1] < 0.9      # the residual shrinks against the reference
    # 2 steps, then resumed to 4 from the last checkpoint: the same weights as 4 in one go
    run(setup, "part", "--num_steps", "2", "--init_from", init, "--last_every", "2")
    run(setup, "part", "--num_steps", "4", "--pretrained", str(setup / "ckpt" / "part" / "part_last.pth"))
    part = read_checkpoint(setup / "ckpt" / "part" / "part_final.pth")
    assert all(torch.equal(whole["encoder"][k], v) for k, v in part["encoder"].items())
    assert all(torch.equal(whole["reference_encoder"][k], v) for k, v in part["reference_encoder"].items())


def test_resume_needs_a_reference_and_names_are_not_reused(setup, capsys):
    assert run(setup, "x", "--num_steps", "1", "--pretrained", str(setup / "init.pth")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a finetune_encoder.py checkpoint" in err[0]
    run(setup, "y", "--num_steps", "1", "--init_from", str(setup / "init.pth"))
    with pytest.raises(SystemExit, match="exists"):
        run(setup, "y", "--num_steps", "1", "--init_from", str(setup / "init.pth"))


def test_reference_from_another_model_and_workers_see_the_same_data(setup):
    """--reference keeps that model's encoder as the yardstick (not the starting one's); the crops come from the
    step alone, so a run with a DataLoader worker trains the same weights as one without."""
    cfg = ModelConfig(height=32, width=32)
    torch.manual_seed(1)
    save_checkpoint(setup / "ref.pth", cfg, StegaStampEncoder(cfg), StegaStampDecoder(cfg))
    init, ref = str(setup / "init.pth"), str(setup / "ref.pth")
    assert run(setup, "a", "--num_steps", "2", "--init_from", init, "--reference", ref) == 0
    assert run(setup, "b", "--num_steps", "2", "--init_from", init, "--reference", ref, "--workers", "1") == 0
    a, b = (read_checkpoint(setup / "ckpt" / n / f"{n}_final.pth") for n in "ab")
    reference = read_checkpoint(ref)["encoder"]
    assert all(torch.equal(reference[k], v) for k, v in a["reference_encoder"].items())
    assert all(torch.equal(a["encoder"][k], v) for k, v in b["encoder"].items())
    rows = [json.loads(line) for line in open(setup / "logs" / "a" / "metrics.jsonl")]
    assert rows[0]["loss/energy_ratio"] != pytest.approx(1.0)      # measured against the other encoder
    # a resumed run cannot change its reference; a reference of another size is refused
    assert run(setup, "c", "--num_steps", "3", "--pretrained", str(setup / "ckpt" / "a" / "a_last.pth"),
               "--reference", ref) == 2
    big = ModelConfig(height=64, width=64)
    save_checkpoint(setup / "big.pth", big, StegaStampEncoder(big), StegaStampDecoder(big))
    assert run(setup, "d", "--num_steps", "1", "--init_from", init, "--reference", str(setup / "big.pth")) == 2


def test_grouped_resampling_matches_crop_by_crop_and_batched_views_keep_each_crops_copies_together(setup):
    """margin_step resamples the crops in one call per upsampling factor, put back in place: the same as resampling
    each crop alone; random_views of a batch (--batch_views) keeps crop i's copies at rows i*n .. i*n+n-1, which is
    where the loss puts crop i's bits (with no warp and no noise each copy is its own crop). A crop put back in the
    wrong row, or repeat() instead of repeat_interleave(), fails here."""
    from models_pytorch import load_checkpoint
    from utils_pytorch import AugmentConfig, random_views, through_cover
    torch.manual_seed(0)
    img = torch.rand(3, 3, 32, 32)
    still = AugmentConfig(no_blur=True, no_jpeg=True, rnd_noise=0, contrast_low=1, contrast_high=1, rnd_bri=0,
                          rnd_hue=0, rnd_sat=0)
    v = random_views(img, 2, 0.0, still, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    assert v.shape == (6, 3, 32, 32)
    assert all(torch.allclose(v[2 * i + j], img[i], atol=1e-5) for i in range(3) for j in range(2))
    cfg, enc, dec = load_checkpoint(setup / "init.pth")
    secret = torch.randint(0, 2, (6, 100)).float()
    image = torch.rand(6, 3, 32, 32)
    ups = torch.randint(len(finetune_encoder.UPSAMPLE), (6,), generator=torch.Generator().manual_seed(3)).tolist()
    assert len(set(ups)) > 1                                        # several groups to put back
    with torch.no_grad():
        r = enc(secret, image)
        alone = torch.cat([(image[i:i + 1] + through_cover(r[i:i + 1], (32 * finetune_encoder.UPSAMPLE[k],) * 2))
                           .clamp(0, 1) for i, k in enumerate(ups)])
    for batched in (False, True):
        args = finetune_encoder.get_parser().parse_args(
            ["x", "--init_from", "i", "--train_path", "p"] + (["--batch_views"] if batched else []))
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():
            out = finetune_encoder.margin_step(enc, enc, dec, image, secret, args, gen, gen, contextlib.nullcontext)
        assert torch.allclose(out[3], alone, atol=1e-6)
        assert out[4].shape == (6 * args.views, 3, 32, 32)
    assert run(setup, "bv", "--num_steps", "3", "--init_from", str(setup / "init.pth"), "--batch_views") == 0


def test_train_decoder_moves_both_reads_the_reference_and_resumes_exactly(setup, capsys):
    """--train_decoder: the decoder is trained too (the default run leaves it bit for bit, above), with the margin on
    the reference encoder's images logged; 2 + 2 resumed steps give the same encoder and decoder as 4; a run resumed
    without the flag (or one trained without it, resumed with it) is refused in one line."""
    init = str(setup / "init.pth")
    flags = ("--train_decoder", "--decoder_lr", "1e-3")
    assert run(setup, "joint", "--num_steps", "4", "--init_from", init, *flags) == 0
    start, joint = read_checkpoint(init), read_checkpoint(setup / "ckpt" / "joint" / "joint_final.pth")
    assert any(not torch.equal(start["decoder"][k], v) for k, v in joint["decoder"].items())
    assert any(not torch.equal(start["encoder"][k], v) for k, v in joint["encoder"].items())
    rows = [json.loads(line) for line in open(setup / "logs" / "joint" / "metrics.jsonl")]
    assert all("loss/margin_reference" in r and 0 <= r["metric/bit_acc_reference"] <= 1 for r in rows)
    run(setup, "jpart", "--num_steps", "2", "--init_from", init, "--last_every", "2", *flags)
    last = str(setup / "ckpt" / "jpart" / "jpart_last.pth")
    capsys.readouterr()
    assert run(setup, "jpart", "--num_steps", "4", "--pretrained", last) == 2      # the flag forgotten
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resume it the same way" in err[0]
    assert run(setup, "jpart", "--num_steps", "4", "--pretrained", last, *flags) == 0
    part = read_checkpoint(setup / "ckpt" / "jpart" / "jpart_final.pth")
    for what in ("encoder", "decoder"):
        assert all(torch.equal(joint[what][k], v) for k, v in part[what].items())
    run(setup, "frozen", "--num_steps", "2", "--init_from", init, "--last_every", "2")
    assert run(setup, "frozen", "--num_steps", "3", "--pretrained",
               str(setup / "ckpt" / "frozen" / "frozen_last.pth"), *flags) == 2


def test_a_resumed_runs_first_log_row_is_the_mean_of_its_own_steps(setup):
    """Resumed at step 2 with rows every 4 steps, the first row holds steps 3-4 only: it is their mean, not their sum
    over 4. With lr 0 the encoder stays its own reference, so every step's energy ratio is exactly 1."""
    init = str(setup / "init.pth")
    run(setup, "r", "--num_steps", "2", "--init_from", init, "--last_every", "2", "--lr", "0")
    assert run(setup, "r", "--num_steps", "4", "--pretrained", str(setup / "ckpt" / "r" / "r_last.pth"),
               "--log_interval", "4", "--lr", "0") == 0
    rows = [json.loads(line) for line in open(setup / "logs" / "r" / "metrics.jsonl")]
    assert rows[-1]["step"] == 4 and rows[-1]["loss/energy_ratio"] == pytest.approx(1.0)
