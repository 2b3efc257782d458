#!/usr/bin/env python3
"""The memory-bound work of Vim's mixer around the scan, in XLA formulations side by side.

    PYTHONPATH=. python3 experiments/bench_mixer_pieces.py --out experiments/results
    PYTHONPATH=. python3 experiments/bench_mixer_pieces.py --smoke   # CPU, tiny shapes (plumbing)

A profile of Vim-S inference (results/profile_nvidia_h200_mosaic.md) spends 18% of its kernel
time in one XLA fusion that makes the scan's input `u = silu(conv(x))` for both directions
(stacked `[2, b, L, E]`), about five times what its bytes need, and another 3% copying `z` out of
`in_proj`'s output. This times, for the released models' shapes, the pieces from `xz = h W_in`
to what the fused bidirectional scan reads (`u` stacked, `z`), in several formulations:

  stack7     both directions over the union of 7 offsets, bf16 products and sums (the model's
             `depthwise_conv1d` when this was first run; the model now does `taps4_f32`)
  taps4      each direction's own 4 shifted slices, summed, stacked
  taps4_f32  the same with products and sums in float32 (one rounding, at the end)
  lax_conv   `lax.conv_general_dilated` with one group per channel, per direction, stacked

each once with `x`, `z` sliced from one `in_proj` matmul and once with two matmuls (`x = h W_x`,
`z = h W_z`, so `z` is a matmul's own output). Every variant is checked against a float32
evaluation of the same formula; timings follow bench_models.py's method (compiled once, warm-up,
median of repeats of back-to-back calls ended by `jax.block_until_ready`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import bench_models
from vim_jax.models.layers import depthwise_conv1d

SHAPES = {"vim_small": (256, 197, 384), "vim_tiny": (256, 197, 192)}  # batch, tokens, embed dim
K = 4  # conv width of the released models


def shifted_sum(x, kernel, reverse, dtype):
    """One direction's causal (or anti-causal) depthwise conv as K shifted slices."""
    b, length, e = x.shape
    x = x.astype(dtype)
    pad = ((0, 0), (0, K - 1), (0, 0)) if reverse else ((0, 0), (K - 1, 0), (0, 0))
    xp = jnp.pad(x, pad)
    taps = kernel[::-1] if reverse else kernel
    return sum(taps[j].astype(dtype) * jax.lax.slice_in_dim(xp, j, j + length, axis=1) for j in range(K))


def conv_variant(name, x, kernel, bias):
    """`[2, b, L, E]`: silu(conv_k(x) + bias_k) for k = forwards, backwards."""
    dtype = x.dtype
    if name == "stack7":  # the model's formulation before this comparison, kept here to be timed
        length = x.shape[1]
        xp = jnp.pad(x, ((0, 0), (K - 1, K - 1), (0, 0)))
        shifted = [jax.lax.slice_in_dim(xp, i, i + length, axis=1) for i in range(2 * K - 1)]
        w = [jnp.pad(kernel[0], ((0, K - 1), (0, 0))), jnp.pad(kernel[1][::-1], ((K - 1, 0), (0, 0)))]
        return jnp.stack([jax.nn.silu(bias[k].astype(dtype) + sum(w[k][i].astype(dtype) * sh for i, sh in enumerate(shifted)))
                          for k in range(2)])
    if name in ("taps4", "taps4_f32"):
        acc = jnp.float32 if name == "taps4_f32" else dtype
        return jnp.stack([jax.nn.silu(shifted_sum(x, kernel[k], k == 1, acc) + bias[k].astype(acc)).astype(dtype)
                          for k in range(2)])
    if name == "lax_conv":
        e = x.shape[-1]
        outs = []
        for k, rev in enumerate((False, True)):
            w = (kernel[k][::-1] if rev else kernel[k]).astype(dtype)[:, None, :]  # [K, 1, E] (WIO)
            pad = [(0, K - 1)] if rev else [(K - 1, 0)]
            y = jax.lax.conv_general_dilated(x, w, (1,), pad, dimension_numbers=("NWC", "WIO", "NWC"),
                                             feature_group_count=e, preferred_element_type=jnp.float32)
            outs.append(jax.nn.silu(y + bias[k]).astype(dtype))
        return jnp.stack(outs)
    raise ValueError(name)


def piece(name, split, e):
    """h -> (u stacked, z) for conv formulation `name`; `split`: two matmuls instead of a slice."""
    def f(h, w_in, kernel, bias):
        w_in = w_in.astype(h.dtype)
        if split:
            x, z = h @ w_in[:, :e], h @ w_in[:, e:]
        else:
            xz = h @ w_in
            x, z = xz[..., :e], xz[..., e:]
        return conv_variant(name, x, kernel, bias), z
    return f


def reference(h, w_in, kernel, bias, e):
    """float32 evaluation of the same formula (stack7 in float32)."""
    xz = h.astype(jnp.float32) @ w_in
    x = xz[..., :e]
    return jax.nn.silu(depthwise_conv1d(x, kernel, bias, (False, True))), xz[..., e:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="experiments/results")
    p.add_argument("--target-s", type=float, default=0.5)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    shapes = {"smoke": (2, 17, 16)} if args.smoke else SHAPES
    rows = []
    for model, (b, length, d) in shapes.items():
        e = 2 * d
        keys = jax.random.split(jax.random.key(0), 4)
        h = jax.random.normal(keys[0], (b, length, d), jnp.bfloat16)
        w_in = jax.random.normal(keys[1], (d, 2 * e), jnp.float32) / np.sqrt(d)
        kernel = jax.random.uniform(keys[2], (2, K, e), jnp.float32, -0.5, 0.5)
        bias = jax.random.uniform(keys[3], (2, e), jnp.float32, -0.5, 0.5)
        u_ref, z_ref = jax.jit(reference, static_argnums=4)(h, w_in, kernel, bias, e)
        for split in (False, True):
            for name in ("stack7", "taps4", "taps4_f32", "lax_conv"):
                f = jax.jit(piece(name, split, e))
                u, z = f(h, w_in, kernel, bias)
                err = max(float(jnp.max(jnp.abs(u.astype(jnp.float32) - u_ref)) / jnp.max(jnp.abs(u_ref))),
                          float(jnp.max(jnp.abs(z.astype(jnp.float32) - z_ref)) / jnp.max(jnp.abs(z_ref))))
                t = bench_models.time_calls(lambda: f(h, w_in, kernel, bias), args.target_s)
                bytes_min = (b * length * d + b * length * e * 3) * 2  # h in; u (2x) and z out, bf16
                rows.append({"model": model, "shape": [b, length, d], "conv": name, "two_matmuls": split,
                             "ms": t["seconds"] * 1e3, "spread_ms": [s * 1e3 for s in t["spread"]],
                             "max_rel_err_vs_f32": err, "min_bytes": bytes_min})
                print(f"{model} {name:9s} two_matmuls={split!s:5s} {t['seconds'] * 1e3:8.3f} ms  err {err:.1e}",
                      flush=True)
    device = jax.devices()[0].device_kind
    result = {"device": device, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "versions": bench_models._versions(), "command": "python experiments/bench_mixer_pieces.py "
              + " ".join(a if not a.startswith("/") else "$OUT" for a in (argv or sys.argv[1:])), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench_mixer_pieces_{device.lower().replace(' ', '_')}{'_smoke' if args.smoke else ''}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"# Mixer pieces around the scan: {device}", "", f"Command: `{result['command']}`  ",
             f"Date: {result['date']}; versions: {result['versions']}", "",
             "From `xz = h W_in` to the scan's inputs (`u` for both directions stacked, `z`), bf16; "
             "median ms per call; error = max |variant - float32| / max |float32|.", "",
             "| model | conv | z from | ms | min bytes / ms at 4.8 TB/s | error |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['conv']} | {'own matmul' if r['two_matmuls'] else 'slice'} | "
                     f"{r['ms']:.3f} | {r['min_bytes'] / 4.8e9:.3f} | {r['max_rel_err_vs_f32']:.1e} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
