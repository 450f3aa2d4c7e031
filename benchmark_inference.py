"""Benchmark encode and decode latency: PyTorch eager (fp32, bf16), torch.compile and ONNX Runtime (fp32, int8).

Medians over --reps calls, single image and batched (per-image time), at each --sizes; the FLOPs and weight bytes of
each network and the fraction of this machine's measured matmul peak; and a 12-megapixel photo encoded at full
resolution end to end (load JPEG, encode, write PNG). Weights are random: speed does not depend on their values.

    python benchmark_inference.py                        # 400 and 128 px
    python benchmark_inference.py --sizes 400 --reps 10 --batch 8
    python benchmark_inference.py --sizes 400 --variants onnx onnx_int8 --no_full_res --profile   # + ORT's op times
    python benchmark_inference.py --sizes 128 --variants eager --no_full_res --optimize 100   # + encode --optimize
"""
import argparse
import copy
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from benchmark_train import measure_peak_gflops
from cli_common import non_negative_int
from image_io import load_image, save_image
from models_pytorch import ModelConfig, StegaStampDecoder, StegaStampEncoder, save_checkpoint


def median_time(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def flops_of(fn):
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def torch_calls(encoder, decoder, variant):
    """-> (encode(secret, image), decode(image)) callables for a PyTorch variant."""
    if variant == "bf16_weights":   # what StegaStamp(..., bf16=True) and the scripts' --bf16 do
        from stegastamp_pytorch import StegaStamp
        m = StegaStamp(ModelConfig(height=encoder.cfg.height, width=encoder.cfg.width), copy.deepcopy(encoder),
                       copy.deepcopy(decoder), torch.device("cpu"), bf16=True)
        return (lambda s, x: m.run_encoder(s.numpy(), x.numpy())), (lambda x: m.run_decoder(x.numpy()))
    if variant == "compile":
        encoder, decoder = torch.compile(encoder), torch.compile(decoder)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if variant == "bf16" else torch.no_grad

    def enc(s, x):
        with torch.inference_mode(), ctx():
            return encoder(s, x)

    def dec(x):
        with torch.inference_mode(), ctx():
            return decoder(x)
    return enc, dec


def onnx_calls(onnx_dir, int8):
    from onnx_inference import OnnxStegaStamp
    m = OnnxStegaStamp(onnx_dir, int8=int8)
    return (lambda s, x: m.run_encoder(s.numpy(), x.numpy())), (lambda x: m.run_decoder(x.numpy())), m


def ort_profile(path, feed, threads, reps=10):
    """ONNX Runtime's own profile of one model: {op type: ms per run}, largest first (--profile)."""
    import json
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.intra_op_num_threads = threads or 0
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(2 + reps):
            sess.run(None, feed)
        with open(sess.end_profiling()) as f:
            return kernel_ms_per_op(json.load(f), warmup=2, reps=reps)


def kernel_ms_per_op(events, warmup, reps):
    """ONNX Runtime profile events of warmup + reps runs -> {op type: ms per timed run}, largest first. Kernel events
    come in time order and every run has the same ones, so the first warmup/(warmup + reps) of each op's are dropped."""
    per_op = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op.setdefault(e["args"]["op_name"], []).append(e["dur"])   # microseconds
    out = {op: sum(d[len(d) * warmup // (warmup + reps):]) / reps / 1000 for op, d in per_op.items()}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def print_profiles(onnx_dir, size, threads):
    """--profile: where ONNX Runtime spends the time of each model, one image."""
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    s = np.random.default_rng(1).integers(0, 2, (1, 100)).astype(np.float32)
    for name in ("encoder", "encoder_int8", "decoder", "decoder_int8"):
        feed = {"secret": s, "image": x} if name.startswith("encoder") else {"image": x}
        prof = ort_profile(os.path.join(onnx_dir, f"{name}.onnx"), feed, threads)
        top = ", ".join(f"{op} {ms:.1f}" for op, ms in list(prof.items())[:6])
        print(f"  {name}.onnx: {sum(prof.values()):.1f} ms in kernels: {top}")


def export(ckpt, out_dir):
    import export_onnx
    args = export_onnx.get_parser().parse_args([ckpt, "--out_dir", out_dir, "--int8"])
    with open(os.devnull, "w") as null:
        import contextlib
        with contextlib.redirect_stdout(null):
            assert export_onnx.main(args) == 0


def full_resolution(runner, tmp, reps):
    """Seconds to load a 4000x3000 JPEG, encode it at full resolution and write the PNG (median)."""
    src, dst = os.path.join(tmp, "big.jpg"), os.path.join(tmp, "big_hidden.png")
    if not os.path.exists(src):
        yy, xx = np.mgrid[0:3000, 0:4000].astype(np.float32)
        arr = np.stack([np.sin(xx / 300) * 0.4 + 0.5, np.cos(yy / 200) * 0.4 + 0.5, (xx + yy) / 7000], -1)
        Image.fromarray((arr * 255).astype(np.uint8)).save(src, quality=90)

    def run():
        encoded, _ = runner.encode(load_image(src), "Hello!")
        save_image(encoded, dst, compress_level=1)
    return median_time(run, reps, warmup=1)


def optimize_timing(runner, steps, reps):
    """Seconds to encode a 451x300 photo (examples/chelsea.jpg) plainly and with optimize=steps (medians)."""
    img = load_image(os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples", "chelsea.jpg"))
    plain = median_time(lambda: runner.encode(img, "Hello!"), reps)
    refined = median_time(lambda: runner.encode(img, "Hello!", optimize=steps), max(1, reps // 3), warmup=1)
    return plain, refined


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[400, 128], help="model sizes in pixels")
    p.add_argument("--batch", type=int, default=8, help="batched rows: per-image time at this batch size")
    p.add_argument("--reps", type=int, default=10, help="timed repetitions per measurement (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime threads")
    choices = ["eager", "bf16", "bf16_weights", "compile", "onnx", "onnx_int8"]
    p.add_argument("--variants", nargs="+", default=choices, choices=choices,
                   help="bf16: autocast; bf16_weights: bfloat16 weights + NHWC (the scripts' --bf16)")
    p.add_argument("--no_full_res", action="store_true", help="skip the 12-megapixel end-to-end timing")
    p.add_argument("--optimize", type=non_negative_int, default=0, metavar="STEPS",
                   help="also time the encoders' --optimize STEPS on a 451x300 photo against a plain encode")
    p.add_argument("--profile", action="store_true",
                   help="also print ONNX Runtime's time per op type for each ONNX model (one image)")
    return p


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    peak32, peak16 = measure_peak_gflops(torch.device("cpu"), torch.float32), measure_peak_gflops(
        torch.device("cpu"), torch.bfloat16)
    print(f"cpu, {torch.get_num_threads()} threads, torch {torch.__version__}; matmul peak fp32 {peak32:.0f} "
          f"GFLOP/s, bf16 {peak16:.0f} GFLOP/s; times in ms (batched rows: per image at batch {args.batch})")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            cfg = ModelConfig(height=size, width=size)
            torch.manual_seed(0)
            encoder, decoder = StegaStampEncoder(cfg).eval(), StegaStampDecoder(cfg).eval()
            ckpt = os.path.join(tmp, f"m{size}.pth")
            save_checkpoint(ckpt, cfg, encoder, decoder)
            onnx_dir = os.path.join(tmp, f"onnx{size}")
            export(ckpt, onnx_dir)
            x1, s1 = torch.rand(1, 3, size, size), torch.randint(0, 2, (1, 100)).float()
            xb, sb = torch.rand(args.batch, 3, size, size), torch.randint(0, 2, (args.batch, 100)).float()
            fe, fd = flops_of(lambda: encoder(s1, x1)), flops_of(lambda: decoder(x1))
            we = sum(p.numel() * 4 for n, p in encoder.named_parameters() if not n.startswith("conv10"))
            wd = sum(p.numel() * 4 for p in decoder.parameters())
            print(f"\n{size} px: encoder {fe / 1e9:.2f} GFLOP, {we / 2 ** 20:.1f} MiB weights; decoder "
                  f"{fd / 1e9:.2f} GFLOP, {wd / 2 ** 20:.1f} MiB weights "
                  f"(decoder_int8.onnx {os.path.getsize(os.path.join(onnx_dir, 'decoder_int8.onnx')) / 2 ** 20:.1f} MiB)")
            print("| variant | encode 1 | encode batched | decode 1 | decode batched | encode % of peak |")
            print("|---|---|---|---|---|---|")
            for variant in args.variants:
                if variant.startswith("onnx"):
                    enc, dec, runner = onnx_calls(onnx_dir, variant == "onnx_int8")
                else:
                    enc, dec = torch_calls(encoder, decoder, variant)
                    runner = None
                t = [median_time(lambda: enc(s1, x1), args.reps), median_time(lambda: enc(sb, xb), args.reps) / args.batch,
                     median_time(lambda: dec(x1), args.reps), median_time(lambda: dec(xb), args.reps) / args.batch]
                peak = peak16 if variant.startswith("bf16") else peak32
                print(f"| {variant} | " + " | ".join(f"{1000 * v:.1f}" for v in t)
                      + f" | {100 * fe / t[0] / 1e9 / peak:.0f}% |", flush=True)
            if args.profile:
                print_profiles(onnx_dir, size, args.threads)
            if args.optimize or not args.no_full_res:
                from stegastamp_pytorch import StegaStamp
                from models_pytorch import load_checkpoint
                pt = StegaStamp(*load_checkpoint(ckpt), torch.device("cpu"))
            if args.optimize:
                plain, refined = optimize_timing(pt, args.optimize, args.reps)
                print(f"encode a 451x300 photo (PyTorch fp32): plain {plain:.3f} s, --optimize {args.optimize} "
                      f"{refined:.2f} s ({1000 * (refined - plain) / args.optimize:.0f} ms per step, "
                      f"{refined / plain:.0f}x)")
            if not args.no_full_res:
                _, _, ort_runner = onnx_calls(onnx_dir, False)
                print(f"12-megapixel photo, load + encode + write PNG: PyTorch {full_resolution(pt, tmp, 3):.2f} s, "
                      f"ONNX Runtime {full_resolution(ort_runner, tmp, 3):.2f} s")


if __name__ == "__main__":
    main(get_parser().parse_args())
