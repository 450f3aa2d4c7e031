#!/usr/bin/env bash
# Session 19 (one NVIDIA H100 lent for 15 minutes): the zoom detector (rule.md beside this file) trained from scratch
# for MIN minutes on views of synthetic scenes made from the 255 training photos (.gpu/photos: data/photos/train
# re-saved at JPEG q90), the stamps' residuals from the default model (pretrained/stegastamp_128.pth; its BCH codec
# needs bchlib, which the GPU image lacks: .gpu/site_bch holds the unpacked bchlib 2.1.3 wheels for cp311/cp312).
# The tree must stay under 64 MiB: leave the other models behind for the call:
#   git rm -q --cached pretrained/onnx/*.onnx pretrained/lpips_alexnet.npz pretrained/stegastamp_128_v*.pth
#   printf '/pretrained/onnx/*.onnx\n/pretrained/lpips_alexnet.npz\n/pretrained/stegastamp_128_v*.pth\n' >> .git/info/exclude
# afterwards `git reset -q pretrained` and drop those lines. Carry .gpu/photos and .gpu/site_bch.
#   MIN=7.5 bash docs/detector/zoom/gpu_run.sh      (from the repo root; OUT defaults to out/gpu_zoom)
# Session 19 ran it with MIN=7.3 (1,365 steps: the 14 workers making scenes set the pace, ~105 views/s). The machine
# went back before the next call, so the final checkpoint came back in $OUT and was carried to a fresh one as
# .gpu/zoom1_final.pth, where the same run went on to step 1,987 (zoom1b; outcome.md):
#   mkdir -p checkpoints/zoom1 && cp .gpu/zoom1_final.pth checkpoints/zoom1/zoom1_last.pth && python3 train_detector.py
#   zoom1 --pretrained checkpoints/zoom1/zoom1_last.pth [the flags below] --num_steps 2050 --workers 15 --time_limit 3.2
set -u
MIN=${MIN:-7.5}; OUT=${OUT:-out/gpu_zoom}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.gpu/site_bch${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
python3 -c "import torch, cv2, bchlib; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
rm -rf logs/zoom1 checkpoints/zoom1                                  # a warm machine keeps an earlier try's
python3 train_detector.py zoom1 --zoom 1.8 --size 320 --input_side 320 --width 24 --train_path .gpu/photos \
  --model pretrained/stegastamp_128.pth --num_steps ${STEPS:-4000} --batch_size ${BS:-32} --lr 2e-3 --seed 19 \
  --workers ${WORKERS:-14} --amp bf16 --channels_last --time_limit $MIN --log_interval 100 --img_interval 1000000 \
  --last_every 500 --ckpt_every 1000 --no-tensorboard --no_progress 2>&1 | tee "$OUT/zoom1.log"
cp checkpoints/zoom1/zoom1_final.pth "$OUT/" 2>/dev/null
cp logs/zoom1/metrics.jsonl "$OUT/zoom1_metrics.jsonl" 2>/dev/null
ls -la "$OUT"
