"""Operations with interchangeable backends."""

from vim_jax.ops.conv_selective_scan import conv_prologue, conv_selective_scan, conv_selective_scan_bidirectional
from vim_jax.ops.selective_scan import (
    candidate_backends,
    list_backends,
    register_backend,
    selective_scan,
    selective_scan_bidirectional,
)

__all__ = ["candidate_backends", "conv_prologue", "conv_selective_scan", "conv_selective_scan_bidirectional",
           "list_backends", "register_backend", "selective_scan", "selective_scan_bidirectional"]
