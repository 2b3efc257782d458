#!/usr/bin/env python3
"""The Mosaic scan kernels under Nsight Compute: what their warps wait on, from hardware counters.

    ncu --clock-control none --profile-from-start off --csv --page details \
        --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats \
        --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        python3 experiments/profile_scan_kernels.py --shapes 128,197,768 --dirs one > ncu.csv

(`experiments/gpu_suite.sh scan_ncu` runs it.) Each case is compiled and run a few times first;
then the profiler is switched on around exactly one call (`cudaProfilerStart` / `Stop`, which is
what `--profile-from-start off` waits for), so ncu sees only that call's kernels and none of the
compilation's, warm-up's or input generation's. The ablations of `bench_scan.py`
(`MosaicScanConfig.ablation`) time what removing one part of the work saves; the counters say
why the rest takes the time it does (stall reasons per warp, occupancy, pipe utilisation).
Needs a Hopper GPU; without ncu it runs the calls and profiles nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util

import jax
import jax.numpy as jnp

import bench_scan


def _cuda_runtime():
    """The CUDA runtime jax loaded (its pip wheel's libcudart), for the profiler's start/stop."""
    try:
        from cuda.bindings import runtime  # cuda-python, where installed

        return lambda name: getattr(runtime, name)
    except ImportError:
        pass
    for lib in ("libcudart.so.13", "libcudart.so.12", ctypes.util.find_library("cudart")):
        try:
            rt = ctypes.CDLL(lib)
            return lambda name: getattr(rt, name)
        except (OSError, TypeError):
            continue
    raise RuntimeError("profile_scan_kernels: no CUDA runtime library found to start the profiler")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="128,197,768;8,6085,384", help="';'-separated batch,length,channels (N = 16)")
    ap.add_argument("--dirs", default="one", help="comma-separated of one, fused")
    ap.add_argument("--modes", default="fwd,fwdbwd", help="comma-separated of fwd, fwdbwd")
    ap.add_argument("--backend", default="mosaic", help="a bench_scan backend name, e.g. mosaic:bwd_stage_bc=false")
    args = ap.parse_args()
    if jax.default_backend() != "gpu":
        raise SystemExit("profile_scan_kernels: needs a Hopper GPU (jax sees %s)" % jax.devices())
    profiler = _cuda_runtime()
    for spec in args.shapes.split(";"):
        shape = tuple(int(v) for v in spec.split(",")) + (16,)
        for dirs in args.dirs.split(","):
            bidir = dirs == "fused"
            f = bench_scan.scan_fn(args.backend, bidir)
            inputs = bench_scan.make_inputs(100, shape, bidir, jnp.bfloat16)
            dout = jax.random.normal(jax.random.PRNGKey(200), shape[:3], jnp.bfloat16)
            for mode in args.modes.split(","):
                step = (jax.jit(f) if mode == "fwd" else
                        jax.jit(lambda a, d: jax.vjp(f, a)[1](d)[0]))
                call = (lambda: step(inputs)) if mode == "fwd" else (lambda: step(inputs, dout))
                for _ in range(3):
                    jax.block_until_ready(call())
                print(f"profiling {args.backend} {shape} {dirs} {mode}", flush=True)
                profiler("cudaProfilerStart")()
                jax.block_until_ready(call())
                profiler("cudaProfilerStop")()


if __name__ == "__main__":
    main()
