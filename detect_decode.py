"""Find, rectify and read StegaStamps in camera photos and video: quadrilateral detection, homography, decode.

    python detect_decode.py --image photo_of_a_print.jpg                  # prints each message found and its corners
    python detect_decode.py --images_dir shots/ --save_dir annotated/ --json
    python detect_decode.py --video clip.mp4 --save_video annotated.mp4 --json
    python detect_decode.py --camera 0                                    # a webcam, until Ctrl-C

Per frame (the original's detector.py procedure): the learned stamp detector (train_detector.py; the shipped
pretrained/onnx/detector.onnx by default) gives a mask of where photos are -> contours -> a quadrilateral per region
(convex hull, 4 sides refit through the outline; for photos also a copy snapped to the frame's edges) -> homography
-> the quad rectified to the model's size -> decoded in its 4 rotations (photos: where no quad of a region reads, a
--zoom_detector's look at it if one is given, then its quads moved onto the frame's straight edges, then a search
around them for one that does, --refine); only
BCH-verified messages are reported (photos: with the corners of the quad near the one that read, itself included,
that reads too and follows the frame's edges best). Photos where nothing reads get all of that again over the
detector's map of the frame turned by 90, 180, then 270 degrees (--turns), until one pass reads.
`--detector classical` finds quads from edges instead (no network; it needs the photo's outline, e.g. a white paper
frame, to stand out). In video, a message is confirmed once it was read in --confirm of the last --window frames, so
a single misread never shows. The model and the detector are ONNX files (default: the shipped ones, no torch
needed) or .pth checkpoints; needs OpenCV (pip install opencv-python-headless).
"""
import argparse
import json
import os
import sys
import time
from collections import deque

import numpy as np
from PIL import Image

from cli_common import non_negative_int, positive_int
from image_io import ImageLoadError, check_size, list_images, load_image, save_image
from inference import ModelLoadError, load_model

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(ROOT, "pretrained", "onnx")
DEFAULT_DETECTOR = os.path.join(ROOT, "pretrained", "onnx", "detector.onnx")
# Where the detector's mask is cut, likeliest first. The first five cuts for photos (each region's candidates are
# decoded until one reads) gave +5 points of recovery on scenes from training photos over the first two, at up to 2x
# the time when nothing reads; video and the camera get those two, for the frame rate, and have frames to spare.
# Photos then cut the mask closed (cv2.MORPH_CLOSE with a square of CLOSE_SIZE x the mask's long side: the holes and
# notches a dark or busy part of a large stamp leaves in it are filled) at IMAGE_CLOSED. The low cut 0.1 and the
# closed cuts come last, so they cost time only where the others do not read: on 144 scenes from training photos
# they read 121 against 118, with no false message on 200 stamp-free scenes, which took 16% longer (README).
IMAGE_CUTS, VIDEO_CUTS = (0.5, 0.85, 0.3, 0.7, 0.95, 0.1), (0.5, 0.85)
# Photos: the detector also sees the frame mirrored, and the two maps (the second mirrored back) are averaged before
# the cuts: the network is not mirror-symmetric, and where one of its two views misses a part of a stamp the other
# often has it (session 15, scenes from training photos: README). One batch of two; video keeps one view.
IMAGE_FLIP = True
# Photos: where no message reads, the whole find-and-read is done again over the detector's map of the frame turned
# by these quarter turns (np.rot90; each with its mirror, as above), one pass each, until one reads (--turns: how
# many). The network is not rotation-symmetric either, and a turned view often separates a stamp that the upright
# one merges with its surroundings or cuts short. Averaging the turned maps into the first one lost scenes that it
# reads (session 19); as passes of their own they cannot, and cost time only where nothing reads (rule and numbers:
# docs/detector/turns/).
IMAGE_TURNS = (1, 2, 3)
# Photos: a stamp read from a quad a few % off (the decoder reads within ~3-4% of its size) is reported with better
# corners (polish): unless the read quad's sides already follow the frame's edges (edge support >= POLISH_OK), it
# snapped to those edges and its region's other quads within POLISH_NEAR x the stamp's size are decoded upright in one
# batch; of those that read the same message at least as surely, the one whose sides follow the edges best is
# reported (ties, such as a white paper frame's outline and the photo's own, go to the innermost). Set on scenes from
# training photos (session 18, 4 x 48 scenes of 20-40% at 0-30 deg, seeds 5-8, README): mean corner error of the
# messages read 1.04/1.35/1.10/1.21% -> 0.82/1.15/0.90/1.02%, the same scenes read. Tried there and dropped: the
# edges alone, every read polished (a paper frame's outline won over the photo's: 0.80/1.25/0.93/1.09%, and the
# tests' framed prints were reported at the paper's corners), the read quad snapped alone (1.00/1.32/1.02/1.15%), the
# median of the reading quads (1.05-1.43%), a reach of 0.08 (0.88% on seed 5).
IMAGE_POLISH, POLISH_NEAR, POLISH_OK = True, 0.15, 0.9
IMAGE_CLOSED, CLOSE_SIZE = (0.3, 0.1), 0.04
# Photos: where none of a region's quads reads, the first IMAGE_REFINE such regions are searched around for a quad
# that does (refine_quad), in moves of these fractions of the stamp's size, coarse to fine. Video does not search.
# A search starts only from a quad the decoder is already fairly sure of (its best rotation's mean |2p - 1| at least
# REFINE_FROM): on scenes from training photos, most quads that a search made read started at 0.63 or more, and few
# quads of unmarked prints and empty scenes reach 0.6, so they cost no search.
# The searches of one frame decode at most REFINE_BUDGET quads in all (4 rotations each; ~2-5 s on 2 CPU cores): on
# those scenes every search that read took under 240, the longest that failed over 500.
IMAGE_REFINE, REFINE_STEPS, REFINE_FROM, REFINE_BUDGET = 3, (0.16, 0.08, 0.04, 0.02), 0.6, 240
# Before that search, each such region's first two quads are moved onto the frame's straight edges (edge_quads):
# each side slid along its two neighbours by -EDGE_REACH[0]..EDGE_REACH[1] x the stamp's size, each corner moved
# within EDGE_CORNER x its size (a grid of 2 x EDGE_RES, then EDGE_RES / 2 around its best), to where the side(s)
# follow a brightness step across them best (EDGE_FLOOR of a full EDGE_CAP-grey-level step along them at least,
# EDGE_GAIN more than where they were); at most 12 quads each, decoded in one batch. For masks that missed a part of
# the stamp or took in a neighbour (10-40% of its size off), which no 5% snap reaches. The search then starts from
# the two surest of the region's first two quads and the surest moved one. Set on scenes from training photos
# (session 15, README): 126 -> 134 of 144 read, no false message on 200 stamp-free scenes.
EDGE_REACH, EDGE_CORNER, EDGE_RES, EDGE_CAP, EDGE_FLOOR, EDGE_GAIN = (0.35, 0.7), 0.6, 0.0125, 24.0, 0.5, 0.1
# Photos, with --zoom_detector (train_detector.py --zoom; none is shipped): a region none of whose quads reads is
# first looked at closely: its surest quad's view (zoom_view; then its first quad's) goes through the zoom detector,
# whose map is cut at ZOOM_CUTS; the quads found (each with its copy snapped to the edges) are decoded, and where none
# reads, the next of ZOOM_ROUNDS rounds starts from the first of them. Session 19 (docs/detector/zoom/): on 24
# regions that nothing else read (480 scenes from training photos) the surest quad then the first read 4 (zoom1b),
# the first alone 1; both zoom detectors trained so far read too few to ship.
ZOOM_CUTS, ZOOM_ROUNDS = (0.5,), 2


def order_corners(pts):
    """4 corners of a convex quad -> clockwise on screen (y down), starting at the one nearest the top-left: for an
    upright rectangle [top-left, top-right, bottom-right, bottom-left]. Sorting by the angle around the centre keeps
    a quad turned by 45 degrees a quad (sorting by x + y and x - y would pick one corner twice)."""
    pts = np.asarray(pts, np.float32).reshape(4, 2)
    c = pts.mean(0)
    pts = pts[np.argsort(np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0]))]      # increasing angle: clockwise on screen
    return np.roll(pts, -int(np.argmin(pts.sum(1))), axis=0)


def find_quads(rgb, min_area=0.01, max_quads=8):
    """Convex quadrilaterals in an RGB uint8 frame, largest first: [(4, 2) float32 corners]."""
    import cv2
    grey = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (5, 5), 0)
    med = float(np.median(grey))
    edges = cv2.Canny(grey, int(max(0, 0.5 * med)), int(min(255, 1.5 * med + 20)))
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    h, w = grey.shape
    quads = []
    for c in sorted(contours, key=cv2.contourArea, reverse=True):
        area = cv2.contourArea(c)
        if area < min_area * h * w:
            break
        approx = cv2.approxPolyDP(c, 0.02 * cv2.arcLength(c, True), True)
        if len(approx) == 4 and cv2.isContourConvex(approx):
            q = order_corners(approx)
            if all(np.abs(q - other).max() > 4 for other in quads):   # the same outline traced twice
                quads.append(q)
        if len(quads) >= max_quads:
            break
    return quads


def fit_quad(contour, scale=(1.0, 1.0)):
    """A detected region's outline -> its quadrilateral (4, 2), or None. The convex hull (which closes dents where a
    finger covers an edge) is simplified to 4 vertices, then each side is refit (cv2.fitLine) through the outline
    points near it and the corners are the sides' intersections: sub-pixel corners from a coarse mask."""
    import cv2
    hull = cv2.convexHull(contour)
    peri = cv2.arcLength(hull, True)
    approx = None
    for eps in (0.01, 0.02, 0.03, 0.05, 0.08):
        approx = cv2.approxPolyDP(hull, eps * peri, True)
        if len(approx) <= 4:
            break
    if approx is None or len(approx) != 4:
        return None
    quad = order_corners(approx)
    pts = contour.reshape(-1, 2).astype(np.float32)
    lines = []
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        d = b - a
        length = float(np.hypot(*d))
        t = ((pts - a) @ d) / max(length ** 2, 1e-6)
        dist = np.abs(d[0] * (pts[:, 1] - a[1]) - d[1] * (pts[:, 0] - a[0])) / max(length, 1e-6)
        near = pts[(dist < max(2.0, 0.02 * peri)) & (t > 0.1) & (t < 0.9)]
        if len(near) < 5:
            lines.append((a, d / max(length, 1e-6)))
            continue
        vx, vy, x0, y0 = cv2.fitLine(near, cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        lines.append((np.array([x0, y0]), np.array([vx, vy])))
    corners = intersect_sides(lines, quad)
    if np.abs(corners - quad).max() > 0.025 * peri:                          # a refit that ran away: keep the coarse
        corners = quad
    return (corners + 0.5) * np.asarray(scale, np.float32) - 0.5                # mask pixels -> frame pixels


def intersect_sides(lines, fallback):
    """4 sides as (point, direction) lines, in order around the quad -> its corners (4, 2): side i-1 meets side i at
    corner i. `fallback` where two neighbours are parallel."""
    corners = []
    for i in range(4):
        (p, u), (q, v) = lines[i - 1], lines[i]
        det = u[0] * -v[1] - u[1] * -v[0]
        if abs(det) < 1e-6:
            return np.asarray(fallback, np.float32)
        s = ((q - p)[0] * -v[1] - (q - p)[1] * -v[0]) / det
        corners.append(p + s * u)
    return np.array(corners, np.float32)


def snap_to_edges(grey, quad, reach=0.05, samples=32, min_step=4.0, rel_step=0.25):
    """The quad with each side moved onto the photo's own edge: at `samples` points along the side, the nearest clear
    brightness step across it within `reach` x the stamp's size (a local maximum of at least `rel_step` x the
    strongest there and `min_step` grey levels: the nearest, not the strongest, so the photo's edge wins over the
    outer edge of a white paper frame a few % further out), then a robust line through those points. The mask's quad
    is a pixel or two of a 384-px mask off (about 1% of the stamp's size); this one follows the frame at full
    resolution. `grey` float32 (H, W); a side with too few clear steps stays where it was."""
    import cv2
    size = np.sqrt(quad_area(quad))
    reach_px = max(3.0, reach * size)
    offsets = np.arange(-reach_px, reach_px + 1, 1.0, dtype=np.float32)
    between = offsets[:-1] + 0.5                                                # where each step lies
    centre = quad.mean(0)
    t = np.linspace(0.1, 0.9, samples, dtype=np.float32)[:, None]
    lines = []
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        d = (b - a) / max(float(np.linalg.norm(b - a)), 1e-6)
        n = np.array([d[1], -d[0]], np.float32)
        n = n if np.dot((a + b) / 2 - centre, n) >= 0 else -n                 # outward
        base = a + (b - a) * t                                                  # (samples, 2)
        pts = base[:, None, :] + offsets[None, :, None] * n                     # (samples, offsets, 2)
        profile = cv2.remap(grey, np.ascontiguousarray(pts[..., 0]), np.ascontiguousarray(pts[..., 1]),
                            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        step = cv2.GaussianBlur(np.abs(np.diff(profile, axis=1)), (3, 1), 0)
        peak = np.zeros_like(step, bool)
        peak[:, 1:-1] = (step[:, 1:-1] >= step[:, :-2]) & (step[:, 1:-1] > step[:, 2:])
        peak &= step >= np.maximum(min_step, rel_step * step.max(1, keepdims=True))
        clear = peak.any(1)
        if clear.sum() < samples // 3:
            lines.append((a, d))
            continue
        j = np.where(peak, np.abs(between), np.inf).argmin(1)                   # the nearest clear step
        edge = (base + between[j][:, None] * n)[clear].astype(np.float32)
        vx, vy, x0, y0 = cv2.fitLine(edge, cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        lines.append((np.array([x0, y0], np.float32), np.array([vx, vy], np.float32)))
    return intersect_sides(lines, quad)


def edge_support(grey, a, b, samples=48, gap=2.0, cap=EDGE_CAP):
    """How well segments follow a brightness edge: a, b (M, 2) their ends -> (M,) the mean over `samples` points
    along each of the step across it (|grey 2 px out - grey 2 px in|), each capped at `cap` grey levels, / cap."""
    import cv2
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    t = np.linspace(0.05, 0.95, samples, dtype=np.float32)[None, :, None]
    p = a[:, None, :] + (b - a)[:, None, :] * t                                # (M, samples, 2)
    d = b - a
    n = np.stack([d[:, 1], -d[:, 0]], 1) / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    at = lambda q: cv2.remap(grey, np.ascontiguousarray(q[..., 0]), np.ascontiguousarray(q[..., 1]),
                             cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    step = np.abs(at(p + gap * n[:, None, :]) - at(p - gap * n[:, None, :]))
    return np.minimum(step, cap).mean(1) / cap


def search_2d(score, lo, hi, res=EDGE_RES):
    """The best of score(x, y) (flat arrays -> flat supports) over the square [lo, hi]^2: a grid of 2 x `res`, then a
    grid of res / 2 within 2 x `res` of its best. -> (x, y, support there, support at (0, 0))."""
    grid = np.arange(lo, hi + 1e-6, 2 * res, dtype=np.float32)
    x, y = (v.ravel() for v in np.meshgrid(grid, grid, indexing="ij"))
    support = score(np.append(x, 0), np.append(y, 0))
    here, k = support[-1], int(np.argmax(support[:-1]))
    fine = np.arange(-2 * res, 2 * res + 1e-6, res / 2, dtype=np.float32)
    x, y = (v.ravel() for v in np.meshgrid(x[k] + fine, y[k] + fine, indexing="ij"))
    support = score(x, y)
    k = int(np.argmax(support))
    return x[k], y[k], support[k], here


def edge_quads(grey, quad, rounds=2):
    """Quads near `quad` whose sides follow the frame's edges better (float32 blurred grey, frame pixels): the quad
    with its sides slid along their neighbours onto better edges, one side at a time, `rounds` times round (each move
    a new quad), then the quad with one corner moved (each corner, the best gain first). See EDGE_*."""
    size = np.float32(np.sqrt(quad_area(quad)))
    out, q = [], quad.astype(np.float32)
    for _ in range(rounds):
        moved = False
        for i in range(4):                   # side i (corners i, i+1) slid along sides i-1 and i+1
            j = (i + 1) % 4
            u = (q[i] - q[i - 1]) / max(float(np.linalg.norm(q[i] - q[i - 1])), 1e-6) * size
            v = (q[j] - q[(i + 2) % 4]) / max(float(np.linalg.norm(q[j] - q[(i + 2) % 4])), 1e-6) * size
            score = lambda s, t: edge_support(grey, q[i] + s[:, None] * u, q[j] + t[:, None] * v)
            s, t, best, here = search_2d(score, -EDGE_REACH[0], EDGE_REACH[1])
            if best >= EDGE_FLOOR and best > here + EDGE_GAIN:
                q = q.copy()
                q[i], q[j] = q[i] + s * u, q[j] + t * v
                out.append(q)
                moved = True
        if not moved:
            break
    corners = []
    for i in range(4):                       # corner i moved, its two sides scored together
        before, after = quad[i - 1].astype(np.float32), quad[(i + 1) % 4].astype(np.float32)
        at = lambda x, y: quad[i].astype(np.float32) + size * np.stack([x, y], 1)
        score = lambda x, y: 0.5 * (edge_support(grey, np.broadcast_to(before, (len(x), 2)), at(x, y))
                                    + edge_support(grey, at(x, y), np.broadcast_to(after, (len(x), 2))))
        x, y, best, here = search_2d(score, -EDGE_CORNER, EDGE_CORNER)
        if best >= EDGE_FLOOR and best > here + EDGE_GAIN:
            q = quad.astype(np.float32).copy()
            q[i] = at(np.array([x]), np.array([y]))[0]
            corners.append((best - here, q))
    return out + [q for _, q in sorted(corners, key=lambda c: -c[0])]


class Detector:
    """The learned stamp detector (train_detector.py): detector.onnx through ONNX Runtime, or a .pth through
    PyTorch. Frames are resized so that the long side is the detector's input_side (both sides multiples of 16)."""

    def __init__(self, path):
        if path.endswith(".pth"):
            from models_pytorch import load_detector
            import torch
            cfg, net = load_detector(path)
            self.input_side, self.zoom = cfg.input_side, cfg.zoom
            self.run = lambda x: torch.inference_mode()(net)(torch.from_numpy(x)).numpy()
            return
        import onnxruntime as ort
        if not os.path.isfile(path):
            raise ModelLoadError(f"{path}: detector not found (train one with train_detector.py, or use "
                                 f"--detector classical)")
        try:
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            meta = json.loads(sess.get_modelmeta().custom_metadata_map["stegastamp_detector_config"])
        except Exception as e:                   # noqa: BLE001 - any unreadable file is one line for the user
            raise ModelLoadError(f"{path}: not a stamp detector ONNX file ({str(e).splitlines()[0][:150]})") from None
        self.input_side, self.zoom = int(meta["input_side"]), float(meta.get("zoom", 0.0))
        self.run = lambda x: sess.run(None, {"frame": x})[0]

    def prob(self, x):
        """Network input (B, 3, h, w) float32 in [0,1] -> probability maps (B, h, w)."""
        return 1 / (1 + np.exp(-self.run(np.ascontiguousarray(x))[:, 0]))

    def input_size(self, H, W):
        """(w, h) the network sees for an H x W frame: long side input_side, both multiples of 16."""
        s = self.input_side / max(H, W)
        return max(16, int(round(W * s / 16)) * 16), max(16, int(round(H * s / 16)) * 16)

    def mask(self, rgb, flip=False, turn=0):
        """Probability map (h, w) at the detector's resolution, and the (sx, sy) scale back to the frame. flip: the
        mean of the frame's map and its mirror image's (mirrored back), both in one batch (see IMAGE_FLIP). turn:
        the network sees the frame turned by `turn` quarter turns (np.rot90), and its map is turned back."""
        import cv2
        H, W = rgb.shape[:2]
        w, h = self.input_size(H, W)
        x = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32).transpose(2, 0, 1)[None] / 255
        x = np.rot90(x, turn, axes=(2, 3))
        if flip:
            x = np.concatenate([x, x[..., ::-1]])
        prob = self.prob(x)
        prob = 0.5 * (prob[0] + prob[1, :, ::-1]) if flip else prob[0]
        return np.ascontiguousarray(np.rot90(prob, -turn)), (W / w, H / h)

    def quads(self, rgb, min_area=0.01, cuts=IMAGE_CUTS, closed=IMAGE_CLOSED, flip=False, turn=0):
        """The stamps' candidate quadrilaterals in the frame, the likeliest first. The mask (flip: averaged with its
        mirror image's) is cut at each of
        `cuts`: a stamp is surer than what it touches (a cup, a face), so a higher cut separates regions that
        a lower one merges, and a lower one keeps a faint stamp whole; then closed and cut at each of `closed`
        (IMAGE_CLOSED above). Quads found twice are kept once. turn: as mask."""
        prob, scale = self.mask(rgb, flip, turn)
        found, min_pixels = [], min_area * prob.size
        for quad in mask_quads(prob, scale, min_pixels, cuts) + mask_quads(prob, scale, min_pixels, closed, CLOSE_SIZE):
            add_new(found, quad)
        return found


def load_zoom(path):
    """--zoom_detector -> a zoom Detector, or None for 'none'."""
    if path == "none":
        return None
    zoom = Detector(path)
    if not zoom.zoom:
        raise ModelLoadError(f"{path}: a frame detector, not a zoom detector (train one with train_detector.py --zoom)")
    return zoom


def mask_quads(prob, scale, min_pixels, thresholds, close=0.0):
    """The quads of the regions of a probability map cut at each threshold (frame pixels: `scale` per mask pixel);
    close > 0: each cut closed first with a square of that share of the map's long side."""
    import cv2
    quads = []
    k = max(3, int(close * max(prob.shape)) | 1)                               # odd, at least 3 pixels
    for threshold in thresholds:
        binary = (prob > threshold).astype(np.uint8)
        if close:
            binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for c in sorted(contours, key=cv2.contourArea, reverse=True):
            if cv2.contourArea(c) < min_pixels:
                break
            quad = fit_quad(c, scale)
            if quad is not None:
                quads.append(quad)
    return quads


def is_new(found, quad):
    """No quad of `found` has all its corners within 2% of the stamp's size of `quad`'s."""
    return all(np.abs(quad - q).max() >= 0.02 * np.sqrt(quad_area(q)) for q in found)


def add_new(found, quad):
    """Append `quad` unless it is a repeat of one of `found` (is_new)."""
    if is_new(found, quad):
        found.append(quad)


def inside(quad, point):
    import cv2
    return cv2.pointPolygonTest(quad.reshape(-1, 1, 2).astype(np.float32), tuple(float(v) for v in point), False) >= 0


def quad_area(quad):
    x, y = quad[:, 0], quad[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))   # shoelace


def rectify(rgb, quad, size):
    """The quad's content warped to a (h, w) = size upright rectangle (PIL RGB)."""
    import cv2
    h, w = size
    dst = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    M = cv2.getPerspectiveTransform(quad.astype(np.float32), dst)
    return Image.fromarray(cv2.warpPerspective(rgb, M, (w, h), flags=cv2.INTER_AREA))


def zoom_view(rgb, quad, side, expand):
    """What a zoom detector sees of a candidate quad: the frame warped so that the quad's corners (in order_corners
    order) land on the corners of the central 1/expand of a side x side square; a large quad is first shrunk with
    area averaging (to ~2x the view's scale), so the view does not alias. -> (view uint8 (side, side, 3), M: the
    3x3 homography from frame to view pixels). Outside the frame is black."""
    import cv2
    m = side * (1 - 1 / expand) / 2
    dst = np.array([[m, m], [side - m, m], [side - m, side - m], [m, side - m]], np.float32)
    M = cv2.getPerspectiveTransform(np.asarray(quad, np.float32), dst)
    f, src, to_view = min(1.0, 2 * (side - 2 * m) / max(np.sqrt(quad_area(quad)), 1.0)), rgb, M
    if f < 0.9:
        H, W = rgb.shape[:2]
        src = cv2.resize(rgb, (max(1, round(W * f)), max(1, round(H * f))), interpolation=cv2.INTER_AREA)
        to_view = M @ np.linalg.inv(np.diag([src.shape[1] / W, src.shape[0] / H, 1.0]))   # from the shrunk frame
    return cv2.warpPerspective(src, to_view, (side, side), flags=cv2.INTER_LINEAR), M


def zoom_quads(zoom, rgb, quad, cuts=ZOOM_CUTS):
    """A zoom detector's quads for the stamp around `quad` (frame pixels, the likeliest first): its map of
    zoom_view(quad), cut at `cuts`; of each cut's regions the one nearest the view's centre, mapped back."""
    import cv2
    view, M = zoom_view(rgb, order_corners(quad), zoom.input_side, zoom.zoom)
    prob = zoom.prob(view.astype(np.float32).transpose(2, 0, 1)[None] / 255)[0]
    found, side = [], zoom.input_side
    inv = np.linalg.inv(M)
    for q in mask_quads(prob, (1.0, 1.0), 0.02 * prob.size, cuts):
        back = order_corners(cv2.perspectiveTransform(q[None].astype(np.float64), inv)[0])
        if np.abs(q.mean(0) - side / 2).max() < side / 4:          # a region around the centre, not a neighbour
            add_new(found, back)
    return found


def candidate_quads(rgb, detector=None, min_area=0.01, cuts=IMAGE_CUTS, snap=True, closed=IMAGE_CLOSED, flip=None,
                    turn=0, greys=None):
    """Where stamps may be: the learned `detector`'s quads (a Detector; its mask, for photos averaged with its mirror
    image's — `flip`, default: as `snap`, IMAGE_FLIP — cut at `cuts`, then closed and cut at `closed`), each
    preceded by
    its copy snapped to the frame's edges where that moved it (snap_to_edges; tried first because it is the closer
    of the two, so a stamp is reported with its corners; `snap=False` for video, which has frames to spare and wants
    the speed), or with None find_quads (edges already), smallest first (of nested
    outlines, a photo and its paper frame, the photo's own corners are tried first). turn: the detector sees the
    frame turned by that many quarter turns (IMAGE_TURNS). greys: as grey_of."""
    if detector is None:
        return sorted(find_quads(rgb, min_area), key=quad_area)
    quads = detector.quads(rgb, min_area, cuts, closed, IMAGE_FLIP and snap if flip is None else flip, turn)
    if not snap or not quads:
        return quads
    grey = grey_of(rgb, greys)
    out = []
    for quad in quads:
        snapped = snap_to_edges(grey, quad)
        out += [snapped, quad] if np.abs(snapped - quad).max() > 0.5 else [quad]   # unmoved: not decoded twice
    return out


def grey_of(rgb, greys=None, blurred=False):
    """The frame in grey, float32 (blurred: 5x5 Gaussian, for edge_quads and the zoom's snaps; plain for
    snap_to_edges and polish), made once a frame when the same `greys` dict is given."""
    greys = {} if greys is None else greys
    key = "blurred" if blurred else "plain"
    if key not in greys:
        import cv2
        if "plain" not in greys:
            greys["plain"] = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        if blurred:
            greys["blurred"] = cv2.GaussianBlur(greys["plain"], (5, 5), 0)
    return greys[key]


def regions(quads):
    """Quads -> lists of the quads of one region (either's centre lies inside the other), in the given order."""
    groups = []
    for q in quads:
        for g in groups:
            if inside(g[0], q.mean(0)) or inside(q, g[0].mean(0)):
                g.append(q)
                break
        else:
            groups.append([q])
    return groups


def rectified_crops(model, rgb, quad):
    """The quad rectified to 2x the model size (the model resizes it down), in its 4 rotations: 4 crops."""
    up = rectify(rgb, quad, (model.size[0] * 2, model.size[1] * 2))
    return [up.rotate(90 * k, expand=True) for k in range(4)]


def decode_rectified(model, rgb, quads, timing=None, rotations=True):
    """The quads rectified (rotations: each in its 4 rotations, else upright only) and decoded in one batch -> the
    DecodeResults in that order; `timing` (a dict) accumulates rectify / decode seconds."""
    t0 = time.perf_counter()
    up = (model.size[0] * 2, model.size[1] * 2)
    crops = ([c for q in quads for c in rectified_crops(model, rgb, q)] if rotations
             else [rectify(rgb, q, up) for q in quads])
    t1 = time.perf_counter()
    results = model.decode_batch(crops, tta=False)   # no decoding views: they do not fix a wrong quad, at 5x the time
    if timing is not None:
        timing["rectify"] = timing.get("rectify", 0.0) + t1 - t0
        timing["decode"] = timing.get("decode", 0.0) + time.perf_counter() - t1
    return results


def read_quads(model, rgb, quads, timing=None):
    """Each quad decoded in its 4 rotations, all in one batch -> [(detection or None, confidence)] per quad: the
    detection {message, corrected_bits, corners, confidence} of the first rotation that reads (BCH-verified), and the
    highest bit confidence of its 4 rotations (how close it is to reading). `timing` (a dict) accumulates rectify /
    decode seconds."""
    results = decode_rectified(model, rgb, quads, timing)
    out = []
    for i, quad in enumerate(quads):
        rotations, found = results[4 * i:4 * i + 4], None
        for k, res in enumerate(rotations):
            if res.ok:
                corners = np.roll(quad, -k, axis=0)           # the stamp's own top-left first
                found = {"message": res.message, "corrected_bits": res.corrected_bits,
                         "corners": [[round(float(x), 1), round(float(y), 1)] for x, y in corners],
                         "confidence": round(float(res.confidence), 4)}
                break
        out.append((found, max(float(r.confidence or 0.0) for r in rotations)))
    return out


def read_quad(model, rgb, quad, timing=None):
    """The quad decoded in its 4 rotations -> a detection {message, corrected_bits, corners, confidence} from the
    first rotation that reads (BCH-verified), or None."""
    return read_quads(model, rgb, [quad], timing)[0][0]


def nudged(quad, step):
    """The quad's 24 neighbours: each corner moved by `step` pixels left, right, up or down (16), and each side moved
    out or in by `step` along its normal, both its corners together (8)."""
    out = []
    for c in range(4):
        for move in ((step, 0), (-step, 0), (0, step), (0, -step)):
            q = quad.copy()
            q[c] += move
            out.append(q)
    centre = quad.mean(0)
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        d = (b - a) / max(float(np.linalg.norm(b - a)), 1e-6)
        n = np.array([d[1], -d[0]], np.float32)
        n = n if np.dot((a + b) / 2 - centre, n) >= 0 else -n                 # outward
        for sign in (1, -1):
            q = quad.copy()
            q[i] += sign * step * n
            q[(i + 1) % 4] += sign * step * n
            out.append(q)
    return out


def refine_quad(model, rgb, quad, timing=None, steps=REFINE_STEPS, rounds=4, min_confidence=REFINE_FROM,
                budget=REFINE_BUDGET, confidence=None):
    """A quad that does not read -> (a detection from a quad near it or None, quads decoded). Greedy search on the
    decoder's bit
    confidence: of the quad's 24 neighbours (`nudged`, moves of `step` x the stamp's size), go to the most confident
    while it gains, up to `rounds` times per step, steps coarse to fine; stop as soon as any neighbour reads. Meant
    for a mask that missed a corner or a side of the stamp (a blue sky taken for background): the decoder reads a
    quad within ~3-4% of the stamp's size, the mask's quad is then 5-40% off at one or two corners. At most
    1 + 24 x rounds x len(steps) quads are decoded (4 rotations each), and no round that would pass `budget`; none
    after the first if its confidence is under `min_confidence`. `confidence`: the quad's, when the caller has
    decoded it already and it did not read (then it is not decoded again). BCH still verifies every message."""
    size = np.sqrt(quad_area(quad))
    found, used = None, 0
    if confidence is None:
        (found, confidence), used = read_quads(model, rgb, [quad], timing)[0], 1
    if found is not None or confidence < min_confidence:
        return found, used
    for step in steps:
        for _ in range(rounds):
            neighbours = nudged(quad, step * size)
            if used + len(neighbours) > budget:
                return None, used
            scored = read_quads(model, rgb, neighbours, timing)
            used += len(neighbours)
            found = next((d for d, _ in scored if d is not None), None)
            if found is not None:
                return found, used
            best = int(np.argmax([c for _, c in scored]))
            if scored[best][1] <= confidence:
                break                                          # no neighbour is surer: a finer step
            quad, confidence = neighbours[best], scored[best][1]
    return None, used


def zoom_read(model, rgb, grey, zoom, quad, timing=None, rounds=ZOOM_ROUNDS):
    """A region that did not read, looked at closely (ZOOM_*): -> (detection or None, the quads decoded)."""
    tried = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        quads, zoomed = [], zoom_quads(zoom, rgb, quad)
        if timing is not None:
            timing["detect"] = timing.get("detect", 0.0) + time.perf_counter() - t0
        for q in zoomed:
            for c in (snap_to_edges(grey, q), q):
                if is_new(tried + quads, c):                     # not decoded in an earlier round either
                    quads.append(c)
        if not quads:
            break
        scored = read_quads(model, rgb, quads, timing)
        tried += quads
        found = next((d for d, _ in scored if d is not None), None)
        if found is not None:
            return found, tried
        quad = zoomed[0]                                         # the next round looks from the zoom's own quad
    return None, tried


def aligned(quad, ref):
    """`quad`'s corners in the cyclic order that puts each nearest `ref`'s."""
    return min((np.roll(quad, k, axis=0) for k in range(4)), key=lambda q: float(np.abs(q - ref).sum()))


def polish(model, rgb, grey, group, detection, timing=None):
    """A detection -> the same with the most accurate corners the reader can tell: its quad snapped to the frame's
    edges and the region's other quads within POLISH_NEAR x the stamp's size of it are decoded upright (one crop
    each, one batch); of those that read the same message at least as surely (and the quad itself), the one whose
    sides follow the frame's edges best (edge_support; ties, such as a white paper frame's outline against the
    photo's own, go to the innermost) gives the corners. A quad on the edges already (POLISH_OK) is kept as it is."""
    quad = np.asarray(detection["corners"], np.float32)          # the stamp's top-left first: upright when rectified
    support = lambda q: round(float(edge_support(grey, q, np.roll(q, -1, axis=0)).mean()), 2)
    if support(quad) >= POLISH_OK:
        return detection                                          # on the photo's edges already
    size = np.sqrt(quad_area(quad))
    alts = []
    for q in [snap_to_edges(grey, quad)] + [aligned(q, quad) for q in group]:
        if 0.5 < np.abs(q - quad).max() < POLISH_NEAR * size:
            add_new(alts, q)
    if not alts:
        return detection
    results = decode_rectified(model, rgb, alts, timing, rotations=False)
    same = [(q, r) for q, r in zip(alts, results) if r.ok and r.message == detection["message"]
            and float(r.confidence) >= detection["confidence"]]
    if not same:
        return detection
    best = max([quad] + [q for q, _ in same], key=lambda q: (support(q), -quad_area(q)))   # ties: the innermost
    return dict(detection, corners=[[round(float(x), 1), round(float(y), 1)] for x, y in best])


def detect(model, rgb, min_area=0.01, detector=None, quads=None, timing=None, cuts=IMAGE_CUTS, snap=True, refine=0,
           closed=IMAGE_CLOSED, zoom=None, turns=0):
    """-> list of {message, corrected_bits, corners, confidence}, one per message. The candidate quads of each region
    are decoded in turn (4 rotations each) until one reads, so a stamp found at once costs one decode. Where none
    reads, the first `refine` such regions are looked at closely by the `zoom` detector where one is given
    (zoom_read, from the region's surest quad, then its first), then get their first two quads moved onto the
    frame's edges (edge_quads, all decoded in one batch), then are searched around (refine_quad, from those two
    quads and the most confident moved one, the surest first; REFINE_BUDGET quads decoded at most in all). `quads`
    (from candidate_quads) may be given when the caller already has them. With `snap` (photos) a message read is
    reported with the corners `polish` picks. turns (photos, with a learned `detector`): while no message reads, up
    to that many more passes, each all of the above over the quads of the `detector`'s map of the frame turned by
    the next of IMAGE_TURNS (a search budget of its own each)."""
    greys = {}                                                   # the frame in grey, made once for all passes
    quads = candidate_quads(rgb, detector, min_area, cuts, snap, closed, greys=greys) if quads is None else quads
    found = read_regions(model, rgb, quads, timing, snap, refine, zoom, greys)
    for turn in IMAGE_TURNS[:turns] if detector is not None else ():
        if found:
            break
        t0 = time.perf_counter()
        quads = candidate_quads(rgb, detector, min_area, cuts, snap, closed, turn=turn, greys=greys)
        if timing is not None:
            timing["detect"] = timing.get("detect", 0.0) + time.perf_counter() - t0
        found = read_regions(model, rgb, quads, timing, snap, refine, zoom, greys)
    return found


def read_regions(model, rgb, quads, timing=None, snap=True, refine=0, zoom=None, greys=None):
    """detect()'s one pass over the candidate quads of one map, region by region -> the messages read. greys: as
    grey_of."""
    found, refined, budget = [], 0, REFINE_BUDGET
    for group in regions(quads):
        d, confidences = None, []
        for quad in group:
            d, confidence = read_quads(model, rgb, [quad], timing)[0]
            confidences.append(confidence)
            if d is not None:
                break
        searching = d is None and refined < refine
        if searching:
            refined += 1
            grey = grey_of(rgb, greys, blurred=True)
            best = int(np.argmax(confidences))
            for start in ([group[best]] + ([group[0]] if best else [])) if zoom is not None else []:
                d, zoomed = zoom_read(model, rgb, grey, zoom, start, timing)
                group = group + zoomed                                   # polish may pick among them too
                if d is not None:
                    break
        if searching and d is None:
            starts = list(zip(group[:2], confidences))
            moved = []
            for quad in group[:2]:
                for q in edge_quads(grey, quad):
                    add_new(moved, q)
            if moved:
                scored = read_quads(model, rgb, moved, timing)
                d = next((m for m, _ in scored if m is not None), None)
                best = int(np.argmax([c for _, c in scored]))
                starts.append((moved[best], scored[best][1]))
            for quad, confidence in sorted(starts, key=lambda sc: -sc[1])[:2] if d is None else []:
                d, used = refine_quad(model, rgb, quad, timing, budget=budget, confidence=confidence)
                budget -= used
                if d is not None or budget <= 0:
                    break
        if d is not None and all(d["message"] != f["message"] for f in found):
            if snap and IMAGE_POLISH:
                d = polish(model, rgb, grey_of(rgb, greys), group, d, timing)
            found.append(d)
    return found


def annotate(rgb, detections):
    import cv2
    out = rgb.copy()
    for d in detections:
        pts = np.array(d["corners"], np.int32)
        cv2.polylines(out, [pts], True, (0, 255, 0), max(2, rgb.shape[1] // 400))
        cv2.putText(out, d["message"], tuple(int(v) for v in pts[0] + [4, -8]), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.6, rgb.shape[1] / 1200), (0, 255, 0), 2, cv2.LINE_AA)
    return out


class Confirmer:
    """A message counts once it was read in `confirm` of the last `window` frames (no single-frame flicker)."""

    def __init__(self, window=5, confirm=2):
        self.recent, self.confirm = deque(maxlen=window), confirm

    def update(self, detections):
        self.recent.append({d["message"] for d in detections})
        counts = {}
        for frame in self.recent:
            for m in frame:
                counts[m] = counts.get(m, 0) + 1
        return [d for d in detections if counts[d["message"]] >= self.confirm]


def frames(args):
    """(name, frame index or None, RGB uint8) for the chosen input; unreadable files -> (name, None, error str)."""
    if args.image or args.images_dir:
        paths = [args.image] if args.image else list_images(args.images_dir)
        for p in paths:
            try:
                yield p, None, np.asarray(check_size(load_image(p), p))
            except ImageLoadError as e:
                yield p, None, str(e)
        return
    import cv2
    source = args.video if args.video else args.camera
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise ImageLoadError(f"{source}: cannot open this video" + ("" if args.video else " camera"))
    i = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield (args.video or f"camera{args.camera}"), i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="one photo")
    src.add_argument("--images_dir", help="a folder of photos (recursive)")
    src.add_argument("--video", help="a video file (anything OpenCV reads)")
    src.add_argument("--camera", type=int, help="a camera index (0: the first webcam)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="a .pth checkpoint or an ONNX export folder")
    p.add_argument("--detector", default=DEFAULT_DETECTOR,
                   help="the stamp detector: detector.onnx or a train_detector.py .pth, or 'classical' (edges)")
    p.add_argument("--zoom_detector", default="none",
                   help="photos: a zoom detector that looks closely at a region whose quads do not read "
                        "(zoom_detector.onnx or a train_detector.py --zoom .pth; none is shipped: README)")
    p.add_argument("--save_dir", default=None, help="write annotated copies (polygon + message) here")
    p.add_argument("--save_video", default=None, help="with --video/--camera: write the annotated video here")
    p.add_argument("--json", action="store_true", help="print one JSON list of {file, frame, detections} at the end")
    p.add_argument("--min_area", type=float, default=0.01, help="smallest stamp, as a fraction of the frame area")
    p.add_argument("--refine", type=non_negative_int, default=IMAGE_REFINE,
                   help="photos: regions whose quads do not read that are moved onto the frame's edges and searched "
                        f"around for a quad that does (0: off; at most {REFINE_BUDGET} quads a frame, a few seconds on "
                        "a CPU); video never searches")
    p.add_argument("--turns", type=int, choices=range(len(IMAGE_TURNS) + 1), default=len(IMAGE_TURNS),
                   help="photos: where nothing reads, look again (all of the above) at the frame turned by 90, 180 "
                        "then 270 degrees, up to this many passes (0: off; up to 4x the time where no stamp is)")
    p.add_argument("--window", type=positive_int, default=5, help="video: frames a message is confirmed over")
    p.add_argument("--confirm", type=positive_int, default=2, help="video: reads needed within --window frames")
    p.add_argument("--overwrite", action="store_true", help="replace existing annotated outputs")
    return p


def main(args) -> int:
    import cv2
    try:
        model = load_model(args.model)
        detector = None if args.detector == "classical" else Detector(args.detector)
        zoom = load_zoom(args.zoom_detector)
        if detector is not None and detector.zoom:
            raise ModelLoadError(f"{args.detector}: a zoom detector; give it as --zoom_detector")
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    video = args.video is not None or args.camera is not None
    if args.save_video and not video:
        print("error: --save_video needs --video or --camera", file=sys.stderr)
        return 2
    for out in (args.save_video,):
        if out and os.path.exists(out) and not args.overwrite:
            print(f"error: {out} exists (pass --overwrite to replace it)", file=sys.stderr)
            return 2
    confirmer, writer, rows, failures = Confirmer(args.window, args.confirm), None, [], 0
    try:
        for name, index, rgb in frames(args):
            if isinstance(rgb, str):
                print(f"error: {rgb}", file=sys.stderr)
                failures += 1
                rows.append({"file": name, "frame": index, "detections": [], "error": rgb})
                continue
            found = detect(model, rgb, args.min_area, detector, cuts=VIDEO_CUTS if video else IMAGE_CUTS,
                           snap=not video, refine=0 if video else args.refine, closed=() if video else IMAGE_CLOSED,
                           zoom=zoom, turns=0 if video else args.turns)
            shown = confirmer.update(found) if video else found
            rows.append({"file": name, "frame": index, "detections": shown})
            if not args.json:
                where = f"{name}" + (f" frame {index}" if index is not None else "")
                print(f"{where}: " + (", ".join(f"{d['message']!r} at {d['corners']}" for d in shown)
                                      if shown else "no message found"), flush=True)
            if args.save_dir and not video:
                out = os.path.join(args.save_dir, os.path.splitext(os.path.basename(name))[0] + "_detected.png")
                if os.path.exists(out) and not args.overwrite:
                    print(f"error: {out} exists (pass --overwrite to replace it)", file=sys.stderr)
                    failures += 1
                else:
                    save_image(Image.fromarray(annotate(rgb, shown)), out)
            if args.save_video:
                if writer is None:
                    h, w = rgb.shape[:2]
                    writer = cv2.VideoWriter(args.save_video, cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
                writer.write(cv2.cvtColor(annotate(rgb, shown), cv2.COLOR_RGB2BGR))
    except ImageLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if writer is not None:
            writer.release()
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
    n_found = sum(bool(r["detections"]) for r in rows)
    if len(rows) > 1:
        print(f"{len(rows)} {'frames' if video else 'images'}: {n_found} with a message"
              + (f", {failures} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
