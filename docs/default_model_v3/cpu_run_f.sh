# Sixth decoder-only run (session 7): as cpu_run_e.sh (from run 4's step 2000, the residual x0.94 again, 0.8306 of
# w_t93's), but trained WITHOUT the 26 selection photos, so that data/select is held out of this run's training:
#   mkdir -p data/train_heldout_select && for f in data/photos/train/*; do b=$(basename $f); \
#     [ -e data/select/$b ] || ln -s ../photos/train/$b data/train_heldout_select/$b; done      # 229 photos
#   bash docs/default_model_v3/cpu_run_f.sh
cd "$(dirname "$0")/../.."
nice -n 5 python train_pytorch.py v3_dec_f --train_path data/train_heldout_select --random_crop 0.25 --size 128 \
    --batch_size 16 --lr 2e-5 --num_steps 200000 --time_limit ${TL:-40} \
    ${START:---init_from pretrained/stegastamp_128.pth} --seed 36 \
    --amp bf16 --channels_last --workers 1 --borders white --jpeg_quality 50 --rnd_trans 0.15 --rnd_trans_ramp 0 \
    --rnd_bri_ramp 0 --rnd_sat_ramp 0 --rnd_hue_ramp 0 --rnd_noise_ramp 0 --contrast_ramp 0 --jpeg_quality_ramp 0 \
    --freeze_encoder --residual_scale 0.94 --residual_scale_ramp 500 --log_interval 200 --img_interval 2000 \
    --last_every 500 --ckpt_every 1000 --eval_batches 20 --no_progress "$@"
