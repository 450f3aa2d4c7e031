# Third decoder-only run: as the second (lr 2e-5, batch 16), the residual ramped only to 0.94 (the least scale that
# buys the +0.5 dB of the selection rule) over 500 steps, then held, so the decoder trains longest for that scale.
#   bash docs/default_model_v3/cpu_run_c.sh
cd "$(dirname "$0")/../.."
nice -n 5 python train_pytorch.py v3_dec_c --train_path data/photos/train --random_crop 0.25 --size 128 \
    --batch_size 16 --lr 2e-5 --num_steps 200000 --time_limit ${TL:-75} \
    ${START:---init_from pretrained/stegastamp_128.pth} --seed 33 \
    --amp bf16 --channels_last --workers 1 --borders white --jpeg_quality 50 --rnd_trans 0.15 --rnd_trans_ramp 0 \
    --rnd_bri_ramp 0 --rnd_sat_ramp 0 --rnd_hue_ramp 0 --rnd_noise_ramp 0 --contrast_ramp 0 --jpeg_quality_ramp 0 \
    --freeze_encoder --residual_scale 0.94 --residual_scale_ramp 500 --log_interval 200 --img_interval 2000 \
    --last_every 500 --ckpt_every 1000 --eval_batches 20 --no_progress "$@"
