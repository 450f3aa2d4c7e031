"""The JavaScript secret codec (web/secret_codec.js) against the Python one (bchlib): shared random vectors with 0-10
flipped bits, every named code. Runs with Node.js; skipped with a reason where node is not installed."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from secret_codec import CODES, SecretCodec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = shutil.which("node")


def vectors(codec, n, rng):
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !?") + ["é", "ü", "€"]
    cases = []
    for i in range(n):
        text = "".join(rng.choice(alphabet, rng.integers(1, codec.data_bytes + 1)))
        while len(text.encode()) > codec.data_bytes:
            text = text[:-1]
        text = text or "x"
        bits = codec.encode(text)
        flips = i % 11                                      # 0..10 flips, beyond t included
        where = rng.choice(codec.secret_size if i % 7 == 0 else codec.code_bits, flips, replace=False)
        bits[where] = 1 - bits[where]
        res = codec.decode(bits)
        cases.append({"text": text, "clean": "".join(str(int(b)) for b in codec.encode(text)),
                      "bits": "".join(str(int(b)) for b in bits), "message": res.message,
                      "corrected": res.corrected_bits})
    cases.append({"text": "x" * (codec.data_bytes + 1), "clean": None, "bits": "0" * codec.secret_size, "message": None,
                  "corrected": None})                      # too long to encode; all-zero bits are no message
    return cases


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (apt-get install nodejs)")
def test_js_codec_matches_bchlib():
    rng = np.random.default_rng(0)
    configs = []
    for name in sorted(CODES):
        size, data_bytes, t, poly = CODES[name]
        codec = SecretCodec(size, data_bytes, t, poly)
        configs.append({"config": {"secret_size": size, "data_bytes": data_bytes, "bch_t": t, "bch_prim_poly": poly},
                        "cases": vectors(codec, 120, rng)})
    res = subprocess.run([NODE, os.path.join(ROOT, "tests", "codec_check.mjs")], input=json.dumps({"configs": configs}),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for cfg, got in zip(configs, out):
        for case, js in zip(cfg["cases"], got):
            assert js["encoded"] == case["clean"], (cfg["config"], case["text"])        # bit-exact encoding
            assert js["message"] == case["message"] and js["corrected"] == case["corrected"], (cfg["config"], case)
    assert any(c["message"] is None for cfg in configs for c in cfg["cases"][:-1])     # failures were exercised
    assert all(f"at most {c['config']['data_bytes']} fit" in o[-1]["error"] for c, o in zip(configs, out))
