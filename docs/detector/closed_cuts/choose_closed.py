"""(Session 13; run from the repo root: python docs/detector/closed_cuts/choose_closed.py > choose_closed.log.)
Training-photo scenes (as evaluate_detector.py --images_dir data/photos/train --sizes 0.2 0.4 --tilts 0 15 30
--scenes 8 --seed 5|6|7, default ONNX model): base detect vs extra cuts / closed cuts / a lower search floor on the
scenes base misses; then 200 stamp-free scenes (seed 5) for false messages and time."""
import os, sys, time
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import detect_decode as D
from evaluate_detector import val_photos, stamp_of
from inference import load_model
from scenes import make_scene
model = load_model(D.DEFAULT_MODEL)
det = D.Detector(D.DEFAULT_DETECTOR)
photos = val_photos("data/photos/train", 200)
FIVE = (0.5, 0.85, 0.3, 0.7, 0.95)        # the cuts for photos before this choice
VARIANTS = {"base": (FIVE, (), 0.6), "cut0.1": (FIVE + (0.1,), (), 0.6),
            "closed0.3": (FIVE, (0.3,), 0.6), "cut0.1+closed0.3,0.1": (FIVE + (0.1,), (0.3, 0.1), 0.6),
            "cut0.1+closed0.3,0.1+floor0.3": (FIVE + (0.1,), (0.3, 0.1), 0.3)}
defaults = D.refine_quad.__defaults__
def run(frame, v):
    cuts, closed, floor = VARIANTS[v]
    d = list(defaults); d[I] = floor; D.refine_quad.__defaults__ = tuple(d)   # (timing, steps, rounds, min_confidence...)
    return D.detect(model, frame, detector=det, cuts=cuts, closed=closed, refine=D.IMAGE_REFINE)
names = D.refine_quad.__code__.co_varnames[:D.refine_quad.__code__.co_argcount]
I = names.index("min_confidence") - (len(names) - len(defaults))
assert defaults[I] == 0.6
tally = {v: 0 for v in VARIANTS}
n = 0
for seed in (5, 6, 7):
    rng = np.random.default_rng(seed)
    pick = lambda: photos[rng.integers(len(photos))]
    for size in (0.2, 0.4):
        for tilt in (0, 15, 30):
            for _ in range(8):
                message = "".join(chr(c) for c in rng.integers(97, 123, 7))
                stamp = model.encode(stamp_of(pick(), rng), message)[0]
                scene = make_scene(rng, np.asarray(pick()), [np.asarray(stamp)], (1920, 1080), area=size, tilt=tilt, occlude_prob=0)
                if not scene.corners:
                    continue
                n += 1
                base = any(d["message"] == message for d in run(scene.frame, "base"))
                row = {"base": base}
                for v in VARIANTS:
                    row[v] = base or any(d["message"] == message for d in run(scene.frame, v)) if v != "base" else base
                    tally[v] += row[v]
                if not base:
                    print(seed, size, tilt, row, flush=True)
    print("after seed", seed, n, tally, flush=True)
rng = np.random.default_rng(5)
pick = lambda: photos[rng.integers(len(photos))]
neg = {v: [0, 0.0] for v in ("base", "cut0.1+closed0.3,0.1", "cut0.1+closed0.3,0.1+floor0.3")}
for i in range(200):
    plain = [np.asarray(stamp_of(pick(), rng))] if i % 2 else []
    scene = make_scene(rng, np.asarray(pick()), plain, (1920, 1080), area=(0.05, 0.4), occlude_prob=0)
    for v in neg:
        t = time.perf_counter()
        neg[v][0] += len(run(scene.frame, v))
        neg[v][1] += (time.perf_counter() - t) / 200
print("negatives (false messages, s per scene):", neg, flush=True)
