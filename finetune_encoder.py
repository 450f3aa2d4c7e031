"""Fine-tune a trained model's encoder against its own frozen decoder: encode-time optimisation amortised.

    python finetune_encoder.py enc_margin --init_from pretrained/stegastamp_128.pth --train_path data/photos/train \
        --num_steps 6000 --time_limit 60
    python finetune_encoder.py enc_margin --pretrained checkpoints/enc_margin/enc_margin_last.pth ...   # resume

Our addition (not in the original). `--optimize` (inference.py) refines each image's residual at encode time
against the decoder, which makes it ~4 dB fainter and more robust, but needs PyTorch and ~5 s per image. This
trains the encoder with the same objective, so that its plain one-pass residual (the only one ONNX Runtime, the
browser and phones can make) moves the same way: per step, random crops of the training photos get random bits,
the encoder's residual is resampled as the full-resolution encoding resamples it (up by 1, 2 or 4 and back),
the decoder (weights frozen) reads --views random camera-like copies of each encoded crop
(utils_pytorch.random_views: corners moved by up to --persp, then the training noise layer at full strength with
JPEG down to --jpeg_quality), and the loss asks every bit of every copy for a logit margin of --margin, plus
--energy_weight x the residual's energy relative to the starting encoder's on the same crop and bits (a frozen
copy of it is kept in the checkpoint, so a resumed run measures against the same reference). --reference names
another model's encoder as the reference: a released fine-tuned model goes on against the model it started from.
--train_decoder also trains the decoder (at --decoder_lr), on the same copies and on copies of the reference encoder's
images of the same crops and bits (weight --reference_weight), so that the decoder learns the fainter residual and
still reads what the reference model made; without it the decoder is frozen and every earlier image reads as before.

Checkpoints (atomic; primitives and state_dicts only) go to checkpoints/<exp_name>/: <exp>_last.pth every
--last_every steps (resume with --pretrained: exact, the data and the views are drawn from (seed, step)),
<exp>_<step>.pth every --ckpt_every, <exp>_final.pth at the end; each loads like any checkpoint
(release_checkpoint.py, export_onnx.py, the encode/decode/evaluate scripts). Logs: logs/<exp_name>/ (log.txt,
metrics.jsonl, TensorBoard).
"""
import argparse
import copy
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dataset import ImageFolderDataset
from models_pytorch import (CheckpointError, StegaStampEncoder, load_checkpoint, load_state, models_from_checkpoint,
                            read_checkpoint, save_checkpoint)
from train_pytorch import Logger, amp_tools, check_new_run, link_or_save, make_adam
from utils_pytorch import AugmentConfig, margin_loss, random_views, through_cover

UPSAMPLE = (1, 2, 4)     # the full-resolution encoding upsamples the residual onto covers 1-4x the model size


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("exp_name", help="run name: logs/<exp_name>, checkpoints/<exp_name>")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--init_from", help="the trained model to start from (.pth); its encoder is also the reference "
                   "unless --reference")
    g.add_argument("--pretrained", help="a checkpoint of this script to resume (weights, optimizer, step)")
    p.add_argument("--reference", help="with --init_from: the model (.pth) whose encoder the energy is measured "
                   "against (default: the --init_from's own), e.g. to go on from a released fine-tuned model "
                   "against the model it started from")
    p.add_argument("--train_path", required=True, help="folder of training photos (never the validation ones)")
    p.add_argument("--random_crop", type=float, default=0.25, metavar="MIN_SCALE",
                   help="crop side U(MIN_SCALE, 1) of each photo's, and a flip")
    p.add_argument("--num_steps", type=int, default=6000)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--views", type=int, default=2, help="camera-like copies the decoder reads per encoded crop")
    p.add_argument("--batch_views", action="store_true",
                   help="make every crop's copies in one batch, the noise layer's per-batch draws (blur, noise "
                        "level, saturation, JPEG quality) shared by the step's copies, as train_pytorch.py's are: "
                        "faster, most of all on a GPU, where crop-by-crop calls leave it waiting on Python")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of the encoder")
    p.add_argument("--train_decoder", action="store_true",
                   help="train the decoder too (default: frozen): it reads the step's copies and, weighted by "
                        "--reference_weight, copies of the reference encoder's images of the same crops, so that "
                        "images the reference model made still read. Changes the decoder: images of models with the "
                        "old decoder then read only as far as the reference term keeps them")
    p.add_argument("--decoder_lr", type=float, default=1e-5, help="with --train_decoder: the decoder's learning rate")
    p.add_argument("--reference_weight", type=float, default=1.0,
                   help="with --train_decoder: weight of the margin loss on the reference encoder's images")
    p.add_argument("--margin", type=float, default=2.0, help="logit margin asked of every bit (as OPT_MARGIN)")
    p.add_argument("--energy_weight", type=float, default=1.0,
                   help="weight of the residual's energy relative to the starting encoder's (as OPT_ENERGY)")
    p.add_argument("--persp", type=float, default=0.1, help="corner jitter of the copies (as OPT_PERSP)")
    p.add_argument("--jpeg_quality", type=int, default=50, help="lowest JPEG quality of the copies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding the crops (0: in the loop)")
    p.add_argument("--amp", choices=("none", "bf16"), default="bf16", help="autocast dtype (bf16 on CPU and CUDA)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--time_limit", type=float, default=None, metavar="MINUTES", help="stop cleanly after this long")
    p.add_argument("--checkpoints_dir", default="checkpoints")
    p.add_argument("--logs_dir", default="logs")
    p.add_argument("--log_interval", type=int, default=50)
    p.add_argument("--last_every", type=int, default=100, help="overwrite <exp>_last.pth every N steps (resume)")
    p.add_argument("--ckpt_every", type=int, default=1000, help="keep <exp>_<step>.pth every N steps")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--no_progress", action="store_true", help="no tqdm bar even on a terminal")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of this name")
    return p


class StepBatches(Dataset):
    """Item `step` is that step's crops and bits, drawn from (seed, step) alone: a resumed run, and any number of
    --workers, see the same data."""

    def __init__(self, ds, seed, batch_size):
        self.ds, self.seed, self.batch_size = ds, seed, batch_size

    def __getitem__(self, step):
        rng = np.random.default_rng([self.seed, step])
        items = [self.ds[(int(rng.integers(len(self.ds))), int(rng.integers(2 ** 31)))]
                 for _ in range(self.batch_size)]
        return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def margin_step(encoder, reference, decoder, image, secret, args, gen, dev_gen, autocast):
    """One step's forward pass -> (loss, logs, residual, encoded, views). gen (CPU) draws the resampling and the
    warps, dev_gen (on the images' device) the noise layer."""
    h, w = image.shape[-2:]
    aug = AugmentConfig(jpeg_quality=args.jpeg_quality)
    with autocast():
        r = encoder(secret, image).float()
        with torch.no_grad():
            r0 = reference(secret, image).float()
        ups = torch.randint(len(UPSAMPLE), (image.shape[0],), generator=gen).tolist()

        def copies(residual):     # encoded crops (resampled as encode + decode do) -> their camera-like copies
            resampled = residual  # one resampling call per upsampling factor
            for k in sorted(set(ups)):
                idx = torch.tensor([i for i, u in enumerate(ups) if u == k], device=residual.device)
                up = through_cover(residual[idx], (h * UPSAMPLE[k], w * UPSAMPLE[k]))
                resampled = resampled.index_copy(0, idx, up)
            encoded = (image + resampled).clamp(0, 1)
            if args.batch_views:  # one noise-layer call for every copy
                return encoded, random_views(encoded, args.views, args.persp, aug, dev_gen, gen)
            return encoded, torch.cat([random_views(encoded[i:i + 1], args.views, args.persp, aug, dev_gen, gen)
                                       for i in range(len(ups))])   # crop by crop: own blur, noise, JPEG quality

        encoded, views = copies(r)
        logits = decoder(views).float()
        if args.train_decoder and args.reference_weight > 0:
            logits0 = decoder(copies(r0)[1]).float()
    bits = secret.repeat_interleave(args.views, 0)
    msg = margin_loss(logits, bits, args.margin)
    energy = ((r ** 2).mean((1, 2, 3)) / ((r0 ** 2).mean((1, 2, 3)) + 1e-12)).mean()
    loss = msg + args.energy_weight * energy
    logs = {"loss/margin": msg.item(), "loss/energy_ratio": energy.item(),
            "metric/bit_acc_views": ((logits > 0).float() == bits).float().mean().item(),
            "metric/psnr_gain_db": -10 * float(np.log10(max(energy.item(), 1e-9)))}
    if args.train_decoder and args.reference_weight > 0:
        msg0 = margin_loss(logits0, bits, args.margin)
        loss = loss + args.reference_weight * msg0
        logs.update({"loss/margin_reference": msg0.item(),
                     "metric/bit_acc_reference": ((logits0 > 0).float() == bits).float().mean().item()})
    return loss, logs, r, encoded, views


def main(args) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.pretrained is None:
        check_new_run(args)
    elif args.reference:
        print("error: --reference starts a run (with --init_from); a resumed run keeps its checkpoint's reference",
              file=sys.stderr)
        return 2
    try:
        ckpt = read_checkpoint(args.pretrained or args.init_from, device)
        cfg, encoder, decoder = models_from_checkpoint(ckpt, args.pretrained or args.init_from, device)
        reference = load_checkpoint(args.reference, device)[1] if args.reference else copy.deepcopy(encoder)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if reference.cfg != cfg:
        print(f"error: {args.reference}: its model ({reference.cfg}) differs from {args.init_from}'s ({cfg})",
              file=sys.stderr)
        return 2
    if args.pretrained:
        if ckpt.get("reference_encoder") is None:
            print(f"error: {args.pretrained}: not a finetune_encoder.py checkpoint (no reference encoder); start "
                  f"from it with --init_from", file=sys.stderr)
            return 2
        reference = StegaStampEncoder(cfg).to(device)
        load_state(reference, ckpt["reference_encoder"], "reference_encoder", args.pretrained)
    reference.eval().requires_grad_(False)
    decoder.eval().requires_grad_(args.train_decoder)     # no dropout or batch norm: eval() changes nothing else
    encoder.train()
    groups = [{"params": list(encoder.parameters()), "lr": args.lr}]
    if args.train_decoder:
        groups.append({"params": list(decoder.parameters()), "lr": args.decoder_lr})
    opt = make_adam(groups, args.lr)
    start = 0
    if args.pretrained:
        if len(ckpt["opt_g"]["param_groups"]) != len(groups):
            print(f"error: {args.pretrained}: trained {'without' if args.train_decoder else 'with'} --train_decoder; "
                  f"resume it the same way", file=sys.stderr)
            return 2
        opt.load_state_dict(ckpt["opt_g"])
        for g, want in zip(opt.param_groups, groups):      # the learning rates asked now, not the checkpoint's
            g["lr"] = want["lr"]
        start = int(ckpt["step"])
    ds = ImageFolderDataset(args.train_path, (cfg.height, cfg.width), cfg.secret_size, min_scale=args.random_crop)
    autocast, _ = amp_tools(args.amp, device)
    ckpt_dir = os.path.join(args.checkpoints_dir, args.exp_name)
    os.makedirs(ckpt_dir, exist_ok=True)
    log = Logger(args, True)
    log.print(f"{args.exp_name}: encoder of {args.pretrained or args.init_from} against its "
              f"{'decoder, trained too' if args.train_decoder else 'frozen decoder'}, "
              f"steps {start}..{args.num_steps}, {len(ds)} photos, device {device}")

    def save(path, step):
        save_checkpoint(path, cfg, encoder, decoder, opt_g=opt, step=step, train_args=vars(args),
                        reference_encoder=reference.state_dict())

    loader = DataLoader(StepBatches(ds, args.seed, args.batch_size), batch_size=None, num_workers=args.workers,
                        sampler=range(start + 1, args.num_steps + 1), pin_memory=device.type == "cuda",
                        persistent_workers=False, prefetch_factor=4 if args.workers else None)
    t0, sums, summed, step = time.time(), {}, 0, start
    for step, (image, secret) in enumerate(loader, start + 1):
        image, secret = image.to(device, non_blocking=True), secret.to(device, non_blocking=True)
        seed = args.seed * 1_000_003 + step                      # the step's views: a resumed run draws the same
        gen = torch.Generator().manual_seed(seed)
        dev_gen = gen if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
        loss, logs, r, encoded, views = margin_step(encoder, reference, decoder, image, secret, args, gen, dev_gen,
                                                    autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        summed += 1
        log.update_bar(1)
        if step % args.log_interval == 0:
            means = {k: v / summed for k, v in sums.items()}     # a resumed run's first row has fewer steps
            sums, summed = {}, 0
            log.scalars(step, means)
            ref = (f" | of the reference's {means['metric/bit_acc_reference']:.4f}"
                   if "metric/bit_acc_reference" in means else "")
            log.print(f"step {step:06d} | margin loss {means['loss/margin']:.3f} | energy "
                      f"{means['loss/energy_ratio']:.3f} ({means['metric/psnr_gain_db']:+.2f} dB) | bit acc of the "
                      f"copies {means['metric/bit_acc_views']:.4f}{ref} | {time.time() - t0:.0f} s")
            log.images(step, {"encoded": encoded, "residual": r, "transformed": views[::args.views]}, image)
        out_of_time = args.time_limit is not None and time.time() - t0 > 60 * args.time_limit
        last, kept = (os.path.join(ckpt_dir, f"{args.exp_name}_{s}.pth") for s in ("last", step))
        saved = step % args.last_every == 0 or step == args.num_steps or out_of_time
        if saved:
            save(last, step)
        if step % args.ckpt_every == 0:
            link_or_save(last, kept, lambda p: save(p, step)) if saved else save(kept, step)
        if out_of_time:
            log.print(f"step {step:06d} | --time_limit {args.time_limit:g} min reached: stopping here")
            break
    final = os.path.join(ckpt_dir, f"{args.exp_name}_final.pth")
    link_or_save(os.path.join(ckpt_dir, f"{args.exp_name}_last.pth"), final, lambda p: save(p, step))
    log.print(f"wrote {final} (step {step})")
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
