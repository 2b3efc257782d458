"""The (bi)directional Mamba mixer of Vision Mamba."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vim_jax import ops
from vim_jax.config import VimConfig
from vim_jax.models import scan_orders
from vim_jax.models.layers import depthwise_conv1d, param, torch_linear_uniform


class VimMixer(nnx.Module):
    r"""Selective state-space mixing of a token sequence in one or more scan orders.

    For input tokens `h: [b, L, D]`, with `E = expand * D`, `N = d_state`, `R = dt_rank`:

        x, z = split(h W_in)                                   # [b, L, E] each
        for each direction k (its own token order, scanned forwards or backwards):
            u_k   = silu(conv_k(x))                            # depthwise, kernel 4, causal in the
                                                               # direction's own order
            dt_k, B_k, C_k = split(u_k W_x,k)                  # [R], [N], [N] per token
            delta_k = softplus(dt_k W_dt,k + b_dt,k)           # [b, L, E]
            h_t = exp(delta_t A_k) * h_{t-1} + delta_t u_t B_t # state [E, N], A_k = -exp(A_log,k)
            y_k,t = C_t . h_t + D_k u_t
        out = scale * sum_k y_k * silu(z)  W_out               # scale = 1/K for "v2" + divide_out

    "v2" (the released models) gives every direction its own conv, projections, A, D and dt
    bias; "v1" shares conv, projections and D (convolved in the first order) and gives each
    direction its own A, with the outputs summed; "none" has one direction. Orders other than
    raster run as a gather before and a scatter after the scan; a reversed order is a reverse
    scan, so the paper's backward direction needs no flipped copies at all.
    """

    def __init__(self, cfg: VimConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, e, n, r = cfg.embed_dim, cfg.d_inner, cfg.d_state, cfg.dt_rank_
        n_dirs = len(cfg.directions)
        n_own = 1 if cfg.bimamba in ("none", "v1") else n_dirs  # directions with their own conv/proj

        self.in_proj = param(torch_linear_uniform(rngs.params(), (d, 2 * e), d), ("embed", "mlp"))
        conv_bound = 1.0 / math.sqrt(cfg.d_conv)  # PyTorch default for a depthwise Conv1d
        self.conv_kernel = param(jax.random.uniform(rngs.params(), (n_own, cfg.d_conv, e), jnp.float32,
                                                    -conv_bound, conv_bound), ("direction", "conv", "mlp"))
        self.conv_bias = param(jax.random.uniform(rngs.params(), (n_own, e), jnp.float32, -conv_bound, conv_bound),
                               ("direction", "mlp"))
        self.x_proj = param(torch_linear_uniform(rngs.params(), (n_own, e, r + 2 * n), e), ("direction", "mlp", None))
        dt_std = cfg.dt_scale / math.sqrt(r)
        self.dt_proj_kernel = param(jax.random.uniform(rngs.params(), (n_own, r, e), jnp.float32, -dt_std, dt_std),
                                    ("direction", None, "mlp"))
        # dt drawn log-uniformly in [dt_min, dt_max], floored; the bias is its inverse softplus.
        dt = jnp.exp(jax.random.uniform(rngs.params(), (n_own, e))
                     * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt = jnp.maximum(dt, cfg.dt_init_floor)
        dt_bias = dt + jnp.log(-jnp.expm1(-dt))
        if not cfg.fix_backward_dt_init:
            dt_bias = dt_bias.at[1:].set(0.0)  # upstream re-zeroes every dt bias but the forward one
        self.dt_proj_bias = param(dt_bias, ("direction", "mlp"))
        self.A_log = param(np.broadcast_to(np.log(np.arange(1, n + 1, dtype=np.float32)), (n_dirs, e, n)),
                           ("direction", "mlp", "state"))
        self.D = param(jnp.ones((n_own, e)), ("direction", "mlp"))
        # Kaiming-uniform(a=sqrt(5)) rescaled by 1/sqrt(depth), as upstream's GPT-2-style init.
        self.out_proj = param(torch_linear_uniform(rngs.params(), (e, d), e) / math.sqrt(cfg.depth), ("mlp", "embed"))
        if cfg.layer_scale_init is not None:
            self.gamma = param(jnp.full((d,), cfg.layer_scale_init), ("embed",))

    def orders(self, flip: bool):
        cfg = self.cfg
        return [(perm, reverse != flip) for perm, reverse in
                (scan_orders.sequence_order(o, cfg.grid_size, cfg.cls_positions) for o in cfg.directions)]

    def __call__(self, h, flip: bool = False):
        """`h: [b, L, D]` in the compute dtype -> `[b, L, D]`. `flip` reverses every direction (the
        second block of a bidirectional layer pair)."""
        cfg, dtype = self.cfg, h.dtype
        e = cfg.d_inner
        # Two matmuls, not one sliced in two: the fused scan reads `z` whole, and a slice of one
        # output is copied out for it (3% of Vim-S inference on an H200,
        # experiments/results/bench_mixer_pieces_nvidia_h200.md).
        w_in = self.in_proj[...].astype(dtype)
        x, z = h @ w_in[:, :e], h @ w_in[:, e:]
        orders = self.orders(flip)
        A = -jnp.exp(self.A_log[...])  # [K, E, N] float32
        scale = 1.0 / len(orders) if (cfg.bimamba == "v2" and cfg.divide_out) else 1.0
        if len(orders) == 2 and all(perm is None for perm, _ in orders) and orders[0][1] != orders[1][1]:
            y = self._fused_bidirectional(x, z, orders, A, scale)
        else:
            y = self._per_direction(x, z, orders, A, scale)
        out = y @ self.out_proj[...].astype(dtype)
        if cfg.layer_scale_init is not None:
            out = out * self.gamma[...].astype(dtype)
        return out


    def _x_proj(self, u, own):
        """The x projection -> dt_low, B, C: of direction `own` (an int) for `u: [b, L, E]`, or
        of directions `own` (an index array) for `u` stacked as `[k, b, L, E]`."""
        cfg = self.cfg
        n, r = cfg.d_state, cfg.dt_rank_
        spec = "k...e,ker->k...r" if np.ndim(own) else "...e,er->...r"
        p = jnp.einsum(spec, u, self.x_proj[...][own].astype(u.dtype))
        return p[..., :r], p[..., r:r + n], p[..., r + n:]

    def _project(self, u, own):
        """x and dt projections -> delta, B, C (as `_x_proj`)."""
        dt_low, B, C = self._x_proj(u, own)
        spec = "k...r,kre->k...e" if np.ndim(own) else "...r,re->...e"
        return jnp.einsum(spec, dt_low, self.dt_proj_kernel[...][own].astype(u.dtype)), B, C

    def _fused_bidirectional(self, x, z, orders, A, scale):
        """Both directions over the same tokens, one each way, in the fused bidirectional scan. Its
        inputs are computed stacked (`[2, b, L, E]`) so that no pass copies them together."""
        cfg = self.cfg
        idx = [0, 1] if not orders[0][1] else [1, 0]  # index 0 of the fused op scans forwards
        own = np.zeros(2, int) if cfg.bimamba == "v1" else np.asarray(idx)
        w_conv, b_conv = self.conv_kernel[...], self.conv_bias[...]
        if cfg.bimamba == "v1":  # one conv, in the first direction's order, shared
            u = jax.nn.silu(depthwise_conv1d(x, w_conv[0], b_conv[0], reverse=orders[0][1]))
            u = jnp.broadcast_to(u, (2, *u.shape))
        else:
            u = jax.nn.silu(depthwise_conv1d(x, w_conv[own], b_conv[own], tuple(orders[k][1] for k in idx)))
        if cfg.fused_conv_scan and cfg.bimamba == "v2":
            # The scan convolves x again itself; u here feeds only the x projection.
            dt_low, B, C = self._x_proj(u, own)
            return ops.conv_selective_scan_bidirectional(
                x, w_conv[own], b_conv[own], dt_low, self.dt_proj_kernel[...][own], A[np.asarray(idx)], B, C,
                D=self.D[...][own], z=z, delta_bias=self.dt_proj_bias[...][own], out_scale=scale,
                backend=cfg.scan_backend)
        delta, B, C = self._project(u, own)
        return ops.selective_scan_bidirectional(
            u, delta, A[np.asarray(idx)], B, C, D=self.D[...][own], z=z,
            delta_bias=self.dt_proj_bias[...][own], out_scale=scale, backend=cfg.scan_backend)

    def _per_direction(self, x, z, orders, A, scale):
        """One selective scan per direction, each in its own token order; outputs summed."""
        cfg = self.cfg
        w_conv, b_conv = self.conv_kernel[...], self.conv_bias[...]
        if cfg.bimamba == "v1":
            # One conv, in the first direction's order, and one projection, shared by the directions.
            perm0, rev0 = orders[0]
            u = _unpermute(jax.nn.silu(depthwise_conv1d(_permute(x, perm0), w_conv[0], b_conv[0], reverse=rev0)), perm0)
            us = [_permute(u, perm) for perm, _ in orders]
            own = [0] * len(orders)
        else:
            us = [jax.nn.silu(depthwise_conv1d(_permute(x, perm), w_conv[k], b_conv[k], reverse=rev))
                  for k, (perm, rev) in enumerate(orders)]
            own = list(range(len(orders)))
        y = None
        for k, (perm, rev) in enumerate(orders):
            delta, B, C = self._project(us[k], own[k])
            yk = ops.selective_scan(us[k], delta, A[k], B, C, D=self.D[...][own[k]], z=_permute(z, perm),
                                    delta_bias=self.dt_proj_bias[...][own[k]], reverse=rev,
                                    backend=cfg.scan_backend)
            yk = _unpermute(yk, perm).astype(jnp.float32)
            y = yk if y is None else y + yk
        return (y * scale).astype(x.dtype)


def _permute(x, perm):
    return x if perm is None else x[:, perm]


def _unpermute(x, perm):
    return x if perm is None else x[:, scan_orders.inverse(perm)]
