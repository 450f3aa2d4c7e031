"""How many of the missed scenes (miss_bank.py) a zoom detector reads, the way detect() uses it (session 19).

    python docs/detector/zoom/zoom_on_misses.py BANK_DIR docs/detector/zoom/zoom2.pth [ROUNDS] [--first] [--detail]

For each missed scene: its first 3 regions (as detect()'s --refine 3), each region's quads decoded for their
confidence, then zoom_read from the surest quad and then the region's first (--first: from the first only) with
ROUNDS rounds (default detect_decode.ZOOM_ROUNDS); a scene counts when any BCH-verified message reads. --detail
also prints a line per scene: whether it reads from the stamp's true corners, and how far off (in % of the stamp's
size, the largest corner distance) its closest candidate quad is.
"""
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import detect_decode as D  # noqa: E402
from inference import load_model  # noqa: E402

args = [a for a in sys.argv[1:] if a not in ("--first", "--detail")]
bank, zoom = args[0], D.load_zoom(args[1])
rounds = int(args[2]) if len(args) > 2 else D.ZOOM_ROUNDS
model = load_model(D.DEFAULT_MODEL)
files, reads = sorted(glob.glob(os.path.join(bank, "*.npz"))), []
for f in files:
    z = np.load(f)
    frame, quads = z["frame"], [q.astype(np.float32) for q in z["quads"]]
    import cv2
    grey = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32), (5, 5), 0)
    d = None
    for group in D.regions(quads)[:3]:
        best = int(np.argmax([c for _, c in D.read_quads(model, frame, group)]))
        starts = [group[0]] if "--first" in sys.argv else [group[best]] + ([group[0]] if best else [])
        for start in starts:
            d, _ = D.zoom_read(model, frame, grey, zoom, start, rounds=rounds)
            if d is not None:
                break
        if d is not None:
            break
    if d is not None:
        reads.append(os.path.basename(f))
    if "--detail" in sys.argv:
        truth = z["truth"].astype(np.float32)
        size = np.sqrt(D.quad_area(truth))
        off = [np.linalg.norm(D.aligned(q, truth) - truth, axis=1).max() / size for q in quads]
        at_truth = D.read_quad(model, frame, truth) is not None
        closest = f"closest candidate {100 * min(off):.0f}% off" if off else "no candidate"
        print(f"{os.path.basename(f)}: {'read' if d is not None else 'missed'}, {closest}, "
              f"{'reads' if at_truth else 'does not read'} from the true corners", flush=True)
print(f"{len(reads)} of {len(files)} missed scenes read: {' '.join(reads)}")
