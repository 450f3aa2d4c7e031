"""Train the stamp detector (models_pytorch.StampDetector) on synthetic camera scenes made on the fly.

    python train_detector.py det --num_steps 5000 --size 256 --batch_size 12 --amp bf16 --channels_last
    python train_detector.py det --num_steps 5000 ... --pretrained checkpoints/det/det_last.pth   # resume (same flags)
    python export_onnx.py checkpoints/det/det_final.pth --out_dir pretrained/onnx      # -> detector.onnx
The first takes 24 minutes on an idle 2-core AMD EPYC with AVX512-BF16 (--amp bf16 is slower on CPUs without it).

    python train_detector.py zoom --zoom 1.8 --size 320 --input_side 320 --width 24 --batch_size 32   # a zoom detector
--zoom E trains a zoom detector instead (detect_decode.py --zoom_detector): its input is one candidate quad's view
(detect_decode.zoom_view, the quad filling the central 1/E of the square), cut from a scene of --frame_side pixels
around a stamp's true corners moved the way the frame detector's quads are off (perturb_quad, --spread); its target
is that stamp's own pixels. README: Finding stamps, and docs/detector/zoom/.

The original released a trained BiSeNet detector but never its training code. Here every training frame is a scene
(scenes.py): 0-3 photos warped with a hand-held camera's perspective, scale (5-90% of the frame), roll, tilt and
aspect into a background photo, with or without white paper around them, sometimes partly covered, then uneven
light, white balance, blur, noise and JPEG. Every stamp is a fresh random crop of a training photo; half of them
carry a residual of --model (made once for --pool photos and messages, added at strength 0.5-1.5), half are plain:
the original's author found the detector does equally well on both, and a detector that needs the residual would
fail on strongly compressed copies. (A first version drew stamps from a fixed pool of 160 images: it reached IoU
0.94 on them and found only half of the stamps made from new photos: it had learned the pool.) The target is each photo's own pixels (not its
paper). Loss: binary cross-entropy + soft Dice. Photos and backgrounds come from --train_path only (use the train
split of prepare_photos.py; the validation photos are for evaluate_detector.py). Logs (TensorBoard, metrics.jsonl,
log.txt) in logs/<exp_name>, checkpoints in checkpoints/<exp_name>; --pretrained resumes exactly.
"""
import argparse
import os
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dataset import SeededSampler
from image_io import ImageLoadError, list_images, load_image
from models_pytorch import (CheckpointError, DetectorConfig, StampDetector, count_parameters, load_state,
                            read_checkpoint, save_detector)
from detect_decode import order_corners, zoom_view
from scenes import make_scene, place, polygon_area, tilted_quad
from train_pytorch import Logger, check_new_run, format_eta, link_or_save, rng_state, set_rng_state

STAMP_COUNTS = (0, 1, 1, 1, 1, 1, 2, 2, 3)   # a frame holds 0-3 stamps; one stamp most often; 1 in 9 none


def load_photos(root, short_side):
    """Every photo under root, decoded once at `short_side` (uint8 arrays, shared with the workers)."""
    photos = []
    for path in list_images(root):
        try:
            img = load_image(path, draft=(short_side, short_side))
        except ImageLoadError as e:
            print(f"warning: skipping {e}", file=sys.stderr)
            continue
        s = short_side / min(img.size)
        if s < 1:
            img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BICUBIC)
        photos.append(np.asarray(img))
    if len(photos) < 2:
        raise SystemExit(f"error: {root}: need at least 2 readable photos, found {len(photos)}")
    return photos


def crop(photo, rng, aspect=None, min_scale=0.3):
    """A random crop (side U(min_scale, 1) of the largest with this aspect), flipped half of the time."""
    H, W = photo.shape[:2]
    aspect = aspect or W / H
    cw = min(W, H * aspect) * rng.uniform(min_scale, 1)
    ch = min(cw / aspect, H)
    cw, ch = max(int(cw), 8), max(int(ch), 8)
    x, y = rng.integers(0, W - cw + 1), rng.integers(0, H - ch + 1)
    out = photo[y:y + ch, x:x + cw]
    return out[:, ::-1] if rng.random() < 0.5 else out


ASPECTS = (3 / 4, 2 / 3, 1.0, 4 / 3, 3 / 2)


def residual_pool(photos, n, model, rng, side=256):
    """n StegaStamp residuals (float16, side x side): `model`'s residual for crops of the photos and random 7-letter
    messages at strength 1. Added to fresh photo crops during training, they give encoded-looking stamps of
    endless variety without running the encoder in the workers."""
    pool = []
    for _ in range(n if model is not None else 0):
        img = Image.fromarray(np.ascontiguousarray(crop(photos[rng.integers(len(photos))], rng, 1.0, 0.5)))
        img = img.resize((side, side), Image.BICUBIC)
        message = "".join(chr(c) for c in rng.integers(97, 123, 7))
        encoded = model.encode(img, message, strength=1.0)[0]
        pool.append((np.asarray(encoded, np.float32) - np.asarray(img, np.float32)).astype(np.float16))
    return pool


def make_stamp(photos, residuals, rng, sides=(160, 400), photo=None):
    """A photo to be printed: a random crop (aspect 2:3 .. 3:2, 30-100% of the photo) of a random training photo
    (or of `photo`) at a random size; half of them (when there are residuals) carry a StegaStamp residual at strength
    0.5-1.5. Fresh each time: a detector that memorised a fixed set of stamps would not find new ones."""
    import cv2
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    img = crop(photos[rng.integers(len(photos))] if photo is None else photo, rng, aspect, 0.3)
    side = int(rng.integers(*sides))                                        # the long side
    size = (side, round(side / aspect)) if aspect >= 1 else (round(side * aspect), side)
    img = cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_AREA)
    if residuals and rng.random() < 0.5:
        r = cv2.resize(residuals[rng.integers(len(residuals))].astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        img = np.clip(img + rng.uniform(0.5, 1.5) * r, 0, 255).astype(np.uint8)
    return img


class SceneDataset(Dataset):
    """Item (index, seed) -> (frame (3, S, S) uint8, mask (1, S, S) uint8 in {0,1}): background photo `index`,
    fresh stamps (make_stamp), everything else from the seed (a resumed run sees the same frames). uint8 keeps the
    workers cheap; the training loop scales the batch to [0,1]."""

    def __init__(self, photos, residuals, size, same_photo=0.0):
        self.photos, self.residuals, self.size, self.same_photo = photos, residuals, size, same_photo

    def __len__(self):
        return len(self.photos)

    def background(self, idx, rng):
        """-> (flat, the frame's background): photo `idx` cropped, or 15% of the time a table or a wall (a flat
        colour with a gradient)."""
        if rng.random() < 0.15:
            bg = np.full((64, 64, 3), rng.integers(30, 230, 3), np.uint8)
            return True, np.clip(bg * np.linspace(0.7, 1.2, 64)[None, :, None], 0, 255).astype(np.uint8)
        return False, np.ascontiguousarray(crop(self.photos[idx], rng, 1.0))

    def __getitem__(self, key):
        idx, seed = key
        rng = np.random.default_rng(seed)
        flat, bg = self.background(idx, rng)
        # --same_photo: a stamp cut from the background's own photo, so that only its outline tells them apart (no
        # draw at all when 0, so that earlier runs' scenes stay as they were)
        same = lambda: self.same_photo > 0 and not flat and rng.random() < self.same_photo
        stamps = [make_stamp(self.photos, self.residuals, rng, photo=self.photos[idx] if same() else None)
                  for _ in range(rng.choice(STAMP_COUNTS))]
        scene = make_scene(rng, bg, stamps, (self.size, self.size), area=(0.05, 0.9), max_tilt=55,
                           camera_strength=rng.uniform(0.3, 1.3))
        return torch.from_numpy(np.ascontiguousarray(scene.frame.transpose(2, 0, 1))), torch.from_numpy(scene.mask)[None]


def perturb_quad(quad, rng, spread=1.0):
    """A stamp's true corners -> a quad off the way the frame detector's are (detect_decode's misses): a little
    jitter everywhere; often one side moved in or out by up to 40% of the stamp's size (a band of the stamp missed,
    or a neighbour taken in), one corner pulled far out or in, or the whole quad scaled and shifted. Convex, in
    order_corners order (the zoom view's orientation). `spread` scales how far off (1: zoom1's, README)."""
    import cv2
    size = np.sqrt(polygon_area(quad))
    for _ in range(20):
        q = quad + rng.normal(0, 0.02, (4, 2)) * size
        if rng.random() < 0.4:                                             # a side moved along its normal
            i = rng.integers(4)
            a, b = q[i], q[(i + 1) % 4]
            n = np.array([b[1] - a[1], a[0] - b[0]]) / (np.hypot(*(b - a)) + 1e-6)
            n *= np.sign(np.dot(n, q.mean(0) - (a + b) / 2))                # inward
            q[[i, (i + 1) % 4]] += rng.uniform(-0.3, 0.4) * spread * size * n
        if rng.random() < 0.25:                                            # one corner far off
            q[rng.integers(4)] += rng.uniform(-0.35, 0.35, 2) * spread * size
        if rng.random() < 0.3:                                             # scaled and shifted
            c = q.mean(0)
            q = c + (q - c) * rng.uniform(0.8, 1.25) ** spread + rng.uniform(-0.12, 0.12, 2) * spread * size
        if cv2.isContourConvex(q.astype(np.float32)[:, None]) and polygon_area(q) > 0.25 * size ** 2:
            return order_corners(q)
    return order_corners(quad)


class ZoomDataset(SceneDataset):
    """Item (index, seed) -> (view (3, S, S) uint8, mask (1, S, S) uint8): a scene as SceneDataset's, but of
    frame_side pixels on its long side, seen the way detect_decode.zoom_view sees a candidate quad: one of its stamps'
    corners perturbed (perturb_quad) and that quad's view at expand `zoom`; the target is that stamp's own visible
    pixels (not a neighbour's). Scenes without a stamp give views of random quads and empty targets."""

    def __init__(self, photos, residuals, size, zoom, frame_side=960, same_photo=0.0, spread=1.0):
        super().__init__(photos, residuals, size, same_photo)
        self.zoom, self.frame_side, self.spread = zoom, frame_side, spread

    def __getitem__(self, key):
        import cv2
        idx, seed = key
        rng = np.random.default_rng(seed)
        _, bg = self.background(idx, rng)
        same = self.same_photo > 0 and rng.random() < self.same_photo
        stamps = [make_stamp(self.photos, self.residuals, rng, sides=(300, 700),
                             photo=self.photos[idx] if same else None) for _ in range(rng.choice(ZOOM_COUNTS))]
        W = self.frame_side
        size = (W, int(W * (9 / 16 if rng.random() < 0.6 else 3 / 4)))
        scene = make_scene(rng, bg, stamps, size, area=(0.05, 0.8), max_tilt=55,
                           camera_strength=rng.uniform(0.3, 1.3))
        if scene.corners:
            true = scene.corners[rng.integers(len(scene.corners))]
            quad = perturb_quad(true.astype(np.float64), rng, self.spread)
            own = np.zeros_like(scene.mask)
            cv2.fillConvexPoly(own, np.round(true * 16).astype(np.int32), 1, shift=4)
            target = scene.mask & own
        else:
            area = rng.uniform(0.05, 0.5) * size[0] * size[1]
            quad = place(tilted_quad(rng.uniform(0.6, 1.6), rng.uniform(0, 50), rng.uniform(0, 360),
                                     rng.uniform(-180, 180)), area / (size[0] * size[1]), size, rng)
            quad = order_corners(quad if quad is not None else np.array([[0, 0], [W, 0], [W, size[1]], [0, size[1]]]))
            target = np.zeros_like(scene.mask)
        view, M = zoom_view(scene.frame, quad, self.size, self.zoom)
        mask = cv2.warpPerspective(target * 255, M, (self.size, self.size), flags=cv2.INTER_LINEAR) > 127
        return (torch.from_numpy(np.ascontiguousarray(view.transpose(2, 0, 1))),
                torch.from_numpy(mask.astype(np.uint8))[None])


ZOOM_COUNTS = (0, 1, 1, 1, 1, 1, 1, 2, 2)      # a zoom view's scene: mostly one stamp, sometimes a neighbour or none


def losses(logits, mask):
    """BCE + soft Dice (per image, averaged; an empty frame's Dice term is 0 when nothing is predicted)."""
    bce = F.binary_cross_entropy_with_logits(logits, mask)
    p = torch.sigmoid(logits)
    inter, total = (p * mask).sum((1, 2, 3)), (p + mask).sum((1, 2, 3))
    dice = (1 - (2 * inter + 1) / (total + 1)).mean()
    pred = logits > 0
    iou = ((pred & (mask > 0)).sum() / (pred | (mask > 0)).sum().clamp_min(1)).item()
    return bce + dice, {"loss/bce": bce.item(), "loss/dice": dice.item(), "metric/iou": iou}


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("exp_name", help="run name: logs/<exp_name>, checkpoints/<exp_name>")
    p.add_argument("--train_path", default="data/photos/train",
                   help="folder of photos for stamps and backgrounds (never the validation split)")
    p.add_argument("--model", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained",
                                                   "stegastamp_128.pth"),
                   help="encoder that makes the encoded stamps (.pth or ONNX folder); 'none': plain photos only")
    p.add_argument("--pool", type=int, default=64,
                   help="StegaStamp residuals made before training, added to half of the stamps")
    p.add_argument("--size", type=int, default=256, help="side of the square training frames (multiple of 16)")
    p.add_argument("--width", type=int, default=16, help="detector width (channels of the first stage)")
    p.add_argument("--input_side", type=int, default=384, help="long side frames are resized to when detecting")
    p.add_argument("--zoom", type=float, default=0.0, metavar="E",
                   help="train a zoom detector instead (detect_decode.zoom_read): its input is a candidate quad's "
                        "view, the quad filling the central 1/E of an --input_side square (--size must equal it); "
                        "0: a frame detector")
    p.add_argument("--spread", type=float, default=1.0, help="--zoom: how far off the views' quads are (perturb_quad)")
    p.add_argument("--frame_side", type=int, default=960, help="--zoom: long side of the scenes the views are cut from")
    p.add_argument("--same_photo", type=float, default=0.0, metavar="P",
                   help="probability that a stamp is cut from the background's own photo (only its outline then tells "
                        "them apart)")
    p.add_argument("--num_steps", type=int, default=6000, help="training steps in all (a resumed run goes on)")
    p.add_argument("--batch_size", type=int, default=16, help="frames per step")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine decay to 5%% over the run)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes making scenes")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes, the stamp pool and the initialisation")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--amp", choices=("none", "bf16"), default="none",
                   help="bf16 autocast (for CPUs with native bf16 and GPUs; on CPUs without it, slower)")
    p.add_argument("--channels_last", action="store_true", help="NHWC memory layout (faster convolutions on CPU)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument("--pretrained", default=None, help="checkpoint to resume from (weights, optimizer, step)")
    p.add_argument("--init_from", default=None, help="start a new run from a detector checkpoint's weights")
    p.add_argument("--time_limit", type=float, default=None, metavar="MINUTES",
                   help="stop cleanly (final checkpoint) after this many minutes; resume with --pretrained")
    p.add_argument("--logs_dir", default="logs", help="logs go to LOGS_DIR/<exp_name>")
    p.add_argument("--checkpoints_dir", default="checkpoints", help="checkpoints go to CHECKPOINTS_DIR/<exp_name>")
    p.add_argument("--log_interval", type=int, default=50, help="steps between console/TensorBoard lines")
    p.add_argument("--img_interval", type=int, default=500, help="steps between TensorBoard frame/mask images")
    p.add_argument("--last_every", type=int, default=250, help="steps between rewrites of <exp>_last.pth")
    p.add_argument("--ckpt_every", type=int, default=2000, help="steps between kept <exp>_<step>.pth")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="write TensorBoard events (--no-tensorboard: only log.txt and metrics.jsonl)")
    p.add_argument("--no_progress", action="store_true", help="plain log lines instead of a progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of this name")
    return p


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = DetectorConfig(args.width, args.input_side, args.zoom)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if args.zoom and args.size != args.input_side:
        raise SystemExit(f"error: --zoom: a zoom detector trains on its own input size: give --size {args.input_side} "
                         f"(or --input_side {args.size})")
    if args.size % 16:
        raise SystemExit(f"error: --size {args.size}: must be a multiple of 16")
    if args.pretrained and args.init_from:
        raise SystemExit("error: --pretrained resumes a run, --init_from starts a new one from weights: give one")
    if not os.path.isdir(args.train_path):
        raise SystemExit(f"error: {args.train_path}: no such folder (build the photo corpus with "
                         f"`python prepare_photos.py data/photos`, or give --train_path)")
    if not args.pretrained:
        check_new_run(args)
    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    detector = StampDetector(cfg).to(device)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    detector = detector.to(memory_format=layout)
    opt = torch.optim.Adam(detector.parameters(), lr=args.lr)
    start = 0
    for path, resume in ((args.pretrained, True), (args.init_from, False)):
        if path:
            try:
                ckpt = read_checkpoint(path, kind="detector")
                load_state(detector, ckpt["detector"], "detector", path)
            except CheckpointError as e:
                raise SystemExit(f"error: {e}")
            other = DetectorConfig(**ckpt["detector_config"])
            if other != cfg and (resume or other.width != cfg.width):   # new runs may change input size and zoom
                raise SystemExit(f"error: {path} holds a detector with {ckpt['detector_config']}, these flags give "
                                 f"{asdict(cfg)}")
            if resume:
                opt.load_state_dict(ckpt["opt"])
                start = ckpt["step"]
                set_rng_state(ckpt["rng"])
    log = Logger(args, True)
    log.print(f"exp {args.exp_name} | detector {count_parameters(detector) / 1e6:.2f} M parameters, {asdict(cfg)} | "
              f"frames {args.size}x{args.size} | steps {start}->{args.num_steps}")

    rng = np.random.default_rng(args.seed)
    photos = load_photos(args.train_path, args.frame_side if args.zoom else 2 * args.size)
    model = None
    if args.model != "none":
        from inference import ModelLoadError, load_model
        try:
            model = load_model(args.model)
        except ModelLoadError as e:
            raise SystemExit(f"error: {e}")
    t = time.time()
    residuals = residual_pool(photos, args.pool, model, rng)
    log.print(f"{len(photos)} photos from {args.train_path}; {len(residuals)} residuals made in {time.time() - t:.0f} s")
    ds = (ZoomDataset(photos, residuals, args.size, args.zoom, args.frame_side, args.same_photo, args.spread) if args.zoom
          else SceneDataset(photos, residuals, args.size, args.same_photo))
    loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers,
                        sampler=SeededSampler(len(ds), args.seed, 0, start=start * args.batch_size),
                        persistent_workers=args.workers > 0, drop_last=True, generator=torch.Generator())
    ckpt_dir = os.path.join(args.checkpoints_dir, args.exp_name)
    os.makedirs(ckpt_dir, exist_ok=True)
    last = os.path.join(ckpt_dir, f"{args.exp_name}_last.pth")
    save = lambda path, step: save_detector(path, cfg, detector, opt, step, vars(args), rng=rng_state())

    detector.train()
    t0, step, t_log = time.time(), start, time.time()
    for frames, masks in loader:
        if step >= args.num_steps:
            break
        for g in opt.param_groups:                                  # cosine decay to 5%, a function of the step
            g["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1 + float(np.cos(np.pi * step / max(args.num_steps, 1)))))
        frames = (frames.to(device).float() / 255).contiguous(memory_format=layout)
        masks = masks.to(device).float()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            logits = detector(frames)
        loss, values = losses(logits.float(), masks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        log.update_bar(1)
        if step % args.log_interval == 0 or step == args.num_steps:
            speed = args.log_interval / max(time.time() - t_log, 1e-9)
            t_log = time.time()
            log.scalars(step, {**values, "lr": opt.param_groups[0]["lr"]})
            log.print(f"step {step:06d} | loss {loss.item():.4f} | iou {values['metric/iou']:.3f} | "
                      f"{speed:.2f} it/s | eta {format_eta((args.num_steps - step) / speed)}")
        if log.tb and step % args.img_interval == 0:
            n = min(4, frames.shape[0])
            log.tb.add_image("frames", torch.cat(list(frames[:n].cpu()), 2), step)
            log.tb.add_image("masks/target_vs_predicted", torch.cat(
                [torch.cat(list(masks[:n].cpu()), 2), torch.cat(list(torch.sigmoid(logits[:n].detach().float().cpu())), 2)], 1), step)
        if step % args.ckpt_every == 0:
            save(os.path.join(ckpt_dir, f"{args.exp_name}_{step:07d}.pth"), step)
        if step % args.last_every == 0:
            save(last, step)
        if args.time_limit is not None and time.time() - t0 > 60 * args.time_limit:
            log.print(f"step {step:06d} | --time_limit {args.time_limit} min reached: stopping here")
            break
    final = os.path.join(ckpt_dir, f"{args.exp_name}_final.pth")
    save(final, step)
    link_or_save(final, last, lambda p: save(p, step))
    log.print(f"done: {step} steps in {format_eta(time.time() - t0)}; final checkpoint {final}")
    log.close()
    return step


if __name__ == "__main__":
    main(get_parser().parse_args())
