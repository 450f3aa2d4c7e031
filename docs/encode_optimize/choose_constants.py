"""evaluate_pytorch.py on data/select with constants of inference.py overridden:
    python docs/encode_optimize/choose_constants.py NAME STEPS OPT_ENERGY=1.0 OPT_PERSP=0.15 ...   -> select/NAME/
    python docs/encode_optimize/choose_constants.py NAME STEPS MODEL=pretrained/stegastamp_128_v7.pth OPT_ENERGY=0.5
    python docs/encode_optimize/choose_constants.py NAME STEPS AUTO_CHECKS_OPTIMIZED=clean,jpeg50,persp10% -- --strength auto \
        --distortions clean jpeg50 bright1.3 ...                                                  -> select/NAME/

MODEL names the checkpoint (default: the shipped pretrained/stegastamp_128.pth). A value with a comma is a tuple of names, one with a dot a float, else an int. Arguments after -- replace the
defaults of the evaluation below where they name the same flag (--distortions, --no_tta) or are added to it.
"""
import os
import sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import inference
argv = sys.argv[1:]
extra = argv[argv.index("--") + 1:] if "--" in argv else []
name, steps, *kv = argv[:argv.index("--")] if "--" in argv else argv
model = "pretrained/stegastamp_128.pth"
for a in kv:
    k, v = a.split("=")
    if k == "MODEL":
        model = v
        continue
    setattr(inference, k, tuple(v.split(",")) if "," in v else float(v) if "." in v else int(v))
import evaluate_pytorch as ev
base = [model, "--images_dir", "data/select", "--messages", "2", "--no_lpips",
        "--optimize", steps, "--out_dir", f"docs/encode_optimize/select/{name}"]
if "--distortions" not in extra:
    base += ["--distortions", "clean", "jpeg50", "crop10%", "persp5%", "persp10%", "print_photo"]
if "--tta" in extra:          # read with the decoding views, as the decode scripts do
    extra.remove("--tta")
else:
    base.append("--no_tta")
ev.main(ev.get_parser().parse_args(base + extra))
