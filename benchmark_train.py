"""Benchmark one full training step (augmentations, encoder, decoder, LPIPS, critic, backward, Adam) per variant.

Reports the median seconds per step, the share of each part, the FLOPs per step and the fraction of this machine's
measured matmul peak, with every variant's ratio against eager fp32 in the same run.

    python benchmark_train.py                                  # 128, 256 and 400 px, batch 4, all variants
    python benchmark_train.py --sizes 400 --variants eager bf16 --steps 5
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import train_pytorch as T
from models_pytorch import Discriminator, ModelConfig, StegaStampDecoder, StegaStampEncoder
from utils_pytorch import build_lpips, edge_falloff, random_perspective_matrices, transform_net, warp_with_mask

VARIANTS = {  # name -> (channels_last, amp, compile)
    "eager": (False, "none", False),
    "channels_last": (True, "none", False),
    "bf16": (False, "bf16", False),
    "bf16_channels_last": (True, "bf16", False),
    "compile": (False, "none", True),
    "compile_bf16_channels_last": (True, "bf16", True),
}
PARTS = ("augment", "encoder", "decoder", "lpips", "critic", "losses", "backward", "optimizer")


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


class Clock:
    """Accumulates wall time per named part; parts run in sequence inside one step."""

    def __init__(self, device):
        self.device, self.parts, self.t = device, {}, None

    def start(self):
        sync(self.device)
        self.t = time.perf_counter()

    def lap(self, name):
        sync(self.device)
        now = time.perf_counter()
        self.parts[name] = self.parts.get(name, 0.0) + now - self.t
        self.t = now


def instrumented_step(nets, opts, lpips_fn, image, secret, args, env, clock):
    """The post-warm-up train_step of train_pytorch, split into timed parts (same functions, same order)."""
    encoder, decoder, critic = nets
    opt_g, opt_d = opts
    H, W = image.shape[-2:]
    clock.start()
    with env["autocast"]():
        M = random_perspective_matrices(image.shape[0], H, W, int(0.1 * H)).to(image.device)
        input_warped, mask = warp_with_mask(image, M[:, 1])
        input_warped = input_warped + (1 - mask) * image
        clock.lap("augment")
        residual_warped = encoder(secret, input_warped)
        clock.lap("encoder")
        encoded_warped = input_warped + residual_warped
        encoded = T.fill_borders(encoded_warped, image, M, "white")
        with torch.autocast(image.device.type, enabled=False):
            transformed = transform_net(encoded.float(), env["aug"], 10 ** 6)
        clock.lap("augment")
        logits = decoder(transformed)
        clock.lap("decoder")
        lp = lpips_fn(image, encoded.float(), normalize=True).mean()
        clock.lap("lpips")
        g_loss, _ = critic(encoded_warped)
        clock.lap("critic")
        l2, _ = T.image_loss(encoded.float(), image, env["yuv_scales"], env["falloff"])
        total = F.binary_cross_entropy_with_logits(logits.float(), secret) + 2 * l2 + 1.5 * lp + 0.5 * g_loss
        clock.lap("losses")
    opt_g.zero_grad(set_to_none=True)
    total.backward()
    clock.lap("backward")
    opt_g.step()
    clock.lap("optimizer")
    with env["autocast"]():
        T.critic_step(critic, opt_d, {"real": input_warped, "fake": encoded_warped})
    clock.lap("critic")


def build(size, variant, device, lpips_backbone):
    channels_last, amp, compile_ = VARIANTS[variant]
    cfg = ModelConfig(height=size, width=size)
    mem = torch.channels_last if channels_last else torch.contiguous_format
    nets = [m.to(device, memory_format=mem) for m in (StegaStampEncoder(cfg), StegaStampDecoder(cfg), Discriminator(cfg))]
    gen_params = [p for m in nets[:2] for p in m.parameters() if p.requires_grad]
    opts = (T.make_adam(gen_params, 1e-4), torch.optim.RMSprop(nets[2].parameters(), lr=1e-5))
    if compile_:
        nets = [torch.compile(m) for m in nets]
    lpips_fn = build_lpips(lpips_backbone, device).to(memory_format=mem)
    autocast, scaler = T.amp_tools(amp, device)
    args = T.get_parser().parse_args(["bench"])
    env = dict(aug=T.aug_config(args), autocast=autocast, yuv_scales=torch.tensor([1.0, 100, 100], device=device),
               falloff=edge_falloff(size, size).to(device) * 0.0)   # edge gain 0: before l2_edge_delay
    return nets, opts, lpips_fn, args, env, mem


def bench(size, variant, device, batch, steps, warmup, lpips_backbone):
    nets, opts, lpips_fn, args, env, mem = build(size, variant, device, lpips_backbone)
    image = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=mem)
    secret = torch.randint(0, 2, (batch, 100), device=device).float()
    totals, parts = [], {p: [] for p in PARTS}
    for i in range(warmup + steps):
        clock = Clock(device)
        t = time.perf_counter()
        instrumented_step(nets, opts, lpips_fn, image, secret, args, env, clock)
        sync(device)
        if i >= warmup:
            totals.append(time.perf_counter() - t)
            for p in PARTS:
                parts[p].append(clock.parts.get(p, 0.0))
    with FlopCounterMode(display=False) as fc:
        instrumented_step(nets, opts, lpips_fn, image, secret, args, env, Clock(device))
    return statistics.median(totals), {p: statistics.median(v) for p, v in parts.items()}, fc.get_total_flops()


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
    return p


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    peak32 = measure_peak_gflops(device, torch.float32)
    peak16 = measure_peak_gflops(device, torch.bfloat16)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"matmul peak fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s; batch {args.batch_size}")
    header = "| size | variant | s/step | vs eager | GFLOP/step | % of peak | " + " | ".join(PARTS) + " |"
    print(header + "\n" + "|---" * (header.count("|") - 1) + "|")
    for size in args.sizes:
        base = None
        for variant in args.variants:
            torch.manual_seed(0)
            torch._dynamo.reset()   # compiled code of another size would otherwise recompile with dynamic shapes
            try:
                sec, parts, flops = bench(size, variant, device, args.batch_size, args.steps, args.warmup,
                                          args.lpips_backbone)
            except Exception as e:  # a variant this machine cannot run is reported, the rest go on
                print(f"| {size} | {variant} | failed: {type(e).__name__}: {str(e).splitlines()[0][:80]} |")
                continue
            base = base or (sec if variant == "eager" else None)
            peak = peak16 if VARIANTS[variant][1] == "bf16" else peak32
            share = " | ".join(f"{100 * parts[p] / sec:.0f}%" for p in PARTS)
            ratio = f"{sec / base:.2f}" if base else "-"
            print(f"| {size} | {variant} | {sec:.3f} | {ratio} | {flops / 1e9:.1f} | "
                  f"{100 * flops / sec / 1e9 / peak:.0f}% | {share} |", flush=True)


if __name__ == "__main__":
    main(get_parser().parse_args())
