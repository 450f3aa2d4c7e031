"""The validation table of README_PYTORCH.md's *Default model*: one column per evaluate_pytorch.py output folder.
python docs/default_model_v7/val_table.py docs/default_model_v7/eval_val docs/default_model_v7/eval_val_auto ..."""
import json, os, sys

NAMES = {"clean": "clean", "jpeg90": "JPEG 90", "jpeg75": "JPEG 75", "jpeg50": "JPEG 50", "jpeg30": "JPEG 30",
         "blur1": "blur σ1", "blur2": "blur σ2", "noise0.02": "noise 0.02", "noise0.05": "noise 0.05",
         "bright0.7": "bright ×0.7", "bright1.3": "bright ×1.3", "contrast0.6": "contrast ×0.6",
         "grayscale": "greyscale", "resize0.5": "resize 50%", "crop10%": "crop 10%", "persp5%": "persp 5%",
         "persp10%": "persp 10%", "print_photo": "print_photo"}
runs = [json.load(open(os.path.join(d, "results.json"))) for d in sys.argv[1:]]
print("| distortion | " + " | ".join(os.path.basename(d.rstrip("/")) for d in sys.argv[1:]) + " |")
print("|---" * (len(runs) + 1) + "|")
for key, name in NAMES.items():
    print(f"| {name} | " + " | ".join(f"{r['distortions'][key]['exact']:.3f}" for r in runs) + " |")
print("| **PSNR** (min) | " + " | ".join(f"{r['quality']['psnr']:.2f} dB ({r['psnr_min']:.1f})" for r in runs) + " |")
print("| SSIM / LPIPS | " + " | ".join(f"{r['quality']['ssim']:.3f} / {r['quality']['lpips']:.3f}" for r in runs) + " |")
print("| strength (mean, max) | " + " | ".join(f"{r['strength_mean']:.2f}, {r['strength_max']:.2f}" for r in runs) + " |")
fp = lambda r: (sum(v["false_pos"] for v in r["distortions"].values()), sum(v["unmarked"] for v in r["distortions"].values()))
print("| false positives | " + " | ".join("%d / %d" % fp(r) for r in runs) + " |")
