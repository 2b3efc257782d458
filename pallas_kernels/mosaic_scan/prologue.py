"""The forward kernel's conv prologue: u and delta of a token computed by its thread, not read.

Per channel (thread) and direction, registers hold the conv's `d_conv` taps and bias, the
channel's column of W_dt (`dt_rank` values) and, as the scan's carry, the last `d_conv - 1` values
of x in scan order. Per token: `u = silu(bias + sum_j tap_j x_{s + j - (K-1)})` (s the scan
position: a reversed direction's conv is anti-causal in token order and causal in its own) and
`delta_raw = sum_r dt_low_r W_dt[r]`, dt_low being broadcast scalars of the token's float32 row
(after `[B | C]`). A segment's history is loaded from the tokens before it in scan order.

The kernel's params rows of direction k, after `A * log2(e)`, D and delta_bias: the taps (oldest
first), the conv bias, then W_dt's rows.
"""

from __future__ import annotations

import jax.numpy as jnp

from pallas_kernels.mosaic_scan.config import ConvPrologue

F32 = jnp.float32


class Prologue:
    """One thread's prologue for direction k: its taps, conv bias and W_dt column, loaded from
    `p_g[k, first_row:, cols]`; `dt_col` is dt_low's first column in the broadcast rows."""

    def __init__(self, prologue: ConvPrologue, p_g, k, cols, first_row: int, dt_col: int, fn):
        K, R = prologue.d_conv, prologue.dt_rank
        self.K, self.dt_col, self.fn = K, dt_col, fn
        self.taps = [p_g[k, first_row + i, cols] for i in range(K)]
        self.bias = p_g[k, first_row + K, cols]
        self.w_dt = [p_g[k, first_row + K + 1 + r, cols] for r in range(R)]

    def history(self, x_g, b, cols, first, step, length):
        """x at the `d_conv - 1` tokens scanned before token `first` (`step` = +1 scanning
        forwards, -1 backwards), oldest first; zero where they fall outside the sequence."""
        hist = []
        for back in range(self.K - 1, 0, -1):
            t = first - step * back
            inside = ((t >= 0) & (t < length)).astype(F32)
            # A clamped row, weighted 0 where outside: loads only, no branch.
            hist.append(x_g[b, jnp.clip(t, 0, length - 1), cols].astype(F32) * inside)
        return tuple(hist)

    def zero_history(self, zero):
        """The history at the sequence's edge."""
        return tuple(zero for _ in range(self.K - 1))

    def token(self, x, hist, row):
        """(u, delta before bias and softplus, next history) for a token of value `x` (float32)
        whose broadcast row is read by `row(column)`."""
        conv = self.bias + self.taps[-1] * x
        for tap, xh in zip(self.taps, hist):
            conv = conv + tap * xh
        raw = self.w_dt[0] * row(self.dt_col)
        for r in range(1, len(self.w_dt)):
            raw = raw + self.w_dt[r] * row(self.dt_col + r)
        return self.fn.silu(conv), raw, (hist + (x,))[1:]
