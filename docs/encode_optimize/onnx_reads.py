"""Do ONNX Runtime's decoders (fp32 and int8) read what --optimize encodes with PyTorch? The first 6 photos of
data/select, --optimize 100, read whole, clean and after JPEG 50:
    python docs/encode_optimize/onnx_reads.py
"""
import glob
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from distortions import DISTORTIONS
from image_io import load_image
from onnx_inference import OnnxStegaStamp
from stegastamp_pytorch import StegaStamp

pt = StegaStamp.load(os.path.join(ROOT, "pretrained", "stegastamp_128.pth"), "cpu")
readers = {"pytorch": pt, "onnx": OnnxStegaStamp(os.path.join(ROOT, "pretrained", "onnx")),
           "onnx_int8": OnnxStegaStamp(os.path.join(ROOT, "pretrained", "onnx"), int8=True)}
read, n = dict.fromkeys(readers, 0), 0
for f in sorted(glob.glob(os.path.join(ROOT, "data", "select", "*")))[:6]:
    encoded = pt.encode(load_image(f), "Hello12", optimize=100)[0]
    for d in ("clean", "jpeg50"):
        copy, n = DISTORTIONS[d](encoded, np.random.default_rng(0)), n + 1
        for name, r in readers.items():
            read[name] += r.decode(copy, tta=False).message == "Hello12"
print(f"{n} copies read: " + ", ".join(f"{k} {v}" for k, v in read.items()))
