"""The segment-level recurrences, in plain XLA (a few `[batch, state, channels]` arrays per segment).

Inside a segment the scan is `h -> P * h + h_end` as a whole, where `P = exp(A * sum(delta))` over
the segment (the product of its decays) and `h_end` is the state it reaches from zero. Chaining
those over the segments, in each direction's scan order, gives every segment's entry state; the
adjoint of the backward pass chains the same way, the other way round.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp



def segment_decay(A2, delta_sum):
    """P[d, b, s] = exp(A * sum of delta over segment s) from A2 = A * log2(e) [ndir, state_pad,
    channels_pad] and delta_sum [ndir, batch, segments, channels_pad]."""
    return jnp.exp2(A2[:, None, None] * delta_sum[:, :, :, None, :])


def _chain(x, decay, rev):
    """Exclusive scan along the segment axis (2) in scan order: out[i] = decay[i-1]*out[i-1] + x[i-1]."""
    if rev:
        x, decay = jnp.flip(x, 2), jnp.flip(decay, 2)

    def step(h, xs):
        x_i, p_i = xs
        return p_i * h + x_i, h

    init = jnp.zeros_like(x[:, :, 0])
    _, out = jax.lax.scan(step, init, (jnp.moveaxis(x, 2, 0), jnp.moveaxis(decay, 2, 0)))
    out = jnp.moveaxis(out, 0, 2)
    return jnp.flip(out, 2) if rev else out


def entry_states(h_end, decay, revs):
    """State entering each segment (token order of segments), per direction."""
    return jnp.concatenate([_chain(h_end[k:k + 1], decay[k:k + 1], rev) for k, rev in enumerate(revs)], 0)


def entry_adjoints(lam_out, decay, revs):
    """Adjoint entering each segment from the segment scanned after it (zero for the last one):
    the backward chain runs in the opposite order of each direction's scan."""
    return jnp.concatenate([_chain(lam_out[k:k + 1], decay[k:k + 1], not rev) for k, rev in enumerate(revs)], 0)
