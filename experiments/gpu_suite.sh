#!/bin/bash
# The GPU measurements of experiments/results/, in one script, one stage per argument:
#
#     OUT=/tmp/gpu bash experiments/gpu_suite.sh scan models224 highres vim_vs_deit
#
# Stages: scan (bench_scan.py: the Mosaic kernels checked against float64, then timed beside the
# Triton ones at every shape: about 9 minutes), scan_bound (the Mosaic kernels with one part of
# their work taken out at a time, against the default: about 6 minutes), scan_next (options
# built since the last GPU run, checked and timed beside the default, and the backward's segment
# count: about 7 minutes), models224 / highres (bench_models.py sections), profile (profile_model.py:
# Vim-S and Vim-Ti kernel time by kind, training with and without remat), scaling
# (bench_scaling.py: DP vs FSDP on every GPU of the machine), vim_vs_deit (ablate.py,
# Vim-Ti vs DeiT-Ti on Fashion-MNIST, EPOCHS epochs x 3 seeds), segment (segment_vim_vs_deit.py:
# UperNet-Vim-Ti vs UperNet-DeiT-Ti on the Fashion-MNIST scenes at SIZES, STEPS steps x 2 seeds),
# fmnist (the full recipe).
# Results go to $OUT (default experiments/results). Python packages missing on the GPU machine
# (it has no network) are installed from wheels in $WHEELS (default .gpuwhl, made on a networked
# machine for the GPU machine's Python: `pip download grain==0.2.18 array-record cloudpickle
# portpicker ml-collections tqdm --python-version 3.12 --only-binary=:all: --no-deps -d .gpuwhl`);
# Fashion-MNIST is read from $VIM_JAX_FASHION_MNIST_DIR (default .carry/fashion-mnist, the four
# IDX .gz files, e.g. copied from the Debian package's /usr/share/datasets/fashion-mnist).
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
    scan)  # the targets' file: the kernels checked against float64, then timed side by side
      python3 experiments/bench_scan.py --out "$OUT" --backends mosaic,pallas --check-backends mosaic \
        --checks quick --check-shapes-json '[[1,1,130,16],[2,33,200,13],[4,197,768,16],[1,6085,384,16]]' \
        --reps 10 --inner 5 2>&1 | tee "$OUT/bench_scan.log" | grep -E "^(check|time) " | cut -c1-200 ;;
    scan_bound)  # what bounds the Mosaic kernels: each ablation's time against the default's, same run
      mkdir -p "$OUT/scan_bound"
      python3 experiments/bench_scan.py --out "$OUT/scan_bound" --checks none --variant-bwd --reps 10 --inner 5 \
        --backends mosaic,mosaic:ablation=no_exp,mosaic:ablation=bc_once,mosaic:ablation=no_sums \
        --shapes 0,2 --dirs one 2>&1 | grep "^time " | cut -c1-200
      python3 experiments/bench_scan.py --out "$OUT/scan_bound" --append --checks none --variant-bwd --reps 10 \
        --inner 5 --backends mosaic,mosaic:ablation=no_exp,mosaic:ablation=bc_once --shapes 0 --dirs fused \
        2>&1 | grep "^time " | cut -c1-200
      ;;
    scan_next)  # options built but not yet run on a GPU: checked against float64, then timed beside the default
      mkdir -p "$OUT/scan_next"
      new=mosaic:bwd_stage_bc=true:bwd_keep_decays=true:poly_exp_states=4  # all at once: one set of checks
      python3 experiments/bench_scan.py --out "$OUT/scan_next" --backends $new --check-backends $new --checks quick \
        --check-shapes-json '[[2,33,200,13]]' --shapes 0,2 --skip-timings 2>&1 | grep "^check " | cut -c1-200
      python3 experiments/bench_scan.py --out "$OUT/scan_next" --append --checks none --variant-bwd --reps 10 \
        --inner 5 --shapes 0,2 --dirs one \
        --backends mosaic,mosaic:bwd_stage_bc=true,mosaic:bwd_keep_decays=true,mosaic:poly_exp_states=4,$new \
        2>&1 | grep "^time " | cut -c1-200
      python3 experiments/bench_scan.py --out "$OUT/scan_next" --append --checks none --variant-bwd --reps 10 \
        --inner 5 --backends mosaic:bwd_segments=6,mosaic:bwd_segments=22 --shapes 2 --dirs one \
        2>&1 | grep "^time " | cut -c1-200 ;;
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
