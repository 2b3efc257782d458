"""One test base for every backend of `conv_selective_scan` (subclass it and set `backend`).

The oracle is the composition the mixer computes (`vim_jax.ops.conv_prologue`, then the
sequential reference scan) run in float64; the backend under test gets the same inputs rounded to
float32 (or bf16). Values and the gradients of every input are compared, at odd lengths (1 token,
a ragged last tile), channel counts off the 128-channel blocks, both scan orders and both
directions fused.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from tests.ops.scan_test_base import float64_answer, rel_err, value_and_grads
from vim_jax.ops import conv_selective_scan, conv_selective_scan_bidirectional

CONV_ARG_NAMES = ("x", "conv_w", "conv_b", "dt_low", "dt_w", "A", "B", "C", "D", "z", "delta_bias")
SLOW = pytest.mark.slow


def random_conv_scan_inputs(seed, batch, length, channels, state, rank, lead=(), d_conv=4):
    """Float64 numpy inputs in the ranges Vim sees: A < 0, the raw delta (dt_low W_dt + bias)
    around softplus's knee, conv outputs of order one."""
    rng = np.random.default_rng(seed)
    lead = tuple(lead)
    n = lambda *shape: rng.standard_normal(lead + shape)
    return dict(
        x=rng.standard_normal((batch, length, channels)),
        conv_w=n(d_conv, channels) / np.sqrt(d_conv),
        conv_b=n(channels) * 0.5,
        dt_low=n(batch, length, rank),
        dt_w=n(rank, channels) / np.sqrt(rank),
        A=-np.exp(n(channels, state) * 0.5),
        B=n(batch, length, state),
        C=n(batch, length, state),
        D=n(channels),
        z=rng.standard_normal((batch, length, channels)),
        delta_bias=n(channels) * 0.5 - 1.0,
    )


def evaluate(args, backend, reverse=False, bidirectional=False, out_scale=0.5, wrt=()):
    """The op's output for `args`, and the gradients of `sum(out * cotangent)` w.r.t. `wrt`."""
    def f(full):
        if bidirectional:
            return conv_selective_scan_bidirectional(**full, out_scale=out_scale, backend=backend)
        return conv_selective_scan(**full, reverse=reverse, backend=backend)

    return value_and_grads(f, args, wrt)


def conv_oracle(inputs, reverse=False, bidirectional=False, out_scale=0.5, wrt=()):
    """Float64 values and gradients of the composition with the reference scan, as numpy arrays."""
    return float64_answer(inputs, ("conv_selective_scan", reverse, bidirectional, out_scale, tuple(wrt)),
                          lambda args: evaluate(args, "reference", reverse, bidirectional, out_scale, wrt))


class ConvScanTestBase:
    backend: object = ""  # a registered name or a backend object
    # (batch, length, channels, state, dt_rank): a ragged last tile of 4 tokens, one channel block
    # or two (the second nearly all padding), batch 1 and 2.
    shapes = [(1, 9, 5, 3, 2), (2, 19, 130, 4, 3)]

    def check(self, inputs, reverse=False, bidirectional=False, out_scale=0.5, wrt=CONV_ARG_NAMES,
              dtype=jnp.float32, tol=1e-5, grad_tol=1e-4):
        """The backend's values (and gradients of `wrt`) within `tol` (`grad_tol`) of float64's."""
        wrt = tuple(k for k in wrt if k in inputs)
        ref, ref_g = conv_oracle(inputs, reverse, bidirectional, out_scale, wrt)
        args = {k: jnp.asarray(v, dtype) for k, v in inputs.items()}
        out, got = evaluate(args, self.backend, reverse, bidirectional, out_scale, wrt)
        assert out.dtype == dtype and out.shape == ref.shape
        assert rel_err(out, ref) < tol
        for name in wrt:
            assert got[name].shape == ref_g[name].shape and got[name].dtype == dtype, name
            if not np.any(ref_g[name]):  # e.g. A's with one token: no state decays
                assert not np.any(np.asarray(got[name], np.float64)), name
                continue
            assert rel_err(got[name], ref_g[name]) < grad_tol, name

    # The fast tier's case: both directions (the mixer's call), every input's gradient.
    @pytest.mark.parametrize("shape_index", [0, pytest.param(1, marks=SLOW)])
    def test_bidirectional_values_and_gradients(self, shape_index):
        self.check(random_conv_scan_inputs(60 + shape_index, *self.shapes[shape_index], lead=(2,)), bidirectional=True)

    @SLOW
    @pytest.mark.parametrize("reverse", [False, True])
    @pytest.mark.parametrize("shape_index", [0, 1])
    def test_one_direction_values_and_gradients(self, shape_index, reverse):
        self.check(random_conv_scan_inputs(62 + shape_index, *self.shapes[shape_index]), reverse)

    @SLOW
    def test_single_token(self):
        """One token: every conv tap but the last reads the zero padding, in both directions (and
        A's gradient is zero: no state decays)."""
        self.check(random_conv_scan_inputs(64, 1, 1, 6, 2, 2, lead=(2,)), bidirectional=True, out_scale=1.0)

    @SLOW
    @pytest.mark.parametrize("drop,bidirectional", [(("D", "z", "delta_bias"), False), (("z",), True)])
    def test_optional_arguments_left_out(self, drop, bidirectional):
        inputs = random_conv_scan_inputs(65, *self.shapes[0], lead=(2,) if bidirectional else ())
        self.check({k: v for k, v in inputs.items() if k not in drop}, reverse=True, bidirectional=bidirectional)

    @SLOW
    @pytest.mark.parametrize("d_conv", [1, 2])
    def test_other_conv_widths(self, d_conv):
        """Kernels of 1 tap (no history) and 2 taps (one token of history), reversed."""
        self.check(random_conv_scan_inputs(66 + d_conv, *self.shapes[0], d_conv=d_conv), reverse=True, wrt=())

    @SLOW
    def test_bfloat16_inputs(self):
        inputs = random_conv_scan_inputs(68, *self.shapes[0], lead=(2,))
        rounded = {k: np.asarray(jnp.asarray(v, jnp.bfloat16), np.float64) for k, v in inputs.items()}
        self.check(rounded, bidirectional=True, dtype=jnp.bfloat16, wrt=(), tol=1e-2)
