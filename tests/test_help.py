"""Every flag of every script explains itself in --help."""
import argparse
import importlib

import pytest

SCRIPTS = ["train_pytorch", "encode_image_pytorch", "decode_image_pytorch", "export_onnx", "onnx_inference",
           "evaluate_pytorch", "evaluate_jpeg", "evaluate_codec", "benchmark_train", "benchmark_inference",
           "release_checkpoint", "plot_metrics", "prepare_photos", "detect_decode", "train_detector",
           "evaluate_detector", "export_mobile"]


def parser_of(name):
    module = importlib.import_module(name)
    if hasattr(module, "get_parser"):
        return module.get_parser()
    # scripts that build their parser inside main(): capture it
    captured = {}
    original = argparse.ArgumentParser.parse_args

    def grab(self, *a, **k):
        captured["p"] = self
        raise SystemExit(0)
    argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(SystemExit):
            module.main([])
    finally:
        argparse.ArgumentParser.parse_args = original
    return captured["p"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_has_help(name):
    p = parser_of(name)
    missing = [a.option_strings[0] if a.option_strings else a.dest for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not missing, f"{name}.py: flags without help text: {missing}"
    assert p.format_help()
