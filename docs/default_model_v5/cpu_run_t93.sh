#!/usr/bin/env bash
# Session 9: the GPU variant v5_t93 (above the shipped model's curve by +0.035 on data/select, under the recovery
# floor) continued on the CPU with the same recipe and target, batch 16, on the 229 training photos NOT in
# data/select. Pre-registered in rule.md (section "CPU continuation"). Its start, checkpoints/v5_gpu/v5_t93.pth, is
# the fp16 release that gpu_run.sh brought back (not in git: 13.6 MB; rerun gpu_run.sh to remake it).
#   bash docs/default_model_v5/cpu_run_t93.sh
# Session 11 reuses it for the shipped v6_t92's CPU continuation (docs/default_model_v6/rule.md): RUN, TARGET and SEED
# name the run, its accuracy target and seed (defaults: this run's).
cd "$(dirname "$0")/../.."
nice -n 5 python train_pytorch.py ${RUN:-v5_t93_cpu} --train_path data/train_heldout_select --random_crop 0.25 --size 128 \
    --batch_size 16 --num_steps 200000 --time_limit ${TL:-75} \
    ${START:---init_from checkpoints/v5_gpu/v5_t93.pth} --seed ${SEED:-61} --no_im_loss_steps 0 --secret_warmup_acc 0.9 \
    --amp bf16 --channels_last --workers 1 --borders white --y_scale 1 --u_scale 100 --v_scale 100 \
    --jpeg_quality 50 --rnd_trans 0.15 --secret_loss_scale 1.5 --l2_loss_scale 2 --lpips_loss_scale 1.5 \
    --G_loss_scale 0.5 --l2_loss_ramp 1000 --lpips_loss_ramp 1000 --G_loss_ramp 1000 --rnd_trans_ramp 1000 \
    --l2_edge_delay 0 --l2_edge_ramp 1000 --lpips_backbone bundled --adaptive_image_loss ${TARGET:-0.93} --adaptive_rate 0.1 \
    --log_interval 200 --img_interval 2000 --last_every 500 --ckpt_every 1000 --eval_batches 20 --no_progress "$@"
