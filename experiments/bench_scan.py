#!/usr/bin/env python3
"""Selective-scan backends on one GPU: correctness against a float64 reference, then timings.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 experiments/bench_scan.py --out experiments/results

(about 5 minutes on an H100, most of it compiling: Triton's coalescing pass takes ~10 s per
backward kernel.) Checks every backend (reference, associative, pallas, mosaic) and the fused
bidirectional scan against the sequential reference run in float64 on the GPU (`jax.enable_x64`),
values and the gradients of all eight inputs, on fresh random inputs, with the allocator's free memory filled with NaN
first so that an output element no kernel wrote shows up. Then times forward and forward +
backward (`jax.vjp` with a bf16 cotangent, as in training) at the three shapes of the reference
measurement (`results/reference_h200_2026-12-01.md`: two Vim layers at 224 px and a Vim-Ti layer
at 1248 px) with bf16 activations and float32 A, D, delta_bias: median over repeats
of `inner` back-to-back calls closed by `jax.block_until_ready`, rotating three input sets.
The kernel backends (pallas, mosaic, and triton: the Pallas kernels' algorithm on jax-triton, run
only when named, e.g. `--backends mosaic,pallas,triton`) are checked at awkward shapes too and timed
side by side at each shape. `--sweep` adds pallas tiling variants; a backend named
`mosaic:tile=16:stages=2` is the mosaic kernel with that `MosaicScanConfig` (timed forward only,
unless `--variant-bwd`); `mosaic:ablation=no_exp` (or `bc_once`, `no_sums`) times the kernels with
one part of their work taken out (wrong values, never checked; see `MosaicScanConfig.ablation`), to
measure what bounds them. `--fwd-only` checks values without gradients and times forwards only.
Writes bench_scan_<device>.json / .md under --out after every measurement, so a run cut short
keeps what it measured; `--append` continues an earlier run's files (e.g. in a later GPU call).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import traceback
import types

import numpy as np

import jax
import jax.numpy as jnp

try:
    from vim_jax.ops import selective_scan, selective_scan_bidirectional
except Exception:  # another part of the package failed to import: load the ops package alone
    traceback.print_exc()
    print("warning: importing vim_jax failed; loading vim_jax.ops on its own", flush=True)
    pkg = types.ModuleType("vim_jax")
    pkg.__path__ = [os.path.join(os.path.dirname(__file__), "..", "vim_jax")]
    sys.modules["vim_jax"] = pkg
    from vim_jax.ops import selective_scan, selective_scan_bidirectional

import pallas_kernels.mosaic_scan as mss  # registers backend "mosaic"
import pallas_kernels.selective_scan as pss
import reference_numbers

OFFICIAL = reference_numbers.official_scan_ms()  # the official CUDA kernel, H200 (reference file)
SHAPES = list(OFFICIAL)
# The project's speed goal for the kernel (ms, forward / forward + backward), not yet reached.
TARGET = {(128, 197, 768, 16): (0.15, 0.6), (128, 197, 384, 16): (0.08, 0.3),
          (8, 6085, 384, 16): (0.15, 0.6)}
TARGET_BIDIR = {(128, 197, 768, 16): (0.28, 1.10), (8, 6085, 384, 16): (0.28, 1.10)}
EXP_RATE = reference_numbers.exp_rate()  # exponentials per second on the special-function units
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
KERNEL_BACKENDS = ("pallas", "mosaic", "triton")
# float32 checks of the kernel backends: Vim-S-like, long with segments, and an awkward one (odd
# length, channels not a multiple of any block, a state that is not a power of two).
F32_CHECK_SHAPES = [(4, 197, 768, 16), (2, 2500, 192, 16), (3, 77, 200, 13)]
ACTIVATIONS = ("u", "delta", "B", "C", "z")


def make_inputs(seed, shape, bidir, act_dtype):
    """Device arrays in Vim's ranges; activations in act_dtype, A, D, delta_bias float32."""
    batch, length, channels, state = shape
    lead = (2,) if bidir else ()
    ks = jax.random.split(jax.random.PRNGKey(seed), 8)
    n = lambda k, s: jax.random.normal(k, s, jnp.float32)
    x = dict(
        u=n(ks[0], lead + (batch, length, channels)),
        delta=n(ks[1], lead + (batch, length, channels)) - 1.0,
        A=-jnp.exp(0.5 * n(ks[2], lead + (channels, state))),
        B=n(ks[3], lead + (batch, length, state)),
        C=n(ks[4], lead + (batch, length, state)),
        D=n(ks[5], lead + (channels,)),
        z=n(ks[6], (batch, length, channels)),
        delta_bias=0.5 * n(ks[7], lead + (channels,)),
    )
    return {k: v.astype(act_dtype) if k in ACTIVATIONS else v for k, v in x.items()}


def is_kernel(backend):
    return backend.split(":")[0] in KERNEL_BACKENDS


def mosaic_variant(backend):
    """The MosaicScan backend of a name 'mosaic:key=value:key=value', else None."""
    name, _, spec = backend.partition(":")
    if name != "mosaic" or not spec:
        return None
    kv = dict(item.split("=") for item in spec.split(":"))

    def value(v):  # booleans, integers, else the string itself (e.g. ablation=no_exp)
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        return int(v) if v.lstrip("-").isdigit() else v
    return mss.MosaicScan(mss.MosaicScanConfig(**{k: value(v) for k, v in kv.items()}))


def scan_fn(backend, bidir, reverse=False):
    backend = mosaic_variant(backend) or backend
    if bidir:
        return lambda a: selective_scan_bidirectional(**a, out_scale=0.5, backend=backend)
    return lambda a: selective_scan(**a, reverse=reverse, backend=backend)


def poison_free_memory(gib=4.0):
    if jax.default_backend() == "cpu":
        gib = 0.01
    """Fills that much freshly allocated device memory with NaN and frees it: outputs allocated
    next reuse it, so elements a kernel never wrote read NaN rather than stale zeros."""
    x = jnp.full((int(gib * 2**30) // 4,), jnp.nan, jnp.float32)
    x.block_until_ready()
    del x


def rel_err(x, ref):
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    if not np.all(np.isfinite(x)):
        return float("inf")
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-300))


def _value_and_vjp(f):
    def run(a, cot):
        out, vjp = jax.vjp(f, a)
        return out, vjp(cot)[0]
    return run


def check(backend, shape, bidir, reverse, act_dtype, seed, ref_cache, grads=True):
    """{name: rel err} of out and (with `grads`) the 8 gradients vs the float64 reference."""
    x = make_inputs(seed, shape, bidir, act_dtype)
    f = scan_fn(backend, bidir, reverse)
    out_shape = shape[:3]
    cot = jax.random.normal(jax.random.PRNGKey(seed + 7), out_shape, jnp.float32).astype(act_dtype)
    key = (shape, bidir, reverse, str(act_dtype), seed, grads)
    if key not in ref_cache:
        with jax.enable_x64(True):
            x64 = {k: jnp.asarray(np.asarray(v, np.float64)) for k, v in x.items()}
            if grads:
                r_out, r_g = jax.jit(_value_and_vjp(scan_fn("reference", bidir, reverse)))(
                    x64, jnp.asarray(np.asarray(cot, np.float64)))
            else:
                r_out, r_g = jax.jit(scan_fn("reference", bidir, reverse))(x64), {}
            ref_cache[key] = (np.asarray(r_out), {k: np.asarray(v) for k, v in r_g.items()})
    r_out, r_g = ref_cache[key]
    # Values from the plain call: under jax.vjp a backend may run another forward (mosaic does).
    poison_free_memory()
    errs = {"out": rel_err(jax.jit(f)(x), r_out)}
    if not grads:
        return errs
    poison_free_memory()
    _, g = jax.jit(_value_and_vjp(f))(x, cot)
    errs.update({k: rel_err(g[k], r_g[k]) for k in NAMES})
    return errs


def bandwidth():
    """Device-to-device copy rate (bytes read + written per second)."""
    x = jnp.ones((2**28,), jnp.float32)  # 1 GiB
    f = jax.jit(lambda a: a * 1.0000001)
    f(x).block_until_ready()
    t = []
    for _ in range(10):
        t0 = time.perf_counter()
        f(x).block_until_ready()
        t.append(time.perf_counter() - t0)
    return 2 * x.nbytes / statistics.median(t)


def timeit(f, arg_sets, reps, inner):
    """Median seconds per call; calls are queued back to back and synchronised every `inner`."""
    for a in arg_sets:
        jax.block_until_ready(f(*a))
    times = []
    for r in range(reps):
        t0 = time.perf_counter()
        for i in range(inner):
            out = f(*arg_sets[(r * inner + i) % len(arg_sets)])
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times), min(times)


def time_variant(backend, shape, bidir, reps, inner, with_bwd=True):
    f = scan_fn(backend, bidir)
    sets = [make_inputs(100 + i, shape, bidir, jnp.bfloat16) for i in range(3)]
    douts = [jax.random.normal(jax.random.PRNGKey(200 + i), shape[:3], jnp.bfloat16) for i in range(3)]
    fwd = jax.jit(f)
    t0 = time.perf_counter()
    res = {"fwd": timeit(fwd, [(s,) for s in sets], reps, inner)}
    res["compile_fwd_s"] = time.perf_counter() - t0
    if with_bwd:
        step = jax.jit(lambda a, d: jax.vjp(f, a)[1](d)[0])
        t0 = time.perf_counter()
        res["fwdbwd"] = timeit(step, list(zip(sets, douts)), reps, inner)
        res["compile_fwdbwd_s"] = time.perf_counter() - t0
    return res


def floors(shape, bidir, bw):
    """(exp floor fwd, exp floor fwd+bwd, bytes floor fwd, bytes floor fwd+bwd) in seconds."""
    batch, length, channels, state = shape
    blc, bln, blcn = batch * length * channels, batch * length * state, batch * length * channels * state
    k = 2 if bidir else 1
    exp_f, exp_fb = k * blcn / EXP_RATE, 2 * k * blcn / EXP_RATE
    # bf16: fwd reads u, delta (k each), z, B, C (k each), writes out; bwd adds dout in, grads out.
    bytes_f = 2 * ((2 * k + 1) * blc + 2 * k * bln + blc)
    bytes_b = 2 * ((2 * k + 2) * blc + 2 * k * bln + (2 * k + 1) * blc + 2 * k * bln)
    return exp_f, exp_fb, bytes_f / bw, (bytes_f + bytes_b) / bw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--inner", type=int, default=5)
    ap.add_argument("--sweep", default="", help="JSON list of ScanConfig dicts to time at every shape")
    ap.add_argument("--checks", default="quick", choices=["full", "quick", "none"],
                    help="quick: pallas in bf16 at the first and last shape (one direction and fused), "
                         "in float32 at three small shapes, the other backends at the first shape; "
                         "full: every backend and direction everywhere (about twice as long)")
    ap.add_argument("--backends", default="mosaic,pallas,associative,reference")
    ap.add_argument("--check-backends", default="", help="the kernels to check (default: all given)")
    ap.add_argument("--variant-bwd", action="store_true", help="also time fwd+bwd of mosaic:... variants")
    ap.add_argument("--skip-timings", action="store_true", help="the checks only")
    ap.add_argument("--fwd-only", action="store_true",
                    help="forward kernels only: values checked without gradients, no fwd+bwd timings")
    ap.add_argument("--shapes", default="0,1,2")
    ap.add_argument("--dirs", default="one,fused", help="which of one direction and both fused to time")
    ap.add_argument("--shapes-json", default="", help="explicit shapes (local smoke tests)")
    ap.add_argument("--check-shapes-json", default="", help="explicit float32 check shapes")
    ap.add_argument("--append", action="store_true",
                    help="add to the --out files of an earlier run on this device (a run continued in a later "
                         "GPU call) instead of starting them afresh; the files list every run's command")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    dev = jax.devices()[0]
    import jaxlib
    meta = dict(device=dev.device_kind, platform=dev.platform,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                jax=jax.__version__, jaxlib=jaxlib.__version__, python=sys.version.split()[0],
                triton=_version("triton"), jax_triton=_version("jax_triton"),
                command="PYTHONUNBUFFERED=1 PYTHONPATH=. python3 " + " ".join(sys.argv))
    print(meta, flush=True)
    bw = bandwidth()
    meta["copy_bandwidth_GBps"] = bw / 1e9
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)
    backends = args.backends.split(",")
    tag = dev.device_kind.lower().replace("nvidia ", "").split()[0].replace("/", "_")

    def save():  # after every record, so that a run cut short still leaves its results
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
        with open(os.path.join(args.out, f"bench_scan_{tag}.md"), "w") as fh:
            fh.write(render(result, bw))

    shapes = [SHAPES[int(i)] for i in args.shapes.split(",")]
    if args.shapes_json:
        shapes = [tuple(s) for s in json.loads(args.shapes_json)]
    result = dict(meta=meta, runs=[meta], checks=[], timings=[], sweep=[])
    json_path = os.path.join(args.out, f"bench_scan_{tag}.json")
    if args.append and os.path.exists(json_path):
        with open(json_path) as fh:
            result = json.load(fh)
        result.setdefault("runs", [result["meta"]]).append(meta)

    if args.checks != "none":
        ref_cache = {}
        plan = []
        check_shapes = list(dict.fromkeys(shapes if args.checks == "full" else [shapes[0], shapes[-1]]))
        if args.check_backends:
            kernels = [b for b in backends if is_kernel(b) and b in args.check_backends.split(",")]
        else:
            kernels = [b for b in backends if is_kernel(b) and mosaic_variant(b) is None]
        for i, shape in enumerate(check_shapes):
            for b in kernels:
                plan += [(b, shape, False, False, jnp.bfloat16), (b, shape, True, False, jnp.bfloat16)]
            if args.checks == "full" or i == 0:
                plan += [(b, shape, False, False, jnp.bfloat16) for b in backends
                         if b != "reference" and not is_kernel(b)]
        f32_shapes = F32_CHECK_SHAPES
        if args.check_shapes_json:
            f32_shapes = [tuple(s) for s in json.loads(args.check_shapes_json)]
        for i, shape in enumerate(f32_shapes):  # float32: the kernels' own precision
            for b in kernels:
                if args.checks == "full" or i % 3 == 2:
                    plan += [(b, shape, False, False, jnp.float32), (b, shape, False, True, jnp.float32),
                             (b, shape, True, False, jnp.float32)]
                else:  # in turn: one direction in reverse, both fused, then all three
                    plan += [(b, shape, i % 3 == 1, i % 3 == 0, jnp.float32)]
        # One seed per case (shape, directions, order, dtype): the backends checked on it share
        # its inputs and its float64 reference, which is computed once.
        cases = list(dict.fromkeys((shape, bidir, rev, dt) for _, shape, bidir, rev, dt in plan))
        for b, shape, bidir, rev, dt in plan:
            t0 = time.perf_counter()
            seed = 1000 + cases.index((shape, bidir, rev, dt))
            try:
                errs = check(b, shape, bidir, rev, dt, seed, ref_cache, grads=not args.fwd_only)
            except Exception as e:  # a failing backend must not hide the others
                traceback.print_exc()
                errs = {"error": repr(e)[:300]}
            tol = (1e-5, 1e-4) if dt == jnp.float32 else (1e-2, 2e-2)
            ok = "error" not in errs and errs["out"] < tol[0] and all(errs[k] < tol[1] for k in NAMES if k in errs)
            rec = dict(backend=b, shape=shape, bidir=bidir, reverse=rev, dtype=str(np.dtype(dt)), ok=ok,
                       errs=errs, seconds=time.perf_counter() - t0)
            result["checks"].append(rec)
            save()
            worst = max((v for k, v in errs.items() if k != "error"), default=float("nan"))
            print(f"check {b:11s} {str(shape):22s} bidir={bidir:d} rev={rev:d} {rec['dtype']:8s} "
                  f"{'OK ' if ok else 'BAD'} worst {worst:.1e} out {errs.get('out', float('nan')):.1e} "
                  f"({rec['seconds']:.0f}s)", flush=True)
            if is_kernel(b) and "error" in errs and not any(c["backend"] == b and "error" not in c["errs"]
                                                              for c in result["checks"]):
                print(f"the first {b} check failed to run: skipping its timings", flush=True)
                backends = [x for x in backends if x != b]
                if b == "pallas":
                    args.sweep = ""
        ref_cache.clear()

    def timed(backend, shape, bidir):
        """time_variant's result, or the error (a failed variant must not end the run)."""
        with_bwd = not args.fwd_only and (args.variant_bwd or mosaic_variant(backend) is None)
        try:
            return time_variant(backend, shape, bidir, args.reps, args.inner, with_bwd=with_bwd)
        except Exception as e:
            traceback.print_exc()
            return {"error": repr(e)[:300]}

    def run_timings(which):
        for shape in shapes:
            for b in which:
                if b == "reference" and shape[1] > 1000:
                    print(f"skip reference at {shape}: sequential lax.scan over {shape[1]} steps is too slow")
                    continue
                for bidir in [d == "fused" for d in args.dirs.split(",")]:
                    r = timed(b, shape, bidir)
                    rec = dict(backend=b, shape=shape, bidir=bidir, **r)
                    result["timings"].append(rec)
                    save()
                    print("time", b, shape, "bidir" if bidir else "one", r, flush=True)

    if args.skip_timings:
        backends, args.sweep = [], ""
    run_timings([b for b in backends if is_kernel(b)])  # the kernels side by side, shape by shape

    for cfg_dict in json.loads(args.sweep or "[]"):
        # keys starting with "_" pick where to time it: "_shapes" (indices), "_bidir" (list of bools)
        where = {k: cfg_dict.pop(k) for k in list(cfg_dict) if k.startswith("_")}
        tiled = pss.PallasScan(config=pss.ScanConfig(**cfg_dict))
        sweep_shapes = [SHAPES[i] for i in where["_shapes"]] if "_shapes" in where else shapes
        for shape in sweep_shapes:
            for bidir in where.get("_bidir", (False, True)):
                r = timed(tiled, shape, bidir)
                rec = dict(config=cfg_dict, shape=shape, bidir=bidir, **r)
                result["sweep"].append(rec)
                save()
                print("sweep", cfg_dict, shape, "bidir" if bidir else "one", r, flush=True)

    run_timings([b for b in backends if not is_kernel(b)])

    save()
    print(render(result, bw), flush=True)


def _version(module):
    try:
        return __import__(module).__version__
    except Exception as e:  # absent, or refusing to import (jax-triton without a CUDA jaxlib)
        return f"unavailable ({type(e).__name__})"


def render(result, bw):
    meta = result["meta"]
    runs = result.get("runs", [meta])
    lines = [f"# Selective scan on {meta['device']}", ""]
    lines += [f"{'Run ' + str(i + 1) + ': ' if len(runs) > 1 else ''}{run['date']}, jax {run['jax']} / jaxlib "
              f"{run['jaxlib']}, copy bandwidth {run['copy_bandwidth_GBps']:.0f} GB/s. Command: `{run['command']}`  "
              for i, run in enumerate(runs)]
    lines += ["",
             "bf16 activations, float32 A/D/delta_bias, N=16; median ms per call. 'exp %' and 'mem %' "
             f"are the exponential floor ({EXP_RATE / 1e12:.1f} T/s; fwd+bwd counts the exponentials twice) and the "
             "bytes floor (copy bandwidth) as a share of the measured time.", "",
             f"| shape | backend | dirs | fwd ms | fwd+bwd ms | official fwd / fwd+bwd ({reference_numbers.DEVICE}) | goal | "
             "fwd exp % | fwd mem % | f+b exp % | f+b mem % |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["timings"] + [dict(x, backend="pallas " + json.dumps(x["config"])) for x in result["sweep"]]:
        shape = tuple(r["shape"])
        if "error" in r:
            lines.append(f"| {shape} | {r['backend']} | {'2' if r['bidir'] else '1'} | error | | | | | | | |")
            continue
        ef, efb, mf, mfb = floors(shape, r["bidir"], bw)
        f = r["fwd"][0]
        fb = r["fwdbwd"][0] if "fwdbwd" in r else None
        off = OFFICIAL.get(shape)
        tgt = (TARGET_BIDIR if r["bidir"] else TARGET).get(shape)
        off_s = tgt_s = ""
        if off:
            off_s = f"{off[0]} / {off[1]}" if not r["bidir"] else f"{2 * off[0]:.3f} / {2 * off[1]:.2f} (2 calls)"
        if tgt:
            tgt_s = f"{tgt[0]} / {tgt[1]}"
        fb_cols = (f"{fb * 1e3:.3f}", f"{100 * efb / fb:.0f}", f"{100 * mfb / fb:.0f}") if fb else ("-", "", "")
        lines.append(f"| {shape} | {r['backend']} | {'2' if r['bidir'] else '1'} | {f * 1e3:.3f} | "
                     f"{fb_cols[0]} | {off_s} | {tgt_s} | {100 * ef / f:.0f} | {100 * mf / f:.0f} | "
                     f"{fb_cols[1]} | {fb_cols[2]} |")
    lines += ["", "## Correctness (relative L2 error vs float64 reference; worst of out and 8 gradients)", "",
              "| backend | shape | dirs | reverse | dtype | ok | out | worst grad |", "|---|---|---|---|---|---|---|---|"]
    for c in result["checks"]:
        e = c["errs"]
        if "error" in e:
            lines.append(f"| {c['backend']} | {tuple(c['shape'])} | {2 if c['bidir'] else 1} | {c['reverse']} | "
                         f"{c['dtype']} | error | {e['error'][:60]} | |")
            continue
        lines.append(f"| {c['backend']} | {tuple(c['shape'])} | {2 if c['bidir'] else 1} | {c['reverse']} | "
                     f"{c['dtype']} | {'yes' if c['ok'] else 'NO'} | {e['out']:.1e} | "
                     f"{max((e[k] for k in NAMES if k in e), default=float('nan')):.1e} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
