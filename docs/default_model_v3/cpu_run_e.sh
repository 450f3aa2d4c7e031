# Fifth decoder-only run: from run 4's step 2000 (shipped since session 7; its encoder is w_t93's at residual scale
# 0.8836), the residual scaled by 0.94 once more (0.8306 of w_t93's, about +0.5 dB) over 500 steps, then held; 60 min.
#   bash docs/default_model_v3/cpu_run_e.sh
cd "$(dirname "$0")/../.."
nice -n 5 python train_pytorch.py v3_dec_e --train_path data/photos/train --random_crop 0.25 --size 128 \
    --batch_size 16 --lr 2e-5 --num_steps 200000 --time_limit ${TL:-60} \
    ${START:---init_from pretrained/stegastamp_128.pth} --seed 35 \
    --amp bf16 --channels_last --workers 1 --borders white --jpeg_quality 50 --rnd_trans 0.15 --rnd_trans_ramp 0 \
    --rnd_bri_ramp 0 --rnd_sat_ramp 0 --rnd_hue_ramp 0 --rnd_noise_ramp 0 --contrast_ramp 0 --jpeg_quality_ramp 0 \
    --freeze_encoder --residual_scale 0.94 --residual_scale_ramp 500 --log_interval 200 --img_interval 2000 \
    --last_every 500 --ckpt_every 1000 --eval_batches 20 --no_progress "$@"
