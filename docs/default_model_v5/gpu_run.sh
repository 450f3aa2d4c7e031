#!/usr/bin/env bash
# Session 9 (one NVIDIA H100 lent for 15 minutes): four joint encoder+decoder variants side by side on one GPU, from
# the shipped model, on the 229 training photos NOT in data/select (so that data/select is held out for selection),
# the v2 joint recipe (docs/default_model_v2/gpu_run.sh) at batch 32 with the accuracy-controlled image-loss gain at
# four targets. fp16 releases of each final checkpoint + logs into $OUT. Pre-registered: rule.md beside this file.
#   .gpu/photos_hs (carried to the GPU machine) = the photos of data/train_heldout_select taken from .gpu/photos, the
#   training split re-saved at short side 320 for the session-3 GPU runs:
#   mkdir -p .gpu/photos_hs && for f in $(ls data/train_heldout_select); do cp .gpu/photos/$f .gpu/photos_hs/; done
#   The GPU image lacks two of requirements_pytorch.txt's packages, carried unpacked: .gpu/site = the lpips 0.1.4 wheel
#   (pure Python; the session-3 runs' copy), .gpu/site_bch = the bchlib 2.1.3 cp312 manylinux wheel (pip download
#   --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 bchlib==2.1.3).
#   MIN=6.5 bash docs/default_model_v5/gpu_run.sh   (what ran, from the repo root; OUT defaults to out/gpu_v5)
#   The device tool sends the working tree (at most 64 MiB): with the photos carried, leave the ONNX files behind for
#   the call: `git rm -q --cached pretrained/onnx/*.onnx; echo '/pretrained/onnx/*.onnx' >> .git/info/exclude`, and
#   after it `git reset -q pretrained/onnx` and remove that line again. At most 8 files come back from $OUT.
#   Added after the session-9 run (it lost 3 of its 15 minutes to missing packages found only after 45 s): the
#   package check and the early exit below.
set -u
MIN=${MIN:-7.5}; BS=${BS:-32}; WORKERS=${WORKERS:-3}; DATA=${DATA:-.gpu/photos_hs}
OUT=${OUT:-out/gpu_v5}; mkdir -p "$OUT"; export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD/.gpu/site:$PWD/.gpu/site_bch${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
python3 -c "import torch, lpips, bchlib; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
COMMON="--train_path $DATA --random_crop 0.25 --size 128 --batch_size $BS --num_steps 200000 --time_limit $MIN \
 --init_from ${INIT:-pretrained/stegastamp_128.pth} --no_im_loss_steps 0 --secret_warmup_acc 0.9 --amp bf16 --channels_last \
 --workers $WORKERS --borders white --y_scale 1 --u_scale 100 --v_scale 100 --jpeg_quality 50 --rnd_trans 0.15 \
 --secret_loss_scale 1.5 --l2_loss_scale 2 --lpips_loss_scale 1.5 --G_loss_scale 0.5 --l2_loss_ramp 1000 \
 --lpips_loss_ramp 1000 --G_loss_ramp 1000 --rnd_trans_ramp 1000 --l2_edge_delay 0 --l2_edge_ramp 1000 \
 --lpips_backbone bundled --adaptive_rate 0.1 --log_interval 200 --img_interval 4000 --last_every 1000 \
 --ckpt_every 100000 --eval_batches 20 --no_progress ${EXTRA:-}"
TARGETS=${TARGETS:-"92 93 94 96"}; SEED=50; RUNS=""; PIDS=""
for t in $TARGETS; do
  r=v5_t$t; RUNS="$RUNS $r"; SEED=$((SEED + 1))
  python3 train_pytorch.py $r $COMMON --seed $SEED --adaptive_image_loss 0.$t > "$OUT/$r.log" 2>&1 &
  PIDS="$PIDS $!"
done
for _ in $(seq 24); do  # fail fast: a run that stops before its first step ends the call at once
  sleep 5; started=0
  for r in $RUNS; do
    grep -q "it/s" "$OUT/$r.log" && started=$((started + 1))
    grep -q "error:\|Traceback" "$OUT/$r.log" && { echo "run $r failed"; tail -n 20 "$OUT/$r.log"; kill $PIDS 2>/dev/null; exit 1; }
  done
  [ $started -eq $(echo $RUNS | wc -w) ] && break
done
tail -n 2 "$OUT"/*.log
wait
for r in $RUNS; do
  python3 release_checkpoint.py checkpoints/$r/${r}_final.pth "$OUT/$r.pth" \
    || python3 release_checkpoint.py checkpoints/$r/${r}_last.pth "$OUT/$r.pth"
done
tar czf "$OUT/logs.tgz" $(for r in $RUNS; do echo logs/$r; done) "$OUT"/*.log 2>/dev/null
tail -n 3 "$OUT"/*.log
