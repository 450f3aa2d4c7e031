"""Do older images still read with a decoder trained by finetune_encoder.py --train_decoder? Puts the shipped v11 and
v7 encoders in front of that decoder (one checkpoint each) and measures them on data/select as rule.md's table does:

    python docs/default_model_v13/compat.py checkpoints/v13_joint/v13_joint_final.pth
    # -> checkpoints/<run>_compat/hybrid_v11enc.pth, hybrid_v7enc.pth, and docs/default_model_v13/select_compat/*
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from models_pytorch import load_checkpoint, save_checkpoint  # noqa: E402

ENCODERS = {"v11": "pretrained/stegastamp_128.pth", "v7": "pretrained/stegastamp_128_v7.pth"}
DISTORTIONS = ["clean", "jpeg50", "crop10%", "persp5%", "persp10%", "bright1.3", "print_photo"]

if __name__ == "__main__":
    trained = sys.argv[1]
    run = os.path.splitext(os.path.basename(trained))[0]
    cfg, _, decoder = load_checkpoint(trained)
    os.makedirs(f"checkpoints/{run}_compat", exist_ok=True)
    for name, path in ENCODERS.items():
        hybrid = f"checkpoints/{run}_compat/hybrid_{name}enc.pth"
        save_checkpoint(hybrid, cfg, load_checkpoint(path)[1], decoder, step=0)
        subprocess.run([sys.executable, "evaluate_pytorch.py", hybrid, "--images_dir", "data/select", "--messages", "2",
                        "--no_lpips", "--no_tta", "--distortions", *DISTORTIONS,
                        "--out_dir", f"docs/default_model_v13/select_compat/{run}_{name}enc"], check=True)
