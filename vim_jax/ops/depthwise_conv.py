"""The depthwise token conv of the Mamba mixer (its `conv1d`), causal or anti-causal, for one
direction or several stacked: shared by the models and the fused conv + scan op."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Up to this many tokens the depthwise conv runs as one banded matmul (see `depthwise_conv1d`).
BANDED_CONV_MAX_LENGTH = 32


def depthwise_conv1d(x, kernel, bias, reverse):
    """Depthwise conv over tokens, causal (`y_t` sees `x_{t-K+1..t}`) or anti-causal when reversed.

    One direction: `x: [b, l, c]`, `kernel: [K, c]`, `bias: [c]`, `reverse` a bool -> `[b, l, c]`.
    Several at once: `kernel: [k, K, c]`, `bias: [k, c]`, `reverse` k bools -> `[k, b, l, c]`,
    stacked (what the fused bidirectional scan reads). The anti-causal conv equals the causal one
    run on the token-reversed sequence and reversed back, without the two flips.

    Sequences of up to `BANDED_CONV_MAX_LENGTH` tokens are convolved as one matmul with a banded
    `[l, l]` matrix per channel and direction; longer ones as a sum of shifted copies. Both give
    the same values; the matmul does `l / (2K - 1)` times the multiplications, but its gradient is
    two matmuls. The shifted sum's gradient is a sum of shifted copies of the incoming gradient,
    into which XLA's CPU compiler fused the whole elementwise computation of that gradient once
    per tap: in the training step of README's CPU model (17 tokens) that one fusion took a quarter
    of the step, and the matmul form made the step 1.1x faster.
    """
    single = isinstance(reverse, bool)
    if single:
        kernel, bias, reverse = kernel[None], bias[None], (reverse,)
    width, length = kernel.shape[1], x.shape[1]
    # Tap j of a causal conv reads x_{t+j-(K-1)}, of an anti-causal one x_{t+(K-1)-j}; every
    # direction gets a kernel over the union of offsets, zero where it has no tap.
    left = 0 if all(reverse) else width - 1
    right = width - 1 if any(reverse) else 0
    taps = left + right + 1
    per_offset = jnp.stack([jnp.pad(k[::-1], ((left, right - width + 1), (0, 0))) if rev
                            else jnp.pad(k, ((left - width + 1, right), (0, 0)))
                            for k, rev in zip(kernel, reverse)]).astype(x.dtype)  # [k, taps, c]
    biases = bias.astype(x.dtype)[:, None, None, :]
    if length <= BANDED_CONV_MAX_LENGTH:
        # band[k, t, s, c]: the weight of x_s in y_t, the tap at offset s - t (zero off the band).
        offset = np.arange(length)[None, :] - np.arange(length)[:, None] + left
        inside = (offset >= 0) & (offset < taps)
        band = per_offset[:, np.clip(offset, 0, taps - 1)] * jnp.asarray(inside, x.dtype)[None, :, :, None]
        # HIGHEST: the shifted sum's products are exact in float32, and a GPU's default float32
        # matmul (TF32) rounds x and the taps to 10 mantissa bits.
        y = jnp.einsum("ktsc,bsc->kbtc", band, x, precision=jax.lax.Precision.HIGHEST) + biases
    else:
        xp = jnp.pad(x, ((0, 0), (left, right), (0, 0)))
        shifted = [jax.lax.slice_in_dim(xp, i, i + length, axis=1).astype(jnp.float32) for i in range(taps)]
        # One sum of shifted copies per direction over its own K offsets, not one product
        # broadcast over the directions: the broadcast form's gradient is a reduction over the
        # directions, which XLA's CPU backend ran 6x slower than this form's gradient (b128, 17
        # tokens, 192 channels, two directions). Products and sums in float32, rounded once: on
        # an H200 this was 2.5x more accurate than bf16 partial sums and no slower
        # (experiments/results/bench_mixer_pieces_nvidia_h200.md).
        own = [range(left, left + width) if rev else range(left - width + 1, left + 1) for rev in reverse]
        w32 = per_offset.astype(jnp.float32)
        y = jnp.stack([(bias[k].astype(jnp.float32) + sum(w32[k, i] * shifted[i] for i in own[k])).astype(x.dtype)
                       for k in range(len(reverse))])
    return y[0] if single else y
