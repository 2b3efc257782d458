#!/usr/bin/env python3
"""Lowers the jitted value and gradient of a scan op with the Mosaic GPU kernels for CUDA, on any machine.

    PYTHONPATH=. python3 experiments/lower_for_cuda.py                       # the default cases
    PYTHONPATH=. python3 experiments/lower_for_cuda.py --ops selective_scan --shapes 8,6085,384,16

`jax.jit(jax.value_and_grad(loss)).trace(*ShapeDtypeStructs).lower(lowering_platforms=("cuda",))`
runs every Mosaic GPU lowering rule the forward and backward kernels use (and the XLA around them)
without a GPU: what fails here would fail on the GPU before compiling. It does not run ptxas or the kernels.
The kernels' availability check (a Hopper GPU) is switched off for the run. The loss is the sum of
the output against a fixed cotangent, differentiated with respect to every input; activations are
in `--dtype` (x, z, dt_low, B, C, u, delta), the per-channel parameters float32, as in the model.

Shapes are batch,length,channels,state[,dt_rank] (dt_rank for the conv ops: ceil(D / 16), D the
model width, E = 2 D channels); the defaults are Vim-S at 224 px (128, 197, 768, N 16, R 24) and
Vim-Ti at 1248 px (8, 6085, 384, N 16, R 12). Prints one line per case; exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback

import jax
import jax.numpy as jnp

import pallas_kernels.mosaic_scan as mss
from pallas_kernels.mosaic_scan import availability
from vim_jax import ops

OPS = ("selective_scan", "selective_scan_bidirectional", "conv_selective_scan", "conv_selective_scan_bidirectional")
DEFAULT_SHAPES = "128,197,768,16,24;8,6085,384,16,12"
D_CONV = 4
# Inputs in the activation dtype; the others (conv_w, conv_b, dt_w, A, D, delta_bias) are float32.
ACTIVATIONS = ("x", "u", "delta", "dt_low", "B", "C", "z")


def input_specs(op: str, shape, act_dtype) -> dict:
    """Keyword arguments of `op` as ShapeDtypeStructs (every optional input given)."""
    batch, length, channels, state, *rank = shape
    lead = (2,) if op.endswith("bidirectional") else ()
    shapes = dict(A=lead + (channels, state), B=lead + (batch, length, state), C=lead + (batch, length, state),
                  D=lead + (channels,), z=(batch, length, channels), delta_bias=lead + (channels,))
    if op.startswith("conv_"):
        if not rank:
            raise ValueError(f"{op} needs shapes with a dt_rank (batch,length,channels,state,dt_rank), got {shape}")
        shapes.update(x=(batch, length, channels), conv_w=lead + (D_CONV, channels), conv_b=lead + (channels,),
                      dt_low=lead + (batch, length, rank[0]), dt_w=lead + (rank[0], channels))
    else:
        shapes.update(u=lead + (batch, length, channels), delta=lead + (batch, length, channels))
    return {k: jax.ShapeDtypeStruct(s, act_dtype if k in ACTIVATIONS else jnp.float32) for k, s in shapes.items()}


def lower(op: str, shape, act_dtype, backend):
    """The lowered value and gradient (a `jax.stages.Lowered`) of `op` at `shape` for CUDA."""
    specs = input_specs(op, shape, act_dtype)
    names = sorted(specs)
    fn = getattr(ops, op)

    def loss(*args):
        out = fn(**dict(zip(names, args)), backend=backend)
        weights = jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)  # any fixed cotangent
        return jnp.sum(out.astype(jnp.float32) * weights)

    # The value too: under `grad` alone the forward kernel's output is dead and never lowered.
    grad = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(names)))))
    return grad.trace(*(specs[k] for k in names)).lower(lowering_platforms=("cuda",))


@contextlib.contextmanager
def runnable_anywhere():
    """The kernels' availability check (a Hopper GPU) switched off, and restored afterwards."""
    real = availability.check_runnable
    availability.check_runnable = lambda arrays, interpret: None
    try:
        yield
    finally:
        availability.check_runnable = real


def mosaic_kernels(lowered) -> int:
    """How many Mosaic GPU kernel calls the lowered module holds."""
    return lowered.as_text().count("custom_call @mosaic_gpu")


def parse_config(text: str) -> mss.MosaicScanConfig:
    """'tile=8,stages=2,two_warpgroups=true' -> MosaicScanConfig (booleans, integers, strings)."""
    def value(v):
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        return int(v) if v.lstrip("-").isdigit() else v
    items = [item.split("=", 1) for item in text.split(",") if item]
    return mss.MosaicScanConfig(**{k: value(v) for k, v in items})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", default="conv_selective_scan,conv_selective_scan_bidirectional",
                    help=f"comma-separated, of {', '.join(OPS)}")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="';'-separated batch,length,channels,state[,dt_rank]")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--config", default="", help="MosaicScanConfig fields, e.g. 'tile=8,bwd_min_ctas=0'")
    args = ap.parse_args(argv)
    unknown = [op for op in args.ops.split(",") if op not in OPS]
    if unknown:
        ap.error(f"unknown ops {unknown}; expected some of {OPS}")
    backend = mss.MosaicScan(parse_config(args.config))
    failed = 0
    for op in args.ops.split(","):
        for shape in (tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")):
            try:
                with runnable_anywhere():
                    lowered = lower(op, shape, jnp.dtype(args.dtype), backend)
                kernels = mosaic_kernels(lowered)
                print(f"ok      {op} {shape} {args.dtype}: {kernels} Mosaic GPU kernel calls", flush=True)
            except Exception:  # report every case, then fail
                failed += 1
                print(f"FAILED  {op} {shape} {args.dtype}:\n{traceback.format_exc()}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
