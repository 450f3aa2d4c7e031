"""Benchmark the real training step (train_pytorch.train_step: warp, encoder, borders, augmentations with JPEG, decoder,
every loss, backward, Adam, the critic's step) per variant, with base.sh's loss settings past every ramp.

Reports the median seconds per step, images per second, the FLOPs per step and the fraction of this machine's
measured matmul peak, with every variant's ratio against eager fp32 in the same run.

    python benchmark_train.py                                  # 128, 256 and 400 px, batch 4, all variants
    python benchmark_train.py --sizes 400 --variants eager bf16 --steps 5
    python benchmark_train.py --sizes 128 --variants bf16_channels_last --batch_size 8 --data data/photos/train
"""
import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import train_pytorch as T
from models_pytorch import Discriminator, ModelConfig, StegaStampDecoder, StegaStampEncoder
from utils_pytorch import build_lpips, edge_falloff, random_perspective_matrices

VARIANTS = {  # name -> (channels_last, amp, compile)
    "eager": (False, "none", False),
    "channels_last": (True, "none", False),
    "bf16": (False, "bf16", False),
    "bf16_channels_last": (True, "bf16", False),
    "compile": (False, "none", True),
    "compile_bf16_channels_last": (True, "bf16", True),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_peak_gflops(device, dtype, n=2048, reps=10):
    """Median GFLOP/s of an n x n matmul: the practical peak the networks are compared against."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for _ in range(reps + 2):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times[2:]) / 1e9


# The released model's loss settings (scripts/base.sh), past every ramp: what a long run spends its time on.
BASE_SH = ["bench", "--l2_loss_scale", "2", "--lpips_loss_scale", "1.5", "--secret_loss_scale", "1.5",
           "--G_loss_scale", "0.5", "--borders", "white", "--u_scale", "100", "--v_scale", "100", "--jpeg_quality", "50"]


def build(size, variant, device, lpips_backbone):
    """Networks, optimizers and every argument of train_pytorch.train_step for one variant."""
    channels_last, amp, compile_ = VARIANTS[variant]
    args = T.get_parser().parse_args(BASE_SH + ["--size", str(size)])
    cfg = ModelConfig(height=size, width=size)
    mem = torch.channels_last if channels_last else torch.contiguous_format
    nets = [m.to(device, memory_format=mem) for m in (StegaStampEncoder(cfg), StegaStampDecoder(cfg), Discriminator(cfg))]
    gen_params = [p for m in nets[:2] for p in m.parameters() if p.requires_grad]
    opts = (T.make_adam(gen_params, 1e-4), T.make_adam(gen_params, 1e-4),
            torch.optim.RMSprop(nets[2].parameters(), lr=1e-5))
    if compile_:
        nets = [torch.compile(m) for m in nets]
    autocast, scaler = T.amp_tools(amp, device)
    step = 10 ** 6                                                 # every ramp done
    kwargs = dict(args=args, aug=T.aug_config(args), lpips_fn=build_lpips(lpips_backbone, device),
                  falloff=edge_falloff(size, size).to(device),
                  yuv_scales=torch.tensor([args.y_scale, args.u_scale, args.v_scale], device=device),
                  autocast=autocast, scaler=scaler)
    return nets, opts, T.loss_scales(args, step), step, kwargs, mem


def bench(size, variant, device, batch, steps, warmup, lpips_backbone):
    """Median seconds of train_pytorch.train_step (the real one: warp, encoder, borders, augmentations, decoder, all
    losses, backward, Adam, then the critic's step) and its FLOPs."""
    nets, opts, scales, step, kwargs, mem = build(size, variant, device, lpips_backbone)
    image = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=mem)
    secret = torch.randint(0, 2, (batch, 100), device=device).float()

    def one_step():
        d = int(size * kwargs["args"].rnd_trans)
        M = random_perspective_matrices(batch, size, size, d).to(device)
        T.train_step(nets, opts, image, secret, M, step, False, scales, **kwargs)

    totals = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        one_step()
        sync(device)
        if i >= warmup:
            totals.append(time.perf_counter() - t)
    with FlopCounterMode(display=False) as fc:
        one_step()
    return statistics.median(totals), fc.get_total_flops()


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 400], help="model sizes in pixels")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                    help="variants to time (channels_last, bf16, compile, ...)")
    p.add_argument("--batch_size", type=int, default=4, help="images per step")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile happens here)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--lpips_backbone", default="random",
                   help="speed does not depend on the weights; 'random' needs no download")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="also time the training data of this photo folder (--random_crop 0.25, as the default "
                        "model's runs): items per second in one process, i.e. per DataLoader worker")
    return p


def data_speed(folder, size, n=300, min_scale=0.25):
    """Items per second of ImageFolderDataset's random crops (decode, crop, resize, flip, bits) in this process."""
    from dataset import ImageFolderDataset
    ds = ImageFolderDataset(folder, (size, size), 100, min_scale=min_scale)
    for i in range(20):                       # warm the file cache
        ds[(i, i)]
    t = time.perf_counter()
    for i in range(n):
        ds[(i, 10_000 + i)]
    return n / (time.perf_counter() - t)


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    peak32 = measure_peak_gflops(device, torch.float32)
    peak16 = measure_peak_gflops(device, torch.bfloat16)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"matmul peak fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s; batch {args.batch_size}")
    header = "| size | variant | s/step | vs eager | images/s | GFLOP/step | % of peak |"
    if args.data:
        for size in args.sizes:
            print(f"data {args.data} at {size} px: {data_speed(args.data, size):.0f} items/s per worker")
    print(header + "\n" + "|---" * (header.count("|") - 1) + "|")
    for size in args.sizes:
        base = None
        for variant in args.variants:
            torch.manual_seed(0)
            torch._dynamo.reset()   # compiled code of another size would otherwise recompile with dynamic shapes
            try:
                sec, flops = bench(size, variant, device, args.batch_size, args.steps, args.warmup,
                                   args.lpips_backbone)
            except Exception as e:  # a variant this machine cannot run is reported, the rest go on
                print(f"| {size} | {variant} | failed: {type(e).__name__}: {str(e).splitlines()[0][:80]} |")
                continue
            base = base or (sec if variant == "eager" else None)
            peak = peak16 if VARIANTS[variant][1] == "bf16" else peak32
            ratio = f"{sec / base:.2f}" if base else "-"
            print(f"| {size} | {variant} | {sec:.3f} | {ratio} | {args.batch_size / sec:.1f} | {flops / 1e9:.1f} | "
                  f"{100 * flops / sec / 1e9 / peak:.0f}% |", flush=True)


if __name__ == "__main__":
    main(get_parser().parse_args())
