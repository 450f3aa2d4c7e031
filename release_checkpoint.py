"""Turn a training checkpoint into a small inference checkpoint: model config + encoder + decoder, weights in fp16.

    python release_checkpoint.py checkpoints/stegastamp_128/stegastamp_128_final.pth pretrained/stegastamp_128.pth
    python release_checkpoint.py checkpoints/det/det_final.pth pretrained/detector.pth       # a stamp detector
    python release_checkpoint.py MODEL.pth fainter.pth --residual_scale 0.9    # encodes as MODEL.pth at --strength 0.9
The result loads with models_pytorch.load_checkpoint (load_detector for a detector) like any checkpoint (weights
come back as fp32); optimizer and critic states are dropped, the training arguments and step are kept for
provenance. An existing output is only replaced with --overwrite.
"""
import argparse
import os
import sys

import torch

from models_pytorch import (CheckpointError, CHECKPOINT_FORMAT_VERSION, atomic_torch_save, checkpoint_kind,
                            read_checkpoint)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="training checkpoint (.pth) from train_pytorch.py")
    p.add_argument("out", help="inference checkpoint to write")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                   help="weight precision of the released file")
    p.add_argument("--residual_scale", type=float, default=1.0, metavar="S",
                   help="multiply the encoder's residual by S, baked into its last (linear) layer: the released model "
                        "at strength 1 encodes as the input at --strength S (models without a residual bound)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def main(args) -> int:
    if os.path.exists(args.out) and not args.overwrite:
        print(f"error: {args.out} exists (pass --overwrite to replace it)", file=sys.stderr)
        return 2
    try:
        ckpt = read_checkpoint(args.checkpoint, kind="any")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kind = checkpoint_kind(ckpt)
    dtype = getattr(torch, args.dtype)
    cast = lambda sd: {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    common = {"format_version": CHECKPOINT_FORMAT_VERSION, "step": ckpt["step"], "train_args": ckpt.get("train_args", {})}
    if kind == "detector":
        if args.residual_scale != 1.0:
            print("error: --residual_scale is for StegaStamp models, not a detector", file=sys.stderr)
            return 2
        release = {**common, "detector_config": ckpt["detector_config"], "detector": cast(ckpt["detector"]), "opt": None}
    else:
        release = {**common, "model_config": ckpt["model_config"], "encoder": cast(ckpt["encoder"]),
                   "decoder": cast(ckpt["decoder"]), "discriminator": None, "opt_g": None, "opt_d": None}
        scale = float(ckpt.get("residual_scale", 1.0))   # --freeze_encoder runs: a scale already baked in (provenance)
        if args.residual_scale != 1.0:
            if not args.residual_scale > 0 or ckpt["model_config"].get("residual_bound", 0.0) > 0:
                print("error: --residual_scale needs S > 0 and a model without a residual bound (its last layer is "
                      "then linear)", file=sys.stderr)
                return 2
            for k in ("residual.weight", "residual.bias"):
                release["encoder"][k] = (ckpt["encoder"][k].double() * args.residual_scale).to(dtype)
            scale *= args.residual_scale
        if scale != 1.0:
            release["residual_scale"] = scale
    atomic_torch_save(release, args.out)
    print(f"wrote {args.out} (step {ckpt['step']}, {args.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_parser().parse_args()))
