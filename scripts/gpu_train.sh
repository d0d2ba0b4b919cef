#!/usr/bin/env bash
# The one-call GPU run (progsr/TRAINING.md, "A one-call GPU run").
#
#   bash scripts/gpu_train.sh prepare
#       Here, before the call: copies the 291 training images into .device/data and the two wheels the
#       device's python lacks (safetensors, tqdm) into .device/wheels. .device/ is git-ignored; carry it.
#   bash scripts/gpu_train.sh run OUT MINUTES [progsr train options ...]
#       There: trains the release recipe for MINUTES of training time (the cosine ends annealed with it),
#       checkpointing every 1.5 min into OUT/run, then exports the EMA generator to OUT. Later options win,
#       e.g. --init OTHER.safetensors or --set batch_size=32. MODEL=real trains the real-world model instead
#       (experiments/real_aa.json from the shipped real weights; exported as progsr_x8_real.safetensors).
#       DEVICE=cpu runs the same path on a CPU; PYTHON picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
prepare)
    shared=${PROGSR_SHARED:-../shared}
    mkdir -p .device/data .device/wheels
    cp -r "$shared/data/train/T91" "$shared/data/train/BSD200" .device/data/
    pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
        -d .device/wheels "safetensors==0.8.0" "tqdm==4.70.1" || pip download --quiet --no-deps -d .device/wheels safetensors tqdm
    du -sh .device
    ;;
run)
    out=${2:?usage: gpu_train.sh run OUT MINUTES [options]}
    minutes=${3:?usage: gpu_train.sh run OUT MINUTES [options]}
    shift 3
    py=${PYTHON:-python}
    model=${MODEL:-psnr}
    case "$model" in
    psnr) recipe=(--config x8_psnr --init weights/progsr_x8_psnr.safetensors) ;;
    real) recipe=(--config experiments/real_aa.json --init weights/progsr_x8_real.safetensors) ;;
    *) echo "gpu_train.sh: MODEL must be psnr or real, got $model" >&2; exit 2 ;;
    esac
    "$py" -c "import safetensors, tqdm" 2>/dev/null || "$py" -m pip install --quiet --no-index --find-links .device/wheels safetensors tqdm
    mkdir -p "$out"
    status=0
    PYTHONPATH=$PWD "$py" -m progsr.train "${recipe[@]}" \
        --data .device/data/T91 .device/data/BSD200 --out "$out/run" --device "${DEVICE:-cuda}" \
        --budget-minutes "$minutes" --iters 100000000 --threads "${THREADS:-8}" \
        --set batch_size=64 --set lr=4e-4 --set warmup_iters=200 --set stage1_iters=0 \
        --set 'fade_iters=[0,0]' --set 'stable_iters=[0,0]' --set ckpt_every_minutes=1.5 --set ckpt_every=100000000 \
        --set keep_ckpts=1 --set val_every=3000 --set log_every=100 "$@" || status=$?
    # What comes back (8 files at most): the checkpoint, config.json, metrics.jsonl, learning_curve.png, a sample
    # grid or two, and the exported EMA generator.
    PYTHONPATH=$PWD "$py" -m progsr.cli export --overwrite "$out/run" "$out/progsr_x8_$model.safetensors" || status=$?
    exit $status
    ;;
*)
    sed -n 2,12p "$0"
    exit 2
    ;;
esac
