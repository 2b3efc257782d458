#!/usr/bin/env python3
"""Compiles the Triton selective-scan kernels for CUDA targets on any machine (no GPU needed).

    PYTHONPATH=. python experiments/compile_triton_scan.py --targets 80,90 --out experiments/results

For each shape and direction mode, the backend's forward and backward are traced abstractly
(`jax.eval_shape`) with the jax-triton call replaced by a compiler for the requested targets, so
every kernel is compiled with exactly the constants, dtypes and warps the GPU run would use
(pointer arguments 16-byte aligned, as jax-triton declares them). Per kernel it reports the
registers, spills (bytes of local memory), shared memory, SASS instructions and the count of the
instructions that matter here (MUFU.EX2, SHFL, BAR, local loads and stores) from `cuobjdump`,
which ships in the triton wheel, and the compile time. Writes triton_scan_compile.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from tqdm import tqdm

from pallas_kernels.triton_scan import TritonScan, kernels, launch

SHAPES = [(128, 197, 768, 16), (128, 197, 384, 16), (8, 6085, 384, 16)]
_TRITON_TYPES = {"float32": "*fp32", "bfloat16": "*bf16", "int32": "*i32"}
_COUNTED = {"MUFU.EX2": r"MUFU\.EX2", "SHFL": r"SHFL\.", "BAR": r"\bBAR\.", "LDL/STL": r"\b(LDL|STL)\b"}


def _tool(name):
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def compile_kernel(kernel_name, dtypes, meta, num_warps, num_stages, capability):
    """Compiles one kernel; returns its resource usage and SASS statistics."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(kernels, kernel_name)
    signature = {name: _TRITON_TYPES[d] for name, d in zip(fn.arg_names, dtypes)}
    signature.update({k: "constexpr" for k in meta})
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(len(dtypes))}
    src = ASTSource(fn, signature=signature, constexprs=dict(meta), attrs=attrs)
    t0 = time.perf_counter()
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    seconds = time.perf_counter() - t0
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
    res = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage))  # spills go to STACK
    instructions = [ln for ln in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4,}\*/", ln)]
    counts = {k: sum(bool(re.search(p, ln)) for ln in instructions) for k, p in _COUNTED.items()}
    return dict(registers=int(res.get("REG", -1)), spill_bytes=int(res.get("STACK", 0)),
                shared_bytes=int(res.get("SHARED", 0)), ttgir_shared=compiled.metadata.shared,
                sass_instructions=len(instructions), compile_s=round(seconds, 1), **counts)


def kernel_calls(shape, bidir, act_dtype):
    """(kernel name, argument dtypes, constants, warps, stages) of every launch of one fwd + bwd."""
    calls = []

    def record(kernel_name, args, out_shapes, *, grid, num_warps, num_stages, **meta):
        dtypes = [str(jnp.dtype(a.dtype)) for a in args] + [str(jnp.dtype(s.dtype)) for s in out_shapes]
        calls.append((kernel_name, tuple(dtypes), dict(meta, ON_GPU=True), num_warps, num_stages))
        return [jnp.zeros(s.shape, s.dtype) for s in out_shapes]

    batch, length, channels, state = shape
    lead = (2,) if bidir else ()
    act = lambda *s: jax.ShapeDtypeStruct(lead + s, act_dtype)
    f32 = lambda *s: jax.ShapeDtypeStruct(lead + s, jnp.float32)
    args = (act(batch, length, channels), act(batch, length, channels), f32(channels, state),
            act(batch, length, state), act(batch, length, state), f32(channels),
            jax.ShapeDtypeStruct((batch, length, channels), act_dtype), f32(channels))
    revs = (False, True) if bidir else (False,)
    add = (lambda x: x) if bidir else (lambda x: x[None])

    def scan(u, delta, A, B, C, D, z, bias):
        return TritonScan().run(add(u), add(delta), add(A), add(B), add(C), add(D), z, add(bias), True, revs,
                                0.5 if bidir else 1.0)

    def fwd_bwd(*a):
        out, vjp = jax.vjp(scan, *a)
        return vjp(out)

    original = launch.triton_call
    launch.triton_call = record
    try:
        jax.eval_shape(fwd_bwd, *args)
    finally:
        launch.triton_call = original
    return calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="80,90", help="compute capabilities")
    ap.add_argument("--shapes", default="0,1,2")
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args()
    import triton

    rows = []
    plan = []
    for i in map(int, args.shapes.split(",")):
        for bidir in (False, True):
            for call in kernel_calls(SHAPES[i], bidir, jnp.bfloat16):
                for cc in map(int, args.targets.split(",")):
                    plan.append((SHAPES[i], bidir, call, cc))
    for shape, bidir, (name, dtypes, meta, warps, stages), cc in tqdm(plan, desc="compiling"):
        stats = compile_kernel(name, dtypes, meta, warps, stages, cc)
        rows.append(dict(shape=shape, bidir=bidir, kernel=name, sm=cc, block_c=meta["BLOCK_C"],
                         num_warps=warps, segments=meta["N_SEGMENTS"], **stats))
        tqdm.write(json.dumps(rows[-1]))
    os.makedirs(args.out, exist_ok=True)
    meta = dict(triton=triton.__version__, jax=jax.__version__, python=sys.version.split()[0],
                command="PYTHONPATH=. python " + " ".join(sys.argv))
    with open(os.path.join(args.out, "triton_scan_compile.json"), "w") as fh:
        json.dump(dict(meta=meta, kernels=rows), fh, indent=1)
    cols = ["shape", "bidir", "kernel", "sm", "block_c", "num_warps", "segments", "registers", "spill_bytes",
            "shared_bytes", "sass_instructions", "MUFU.EX2", "SHFL", "BAR", "LDL/STL", "compile_s"]
    lines = [f"# Triton selective-scan kernels compiled offline (triton {meta['triton']}, jax {meta['jax']})", "",
             f"Command: `{meta['command']}`. bf16 activations, N = 16, the default tiling.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    with open(os.path.join(args.out, "triton_scan_compile.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
