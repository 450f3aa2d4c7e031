"""The PSNR-vs-recovery plot of README_PYTORCH.md's *Default model*: every variant measured on data/select (26
training photos x 2 messages, read whole; mean exact recovery over clean, JPEG 50, crop 10%, perspective 5% and 10%,
brightness x1.3 and print), and the strength curves (one model at several --strength) where they were measured.

    python docs/default_model_v8/curve_plot.py docs/default_model_v8/curve.png
"""
import glob
import json
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

D = ["clean", "jpeg50", "crop10%", "persp5%", "persp10%", "bright1.3", "print_photo"]
HERE = os.path.dirname(os.path.abspath(__file__))
SELECT = [os.path.join(HERE, "..", "default_model_v7", "select"), os.path.join(HERE, "select"),
          os.path.join(HERE, "..", "default_model_v12", "select"),
          os.path.join(HERE, "..", "default_model_v13", "select"),
          os.path.join(HERE, "..", "default_model_v15", "select")]
LABELS = {"shipped": "v6", "enc_m2_final_s1.0": "v7", "enc_m1_1000_s1.0": "v6 enc. fine-tune, weight 1",
          "enc_m1_2000_s1.0": "weight 1, 2k steps", "v8_w35_1634": "v8 w0.35 (H100)", "v8_w50_1595": "v8 w0.5",
          "v8_w50v4_1657": "v8 w0.5 4 copies", "v8_w75_1649": "v8 w0.75", "v9_cpu_final": "v9_cpu",
          "v10_cpu_final": "v10_cpu", "v10_cpu_9000": "v10_cpu 9k",
          "v11_cpu_17000": "v11 (default)", "v11_cpu_final": "v11_cpu",
          "v12_w75_5901": "v12 w0.75 (H100)", "v12_w100_5819": "v12 w1", "v12_w150_5842": "v12 w1.5",
          "v12_w200_5851": "v12 w2", "v12_w150_3500": "w1.5 3.5k", "v12_w200_3500": "w2 3.5k",
          "v13_joint_final_4668": "v13: decoder too (CPU)", "v13_joint_2500": "v13 2.5k",
          "v14_joint_5000": "v14 5k", "v14_joint_5500": "v14 (CPU, decoder too)",
          "v15_w100_1000": "v15 w1 1k", "v15_w100_1849": "v15 w1 (H100)", "v15_w150_1000": "v15 w1.5 1k",
          "v15_w150_1816": "v15 w1.5", "v16_keep11_5000": "v16 5k (CPU, v11 kept)", "v16_keep11_10000": "v16 10k",
          "v16_keep11_13500": "v16 13.5k", "v16_keep11_17000": "v16b 17k"}
OFFSET = {"v13_joint_final_4668": (4, -11), "v13_joint_2500": (-30, -11), "v15_w100_1000": (4, -11),
          "v14_joint_5000": (-32, 3), "v15_w150_1000": (4, -11), "v16_keep11_10000": (4, -11),
          "v16_keep11_17000": (-52, 5)}    # labels that would overlap
ALIAS = {"enc_m2_final_s1.0": "v7_s1.0", "v9_cpu_final": "v9_cpu_final_s1.0", "v10_cpu_final": "v10_cpu_final_s1.0",
         "v8_w35_1634": "v8_w35_1634_s1.0", "v8_w50_1595": "v8_w50_1595_s1.0"}


def point(folder):
    r = json.load(open(os.path.join(folder, "results.json")))
    return r["quality"]["psnr"], sum(r["distortions"][k]["exact"] for k in D) / len(D)


def main(out):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves = {}
    for root in SELECT:
        for folder in sorted(glob.glob(os.path.join(root, "*", "results.json"))):
            name = os.path.basename(os.path.dirname(folder))
            psnr, mean = point(os.path.dirname(folder))
            base, _, s = ALIAS.get(name, name).rpartition("_s")            # <run>_s<S>: a strength curve's point
            if base and s.replace(".", "").isdigit():
                curves.setdefault(base, []).append((psnr, mean, float(s)))
            if name in LABELS:
                shipped = name in ("enc_m2_final_s1.0", "v11_cpu_17000")
                ax.plot(psnr, mean, "o", color="C3" if shipped else "C2" if name[:3] in ("v13", "v14", "v15", "v16") else "C0")
                ax.annotate(LABELS[name], (psnr, mean), textcoords="offset points", xytext=OFFSET.get(name, (4, 3)),
                            fontsize=7)
    for i, (base, pts) in enumerate(sorted(curves.items())):
        pts.sort()
        if len(pts) > 1:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", color=f"C{(i + 1) % 10}", lw=1,
                    label=f"{base}: --strength {', '.join(f'{p[2]:g}' for p in sorted(pts, key=lambda p: p[2]))}")
    ax.axhline(point(os.path.join(SELECT[0], "enc_m2_final_s1.0"))[1], color="grey", lw=0.5)
    ax.set_xlabel("PSNR (dB), data/select")
    ax.set_ylabel("mean exact recovery over 7 distortions")
    ax.set_title("Every variant on one curve: PSNR against recovery (training photos held out)", fontsize=9)
    if curves:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "curve.png"))
