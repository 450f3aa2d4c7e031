"""The scenes from training photos that detect_decode.py misses, kept for a look at them (session 19).

    python docs/detector/zoom/miss_bank.py BANK_DIR 5 6 7 8 9 10 11 12 13 14     # seeds of evaluate_detector.py

Runs evaluate_detector.py on the target cells (--images_dir data/photos/train --sizes 0.2 0.4 --tilts 0 15 30
--scenes 8 --negatives 0 --seed S, no zoom detector) and writes each scene it does not read end to end as
BANK_DIR/miss_<first seed>_<n>.npz (frame, the stamp's true corners, the candidate quads). zoom_on_misses.py reads them.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import detect_decode as D  # noqa: E402
import evaluate_detector as E  # noqa: E402

bank, seeds = sys.argv[1], [int(s) for s in sys.argv[2:]]
os.makedirs(bank, exist_ok=True)
last, real_make, real_detect = {}, E.make_scene, D.detect


def make_scene(*a, **k):
    last["scene"] = real_make(*a, **k)
    return last["scene"]


def detect(model, rgb, **k):
    out = real_detect(model, rgb, **k)
    scene = last.pop("scene", None)
    if scene is not None and scene.corners and not out and k.get("timing") is None:      # not the speed frames
        n = len(os.listdir(bank))
        np.savez_compressed(os.path.join(bank, f"miss_{seeds[0]}_{n:03d}.npz"), frame=rgb, truth=scene.corners[0],
                            quads=np.array(k["quads"]) if k["quads"] else np.zeros((0, 4, 2)))
    return out


E.make_scene, D.detect = make_scene, detect
for seed in seeds:
    E.main(E.get_parser().parse_args(["--images_dir", "data/photos/train", "--sizes", "0.2", "0.4", "--tilts", "0", "15",
                                      "30", "--scenes", "8", "--negatives", "0", "--seed", str(seed)]))
