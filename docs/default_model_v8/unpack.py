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
    as_float = lambda state: {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    base_decoder = {k: v.clone() for k, v in decoder.state_dict().items()}
    for path in sorted(glob.glob(os.path.join(src, "*_encoders.pth"))):
        packed = torch.load(path, map_location="cpu", weights_only=True)
        for step, state in sorted(packed["encoders"].items()):
            load_state(encoder, as_float(state), "encoder", path)
            trained = os.path.join(src, f"{packed['run']}_decoder_{step}.pth")    # a --train_decoder run's own
            own = os.path.exists(trained)
            dec = (as_float(torch.load(trained, map_location="cpu", weights_only=True)["decoder"]) if own
                   else base_decoder)
            load_state(decoder, dec, "decoder", trained if own else BASE)
            out = os.path.join(dst, f"{packed['run']}_{step}.pth")
            save_checkpoint(out, cfg, encoder.half(), decoder.half(), step=step, train_args=packed["train_args"],
                            decoder_from=trained if own else BASE)
            encoder.float(), decoder.float()
            print(out)
