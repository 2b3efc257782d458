"""Backend "triton" of `vim_jax.ops.selective_scan`: its launchers and availability checks."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from pallas_kernels.selective_scan import api, vjp
from pallas_kernels.triton_scan import launchers

KERNELS = vjp.Kernels(launchers.scan_forward, launchers.segment_summary, launchers.scan_backward,
                      launchers.adjoint_summary)


@dataclasses.dataclass(frozen=True)
class TritonScan(api.PallasScan):
    """The Triton selective scan with its options as fields (hashable, so usable as a static
    argument of a jitted function; never equal to a `PallasScan` with the same fields).

    The Pallas backend's entry points, argument preparation and custom VJP, running the Triton
    launchers of `launchers.py` instead of the Pallas ones.

    config: the tiling (`ScanConfig`, shared with the Pallas backend); None picks one per shape.
    interpret: run the kernels in Triton's interpreter on the host (any platform; slow): the CPU
      test of the kernel bodies.
    """

    kernels: ClassVar[vjp.Kernels] = KERNELS
    name: ClassVar[str] = "triton"

    def check_runnable(self, *arrays) -> None:
        """Raises NotImplementedError unless the kernels can run here (so the op falls through)."""
        if not self.interpret:
            # The platform first: importing triton here would fix it in compiler mode, which a
            # later interpreted call in the same process could not undo (`launch.py`).
            api.require_cuda_gpu("triton", "TritonScan(interpret=True) runs it in Triton's interpreter")
            try:
                import jax_triton  # noqa: F401
                import triton  # noqa: F401
            except ImportError as e:
                raise NotImplementedError(f"triton selective scan needs jax-triton and triton: {e}") from e
        api.require_dtypes("triton", arrays)
