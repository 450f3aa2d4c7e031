# Decoder-only fine-tuning of the shipped model at a residual annealed from 1.0 to 0.55 (our --freeze_encoder /
# --residual_scale flags), on this project's CPU. From the repo root: bash docs/default_model_v3/cpu_run.sh
# Resume: START="--pretrained checkpoints/v3_dec/v3_dec_last.pth" bash docs/default_model_v3/cpu_run.sh
cd "$(dirname "$0")/../.."
nice -n 5 python train_pytorch.py v3_dec --train_path data/photos/train --random_crop 0.25 --size 128 --batch_size 8 \
    --num_steps 200000 --time_limit ${TL:-110} ${START:---init_from pretrained/stegastamp_128.pth} --seed 31 \
    --amp bf16 --channels_last --workers 1 --borders white --jpeg_quality 50 --rnd_trans 0.15 --rnd_trans_ramp 0 \
    --rnd_bri_ramp 0 --rnd_sat_ramp 0 --rnd_hue_ramp 0 --rnd_noise_ramp 0 --contrast_ramp 0 --jpeg_quality_ramp 0 \
    --freeze_encoder --residual_scale 0.55 --residual_scale_ramp 16000 --log_interval 200 --img_interval 2000 \
    --last_every 500 --ckpt_every 2000 --eval_batches 20 --no_progress "$@"
