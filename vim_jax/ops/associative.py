"""Selective scan with `jax.lax.associative_scan`, chunked, with a custom VJP.

The recurrence `h_t = a_t * h_{t-1} + b_t` (with `a_t = exp(delta_t A)`, `b_t = delta_t u_t B_t`)
is associative in pairs `(a, b)`. Materialising every `[batch, channels, state]` pair of the whole
sequence costs `batch * length * channels * state` floats, which autodiff would then keep for the
backward pass; instead the sequence is cut into chunks: a `lax.scan` over chunks carries the state,
an associative scan runs inside each chunk, and the forward pass saves only the state entering each
chunk. The backward pass walks the chunks the other way, recomputes each chunk's states from its
saved entry state and runs the adjoint recurrence `lam_t = dy_t C_t + a_{t+1} lam_{t+1}` with the
same associative scan. Peak memory is a few `[batch, chunk, channels, state]` buffers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from vim_jax.ops import scan_math

DEFAULT_CHUNK = 64


def selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, chunk=DEFAULT_CHUNK):
    """See `vim_jax.ops.selective_scan`; `chunk` is the number of tokens per associative scan."""
    dtype = scan_math.compute_dtype(u, delta, A, B, C)
    delta = scan_math.prepare_delta(delta, delta_bias, delta_softplus, dtype)
    u_f = u.astype(dtype)
    y = _scan(u_f, delta, A.astype(dtype), B.astype(dtype), C.astype(dtype), reverse, chunk)
    return scan_math.skip_and_gate(y, u_f, D, z).astype(u.dtype)


def _to_chunks(x, chunk):
    """`[batch, length, ...]` -> `[n_chunks, batch, chunk, ...]`, zero-padded at the end."""
    batch, length = x.shape[:2]
    n_chunks = -(-length // chunk)
    pad = [(0, 0), (0, n_chunks * chunk - length)] + [(0, 0)] * (x.ndim - 2)
    x = jnp.pad(x, pad).reshape(batch, n_chunks, chunk, *x.shape[2:])
    return jnp.moveaxis(x, 1, 0)


def _from_chunks(x, length):
    x = jnp.moveaxis(x, 0, 1)
    return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :length]


def _combine(first, second):
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


def _chunk_states(h_in, a, b, reverse):
    """States after every step of a chunk (axis 1), starting from the state `h_in`."""
    a_cum, s = jax.lax.associative_scan(_combine, (a, b), axis=1, reverse=reverse)
    return s + a_cum * h_in[:, None]


def _before_each_step(x, first, reverse):
    """`x` one step earlier in scan order, with `first` before the chunk's first step."""
    if reverse:
        return jnp.concatenate([x[:, 1:], first[:, None]], axis=1)
    return jnp.concatenate([first[:, None], x[:, :-1]], axis=1)


def _after_each_step(x, last, reverse):
    """`x` one step later in scan order, with `last` after the chunk's last step."""
    if reverse:
        return jnp.concatenate([last[:, None], x[:, :-1]], axis=1)
    return jnp.concatenate([x[:, 1:], last[:, None]], axis=1)


def _decay_and_input(u, delta, A, B):
    a = jnp.exp(delta[..., None] * A)
    b = (delta * u)[..., None] * B[:, :, None, :]
    return a, b


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _scan(u, delta, A, B, C, reverse, chunk):
    """`y_t = C_t . h_t` for the recurrence above (no skip, no gate); all inputs in one dtype."""
    return _scan_fwd(u, delta, A, B, C, reverse, chunk)[0]


def _scan_fwd(u, delta, A, B, C, reverse, chunk):
    batch, length, channels = u.shape

    def body(h, xs):
        u_k, d_k, B_k, C_k = xs
        states = _chunk_states(h, *_decay_and_input(u_k, d_k, A, B_k), reverse)
        y = jnp.sum(states * C_k[:, :, None, :], axis=-1)
        return states[:, 0 if reverse else -1], (y, h)

    h0 = jnp.zeros((batch, channels, A.shape[1]), u.dtype)
    xs = [_to_chunks(x, chunk) for x in (u, delta, B, C)]
    _, (y, h_in) = jax.lax.scan(body, h0, xs, reverse=reverse)
    return _from_chunks(y, length), (u, delta, A, B, C, h_in)


def _scan_bwd(reverse, chunk, residuals, dy):
    u, delta, A, B, C, h_in = residuals
    batch, length, channels = u.shape

    def body(carry, xs):
        # `lam_in`: the adjoint reaching this chunk from the chunk scanned after it, already
        # multiplied by that chunk's first decay.
        lam_in, dA_acc = carry
        u_k, d_k, B_k, C_k, dy_k, h_k = xs
        a, b = _decay_and_input(u_k, d_k, A, B_k)
        states = _chunk_states(h_k, a, b, reverse)
        previous = _before_each_step(states, h_k, reverse)
        a_next = _after_each_step(a, jnp.ones_like(a[:, 0]), reverse)
        lam = _chunk_states(lam_in, a_next, dy_k[..., None] * C_k[:, :, None, :], not reverse)

        lam_B = jnp.sum(lam * B_k[:, :, None, :], axis=-1)
        s = lam * previous * a  # dLoss / d(delta_t * A)
        du = d_k * lam_B
        dd = u_k * lam_B + jnp.sum(s * A, axis=-1)
        dB = jnp.sum(lam * (d_k * u_k)[..., None], axis=2)
        dC = jnp.sum(dy_k[..., None] * states, axis=2)
        dA_acc = dA_acc + jnp.sum(s * d_k[..., None], axis=(0, 1))
        first = -1 if reverse else 0
        return (a[:, first] * lam[:, first], dA_acc), (du, dd, dB, dC)

    n_state = A.shape[1]
    init = (jnp.zeros((batch, channels, n_state), u.dtype), jnp.zeros_like(A))
    xs = [_to_chunks(x, chunk) for x in (u, delta, B, C, dy)] + [h_in]
    (_, dA), grads = jax.lax.scan(body, init, xs, reverse=not reverse)
    du, dd, dB, dC = (_from_chunks(g, length) for g in grads)
    return du, dd, dA, dB, dC


_scan.defvjp(_scan_fwd, _scan_bwd)
