#!/usr/bin/env bash
# Session 11 (one NVIDIA H100 lent for 15 minutes): three joint encoder+decoder variants of the shipped model (step
# 10000 of v5_t93_cpu) side by side at accuracy targets 0.93 / 0.92 / 0.91, fp32 (faster than bf16 at 128 px on the
# H100: docs/default_model_v5/bench_train_cuda.txt), batch 32, the v5 recipe (docs/default_model_v5/cpu_run_t93.sh),
# on the 229 training photos NOT in data/select (docs/default_model_v6/train_heldout_select.txt); beside them, the
# detector's fourth stage (fine-tune of the shipped detector on fresh synthetic scenes from the whole training split).
# fp16 releases of each final checkpoint + logs into $OUT. Pre-registered: rule.md beside this file.
#   Carried to the GPU machine: .gpu/photos (the 255 training photos re-saved at short side 320), .gpu/site (lpips
#   0.1.4, pure Python), .gpu/site_bch (bchlib 2.1.3 cp312 manylinux wheel, unpacked): the GPU image lacks both.
#   Leave the ONNX files behind for the call (64 MiB): `git rm -q --cached pretrained/onnx/*.onnx; echo
#   '/pretrained/onnx/*.onnx' >> .git/info/exclude`, afterwards `git reset -q pretrained/onnx` and drop that line.
#   MIN=8 bash docs/default_model_v6/gpu_run.sh   (from the repo root; OUT defaults to out/gpu_v6)
set -u
MIN=${MIN:-8}; BS=${BS:-32}; WORKERS=${WORKERS:-3}; OUT=${OUT:-out/gpu_v6}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.gpu/site:$PWD/.gpu/site_bch${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
python3 -c "import torch, lpips, bchlib; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
rm -rf logs/v6_* checkpoints/v6_* logs/det5 checkpoints/det5 .gpu/photos_hs   # a warm machine keeps an earlier try's
mkdir -p .gpu/photos_hs && while read -r f; do cp ".gpu/photos/$f" .gpu/photos_hs/; done < docs/default_model_v6/train_heldout_select.txt
COMMON="--train_path .gpu/photos_hs --random_crop 0.25 --size 128 --batch_size $BS --num_steps 200000 --time_limit $MIN \
 --init_from ${INIT:-pretrained/stegastamp_128.pth} --no_im_loss_steps 0 --secret_warmup_acc 0.9 --amp none \
 --workers $WORKERS --borders white --y_scale 1 --u_scale 100 --v_scale 100 --jpeg_quality 50 --rnd_trans 0.15 \
 --secret_loss_scale 1.5 --l2_loss_scale 2 --lpips_loss_scale 1.5 --G_loss_scale 0.5 --l2_loss_ramp 1000 \
 --lpips_loss_ramp 1000 --G_loss_ramp 1000 --rnd_trans_ramp 1000 --l2_edge_delay 0 --l2_edge_ramp 1000 \
 --lpips_backbone bundled --adaptive_rate 0.1 --log_interval 500 --img_interval 5000 --last_every 2000 \
 --ckpt_every 100000 --eval_batches 20 --no_progress"
TARGETS=${TARGETS:-"93 92 91"}; SEED=70; RUNS=""; PIDS=""
for t in $TARGETS; do
  r=v6_t$t; RUNS="$RUNS $r"; SEED=$((SEED + 1))
  python3 train_pytorch.py $r $COMMON --seed $SEED --adaptive_image_loss 0.$t > "$OUT/$r.log" 2>&1 &
  PIDS="$PIDS $!"
done
if [ "${DET:-1}" = 1 ]; then   # the detector: not watched below, its failure does not stop the others
  python3 train_detector.py det5 --train_path .gpu/photos --num_steps ${DET_STEPS:-8000} --size 256 --batch_size 16 \
    --lr 1e-3 --seed 5 --workers ${DET_WORKERS:-4} --init_from pretrained/detector.pth --time_limit $MIN \
    --log_interval 500 --last_every 2000 --ckpt_every 100000 --no_progress > "$OUT/det5.log" 2>&1 &
fi
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
for r in $RUNS det5; do
  [ -e checkpoints/$r ] || continue
  python3 release_checkpoint.py checkpoints/$r/${r}_final.pth "$OUT/$r.pth" \
    || python3 release_checkpoint.py checkpoints/$r/${r}_last.pth "$OUT/$r.pth"
done
tail -n 3 "$OUT"/*.log
tar czf "$OUT/logs.tgz" logs/v6_* logs/det5 "$OUT"/*.log 2>/dev/null && rm -f "$OUT"/*.log  # at most 8 files come back
