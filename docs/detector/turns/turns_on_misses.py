"""The turned passes, and one more pass at other input sizes, on the miss bank (session 20; training photos only).

    python docs/detector/zoom/miss_bank.py BANK 5 7 9 11 13 && python docs/detector/zoom/miss_bank.py BANK 6 8 10 12 14
    python docs/detector/turns/turns_on_misses.py BANK [--refine 0] [--sides 512 448 320 288]

For each missed scene of the bank (all 24 missed by the pipeline without turned passes), each turned pass alone
(the detector's map of the frame turned by k quarter turns, k = 1, 2, 3: one pass of detect_decode.read_regions, as
detect(turns=) runs it) -> how many each reads and how many all three together; then, on the scenes none of them
reads, one upright pass with the network at each of --sides instead of 384.
"""
import argparse
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import detect_decode as D  # noqa: E402
from inference import load_model  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("bank", help="folder of miss_*.npz (miss_bank.py)")
p.add_argument("--refine", type=int, default=D.IMAGE_REFINE, help="regions searched around, as detect_decode.py")
p.add_argument("--sides", type=int, nargs="*", default=[512, 448, 320, 288], help="other input sizes to try")
args = p.parse_args()
model, det = load_model(D.DEFAULT_MODEL), D.Detector(D.DEFAULT_DETECTOR)
side = det.input_side


def one_pass(frame, turn=0):
    return bool(D.read_regions(model, frame, D.candidate_quads(frame, det, turn=turn), refine=args.refine))


files = sorted(glob.glob(os.path.join(args.bank, "miss_*.npz")))
reads = {k: set() for k in D.IMAGE_TURNS}
for f in files:
    frame = np.load(f)["frame"]
    for k in D.IMAGE_TURNS:
        if one_pass(frame, k):
            reads[k].add(os.path.basename(f))
    print(os.path.basename(f), {k: os.path.basename(f) in reads[k] for k in D.IMAGE_TURNS}, flush=True)
union = set().union(*reads.values())
print(f"{len(files)} misses; each turn alone reads " + ", ".join(f"k={k}: {len(v)}" for k, v in reads.items())
      + f"; together {len(union)}")
left = [f for f in files if os.path.basename(f) not in union]
more = {s: set() for s in args.sides}
for f in left:
    frame = np.load(f)["frame"]
    for s in args.sides:
        det.input_side = s
        if one_pass(frame):
            more[s].add(os.path.basename(f))
    det.input_side = side
if args.sides:
    print(f"of the {len(left)} left, one more pass at input side " + ", ".join(f"{s}: {len(v)}" for s, v in more.items())
          + f"; together {len(set().union(*more.values()))}")
