"""Plot and tabulate training curves from metrics.jsonl files (written by train_pytorch.py under logs/<exp>/).

    python plot_metrics.py logs/demo_s1 logs/demo_s2 logs/demo_s3 --out docs/convergence.png
    python plot_metrics.py logs/demo_s1 --keys metric/bit_acc metric/psnr --every 500
Prints a markdown table (value of each key at every --every steps, per run) and saves one panel per key.
"""
import argparse
import json
import os


def read_metrics(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl") if os.path.isdir(run_dir) else run_dir
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    by_step = {}
    for r in rows:   # a resumed or evaluated run may log a step again: merge, later values win
        by_step.setdefault(r["step"], {}).update(r)
    return [by_step[s] for s in sorted(by_step)]


def smooth(values, window):
    out, acc = [], []
    for v in values:
        acc = (acc + [v])[-window:]
        out.append(sum(acc) / len(acc))
    return out


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", help="logs/<exp> folders (or metrics.jsonl files)")
    p.add_argument("--keys", nargs="+", default=["metric/bit_acc", "metric/psnr", "loss/secret"],
                    help="metrics.jsonl keys to plot")
    p.add_argument("--every", type=int, default=500, help="table rows every N steps")
    p.add_argument("--smooth", type=int, default=5, help="moving average over N logged points (table and plot)")
    p.add_argument("--out", default=None, help="PNG to write (needs matplotlib)")
    return p


def main(args):
    runs = {os.path.basename(os.path.normpath(r)): read_metrics(r) for r in args.runs}
    for key in args.keys:
        print(f"\n{key} (moving average of {args.smooth} logged points)\n")
        print("| step | " + " | ".join(runs) + " |\n|---" * 1 + "|---" * len(runs) + "|")
        series = {n: dict(zip([r["step"] for r in rows if key in r], smooth([r[key] for r in rows if key in r],
                                                                           args.smooth))) for n, rows in runs.items()}
        last = max(max(s) for s in series.values() if s)
        for step in list(range(args.every, last + 1, args.every)) + ([last] if last % args.every else []):
            cells = []
            for s in series.values():
                near = [k for k in s if k <= step]
                cells.append(f"{s[max(near)]:.3f}" if near else "-")
            print(f"| {step} | " + " | ".join(cells) + " |")
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(args.keys), figsize=(5 * len(args.keys), 3.5))
        for ax, key in zip(axes if len(args.keys) > 1 else [axes], args.keys):
            for name, rows in runs.items():
                pts = [(r["step"], r[key]) for r in rows if key in r]
                ax.plot([p[0] for p in pts], smooth([p[1] for p in pts], args.smooth), label=name)
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0].legend() if len(args.keys) > 1 else axes.legend()
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        fig.savefig(args.out, dpi=90)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main(get_parser().parse_args())
