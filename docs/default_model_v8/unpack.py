"""Turn gpu_run.sh's <run>_encoders.pth files into ordinary checkpoints: v7's checkpoint (its decoder is v6's, which
the fine-tune never moves) with the encoder replaced, one per kept step.

    python docs/default_model_v8/unpack.py /path/to/out checkpoints/v8     # -> checkpoints/v8/<run>_<step>.pth
    python docs/default_model_v8/unpack.py /path/to/out checkpoints/v12 pretrained/stegastamp_128.pth   # session 17 (v11)

The third argument names the released model whose decoder (and config) the checkpoints get (default: v7's); a
--train_decoder run's steps get their own decoders (<run>_decoder_<step>.pth beside the encoders).
"""
import glob
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from models_pytorch import load_checkpoint, load_state, save_checkpoint  # noqa: E402

BASE = "pretrained/stegastamp_128_v7.pth"

if __name__ == "__main__":
    src, dst = sys.argv[1:3]
    BASE = sys.argv[3] if len(sys.argv) > 3 else BASE
    os.makedirs(dst, exist_ok=True)
    cfg, encoder, decoder = load_checkpoint(BASE)
    for path in sorted(glob.glob(os.path.join(src, "*_encoders.pth"))):
        packed = torch.load(path, map_location="cpu", weights_only=True)
        for step, state in sorted(packed["encoders"].items()):
            load_state(encoder, {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                       "encoder", path)
            trained = os.path.join(src, f"{packed['run']}_decoder_{step}.pth")    # a --train_decoder run's own
            _, _, decoder = load_checkpoint(BASE)
            if os.path.exists(trained):
                dec = torch.load(trained, map_location="cpu", weights_only=True)["decoder"]
                load_state(decoder, {k: v.float() if v.is_floating_point() else v for k, v in dec.items()},
                           "decoder", trained)
            out = os.path.join(dst, f"{packed['run']}_{step}.pth")
            save_checkpoint(out, cfg, encoder.half(), decoder.half(), step=step, train_args=packed["train_args"],
                            decoder_from=trained if os.path.exists(trained) else BASE)
            encoder.float()
            print(out)
