"""The data/select table of rule.md: python docs/default_model_v8/table.py docs/default_model_v7/select/enc_m2_final_s1.0 docs/default_model_v8/select/*/"""
import json, sys, os
D = ["clean", "jpeg50", "crop10%", "persp5%", "persp10%", "bright1.3", "print_photo"]
print("| checkpoint | PSNR (dB) | SSIM | " + " | ".join(D) + " | mean |")
for d in sys.argv[1:]:
    r = json.load(open(os.path.join(d, "results.json")))
    dist = r["distortions"]
    rec = [dist[k]["exact"] if isinstance(dist, dict) else None for k in D]
    print(f"| {os.path.basename(d.rstrip('/'))} | {r['quality']['psnr']:.2f} | {r['quality']['ssim']:.3f} | " + " | ".join(f"{x:.3f}" for x in rec) + f" | {sum(rec)/len(rec):.3f} |")
