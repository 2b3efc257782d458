#!/bin/bash
# The GPU measurements of experiments/results/, in one script, one stage per argument:
#
#     OUT=/tmp/gpu bash experiments/gpu_suite.sh scan models224 highres vim_vs_deit
#
# Stages: scan (bench_scan.py: the Mosaic kernels checked against float64, then timed beside the
# Triton ones at every shape: 7.3 minutes on an H200), scan_bound (the Mosaic kernels with one part
# of their work taken out at a time, against the default: 2.6 minutes), scan_next (the kernels'
# latest default changes timed against the settings they replaced: B/C staged in the backward, the
# segment count of both directions' backward at 6085 tokens; and chunks of 8 tokens, half the
# channel-sum barriers per token), scan_ncu (profile_scan_kernels.py under Nsight Compute: the Mosaic kernels'
# stall reasons, occupancy and pipe use at NCU_SHAPES, default 128,197,768), models224 / highres (bench_models.py sections; models224_unrolled with the blocks
# unrolled), profile (profile_model.py: kernel time by kind of PROFILE_MODELS, default vim_small,
# inference and training, scanned and unrolled blocks, the optimised HLO beside it), scaling
# (bench_scaling.py: DP vs FSDP on every GPU of the machine), vim_vs_deit (ablate.py,
# Vim-Ti vs DeiT-Ti on Fashion-MNIST, EPOCHS epochs x 3 seeds), segment (segment_vim_vs_deit.py:
# UperNet-Vim-Ti vs UperNet-DeiT-Ti on the Fashion-MNIST scenes at SIZES, STEPS steps x 2 seeds, in SEG_WORKDIR,
# whose finished runs a later call reads back instead of training them again),
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
nvidia-smi -L; echo "kernel $(uname -r)"  # Firecracker kernels let ncu read counters, gVisor (4.4.0) does not
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
    scan_next)  # this campaign's default changes against the settings they replaced, in one run
      mkdir -p "$OUT/scan_next"
      python3 experiments/bench_scan.py --out "$OUT/scan_next" --checks none --variant-bwd --reps 10 --inner 5 \
        --backends mosaic,mosaic:bwd_stage_bc=false,mosaic:bwd_chunk=8 --shapes 0,2 --dirs one,fused 2>&1 | grep "^time " | cut -c1-200
      python3 experiments/bench_scan.py --out "$OUT/scan_next" --append --checks none --variant-bwd --reps 10 \
        --inner 5 --backends mosaic:bwd_segments=6 --shapes 2 --dirs fused 2>&1 | grep "^time " | cut -c1-200 ;;
    scan_ncu)  # hardware counters of the Mosaic kernels: stall reasons, occupancy, pipe use (one call each)
      # One ncu process per mode, so that a forward's report survives a backward that runs out of
      # time: ncu writes its report only when the program exits, after replaying every kernel once
      # per section (both modes in one process took over 200 s at 128,197,768).
      for mode in fwd fwdbwd; do
        timeout "${NCU_TIMEOUT_S:-300}" ncu --clock-control none --profile-from-start off --csv --page details \
          --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats \
          --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis python3 experiments/profile_scan_kernels.py \
          --shapes "${NCU_SHAPES:-128,197,768}" --dirs one --modes $mode > "$OUT/scan_ncu_$mode.csv" 2> "$OUT/scan_ncu_$mode.log"
        echo "ncu $mode rc $?"; tail -3 "$OUT/scan_ncu_$mode.log"
        grep -E '"(Registers Per Thread|Achieved Occupancy|Theoretical Occupancy|Block Limit Registers|Block Limit Shared Mem|Issued Warp Per Scheduler|No Eligible|Warp Cycles Per Issued Instruction)"' \
          "$OUT/scan_ncu_$mode.csv" | cut -c1-220
      done ;;
    models224)
      python3 experiments/bench_models.py --sections 224 --budget-s "${BUDGET_S:-240}" \
        --results-dir "$OUT" 2>&1 | tail -60 ;;
    models224_unrolled)  # both families with their blocks unrolled (no scan over layers)
      python3 experiments/bench_models.py --sections 224 --budget-s "${BUDGET_S:-240}" --unroll-blocks \
        --results-dir "$OUT" 2>&1 | tail -60 ;;
    highres)
      python3 experiments/bench_models.py --sections highres --budget-s "${BUDGET_S:-200}" \
        --results-dir "$OUT" 2>&1 | tail -60 ;;
    profile)
      timeout "${PROFILE_TIMEOUT_S:-900}" python3 experiments/profile_model.py --models ${PROFILE_MODELS:-vim_small} \
        --unroll-blocks --dump-hlo \
        --out "$OUT" 2>&1 | tail -150 ;;
    vim_vs_deit)
      python3 experiments/ablate.py --grid vim_vs_deit --epochs "$EPOCHS" --seeds 3 \
        --workdir "$OUT/ablate_runs" --results-dir "$OUT" 2>&1 | grep -v "^\s*$" | tail -40 ;;
    scaling)
      python3 experiments/bench_scaling.py --model small --per-device-batch 128 --out "$OUT" 2>&1 | tail -30 ;;
    segment)
      python3 experiments/segment_vim_vs_deit.py --sizes "${SIZES:-512}" --seeds 2 --steps "${STEPS:-500}" \
        --eval-scenes "${EVAL_SCENES:-100}" --run-timeout-s "${RUN_TIMEOUT_S:-600}" --results-dir "$OUT" \
        --workdir "${SEG_WORKDIR:-runs/segment_vim_vs_deit}" 2>&1 | tail -40 ;;
    fmnist)
      python3 -m vim_jax.cli train --config experiments/configs/fashion_mnist.py --workdir /tmp/fm \
        --config.progress_bar=False 2>&1 | tee "$OUT/fashion_mnist_train.log" | tail -20 ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
echo "=== end ($(date -u +%H:%M:%S))"
