#!/usr/bin/env bash
# Issue 26's ablation of the GAN recipe's patch terms, under the new recipe (no fade on --init, D warm-up,
# EMA half-life, the default validation split): equal CPU time, two seeds per arm, one thread each, two
# arms at a time on a 2-core machine. Keep a term only if it wins on the validation rule by more than the
# seed spread (progsr/TRAINING.md). Usage: bash experiments/gan_ablation.sh ARM SEED MINUTES
#   ARM: control | no_grid | no_high_frequency | no_triplet
#   (the vgg_conv5 arms of 2026-12-07 ran `--set perceptual_net=vgg_conv5`, with and without `grid_weight=0`:
#   ESRGAN's VGG conv5 features, since removed; experiments/README.md)
set -euo pipefail
arm=$1 seed=$2 minutes=$3
case "$arm" in
    control) extra=() ;;
    no_grid) extra=(--set grid_weight=0) ;;
    no_high_frequency) extra=(--set high_frequency_weight=0) ;;
    no_triplet) extra=(--set triplet_weight=0) ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
esac
OMP_NUM_THREADS=1 .venv/bin/progsr train --config x8_gan --init psnr --out "runs/ablation_${arm}_s${seed}" \
    --threads 1 --set "seed=$seed" --budget-minutes "$minutes" --max-minutes "$(awk "BEGIN {print $minutes + 10}")" "${extra[@]}"
