# Second decoder-only run: a lower learning rate and a larger batch (the first run, lr 1e-4 batch 8, lost recovery
# even at scale 0.94), the residual ramped to 0.85 over 3,000 steps. From the repo root:
#   bash docs/default_model_v3/cpu_run_b.sh
cd "$(dirname "$0")/../.."
nice -n 5 python train_pytorch.py v3_dec_b --train_path data/photos/train --random_crop 0.25 --size 128 \
    --batch_size 16 --lr 2e-5 --num_steps 200000 --time_limit ${TL:-35} \
    ${START:---init_from pretrained/stegastamp_128.pth} --seed 32 \
    --amp bf16 --channels_last --workers 1 --borders white --jpeg_quality 50 --rnd_trans 0.15 --rnd_trans_ramp 0 \
    --rnd_bri_ramp 0 --rnd_sat_ramp 0 --rnd_hue_ramp 0 --rnd_noise_ramp 0 --contrast_ramp 0 --jpeg_quality_ramp 0 \
    --freeze_encoder --residual_scale 0.85 --residual_scale_ramp 3000 --log_interval 200 --img_interval 2000 \
    --last_every 500 --ckpt_every 1000 --eval_batches 20 --no_progress "$@"
