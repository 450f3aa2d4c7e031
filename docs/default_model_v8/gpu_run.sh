#!/usr/bin/env bash
# Session 14 (one NVIDIA H100 lent for 15 minutes): v7's fine-tune (finetune_encoder.py: the encoder against its frozen
# decoder) goes on from the released v7 for MIN minutes in four variants side by side, each measured against v6's
# encoder (--reference, as v7's own run was): energy weight 0.35 / 0.5 / 0.75 at 2 copies per crop, and 0.5 at 4
# copies; batch 16 (v7: 8), the 255 training photos (re-saved at JPEG q90 so that the tree fits the 64 MiB that
# travels). Pre-registered: rule.md beside this file. What comes back: each run's encoders (fp16, every kept
# checkpoint + the final; the decoder is v6's, unchanged) in $OUT/<run>_encoders.pth, and the logs.
#   Carried: .gpu/photos (data/photos/train as JPEG q90, 24 MB). Left behind for the call (the tree must stay under
#   64 MiB; neither is used here): `git rm -q --cached pretrained/onnx/*.onnx pretrained/lpips_alexnet.npz;
#   printf '/pretrained/onnx/*.onnx\n/pretrained/lpips_alexnet.npz\n' >> .git/info/exclude`, afterwards
#   `git reset -q pretrained` and drop those lines.
#   Unpack here: python docs/default_model_v8/unpack.py OUT_DIR checkpoints/v8   (full checkpoints with v7's decoder)
#   Runs with --train_decoder (in EXTRA) come back as the middle kept checkpoint and the final only, each decoder in
#   <run>_decoder_<step>.pth beside <run>_encoders.pth (a file may hold 16 MiB); unpack.py puts each back with its own.
#   MIN=8 bash docs/default_model_v8/gpu_run.sh   (from the repo root; OUT defaults to out/gpu_v8)
# Session 17's runs from v11 (docs/default_model_v12/rule.md; pretrained/stegastamp_128.pth, then v7, also left behind;
# v11 was then pretrained/stegastamp_128_v11.pth and is pretrained/stegastamp_128.pth since):
#   INIT=pretrained/stegastamp_128_v11.pth REFERENCE=pretrained/stegastamp_128_v6.pth BS=32 CKPT_EVERY=500 \
#   RUNS="v12_w75 v12_w100 v12_w150 v12_w200" EXTRA="--batch_views --no-tensorboard" MIN=8 bash docs/default_model_v8/gpu_run.sh
# Session 18's runs from v14 (docs/default_model_v15/rule.md; v14 released to .gpu/, the default left behind too):
#   INIT=.gpu/v14_joint_5500.pth REFERENCE=pretrained/stegastamp_128_v6.pth BS=32 CKPT_EVERY=500 \
#   RUNS="v15_w100 v15_w150" EXTRA="--batch_views --no-tensorboard" MIN=2.5 bash docs/default_model_v8/gpu_run.sh
# Next (docs/default_model_v15/rule_v16.md on a GPU; write its rule first): v14 against v11 as the reference, so the
# decoder learns v11's images too; leave v6 and v7 behind instead of the default (v11 and v14 travel):
#   INIT=pretrained/stegastamp_128_v14.pth REFERENCE=pretrained/stegastamp_128.pth BS=32 CKPT_EVERY=500 \
#   RUNS="v17_w40 v17_w60" EXTRA="--batch_views --no-tensorboard" MIN=8 bash docs/default_model_v8/gpu_run.sh
set -u
MIN=${MIN:-8}; OUT=${OUT:-out/gpu_v8}; PHOTOS=${PHOTOS:-.gpu/photos}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${THREADS:-2}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
RUNS=${RUNS:-"v8_w35 v8_w50 v8_w75 v8_w50v4"}; PIDS=""
for r in $RUNS; do rm -rf "logs/$r" "checkpoints/$r"; done   # a warm machine keeps an earlier try's
COMMON="--init_from ${INIT:-pretrained/stegastamp_128_v7.pth} --reference ${REFERENCE:-pretrained/stegastamp_128.pth}
 --train_path $PHOTOS
 --num_steps 1000000 --time_limit $MIN --batch_size ${BS:-16} --workers ${WORKERS:-2} --log_interval 100
 --last_every 1000 --ckpt_every ${CKPT_EVERY:-1000} --no_progress ${EXTRA:-}"
declare -A FLAGS=([v8_w35]="--energy_weight 0.35 --seed 81" [v8_w50]="--energy_weight 0.5 --seed 82"
                  [v8_w75]="--energy_weight 0.75 --seed 83" [v8_w50v4]="--energy_weight 0.5 --views 4 --seed 84"
                  [v12_w75]="--energy_weight 0.75 --seed 121" [v12_w100]="--energy_weight 1.0 --seed 122"
                  [v12_w150]="--energy_weight 1.5 --seed 123" [v12_w200]="--energy_weight 2.0 --seed 124"
                  [v15_w100]="--energy_weight 1.0 --seed 151 --train_decoder"
                  [v15_w150]="--energy_weight 1.5 --seed 152 --train_decoder"   # the decoder trained too: v13's line
                  [v17_w40]="--energy_weight 0.4 --seed 171 --train_decoder"    # v11 the reference: rule_v16.md
                  [v17_w60]="--energy_weight 0.6 --seed 172 --train_decoder")
for r in $RUNS; do
  python3 finetune_encoder.py $r $COMMON ${FLAGS[$r]} > "$OUT/$r.log" 2>&1 &
  PIDS="$PIDS $!"
done
for _ in $(seq 60); do  # fail fast: a run that stops before its 100th step ends the call at once
  sleep 3; started=0
  for r in $RUNS; do
    grep -q "^step 000100" "$OUT/$r.log" && started=$((started + 1))
    grep -q "error:\|Traceback" "$OUT/$r.log" && { echo "run $r failed"; tail -n 20 "$OUT/$r.log"; kill $PIDS 2>/dev/null; exit 1; }
  done
  [ $started -eq $(echo $RUNS | wc -w) ] && break
done
tail -n 1 "$OUT"/*.log
wait
tail -n 3 "$OUT"/*.log
python3 - "$OUT" $RUNS <<'PY'
import glob, os, re, sys, torch
out, runs = sys.argv[1], sys.argv[2:]
for r in runs:
    kept = sorted(glob.glob(f"checkpoints/{r}/{r}_[0-9]*.pth"), key=lambda p: int(re.findall(r"_(\d+)\.pth$", p)[0]))
    final = f"checkpoints/{r}/{r}_final.pth"
    joint = os.path.exists(final) and torch.load(final, map_location="cpu", weights_only=True)["train_args"].get(
        "train_decoder", False)                      # the decoder trained too: each kept step needs its own decoder
    half = lambda state: {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    if joint:     # the middle kept checkpoint and the final, their decoders in files of their own (~11 MB each)
        kept = kept[(len(kept) - 1) // 2:(len(kept) - 1) // 2 + 1] + [final]
    else:
        kept = kept[::max(1, -(-len(kept) // 5))] + [final]   # at most 5 + the final
    encoders, train_args = {}, {}
    for p in kept:
        if os.path.exists(p):
            c = torch.load(p, map_location="cpu", weights_only=True)
            train_args = c["train_args"]
            encoders[int(c["step"])] = half(c["encoder"])
            if joint:
                torch.save({"run": r, "step": int(c["step"]), "decoder": half(c["decoder"])},
                           f"{out}/{r}_decoder_{int(c['step'])}.pth")
    torch.save({"run": r, "encoders": encoders, "train_args": train_args}, f"{out}/{r}_encoders.pth")
    print(r, "steps", sorted(encoders), f"{os.path.getsize(f'{out}/{r}_encoders.pth') / 1e6:.1f} MB")
PY
tar czf "$OUT/logs.tgz" $(for r in $RUNS; do [ -d "logs/$r" ] && echo "logs/$r"; done) "$OUT"/*.log 2>/dev/null && rm -f "$OUT"/*.log  # at most 8 files come back
