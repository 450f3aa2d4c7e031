"""Evaluate a model on photos: image quality of the encoded photos and message recovery under distortions.

    python evaluate_pytorch.py pretrained/stegastamp_128.pth --images_dir my_photos/ --messages 5
    python evaluate_pytorch.py pretrained/stegastamp_128.pth --builtin heldout --out_dir eval/ --plots
    python evaluate_pytorch.py pretrained/onnx --onnx --builtin heldout            # the same through ONNX Runtime

For each photo, seeded random 7-character secrets are hidden at full resolution; the encoded photo is distorted
(real Pillow JPEG, blur, noise, colour, resize, crop, perspective, a print-and-photograph simulation) and decoded.
Reported: PSNR / SSIM / LPIPS of encoded vs cover (full resolution); per distortion raw bit accuracy, exact message
recovery after BCH, and false positives (a message claimed on the unmarked photo under that distortion).
--out_dir writes results.md and results.json; --plots adds recovery vs JPEG quality, recovery vs perspective
strength and PSNR/recovery vs --strength (plot_*.png), sweeps that take a few times longer than the table.
"""
import argparse
import io
import json
import os
import sys

import numpy as np
from PIL import Image

from cli_common import non_negative_int, strength_arg
from image_io import ImageLoadError, check_size, list_images, load_image
from distortions import DISTORTIONS, jpeg, perspective

JPEG_SWEEP = (95, 90, 80, 70, 60, 50, 40, 30, 20, 10)
PERSPECTIVE_SWEEP = (0.0, 0.025, 0.05, 0.075, 0.10, 0.125, 0.15)
STRENGTH_SWEEP = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)

#################################################################################
#                                   Metrics                                     #
#################################################################################


def psnr(a, b, peak=255.0):
    """PSNR in dB of two images (PIL images or arrays of the same shape) with values in [0, peak]."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(peak ** 2 / max(mse, 1e-10 * peak ** 2)))


def ssim(a, b):
    from skimage.metrics import structural_similarity
    return structural_similarity(np.asarray(a), np.asarray(b), channel_axis=2, data_range=255)


def make_lpips():
    """img, img -> LPIPS (AlexNet) at full resolution, or None with a reason when no real weights are available."""
    try:
        import torch
        from utils_pytorch import build_lpips
        net = build_lpips("auto")
    except Exception as e:   # no torch, or no AlexNet weights offline: report, do not fail the evaluation
        print(f"LPIPS not measured: {str(e).splitlines()[0][:150]}", file=sys.stderr)
        return None

    def f(a, b):
        t = [torch.from_numpy(np.asarray(x, np.float32) / 255).permute(2, 0, 1)[None] for x in (a, b)]
        with torch.no_grad():
            return float(net(t[0], t[1], normalize=True).mean())
    return f


def evaluate(model, photos, distortions, messages=3, strength=1.0, seed=0, quality=True, lpips_fn=None, tta=True,
             optimize=0):
    """Encode `messages` seeded secrets into each (name, PIL) photo (optimize: the encoders' --optimize steps),
    distort, decode.

    distortions: {name: f(img, rng)}. Returns a dict: per-distortion bit_acc / exact / false_pos, the mean
    image-quality metrics over all encoded photos (quality=False skips SSIM and LPIPS; PSNR is always measured), and
    per photo its mean PSNR and exact recovery over all distortions. Bit accuracy is that of the whole image; a
    message counts as read (and an unmarked photo as a false positive) as the decode scripts read it: with tta, an
    image that gives no message whole is also read through inference.DECODE_VIEWS."""
    # Secrets and distortions draw from separate streams: the same secrets whatever the distortion list, so the
    # sweeps and the table agree where they overlap (clean).
    rng_secret, rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    stats = {d: {"bits": [], "exact": 0, "n": 0, "false_pos": 0} for d in distortions}
    q = {"psnr": [], "ssim": [], "lpips": []}
    per_photo, strengths = {}, []
    for name, img in photos:
        mine = per_photo.setdefault(str(name), {"psnr": [], "exact": []})
        unmarked = model.decode_batch([f(img, rng) for f in distortions.values()], tta)
        for d, r in zip(distortions, unmarked):
            stats[d]["false_pos"] += r.ok
        for _ in range(messages):
            secret = "".join(rng_secret.choice(alphabet, 7))
            result = model.encode(img, secret, strength=strength, optimize=optimize)
            encoded = result[0]
            strengths.append(getattr(result, "strength", strength))
            q["psnr"].append(psnr(encoded, img))
            mine["psnr"].append(q["psnr"][-1])
            if quality:
                q["ssim"].append(ssim(encoded, img))
                if lpips_fn is not None:
                    q["lpips"].append(lpips_fn(encoded, img))
            truth = model.codec.encode(secret)
            copies = [f(encoded, rng) for f in distortions.values()]
            logits = model.decode_logits(copies)                               # one batched call
            results = model.read_logits(logits)
            results = model.retry_views(copies, results) if tta else results
            for d, row, r in zip(distortions, logits, results):
                stats[d]["bits"].append(float(np.mean((row > 0) == truth)))
                ok = r.message == secret
                stats[d]["exact"] += ok
                stats[d]["n"] += 1
                mine["exact"].append(ok)
    return {
        "photos": len(photos), "messages": messages, "strength": strength, "tta": tta, "optimize": optimize,
        "strength_mean": float(np.mean(strengths)), "strength_max": float(np.max(strengths)),
        "quality": {k: (float(np.mean(v)) if v else None) for k, v in q.items()},
        "psnr_min": float(np.min(q["psnr"])),
        "distortions": {d: {"bit_acc": float(np.mean(s["bits"])), "exact": s["exact"] / s["n"],
                            "false_pos": s["false_pos"], "unmarked": len(photos)} for d, s in stats.items()},
        # which photos are hard: mean PSNR and exact recovery over all messages and distortions, per photo
        "per_photo": {n: {"psnr": float(np.mean(v["psnr"])), "exact": float(np.mean(v["exact"]))}
                      for n, v in per_photo.items()},
    }


def markdown(res, title):
    q = res["quality"]
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
    fp = sum(s["false_pos"] for s in res["distortions"].values())
    n_unmarked = sum(s["unmarked"] for s in res["distortions"].values())
    auto = (f" (chosen per image: mean {res['strength_mean']:.2f}, max {res['strength_max']:.2f})"
            if res["strength"] == "auto" else "")
    setting = f", centre crops {res['crop']}x{res['crop']}" if res.get("crop") else ""
    setting += ", whole images only (--no_tta)" if res.get("tta") is False else ""
    setting += f", --optimize {res['optimize']}" if res.get("optimize") else ""
    lines = [f"{title}: {res['photos']} photos x {res['messages']} messages, strength {res['strength']}{auto}{setting}",
             "", f"PSNR {q['psnr']:.2f} dB (min {res['psnr_min']:.2f}) | SSIM {fmt(q['ssim'], '.4f')} | "
                 f"LPIPS {fmt(q['lpips'], '.4f')} | false positives {fp}/{n_unmarked}", "",
             "| distortion | bit accuracy | exact recovery | false positives |", "|---|---|---|---|"]
    for d, s in res["distortions"].items():
        lines.append(f"| {d} | {s['bit_acc']:.4f} | {s['exact']:.3f} | {s['false_pos']}/{s['unmarked']} |")
    hardest = sorted(res["per_photo"].items(), key=lambda kv: kv[1]["exact"])[:3]
    lines += ["", "Hardest photos (exact recovery over all distortions, PSNR): " + ", ".join(
        f"{os.path.basename(n)} ({v['exact']:.2f}, {v['psnr']:.1f} dB)" for n, v in hardest)]
    return "\n".join(lines) + "\n"


#################################################################################
#                              Sweeps and plots                                 #
#################################################################################

def sweeps(model, photos, args):
    """Recovery vs JPEG quality, vs perspective strength, and PSNR/recovery vs --strength (same seeds as the table)."""
    run = lambda dist, strength=args.strength: evaluate(model, photos, dist, args.messages, strength, args.seed,
                                                        quality=False, tta=not args.no_tta,
                                                        optimize=args.optimize)
    out = {"jpeg": run({q: jpeg(q) for q in JPEG_SWEEP}),
           "perspective": run({f: perspective(f) for f in PERSPECTIVE_SWEEP}),
           "strength": {s: run({"clean": DISTORTIONS["clean"], "jpeg50": jpeg(50)}, s) for s in STRENGTH_SWEEP}}
    return out


def plot_sweeps(sw, out_dir, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []

    def save(fig, name):
        path = os.path.join(out_dir, name)
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, path)
        paths.append(path)

    for key, xlabel, xs, name in (("jpeg", "JPEG quality (Pillow)", JPEG_SWEEP, "plot_jpeg.png"),
                                  ("perspective", "perspective: max corner jitter (% of size)",
                                   [100 * f for f in PERSPECTIVE_SWEEP], "plot_perspective.png")):
        d = sw[key]["distortions"]
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot(xs, [s["exact"] for s in d.values()], "o-", label="exact recovery")
        ax.plot(xs, [s["bit_acc"] for s in d.values()], "s--", label="bit accuracy")
        ax.set(xlabel=xlabel, ylabel="fraction", ylim=(0, 1.02), title=title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
        save(fig, name)
    st = sw["strength"]
    xs = list(st)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(xs, [st[s]["quality"]["psnr"] for s in xs], "o-", color="C3")
    ax.set(xlabel="--strength (residual scale)", ylabel="PSNR (dB)", title=title)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    for d, style in (("clean", "s--"), ("jpeg50", "^:")):
        ax2.plot(xs, [st[s]["distortions"][d]["exact"] for s in xs], style, label=f"exact recovery, {d}")
    ax2.set(ylabel="exact recovery", ylim=(0, 1.02))
    ax2.legend(loc="lower right")
    save(fig, "plot_strength.png")
    return paths


#################################################################################
#                                     Main                                      #
#################################################################################

def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="checkpoint (.pth), or an export_onnx.py folder with --onnx")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--images_dir", help="folder of photos to evaluate on (keep them out of training)")
    g.add_argument("--builtin", choices=("heldout", "train", "all"), help="the built-in photos of dataset.py")
    p.add_argument("--onnx", action="store_true",
                   help="kept for old commands: an ONNX export folder is recognised without it")
    p.add_argument("--messages", type=int, default=3, help="random secrets per photo")
    p.add_argument("--strength", type=strength_arg, default=1.0, help="a number, or 'auto' (per image, as the "
                   "encode scripts' --strength auto)")
    p.add_argument("--optimize", type=non_negative_int, default=0, metavar="STEPS",
                   help="refine each residual for STEPS steps against the decoder (as the encode scripts' "
                        "--optimize; PyTorch checkpoints only)")
    p.add_argument("--crop", type=int, default=None, metavar="N",
                   help="evaluate on N x N centre crops of the photos (e.g. 400, the original's size) instead of "
                        "the full photos (photos smaller than N are used whole)")
    p.add_argument("--distortions", nargs="+", default=list(DISTORTIONS), choices=list(DISTORTIONS),
                    help="distortions to apply (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the secrets and the random distortions")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--bf16", action="store_true", help="PyTorch model with bfloat16 weights (as the scripts' --bf16)")
    p.add_argument("--no_lpips", action="store_true", help="skip LPIPS (the slowest quality metric)")
    p.add_argument("--no_tta", action="store_true",
                   help="read each copy whole only, as the original (default: as the decode scripts, also through "
                        "the decoding views when the whole copy gives no message)")
    p.add_argument("--out_dir", default=None, help="write results.md, results.json (and plots) here")
    p.add_argument("--plots", action="store_true", help="also run the sweeps and write plot_*.png (needs --out_dir)")
    return p


def centre_crop(img, n):
    W, H = img.size
    w, h = min(n, W), min(n, H)
    x0, y0 = (W - w) // 2, (H - h) // 2
    return img.crop((x0, y0, x0 + w, y0 + h))


def load_photos(args):
    """-> ([(name, PIL)], [error lines]): an unreadable file is reported and left out, the others are evaluated."""
    if args.builtin:
        from dataset import BUILTIN_SPLITS, load_builtin_photo
        return [(n, load_builtin_photo(n)) for n in BUILTIN_SPLITS[args.builtin]], []
    photos, errors = [], []
    for p in list_images(args.images_dir):
        try:
            photos.append((p, check_size(load_image(p), p)))
        except ImageLoadError as e:
            errors.append(str(e))
    return photos, errors


def main(args) -> int:
    if args.plots and not args.out_dir:
        print("error: --plots needs --out_dir", file=sys.stderr)
        return 2
    from inference import ModelLoadError, load_model
    try:
        model = load_model(args.model, args.device, args.bf16)   # a .pth, or an ONNX folder (--onnx optional)
        model.check_optimize(args.optimize)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    photos, errors = load_photos(args)
    if args.crop:
        photos = [(n, centre_crop(img, args.crop)) for n, img in photos]
    for e in errors:
        print(f"error: {e} (skipped)", file=sys.stderr)
    if not photos:
        print(f"error: {args.images_dir}: no readable images", file=sys.stderr)
        return 2
    lpips_fn = None if args.no_lpips else make_lpips()
    res = evaluate(model, photos, {d: DISTORTIONS[d] for d in args.distortions}, args.messages, args.strength,
                   args.seed, lpips_fn=lpips_fn, tta=not args.no_tta, optimize=args.optimize)
    res["crop"] = args.crop
    title = f"{os.path.basename(os.path.normpath(args.model))} on {args.builtin or args.images_dir}"
    table = markdown(res, title)
    print(table)
    if args.out_dir:
        from image_io import atomic_write_text
        os.makedirs(args.out_dir, exist_ok=True)
        res["model"], res["photos_source"], res["onnx"] = args.model, args.builtin or args.images_dir, args.onnx
        if args.plots:
            sw = sweeps(model, photos, args)
            res["sweeps"] = sw
            for path in plot_sweeps(sw, args.out_dir, title):
                print(f"wrote {path}")
        atomic_write_text(os.path.join(args.out_dir, "results.md"), table)
        atomic_write_text(os.path.join(args.out_dir, "results.json"), json.dumps(res, indent=1, default=str))
        print(f"wrote {os.path.join(args.out_dir, 'results.md')} and results.json")
    return 1 if errors else 0   # as the other batch scripts: results for the readable photos, exit 1 if some failed


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
