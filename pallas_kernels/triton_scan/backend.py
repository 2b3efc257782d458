"""Backend "triton" of `vim_jax.ops.selective_scan`: its options, availability checks and entry points."""

from __future__ import annotations

import dataclasses

from pallas_kernels.selective_scan import api, vjp
from pallas_kernels.selective_scan.tiling import ScanConfig
from pallas_kernels.triton_scan import launchers

KERNELS = vjp.Kernels(launchers.scan_forward, launchers.segment_summary, launchers.scan_backward,
                      launchers.adjoint_summary)


@dataclasses.dataclass(frozen=True)
class TritonScan:
    """The Triton selective scan with its options as fields (hashable, so usable as a static
    argument of a jitted function).

    config: the tiling (`ScanConfig`, shared with the Pallas backend); None picks one per shape.
    interpret: run the kernels in Triton's interpreter on the host (any platform; slow): the CPU
      test of the kernel bodies.
    """

    config: ScanConfig | None = None
    interpret: bool = False

    def selective_scan(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        """See `vim_jax.ops.selective_scan`."""
        self.check_runnable(u, delta, A, B, C, D, z, delta_bias)
        add = lambda x: None if x is None else x[None]
        return api.run(add(u), add(delta), add(A), add(B), add(C), add(D), z, add(delta_bias), delta_softplus,
                       (bool(reverse),), 1.0, self.interpret, config=self.config, kernels=KERNELS,
                       name="triton")

    def selective_scan_bidirectional(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_scale):
        """See `vim_jax.ops.selective_scan_bidirectional`: both directions fused in one launch, as
        the Pallas backend does (its `bidirectional.py` explains how)."""
        self.check_runnable(u, delta, A, B, C, D, z, delta_bias)
        return api.run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, (False, True), float(out_scale),
                       self.interpret, config=self.config, kernels=KERNELS, name="triton")

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
