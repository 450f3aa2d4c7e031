"""evaluate_pytorch.py on data/select with the --optimize constants (inference.OPT_*) overridden:
    python docs/encode_optimize/choose_constants.py NAME STEPS OPT_ENERGY=1.0 OPT_PERSP=0.15 ...   -> docs/encode_optimize/select/NAME/
"""
import os
import sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import inference
name, steps, *kv = sys.argv[1:]
for a in kv:
    k, v = a.split("=")
    setattr(inference, k, float(v) if "." in v else int(v))
import evaluate_pytorch as ev
args = ev.get_parser().parse_args(["pretrained/stegastamp_128.pth", "--images_dir", "data/select", "--messages", "2",
    "--no_lpips", "--no_tta", "--distortions", "clean", "jpeg50", "crop10%", "persp5%", "persp10%", "print_photo",
    "--optimize", steps, "--out_dir", f"docs/encode_optimize/select/{name}"])
ev.main(args)
