"""Sequential selective scan with a hand-written VJP: the fast backend on CPU.

The same token-by-token `lax.scan` as the reference, arranged for a CPU:

- The backward pass is written out instead of being derived by autodiff. Autodiff of the
  reference's loop saves several `[batch, channels, state]` residuals per token and, when the
  scan sits inside the model's scan over blocks, zero-fills and copies them again; here the
  forward pass saves the state entering every chunk of `chunk` tokens, and the backward pass
  walks the chunks in reverse: it recomputes a chunk's states from its saved one, then runs the
  adjoint recurrence `lam_t = C_t dy_t + a_{t+1} lam_{t+1}` token by token, recomputing
  `a_t = exp(delta_t A)` from `delta_t`.
- Tokens are the leading (time-major) axis, so every loop step reads and writes contiguous
  slices.
- Both directions of the bidirectional scan run in the same loop (the backward direction's
  inputs are flipped along the tokens, which for `[batch, length, channels]` inputs is cheap),
  which halves the number of loop steps and doubles the work per step.

Saved for the backward pass: one float32 state per chunk and direction, against several per token
for the reference's autodiff.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vim_jax.ops import scan_math

# Tokens per chunk: the backward pass recomputes the states of one chunk at a time from the
# state entering it, so that the forward pass saves one state per chunk, not per token.
DEFAULT_CHUNK = 8


def selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, chunk=DEFAULT_CHUNK):
    """See `vim_jax.ops.selective_scan`; `chunk` is the number of tokens per saved state."""
    stack = lambda x: None if x is None else x[None]
    y = _directions(stack(u), stack(delta), A[None], stack(B), stack(C), stack(delta_bias),
                    delta_softplus, (reverse,), chunk)[0]
    return scan_math.skip_and_gate(y, u.astype(y.dtype), D, z).astype(u.dtype)


def selective_scan_bidirectional(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_scale,
                                 chunk=DEFAULT_CHUNK):
    """See `vim_jax.ops.selective_scan_bidirectional`: both directions in one loop."""
    y = _directions(u, delta, A, B, C, delta_bias, delta_softplus, (False, True), chunk)
    if D is not None:
        y = y + D.astype(y.dtype)[:, None, None, :] * u.astype(y.dtype)
    y = (y[0] + y[1]) * out_scale
    return scan_math.skip_and_gate(y, u, None, z).astype(u.dtype)


def _directions(u, delta, A, B, C, delta_bias, delta_softplus, reverse, chunk):
    """`C_t . h_t` (no skip, no gate) for `K` stacked scans: `u, delta: [K, b, L, E]`, `A: [K, E, N]`,
    `B, C: [K, b, L, N]`, `delta_bias: [K, E]` or None, `reverse`: K bools -> `[K, b, L, E]`."""
    dtype = scan_math.compute_dtype(u, delta, A, B, C)
    bias = None if delta_bias is None else delta_bias[:, None, None, :]
    delta = scan_math.prepare_delta(delta, bias, delta_softplus, dtype)
    length = u.shape[2]
    n_chunks = -(-length // chunk)
    size = -(-length // n_chunks)  # the same number of chunks, as little padding as possible

    def chunked(x):  # [K, b, L, ...] -> [n_chunks, size, K, b, ...], reversed directions flipped
        x = jnp.stack([x[k, :, ::-1] if rev else x[k] for k, rev in enumerate(reverse)]).astype(dtype)
        # Padding tokens have delta = 0: decay 1 and no input, so they leave the state as it is.
        x = jnp.pad(x, [(0, 0), (0, 0), (0, n_chunks * size - length)] + [(0, 0)] * (x.ndim - 3))
        x = jnp.moveaxis(x, 2, 0)
        return x.reshape(n_chunks, size, *x.shape[1:])

    y = _scan(*(chunked(x) for x in (u, delta)), jnp.swapaxes(A, 1, 2).astype(dtype),
              *(chunked(x) for x in (B, C)))
    y = jnp.moveaxis(y.reshape(-1, *y.shape[2:])[:length], 0, 2)
    return jnp.stack([y[k, :, ::-1] if rev else y[k] for k, rev in enumerate(reverse)])


def _step_terms(u_t, d_t, A_t, B_t):
    """Decay `exp(delta_t A)` and input `delta_t u_t B_t` of one token, `[K, b, N, E]` each (the
    channels last, so that the elementwise work vectorises along them)."""
    return jnp.exp(d_t[:, :, None, :] * A_t[:, None]), (d_t * u_t)[:, :, None, :] * B_t[..., None]


def _chunk_forward(h, u, delta, A_t, B, C, save_states):
    """One chunk of tokens from state `h`: its outputs, the state after it and, when
    `save_states`, the state entering every token (else None)."""
    def step(h, xs):
        u_t, d_t, B_t, C_t = xs
        a, x = _step_terms(u_t, d_t, A_t, B_t)
        h_new = a * h + x
        return h_new, (jnp.sum(h_new * C_t[..., None], axis=2), h if save_states else None)

    h, (y, h_before) = jax.lax.scan(step, h, (u, delta, B, C))
    return y, h, h_before


@jax.custom_vjp
def _scan(u, delta, A_t, B, C):
    """`y_t = C_t . h_t`, `h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t`, over tokens in chunks.

    `u, delta: [n_chunks, size, K, b, E]`, `A_t` (A transposed): `[K, N, E]`,
    `B, C: [n_chunks, size, K, b, N]`, all in one dtype; the state is `[K, b, N, E]`."""
    return _scan_fwd(u, delta, A_t, B, C)[0]


def _scan_fwd(u, delta, A_t, B, C):
    def chunk(h, xs):
        y, h_after, _ = _chunk_forward(h, *xs[:2], A_t, *xs[2:], save_states=False)
        return h_after, (y, h)

    _, _, k, batch, channels = u.shape
    h0 = jnp.zeros((k, batch, A_t.shape[1], channels), u.dtype)
    _, (y, h_in) = jax.lax.scan(chunk, h0, (u, delta, B, C))
    return y, (u, delta, A_t, B, C, h_in)


def _scan_bwd(residuals, dy):
    u, delta, A_t, B, C, h_in = residuals

    def step(carry, xs):
        # `decayed`: a_{t+1} lam_{t+1}, the adjoint reaching token t from the token after it.
        decayed, dA = carry
        u_t, d_t, B_t, C_t, dy_t, h_prev = xs
        a, x = _step_terms(u_t, d_t, A_t, B_t)
        h = a * h_prev + x
        lam = decayed + dy_t[:, :, None, :] * C_t[..., None]
        lam_B = jnp.sum(lam * B_t[..., None], axis=2)
        decayed = a * lam
        s = decayed * h_prev  # dLoss / d(delta_t A)
        du = d_t * lam_B
        dd = u_t * lam_B + jnp.sum(s * A_t[:, None], axis=2)
        dB = jnp.sum(lam * (d_t * u_t)[:, :, None, :], axis=-1)
        dC = jnp.sum(h * dy_t[:, :, None, :], axis=-1)
        dA = dA + jnp.sum(s * d_t[:, :, None, :], axis=1)
        return (decayed, dA), (du, dd, dB, dC)

    def chunk(carry, xs):
        u_k, d_k, B_k, C_k, dy_k, h_k = xs
        _, _, h_before = _chunk_forward(h_k, u_k, d_k, A_t, B_k, C_k, save_states=True)
        return jax.lax.scan(step, carry, (u_k, d_k, B_k, C_k, dy_k, h_before), reverse=True)

    init = (jnp.zeros_like(h_in[0]), jnp.zeros_like(A_t))
    (_, dA), (du, dd, dB, dC) = jax.lax.scan(chunk, init, (u, delta, B, C, dy, h_in), reverse=True)
    return du, dd, dA, dB, dC


_scan.defvjp(_scan_fwd, _scan_bwd)
