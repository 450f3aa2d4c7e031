"""Evaluate stamp detection end to end on synthetic camera scenes built only from photos never trained on.

    python evaluate_detector.py --images_dir data/photos/val --out_dir docs/eval_detector
    python evaluate_detector.py --images_dir data/photos/val --detector classical --out_dir docs/eval_detector_classical
    python evaluate_detector.py --images_dir data/photos/train --sizes 0.2 0.4 --tilts 0 15 30 --scenes 8 \
        --negatives 0 --seed 5 --save_misses misses/     # training-photo scenes, each miss drawn beside its mask

Each scene is a 1920x1080 (--frame) camera view: a photo from --images_dir, encoded with --model and a random
7-letter message, printed (with white paper half of the time), placed at a given share of the frame area and tilted
away from the camera by a given angle about a random axis (scenes.py), over another photo of the folder, through
the camera effects (light, white balance, blur, noise, JPEG). Per (size, tilt): detection rate (a quad whose
corners lie within 10% of the stamp's size of the truth), corner error (mean corner distance in % of the stamp's
size, sqrt of its area, over the detected ones), end-to-end recovery (detect_decode.detect returns the message),
and the recovery from the stamp's true corners (the decoder's limit in that scene), which splits the misses into
wrong quads (read at the true corners) and stamps the decoder cannot read there at all.
Then --negatives scenes with no encoded stamp (half empty, half holding a plain printed photo): false detections
(a quad on an empty scene) and false messages (any message reported). Scenes are read as detect_decode.py reads
photos (the mask cut at IMAGE_CUTS, or at --cuts, then closed and cut at IMAGE_CLOSED, or at --closed_cuts; each
quad also snapped to the frame's edges unless --no_snap; up to --refine regions that do not read searched around for
a quad that does). Then
the speed of detect() at 720p and 1080p, as video reads frames and as photos are read, and
the share of detection, rectification and decoding. Writes results.md and results.json (and plot_recovery.png
with matplotlib) to --out_dir.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image

import detect_decode as D
from cli_common import non_negative_int
from image_io import ImageLoadError, list_images, load_image
from inference import ModelLoadError, load_model
from scenes import make_scene, polygon_area


def corner_error(found, truth):
    """Mean corner distance in % of the stamp's size, the best of the 4 cyclic orders (the orientation is only
    known after decoding)."""
    size = np.sqrt(polygon_area(truth))
    return min(np.linalg.norm(np.roll(found, k, 0) - truth, axis=1).mean() for k in range(4)) / size * 100


def val_photos(root, n_max):
    paths = list_images(root)
    if len(paths) < 2:
        raise SystemExit(f"error: {root}: need at least 2 photos, found {len(paths)}")
    photos = []
    for p in paths[:n_max]:
        try:
            photos.append(load_image(p, draft=(800, 800)))
        except ImageLoadError as e:
            print(f"warning: skipping {e}", file=sys.stderr)
    return photos


def stamp_of(photo, rng, long_side=400):
    """A 4:3, 3:4 or square centre crop of the photo at long_side px."""
    aspect = rng.choice([4 / 3, 3 / 4, 1.0])
    W, H = photo.size
    cw = min(W, H * aspect)
    ch = cw / aspect
    box = ((W - cw) / 2, (H - ch) / 2, (W + cw) / 2, (H + ch) / 2)
    size = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    return photo.crop(box).resize(size, Image.BICUBIC)


def timed_detect(model, rgb, detector, min_area, cuts, snap, refine, closed, zoom=None, turns=0):
    """detect() in its three parts -> ({detect, rectify, decode} seconds, the detections)."""
    t0 = time.perf_counter()
    quads = D.candidate_quads(rgb, detector, min_area, cuts, snap, closed)
    timing = {"detect": time.perf_counter() - t0, "rectify": 0.0, "decode": 0.0}
    return timing, D.detect(model, rgb, min_area=min_area, detector=detector, quads=quads, timing=timing, cuts=cuts,
                            snap=snap, refine=refine, closed=closed, zoom=zoom, turns=turns)


def save_miss(out_dir, index, frame, truth, quads, detector, size, tilt):
    """A missed scene as one PNG: the frame (the true corners green, the candidate quads red) beside the detector's
    mask (grey), both at the mask's resolution."""
    import cv2
    os.makedirs(out_dir, exist_ok=True)
    if detector is None:
        prob, (sx, sy) = np.zeros((frame.shape[0] // 5, frame.shape[1] // 5), np.float32), (5.0, 5.0)
    else:
        prob, (sx, sy) = detector.mask(frame)
    h, w = prob.shape
    small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA).copy()
    to_mask = lambda q: np.round((np.asarray(q, np.float32) + 0.5) / (sx, sy) - 0.5).astype(np.int32).reshape(-1, 1, 2)
    for q in quads:
        cv2.polylines(small, [to_mask(q)], True, (255, 0, 0), 1)
    cv2.polylines(small, [to_mask(truth)], True, (0, 255, 0), 1)
    mask = np.repeat((255 * prob).astype(np.uint8)[..., None], 3, axis=2)
    name = f"miss_{index:03d}_area{100 * size:.0f}_tilt{tilt:.0f}.png"
    Image.fromarray(np.concatenate([small, mask], axis=1)).save(os.path.join(out_dir, name))


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images_dir", required=True, help="photos never trained on (the validation split)")
    p.add_argument("--model", default=D.DEFAULT_MODEL, help="encoder/decoder: .pth or ONNX folder")
    p.add_argument("--detector", default=D.DEFAULT_DETECTOR,
                   help="detector.onnx or a detector .pth, or 'classical' (edges and contours)")
    p.add_argument("--zoom_detector", default="none", help="as detect_decode.py (a zoom detector, or none)")
    p.add_argument("--frame", default="1920x1080", help="scene size WxH")
    p.add_argument("--sizes", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4],
                   help="the stamp's share of the frame area")
    p.add_argument("--tilts", type=float, nargs="+", default=[0, 15, 30, 45], help="tilt angles in degrees")
    p.add_argument("--scenes", type=int, default=6, help="scenes per (size, tilt) cell")
    p.add_argument("--negatives", type=int, default=200, help="scenes without an encoded stamp")
    p.add_argument("--min_area", type=float, default=0.01, help="as detect_decode.py")
    p.add_argument("--cuts", type=float, nargs="+", default=list(D.IMAGE_CUTS),
                   help="where the learned detector's mask is cut for the accuracy table (default: detect_decode.py's "
                        "cuts for photos; video's are %s)" % (D.VIDEO_CUTS,))
    p.add_argument("--closed_cuts", type=float, nargs="*", default=list(D.IMAGE_CLOSED),
                   help="where the mask is cut again after closing its holes (default: detect_decode.py's for photos; "
                        "video uses none)")
    p.add_argument("--no_snap", action="store_true",
                   help="accuracy table without the quads snapped to the frame's edges and without the mirrored "
                        "view of the mask (as video reads frames)")
    p.add_argument("--no_polish", action="store_true",
                   help="report each read with the corners of the quad that read (detect_decode.py's polish off; "
                        "the baseline of its README numbers)")
    p.add_argument("--refine", type=non_negative_int, default=D.IMAGE_REFINE,
                   help="regions searched around for a quad that reads when none of theirs does, as detect_decode.py "
                        "reads photos (0: off, as video)")
    p.add_argument("--turns", type=int, choices=range(len(D.IMAGE_TURNS) + 1), default=len(D.IMAGE_TURNS),
                   help="passes over the frame turned by 90, 180, 270 degrees where nothing reads, as detect_decode.py "
                        "reads photos (0: off, as video; none with --no_snap)")
    p.add_argument("--max_photos", type=int, default=200, help="photos read from --images_dir")
    p.add_argument("--optimize", type=non_negative_int, default=0, metavar="STEPS",
                   help="encode the stamps with the encoders' --optimize STEPS (needs a .pth --model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes and messages")
    p.add_argument("--out_dir", default=None, help="write results.md, results.json, plot_recovery.png here")
    p.add_argument("--save_misses", default=None, metavar="DIR",
                   help="write each scene whose message was not read end to end here: the frame with the true corners "
                        "(green) and the candidate quads (red), beside the detector's mask")
    return p


def main(args) -> int:
    try:
        W, H = (int(v) for v in args.frame.lower().split("x"))
    except ValueError:
        print(f"error: --frame {args.frame!r}: give WxH, e.g. 1920x1080", file=sys.stderr)
        return 2
    D.IMAGE_POLISH = not args.no_polish
    try:
        model = load_model(args.model)
        model.check_optimize(args.optimize)
        detector = None if args.detector == "classical" else D.Detector(args.detector)
        zoom = D.load_zoom(args.zoom_detector)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # how the scenes are read, beside their quads: as detect_decode.py reads photos (reads polished), but for the
    # flags; the turned passes find their quads as the first pass does (none with --no_snap)
    reading = dict(min_area=args.min_area, detector=detector, cuts=tuple(args.cuts), closed=tuple(args.closed_cuts),
                   refine=args.refine, zoom=zoom, turns=0 if args.no_snap else args.turns)
    rng = np.random.default_rng(args.seed)
    photos = val_photos(args.images_dir, args.max_photos)
    pick = lambda: photos[rng.integers(len(photos))]
    cells, scenes = [], []                                   # per (size, tilt) cell, per scene
    t_start = time.time()
    for size in args.sizes if args.scenes else []:
        for tilt in args.tilts:
            found, errors, reported, read, at_truth, missed_quad = 0, [], [], 0, 0, 0
            for _ in range(args.scenes):
                message = "".join(chr(c) for c in rng.integers(97, 123, 7))
                stamp = model.encode(stamp_of(pick(), rng), message, optimize=args.optimize)[0]
                scene = make_scene(rng, np.asarray(pick()), [np.asarray(stamp)], (W, H), area=size, tilt=tilt,
                                   occlude_prob=0)
                if not scene.corners:
                    continue
                truth = scene.corners[0]
                quads = D.candidate_quads(scene.frame, detector, args.min_area, tuple(args.cuts), not args.no_snap,
                                          tuple(args.closed_cuts))
                errs = [corner_error(q, truth) for q in quads]
                if errs and min(errs) < 10:
                    found += 1
                    errors.append(min(errs))
                hits = [d for d in D.detect(model, scene.frame, quads=quads, **reading) if d["message"] == message]
                ok = bool(hits)
                if ok:                                      # the corners the reader is given (after any search)
                    reported.append(corner_error(np.asarray(hits[0]["corners"], np.float64), truth))
                # the decoder's limit in this scene: the message read from the stamp's true corners
                true_ok = (D.read_quad(model, scene.frame, np.asarray(truth, np.float32)) or {}).get("message") == message
                read += ok
                at_truth += true_ok
                missed_quad += (not ok) and true_ok         # a miss that better corners would have read
                if args.save_misses and not ok:
                    save_miss(args.save_misses, len(scenes), scene.frame, truth, quads, detector, size, tilt)
                scenes.append({"size": size, "tilt": tilt, "read": ok, "read_at_true_corners": true_ok,
                               "candidates": len(quads), "best_candidate_error_pct": min(errs) if errs else None,
                               "reported_error_pct": reported[-1] if ok else None})
            n = max(args.scenes, 1)
            cells.append({"size": size, "tilt": tilt, "scenes": args.scenes, "detected": found / n,
                          "corner_error_pct": float(np.mean(errors)) if errors else None, "recovered": read / n,
                          "reported_corner_error_pct": float(np.mean(reported)) if reported else None,
                          "read_at_true_corners": at_truth / n, "missed_for_the_quad": missed_quad / n})
            print(f"size {size:.0%} tilt {tilt:>2.0f}: detected {found}/{n}, corner error "
                  f"{cells[-1]['corner_error_pct'] or float('nan'):.2f}%, recovered {read}/{n} "
                  f"(at the true corners {at_truth}/{n})", flush=True)
    false_quads, false_messages, negative_s = 0, 0, 0.0
    for i in range(args.negatives):
        plain = [np.asarray(stamp_of(pick(), rng))] if i % 2 else []
        scene = make_scene(rng, np.asarray(pick()), plain, (W, H), area=(0.05, 0.4), occlude_prob=0)
        t0 = time.perf_counter()
        quads = D.candidate_quads(scene.frame, detector, args.min_area, tuple(args.cuts), not args.no_snap,
                                  tuple(args.closed_cuts))
        false_quads += not plain and bool(quads)
        false_messages += len(D.detect(model, scene.frame, quads=quads, **reading))
        negative_s += (time.perf_counter() - t0) / args.negatives            # finding + reading, per scene
    print(f"{args.negatives} scenes without a stamp: {false_quads} false detections on the "
          f"{args.negatives // 2} empty ones, {false_messages} false messages ({negative_s:.2f} s per scene)")
    speed = {}
    for label, size in (("720p", (1280, 720)), ("1080p", (1920, 1080))):
        stamp = model.encode(stamp_of(photos[0], rng), "Hello")[0]
        frame = make_scene(rng, np.asarray(photos[1]), [np.asarray(stamp)], size, area=0.2, tilt=15).frame
        for setting, cuts, snap, refine, closed in (("video", D.VIDEO_CUTS, False, 0, ()),
                                                    ("photo", D.IMAGE_CUTS, True, D.IMAGE_REFINE, D.IMAGE_CLOSED)):
            once = lambda: timed_detect(model, frame, detector, args.min_area, cuts, snap, refine, closed,
                                        zoom if snap else None, args.turns if snap else 0)
            read = any(d["message"] == "Hello" for d in once()[1])                          # (also the warm-up)
            runs = [once()[0] for _ in range(10)]
            med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
            total = sum(med.values())
            key = f"{label}, {setting} cuts"
            speed[key] = {"fps": 1 / total, "read": read, **{f"{k}_ms": 1000 * v for k, v in med.items()}}
            parts = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in med.items())
            print(f"{key}: {1 / total:.1f} fps end to end ({parts}; the stamp {'was' if read else 'was not'} read)")
    results = {"args": vars(args), "cells": cells, "scenes": scenes, "negatives": args.negatives, "false_detections": false_quads,
               "false_messages": false_messages, "negative_s_per_scene": negative_s, "speed": speed, "seconds": time.time() - t_start}
    if args.out_dir:
        write_report(results, args)
    return 0


def write_report(results, args):
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    tilts = args.tilts
    rel = lambda p: os.path.relpath(p) if os.path.isabs(p) and not os.path.relpath(p).startswith("..") else p
    lines = [f"Detector {rel(args.detector)}, model {rel(args.model)}; {args.frame} scenes from {args.images_dir}, "
             f"{args.scenes} per cell (seed {args.seed}); mask cuts {tuple(args.cuts)}, closed "
             f"{tuple(getattr(args, 'closed_cuts', ()))}; quads snapped to edges: "
             f"{'no' if args.no_snap else 'yes'}; regions searched around: {args.refine}; turned passes: "
             f"{getattr(args, 'turns', 0)}"
             + (f"; stamps encoded with --optimize {args.optimize}" if args.optimize else "")]
    cells = results["cells"]
    if cells:                                   # (--scenes 0: speed and stamp-free scenes only)
        lines += ["", "End-to-end recovery (detection rate, the best candidate quad's corner error in % of the "
                      "stamp's size)", "", "| stamp area | " + " | ".join(f"tilt {t:.0f} deg" for t in tilts) + " |",
                  "|---|" + "---|" * len(tilts)]
        for size in args.sizes:
            row = [c for c in cells if c["size"] == size]
            lines.append(f"| {size:.0%} | " + " | ".join(
                f"{c['recovered']:.2f} ({c['detected']:.2f}, " + (f"{c['corner_error_pct']:.1f}%" if c[
                    "corner_error_pct"] is not None else "-") + ")" for c in row) + " |")
        total = sum(c["scenes"] for c in cells)
        count = lambda key: round(sum(c[key] * c["scenes"] for c in cells))
        read, at_truth, quad = count("recovered"), count("read_at_true_corners"), count("missed_for_the_quad")
        lines += ["", f"Of the {total} scenes, {read} read end to end and {at_truth} from the stamp's true corners; "
                      f"of the {total - read} misses, {quad} read at the true corners (the quad was wrong) and "
                      f"{total - read - quad} did not (the decoder's limit in that scene). Read at the true corners:",
                  "", "| stamp area | " + " | ".join(f"tilt {t:.0f} deg" for t in tilts) + " |",
                  "|---|" + "---|" * len(tilts)]
        for size in args.sizes:
            lines.append(f"| {size:.0%} | " + " | ".join(f"{c['read_at_true_corners']:.2f}" for c in cells
                                                         if c["size"] == size) + " |")
        pct = lambda v: "-" if v is None else f"{v:.1f}%"
        lines += ["", "Corner error of the corners reported with each message read (after any search; the table "
                      "above gives the best candidate quad's, read or not):", "",
                  "| stamp area | " + " | ".join(f"tilt {t:.0f} deg" for t in tilts) + " |",
                  "|---|" + "---|" * len(tilts)]
        for size in args.sizes:
            lines.append(f"| {size:.0%} | " + " | ".join(pct(c["reported_corner_error_pct"]) for c in cells
                                                         if c["size"] == size) + " |")
    if results["negatives"]:
        lines += ["", f"Scenes without an encoded stamp: {results['negatives']} ({results['negatives'] // 2} empty, "
                      f"the rest with a plain printed photo): {results['false_detections']} false detections on the "
                      f"empty ones, {results['false_messages']} false messages; {results['negative_s_per_scene']:.2f} "
                      f"s per scene to find and read (scene making excluded)."]
    lines += ["", f"Speed (one scene per size, the stamp at 20% and 15 deg; video: mask cuts {D.VIDEO_CUTS}, photo: "
              f"cuts {D.IMAGE_CUTS}, closed cuts {D.IMAGE_CLOSED}, snapped quads"
              f"{', the mirrored view' if D.IMAGE_FLIP else ''}, "
              f"up to {D.IMAGE_REFINE} regions moved onto edges and searched around, "
              f"{getattr(args, 'turns', 0)} turned passes where nothing reads):", "",
              "| frame | fps | detect ms | rectify ms | decode ms | stamp read |", "|---|---|---|---|---|---|"]
    for label, s in results["speed"].items():
        lines.append(f"| {label} | {s['fps']:.1f} | {s['detect_ms']:.1f} | {s['rectify_ms']:.1f} | "
                     f"{s['decode_ms']:.1f} | {'yes' if s['read'] else 'no'} |")
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if not cells:
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for t in tilts:
        row = [c for c in results["cells"] if c["tilt"] == t]
        ax.plot([100 * c["size"] for c in row], [c["recovered"] for c in row], "o-", label=f"tilt {t:.0f} deg")
    ax.set_xscale("log")
    ax.set_xlabel("stamp area, % of the frame")
    ax.set_ylabel("end-to-end message recovery")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out_dir, "plot_recovery.png"), dpi=110)


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
