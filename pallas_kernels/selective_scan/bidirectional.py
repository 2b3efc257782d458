"""The fused bidirectional scan of Vim's mixer: both directions in one launch, combined in-kernel.

Each forward program runs direction 0 over its tokens, parks `out_scale * y_fwd` in a float32
buffer, then runs direction 1 over the same tokens and writes `(parked + out_scale * y_bwd) *
silu(z)`: one output write, one read of z, no flipped copies. The backward is one launch with the
direction as a grid axis.
"""

from __future__ import annotations

from pallas_kernels.selective_scan import api


def selective_scan_bidirectional(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_scale):
    """See `vim_jax.ops.selective_scan_bidirectional`; inputs but z carry a leading axis of 2."""
    interpret = api.check_runnable(u, delta, A, B, C, D, z, delta_bias)
    return api.run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, (False, True),
                   float(out_scale), interpret,
                   config=api.config_override())
