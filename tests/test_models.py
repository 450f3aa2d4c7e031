"""Shape contracts, parameter counts (the released model's), init, TF 'same' padding and checkpoints of models_pytorch.py."""
import pytest
import torch
import torch.nn.functional as F

from models_pytorch import (CheckpointError, Conv2dSame, Discriminator, ModelConfig, StegaStampDecoder,
                            StegaStampEncoder, count_parameters, load_checkpoint, read_checkpoint, save_checkpoint,
                            same_pad)


def make(cfg):
    return StegaStampEncoder(cfg), StegaStampDecoder(cfg), Discriminator(cfg)


def test_parameter_counts_match_released_model():
    enc, dec, critic = make(ModelConfig())
    assert count_parameters(enc) == 1_749_247                  # conv10 included, as in the TF variables
    assert count_parameters(dec.stn_convs) + count_parameters(dec.stn_dense) + count_parameters(dec.stn_theta) \
        == 41_054_150
    assert count_parameters(dec.convs) + count_parameters(dec.dense) + count_parameters(dec.logits) == 11_451_332
    assert count_parameters(critic) == 25_105
    # 54,254,729 fp32 params = 217,018,916 bytes, the size of the released variables file
    assert 4 * (count_parameters(enc) + count_parameters(dec)) == 217_018_916


@pytest.mark.parametrize("size", [(400, 400), (64, 64), (64, 96)])
def test_shapes(size):
    cfg = ModelConfig(height=size[0], width=size[1], secret_size=100)
    enc, dec, critic = make(cfg)
    image, secret = torch.rand(2, 3, *size), torch.randint(0, 2, (2, 100)).float()
    with torch.no_grad():
        residual = enc(secret, image)
        logits = dec(image)
        score, heat = critic(image)
    assert residual.shape == (2, 3, *size)
    assert logits.shape == (2, 100)
    assert score.shape == () and heat.shape == (2, 1, -(-size[0] // 16), -(-size[1] // 16))


def test_flatten_sizes_derived_from_config():
    dec = StegaStampDecoder(ModelConfig())
    assert dec.stn_dense.in_features == 50 * 50 * 128 and dec.dense.in_features == 13 * 13 * 128
    enc = StegaStampEncoder(ModelConfig(secret_size=20))
    assert (enc.secret_dense.in_features, enc.secret_dense.out_features) == (20, 7500)


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="multiple of 16"):
        ModelConfig(height=72)
    dec = StegaStampDecoder(ModelConfig(height=64, width=64))
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        dec(torch.rand(1, 3, 48, 48))


def test_stn_is_identity_at_init():
    dec = StegaStampDecoder(ModelConfig(height=64, width=64))
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(dec.stn(x), x, atol=1e-5)


def test_residual_is_unbounded_linear():
    """No tanh: scaling the final 1x1 conv scales the residual without saturation."""
    enc = StegaStampEncoder(ModelConfig(height=32, width=32))
    with torch.no_grad():
        enc.residual.weight.mul_(1000)
        r = enc(torch.ones(1, 100), torch.rand(1, 3, 32, 32))
    assert r.abs().max() > 5


def test_conv10_is_dead_and_frozen():
    enc = StegaStampEncoder(ModelConfig(height=32, width=32))
    x, s = torch.rand(1, 3, 32, 32), torch.ones(1, 100)
    before = enc(s, x)
    with torch.no_grad():
        enc.conv10.weight.normal_()
    assert torch.equal(before, enc(s, x)) and not enc.conv10.weight.requires_grad


def test_init_schemes():
    enc, dec, _ = make(ModelConfig(height=64, width=64))
    # he_normal: std ~ sqrt(2 / fan_in); glorot_uniform: bound sqrt(6 / (fan_in + fan_out))
    w = enc.conv5.weight
    assert abs(w.std().item() / (2 / (128 * 9)) ** 0.5 - 1) < 0.1
    w = dec.convs[5].weight
    bound = (6 / (64 * 9 + 128 * 9)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert all((m.bias == 0).all() for m in enc.modules() if isinstance(m, torch.nn.Conv2d))


def test_tf_same_padding_pads_bottom_right():
    assert same_pad(400, 3, 2) == (0, 1) and same_pad(25, 3, 2) == (1, 1) and same_pad(50, 2, 1) == (0, 1)
    conv = Conv2dSame(1, 1, 3, 2, relu=False)
    x = torch.randn(1, 1, 8, 8)
    ref = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    assert torch.allclose(conv(x), ref)
    assert not torch.allclose(conv(x), F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1))


@pytest.mark.parametrize("kernel,stride,size", [(3, 1, 9), (2, 1, 8), (1, 1, 5), (3, 2, 7)])
def test_conv2d_same_matches_explicit_tf_padding(kernel, stride, size):
    """Symmetric cases pad inside the convolution, the others with F.pad first: both are TF's 'same'."""
    conv = Conv2dSame(2, 3, kernel, stride, relu=False)
    x = torch.randn(2, 2, size, size)
    top, bottom = same_pad(size, kernel, stride)
    ref = F.conv2d(F.pad(x, (top, bottom, top, bottom)), conv.weight, conv.bias, stride=stride)
    assert torch.allclose(conv(x), ref, atol=1e-6)


def test_channel_aligned_encoder_computes_the_same_function():
    enc = StegaStampEncoder(ModelConfig(height=32, width=32, secret_size=20)).eval()
    aligned = enc.channel_aligned()
    assert (aligned.conv1.in_channels, aligned.conv9.in_channels) == (8, 72)
    assert (enc.conv1.in_channels, enc.conv9.in_channels, enc.input_pad) == (6, 70, 0)   # the original untouched
    secret, image = torch.randint(0, 2, (2, 20)).float(), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(aligned(secret, image), enc(secret, image), atol=1e-6)
        # channels_last weights with an NCHW image (the concatenations mix layouts): the same residual
        cl = StegaStampEncoder(enc.cfg).eval()
        cl.load_state_dict(enc.state_dict())
        assert torch.allclose(cl.to(memory_format=torch.channels_last)(secret, image), enc(secret, image), atol=1e-5)


def test_secret_reshape_keeps_tf_hwc_order():
    """Dense output index (i*W8 + j)*3 + c lands at pixel block (i, j), channel c (TF's Reshape(H/8, W/8, 3))."""
    enc = StegaStampEncoder(ModelConfig(height=32, width=32, secret_size=4))
    captured = {}
    enc.conv1.register_forward_pre_hook(lambda m, inp: captured.update(x=inp[0]))
    with torch.no_grad():
        enc.secret_dense.weight.zero_()
        enc.secret_dense.bias.zero_()
        enc.secret_dense.bias[(1 * 4 + 2) * 3 + 1] = 1.0     # block row 1, col 2, channel 1
        enc(torch.full((1, 4), 0.5), torch.rand(1, 3, 32, 32))
    s = captured["x"][0, :3]                                  # secret channels come first
    assert s[1, 8:16, 16:24].eq(1).all() and s.sum() == 64


def test_checkpoint_round_trip_identical(tmp_path):
    cfg = ModelConfig(height=64, width=64, secret_size=50, data_bytes=1)
    enc, dec, critic = make(cfg)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, cfg, enc, dec, critic, step=7, train_args={"lr": 1e-4})
    cfg2, enc2, dec2 = load_checkpoint(path)
    x, s = torch.rand(2, 3, 64, 64), torch.randint(0, 2, (2, 50)).float()
    assert cfg2 == cfg
    with torch.no_grad():
        assert torch.equal(enc(s, x), enc2(s, x)) and torch.equal(dec(x), dec2(x))
    ckpt = torch.load(path, weights_only=True)  # primitives and state_dicts only
    assert ckpt["step"] == 7 and ckpt["train_args"] == {"lr": 1e-4}
    assert list(tmp_path.iterdir()) == [path]  # atomic write leaves no temp file


def test_compiled_module_saves_without_prefix(tmp_path):
    cfg = ModelConfig(height=32, width=32)
    enc, dec, _ = make(cfg)
    save_checkpoint(tmp_path / "c.pt", cfg, torch.compile(enc), dec)
    assert not any(k.startswith("_orig_mod") for k in read_checkpoint(tmp_path / "c.pt")["encoder"])


def test_bad_checkpoints_give_clear_errors(tmp_path):
    cfg = ModelConfig(height=32, width=32)
    enc, dec, _ = make(cfg)
    good = tmp_path / "good.pt"
    save_checkpoint(good, cfg, enc, dec)
    (tmp_path / "corrupt.pt").write_bytes(good.read_bytes()[:1000])
    torch.save(enc.state_dict(), tmp_path / "bare.pt")
    ckpt = torch.load(good, weights_only=True)
    ckpt["model_config"]["secret_size"] = 64
    torch.save(ckpt, tmp_path / "mismatch.pt")
    cases = {"missing.pt": "not found", "corrupt.pt": "not a readable", "bare.pt": "no 'model_config'",
             "mismatch.pt": "do not match"}
    for name, msg in cases.items():
        with pytest.raises(CheckpointError, match=msg) as e:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(e.value)


def test_stn_identity_survives_bf16_weights():
    """The sampling grid stays fp32 when the model is cast to bf16 (a bf16 grid is off by ~1 px at 400 px, which
    broke decoding: bit agreement with fp32 fell to 0.58 on a trained model)."""
    dec = StegaStampDecoder(ModelConfig(height=400, width=400)).to(torch.bfloat16)
    x = torch.rand(1, 3, 400, 400).to(torch.bfloat16)
    out = dec.stn(x)
    assert out.dtype == torch.bfloat16 and (out.float() - x.float()).abs().max() < 1e-2


def test_release_checkpoint_fp16_round_trip(tmp_path):
    import release_checkpoint
    cfg = ModelConfig(height=32, width=32)
    enc, dec, critic = make(cfg)
    save_checkpoint(tmp_path / "train.pth", cfg, enc, dec, critic, step=5)
    args = release_checkpoint.get_parser().parse_args([str(tmp_path / "train.pth"), str(tmp_path / "rel.pth")])
    assert release_checkpoint.main(args) == 0
    assert (tmp_path / "rel.pth").stat().st_size < 0.6 * (tmp_path / "train.pth").stat().st_size
    cfg2, enc2, dec2 = load_checkpoint(tmp_path / "rel.pth")
    x, s = torch.rand(2, 3, 32, 32), torch.randint(0, 2, (2, 100)).float()
    with torch.no_grad():
        assert enc2.secret_dense.weight.dtype == torch.float32
        assert torch.allclose(enc(s, x), enc2(s, x), atol=1e-2) and torch.allclose(dec(x), dec2(x), atol=1e-2)
    assert release_checkpoint.main(args) == 2                     # an existing release is not replaced unasked


def test_release_checkpoint_residual_scale_encodes_as_that_strength(tmp_path):
    """--residual_scale S: the released encoder's residual is S times the original's for any input (the scale is
    baked into its linear last layer), the decoder is untouched, and a bounded model (tanh: not linear) is refused."""
    import release_checkpoint
    cfg = ModelConfig(height=32, width=32)
    enc, dec, critic = make(cfg)
    save_checkpoint(tmp_path / "train.pth", cfg, enc, dec, critic, step=5)
    parse = release_checkpoint.get_parser().parse_args
    assert release_checkpoint.main(parse([str(tmp_path / "train.pth"), str(tmp_path / "s.pth"), "--dtype", "float32",
                                          "--residual_scale", "0.9"])) == 0
    _, enc2, dec2 = load_checkpoint(tmp_path / "s.pth")
    x, s = torch.rand(2, 3, 32, 32), torch.randint(0, 2, (2, 100)).float()
    with torch.no_grad():
        r, r2 = enc(s, x), enc2(s, x)
        assert r.abs().max() > 1e-3 and torch.allclose(r2, 0.9 * r, atol=1e-6)
        assert torch.equal(dec(x), dec2(x))
    assert torch.load(tmp_path / "s.pth", weights_only=True)["residual_scale"] == pytest.approx(0.9)
    bounded = ModelConfig(height=32, width=32, residual_bound=0.1)
    enc, dec, critic = make(bounded)
    save_checkpoint(tmp_path / "b.pth", bounded, enc, dec, critic, step=5)
    assert release_checkpoint.main(parse([str(tmp_path / "b.pth"), str(tmp_path / "b_rel.pth"),
                                          "--residual_scale", "0.9"])) == 2
    assert not (tmp_path / "b_rel.pth").exists()
