#!/bin/bash
# The GPU measurements of experiments/results/, in one script, one stage per argument:
#
#     OUT=/tmp/gpu bash experiments/gpu_suite.sh scan models224 highres vim_vs_deit
#
# Stages: scan (bench_scan.py: float64 checks, then every backend timed, plus the pallas
# fast_math variant), models224 / highres (bench_models.py sections), profile (profile_model.py:
# Vim-S and Vim-Ti kernel time by kind, training with and without remat), scaling
# (bench_scaling.py: DP vs FSDP on every GPU of the machine), vim_vs_deit (ablate.py,
# Vim-Ti vs DeiT-Ti on Fashion-MNIST, EPOCHS epochs x 3 seeds), segment (segment_vim_vs_deit.py:
# UperNet-Vim-Ti vs UperNet-DeiT-Ti on the Fashion-MNIST scenes at SIZES, STEPS steps x 2 seeds),
# fmnist (the full recipe).
# Results go to $OUT (default experiments/results). Python packages missing on the GPU machine
# (it has no network) are installed from wheels in $WHEELS (default .gpuwhl); Fashion-MNIST is
# read from $VIM_JAX_FASHION_MNIST_DIR (default .carry/fashion-mnist, the four IDX .gz files).
set -o pipefail
OUT=${OUT:-experiments/results}
WHEELS=${WHEELS:-.gpuwhl}
EPOCHS=${EPOCHS:-6}
mkdir -p "$OUT"
nvidia-smi -L
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export VIM_JAX_FASHION_MNIST_DIR=${VIM_JAX_FASHION_MNIST_DIR:-$PWD/.carry/fashion-mnist}
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"

for stage in "$@"; do
  echo "=== $stage ($(date -u +%H:%M:%S))"
  case $stage in
    scan)
      python3 experiments/bench_scan.py --out "$OUT" --checks quick --reps 10 --inner 5 \
        --sweep '[{"fast_math":true}]' 2>&1 | tee "$OUT/bench_scan.log" ;;
    models224)
      python3 experiments/bench_models.py --sections 224 --budget-s "${BUDGET_S:-240}" \
        --results-dir "$OUT" 2>&1 | tail -60 ;;
    highres)
      python3 experiments/bench_models.py --sections highres --budget-s "${BUDGET_S:-200}" \
        --results-dir "$OUT" 2>&1 | tail -60 ;;
    profile)
      python3 experiments/profile_model.py --models vim_small vim_tiny --remat --out "$OUT" 2>&1 | tail -150 ;;
    vim_vs_deit)
      python3 experiments/ablate.py --grid vim_vs_deit --epochs "$EPOCHS" --seeds 3 \
        --workdir "$OUT/ablate_runs" --results-dir "$OUT" 2>&1 | grep -v "^\s*$" | tail -40 ;;
    scaling)
      python3 experiments/bench_scaling.py --model small --per-device-batch 128 --out "$OUT" 2>&1 | tail -30 ;;
    segment)
      python3 experiments/segment_vim_vs_deit.py --sizes "${SIZES:-512}" --seeds 2 --steps "${STEPS:-500}" \
        --run-timeout-s "${RUN_TIMEOUT_S:-600}" --results-dir "$OUT" --workdir /tmp/segment_runs 2>&1 | tail -40 ;;
    fmnist)
      python3 -m vim_jax.cli train --config experiments/configs/fashion_mnist.py --workdir /tmp/fm \
        --config.progress_bar=False 2>&1 | tee "$OUT/fashion_mnist_train.log" | tail -20 ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
echo "=== end ($(date -u +%H:%M:%S))"
