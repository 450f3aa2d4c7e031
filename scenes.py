"""Synthetic camera scenes (no torch): photos ("stamps") seen by a hand-held camera inside a background photo, with
the pixel mask and corners of each one. Training data for the stamp detector (train_detector.py) and its test bench
(evaluate_detector.py).

    rng = np.random.default_rng(0)
    scene = make_scene(rng, background, [stamp], (640, 360))     # uint8 HxWx3 arrays in, a Scene out
    scene.frame, scene.mask, scene.corners                       # (H, W, 3) uint8, (H, W) uint8 {0,1}, [(4, 2)]

Geometry: each stamp is a rectangle in 3-D, turned about its own centre (roll), tilted away from the camera by
`tilt` degrees about a random in-plane axis and projected by a pinhole camera with a 60 degree horizontal field of
view, then scaled to cover `area` of the frame and placed at random inside it. Optionally it sits on white paper (a
border of 3-15% of its side, the print's margin), and a hand or an object covers part of it (the mask excludes what
is covered). Camera: uneven light and vignetting, white balance, defocus, sensor noise and the phone's JPEG, the
same kinds of effects as distortions.print_photo. The corners are the stamp's own (its top-left first), as the
decoder needs them; the mask covers the stamp's pixels only, not its paper border.
"""
from dataclasses import dataclass, field

import numpy as np

FOV_DEG = 60.0


@dataclass
class Scene:
    frame: np.ndarray                               # (H, W, 3) uint8
    mask: np.ndarray                                # (H, W) uint8, 1 where a stamp's own pixels are visible
    corners: list = field(default_factory=list)     # per stamp: (4, 2) float32, its top-left corner first


def tilted_quad(aspect, tilt_deg, axis_deg, roll_deg, fov_deg=FOV_DEG):
    """Corners (TL, TR, BR, BL) of a w:h = aspect rectangle after roll, tilt about an in-plane axis and pinhole
    projection, centred on the origin with unit area: (4, 2) float64."""
    w, h = np.sqrt(aspect), 1 / np.sqrt(aspect)
    pts = np.array([[-w / 2, -h / 2, 0], [w / 2, -h / 2, 0], [w / 2, h / 2, 0], [-w / 2, h / 2, 0]])
    r = np.radians(roll_deg)
    pts = pts @ np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    a, t = np.radians(axis_deg), np.radians(tilt_deg)
    k = np.array([np.cos(a), np.sin(a), 0.0])                                  # Rodrigues: rotate about k by t
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    R = np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K
    pts = pts @ R.T
    f = 0.5 / np.tan(np.radians(fov_deg) / 2) * 2.0                             # the stamp fills ~half the view
    z = pts[:, 2] + f
    quad = pts[:, :2] * (f / z)[:, None]
    quad -= quad.mean(0)
    return quad / np.sqrt(polygon_area(quad))


def polygon_area(pts):
    x, y = np.asarray(pts, np.float64).T
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def place(quad, area, size, rng, margin=0.0):
    """Scale a unit-area quad to `area` of the frame (W, H) and put it at a random spot where it fits (with `margin`
    of its own size to spare, for a paper border); None when it cannot fit."""
    W, H = size
    q = quad * np.sqrt(area * W * H)
    lo, hi = q.min(0), q.max(0)
    pad = margin * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if (hi - lo)[0] > W or (hi - lo)[1] > H:
        return None
    cx, cy = rng.uniform(-lo[0], W - hi[0]), rng.uniform(-lo[1], H - hi[1])
    return (q + [cx, cy]).astype(np.float32)


def paste(frame, mask, stamp, quad, border=0.0, paper=(245, 245, 245)):
    """Warp `stamp` (h, w, 3 uint8) onto `quad` of frame in place, on white paper `border` of its side wide; the
    mask gets the stamp's own pixels."""
    import cv2
    h, w = stamp.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    M = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
    H, W = frame.shape[:2]
    b = border * max(w, h)
    paper_src = np.array([[-b, -b], [w + b, -b], [w + b, h + b], [-b, h + b]], np.float32)
    outline = np.round(cv2.perspectiveTransform(paper_src[None], M)[0] * 16).astype(np.int32)
    if border > 0:
        cv2.fillConvexPoly(frame, outline, paper, cv2.LINE_AA, shift=4)
    hidden = np.zeros_like(mask)
    cv2.fillConvexPoly(hidden, outline, 1, shift=4)
    mask[hidden > 0] = 0                                   # an earlier stamp under this print is covered
    cv2.warpPerspective(stamp, M, (W, H), dst=frame, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_TRANSPARENT)
    mask |= cv2.warpPerspective(np.ones((h, w), np.uint8), M, (W, H), flags=cv2.INTER_NEAREST)


def occlude(frame, mask, quad, rng, colours):
    """A finger or an object over one edge of the stamp: an ellipse from outside the stamp reaching in by 10-35% of
    its size, in a flat colour with a little shading; what it covers leaves the mask."""
    import cv2
    c = quad.mean(0)
    i = rng.integers(4)
    edge = quad[i] + rng.uniform(0.2, 0.8) * (quad[(i + 1) % 4] - quad[i])          # a point on one edge
    size = np.sqrt(polygon_area(quad))
    inward = (c - edge) / (np.linalg.norm(c - edge) + 1e-6)
    reach = rng.uniform(0.10, 0.35) * size
    centre = edge + inward * (reach - rng.uniform(0.3, 0.6) * size)
    axes = (int(rng.uniform(0.3, 0.6) * size), int(rng.uniform(0.12, 0.25) * size))
    angle = float(np.degrees(np.arctan2(inward[1], inward[0])))
    shape = np.zeros(mask.shape, np.uint8)
    cv2.ellipse(shape, (int(centre[0]), int(centre[1])), axes, angle, 0, 360, 1, -1, cv2.LINE_AA)
    colour = np.array(colours[rng.integers(len(colours))], np.float32)
    shade = 0.85 + 0.3 * rng.random((1, 1, 1))
    frame[shape > 0] = np.clip(colour * shade, 0, 255).astype(np.uint8)[0, 0]
    mask[shape > 0] = 0


SKIN_AND_OBJECTS = [(224, 172, 140), (198, 134, 96), (141, 85, 54), (90, 56, 37), (40, 40, 40), (70, 90, 160)]


def camera(frame, rng, strength=1.0):
    """A phone camera's view of the scene, in place of `frame` (uint8): uneven light and vignetting, white balance,
    defocus, sensor noise, JPEG. strength 0 returns the frame unchanged; 1 is a typical hand-held photo."""
    import cv2
    if strength <= 0:
        return frame
    H, W = frame.shape[:2]
    x = frame.astype(np.float32) / 255
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    u, v = xx / max(W - 1, 1) - 0.5, yy / max(H - 1, 1) - 0.5
    a = rng.uniform(0, 2 * np.pi)
    light = (1 + strength * rng.uniform(-0.25, 0.1)) * (1 + strength * 0.3 * (np.cos(a) * u + np.sin(a) * v))
    light *= 1 - strength * rng.uniform(0, 0.4) * (u * u + v * v)
    x = x * light[..., None] * (1 + strength * rng.uniform(-0.12, 0.12, 3))
    sigma = strength * rng.uniform(0, 1.5) * max(H, W) / 640
    if sigma > 0.3:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    x = x + rng.normal(0, strength * rng.uniform(0.003, 0.025), x.shape).astype(np.float32)
    out = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(45, 96))])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def make_scene(rng, background, stamps, size, area=(0.05, 0.9), max_tilt=50.0, tilt=None, paper_prob=0.5,
               occlude_prob=0.25, camera_strength=1.0, aspect=None):
    """One frame of `size` (W, H): `background` (any size, resized to fill) with each of `stamps` placed at
    `area` of the frame (a (lo, hi) range or a number) and tilted by `tilt` degrees (default U(0, max_tilt)), rolled
    by any angle. Stamps that would overlap an earlier one or cannot fit are left out. -> Scene."""
    import cv2
    W, H = size
    frame = np.ascontiguousarray(cv2.resize(background, (W, H), interpolation=cv2.INTER_AREA))
    mask = np.zeros((H, W), np.uint8)
    corners = []
    for stamp in stamps:
        a = rng.uniform(*area) if isinstance(area, tuple) else float(area)
        a = a / len(stamps) if isinstance(area, tuple) else a
        t = rng.uniform(0, max_tilt) if tilt is None else tilt
        asp = aspect if aspect is not None else stamp.shape[1] / stamp.shape[0]
        border = rng.uniform(0.03, 0.15) if rng.random() < paper_prob else 0.0
        for _ in range(10):
            quad = place(tilted_quad(asp, t, rng.uniform(0, 360), rng.uniform(-180, 180)), a, size, rng, border)
            if quad is None:
                a *= 0.8
                continue
            taken = np.zeros_like(mask)
            cv2.fillConvexPoly(taken, np.round(quad).astype(np.int32), 1)
            if (taken & mask).sum() < 0.05 * taken.sum():       # prints may overlap a little, as on a table
                break
        else:
            continue
        paste(frame, mask, stamp, quad, border)
        if rng.random() < occlude_prob:
            occlude(frame, mask, quad, rng, SKIN_AND_OBJECTS)
        corners.append(quad)
    return Scene(camera(frame, rng, camera_strength), mask, corners)
