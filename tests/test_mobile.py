"""export_mobile.py: the NHWC wrappers equal the networks; the shipped model through TensorFlow Lite (run in the
LiteRT interpreter) decodes the same bits as PyTorch on real photos, and the Core ML packages have the documented
inputs, outputs and metadata. The conversion tests need requirements_mobile.txt (.ci/run installs it in its own
venv and runs this file there); without it they are skipped with the reason."""
import importlib.util
import json
import os

import pytest
import torch

import export_mobile
from models_pytorch import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "pretrained", "stegastamp_128.pth")


def test_nhwc_wrappers_equal_the_networks():
    cfg, enc, dec = load_checkpoint(SHIPPED)
    secret, image = torch.randint(0, 2, (1, 100)).float(), torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        residual, encoded = export_mobile.EncoderNHWC(enc)(secret, image.permute(0, 2, 3, 1))
        assert torch.equal(residual.permute(0, 3, 1, 2), enc(secret, image))
        assert torch.equal(encoded.permute(0, 3, 1, 2), torch.clamp(image + enc(secret, image), 0, 1))
        logits, bits = export_mobile.DecoderNHWC(dec)(encoded)
        assert torch.equal(logits, dec(encoded.permute(0, 3, 1, 2))) and torch.equal(bits, (logits > 0).float())


def test_missing_converters_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert export_mobile.main(export_mobile.get_parser().parse_args([SHIPPED, "--out_dir", str(tmp_path)])) == 2
    err = capsys.readouterr().err
    assert "pip install -r requirements_mobile.txt" in err and err.count("\n") == 1


MISSING = [m for m in ("litert_torch", "ai_edge_litert", "coremltools") if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}: pip install -r requirements_mobile.txt")
def test_tflite_parity_and_coreml_structure(tmp_path, capsys):
    out = tmp_path / "mobile"
    assert export_mobile.main(export_mobile.get_parser().parse_args([SHIPPED, "--out_dir", str(out), "--test"])) == 0
    text = capsys.readouterr().out
    assert text.count("bit agreement with PyTorch 1.0000") == 3 and text.count("message 'Hello!'") == 3
    assert text.count("| ok") == 2 and "resample (the STN) present" in text
    assert json.load(open(out / "model_config.json"))["height"] == 128
    for name in ("encoder.tflite", "decoder.tflite"):
        assert (out / name).stat().st_size > 1e6
    # nothing is overwritten without --overwrite
    assert export_mobile.main(export_mobile.get_parser().parse_args([SHIPPED, "--out_dir", str(out)])) == 2
