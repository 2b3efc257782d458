"""Running a Triton kernel on JAX arrays: `jax_triton.triton_call` on a GPU, or Triton's interpreter.

The interpreter (`TRITON_INTERPRET=1`, numpy underneath) runs the same kernel bodies on any
machine, as a `jax.pure_callback` over torch CPU tensors. It cannot run inline assembly: kernels
get `ON_GPU=False` there (`kernels.py` says what that changes).
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np


def triton_call(kernel_name: str, args, out_shapes, *, grid, num_warps: int, num_stages: int, **meta):
    """Outputs (a list, in `out_shapes` order) of kernel `kernel_name` of `kernels.py` on a GPU."""
    import jax_triton  # only here: it refuses to import without a CUDA-enabled jaxlib

    from pallas_kernels.triton_scan import kernels

    outs = jax_triton.triton_call(*args, kernel=getattr(kernels, kernel_name), out_shape=list(out_shapes),
                                  grid=grid, num_warps=num_warps, num_stages=num_stages,
                                  name=f"selective_scan_{kernel_name}", ON_GPU=True, **meta)
    return list(outs)


def interpreted_kernels():
    """`kernels.py` with its `@triton.jit` functions as Triton interpreter functions.

    Triton picks interpreter or compiler for every `@triton.jit` function, its own library's too,
    when it is decorated, from the variable TRITON_INTERPRET: so this turns the interpreter on for
    the whole process, and fails if triton was imported before without it."""
    if "triton" not in sys.modules:
        os.environ["TRITON_INTERPRET"] = "1"
    import triton.language.standard
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(triton.language.standard.sum, InterpretedFunction):
        raise NotImplementedError(
            "Triton's interpreter must be on when triton is first imported: set TRITON_INTERPRET=1 "
            "before importing it (or before the first interpreted call)")
    from pallas_kernels.triton_scan import kernels

    return kernels


def _to_torch(x):
    import torch

    x = np.ascontiguousarray(x)
    if x.dtype.name == "bfloat16":  # numpy has no bfloat16 of its own: reinterpret the bits
        return torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(x.copy())


def _to_numpy(t, dtype):
    import torch

    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(dtype)
    return t.numpy().astype(dtype, copy=False)


def interpret_call(kernel_name: str, args, out_shapes, *, grid, num_warps: int, num_stages: int, **meta):
    """As `triton_call`, in Triton's interpreter on the host (any platform; slow)."""
    kernel = getattr(interpreted_kernels(), kernel_name)
    out_shapes = list(out_shapes)

    def host(*arrays):
        import torch

        ins = [_to_torch(a) for a in arrays]
        outs = [_to_torch(np.full(s.shape, np.nan, s.dtype)) for s in out_shapes]  # unwritten: NaN
        kernel[grid](*ins, *outs, ON_GPU=False, **meta)
        with torch.no_grad():
            return tuple(_to_numpy(o, s.dtype) for o, s in zip(outs, out_shapes))

    return list(jax.pure_callback(host, tuple(out_shapes), *args, vmap_method="sequential"))
