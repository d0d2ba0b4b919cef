#!/usr/bin/env bash
# Issue 26's ablation of the GAN recipe's patch terms, under the new recipe (no fade on --init, D warm-up,
# EMA half-life, the default validation split): equal CPU time, two seeds per arm, one thread each, two
# arms at a time on a 2-core machine. Keep a term only if it wins on the validation rule by more than the
# seed spread (progsr/TRAINING.md). Usage: bash experiments/gan_ablation.sh ARM SEED MINUTES
#   ARM: control | no_grid | no_high_frequency | no_triplet | vgg_conv5 | vgg_conv5_no_grid
#   (vgg_conv5: ESRGAN's deeper perceptual features in place of the truncated LPIPS-vgg)
set -euo pipefail
arm=$1 seed=$2 minutes=$3
case "$arm" in
    control) extra=() ;;
    no_grid) extra=(--set grid_weight=0) ;;
    no_high_frequency) extra=(--set high_frequency_weight=0) ;;
    no_triplet) extra=(--set triplet_weight=0) ;;
    vgg_conv5) extra=(--set perceptual_net=vgg_conv5) ;;
    vgg_conv5_no_grid) extra=(--set perceptual_net=vgg_conv5 --set grid_weight=0) ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
esac
OMP_NUM_THREADS=1 .venv/bin/progsr train --config x8_gan --init psnr --out "runs/ablation_${arm}_s${seed}" \
    --threads 1 --set "seed=$seed" --budget-minutes "$minutes" --max-minutes "$(awk "BEGIN {print $minutes + 10}")" "${extra[@]}"
