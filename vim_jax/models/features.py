"""`FeatureExtractor`: a backbone whose call returns the patch-grid maps of chosen blocks.

What `create_model(name, features_only=True, out_indices=...)` builds, as timm's features_only
models: a list of `[batch, rows, cols, embed_dim]` maps (class tokens removed), one per index,
for any image size; the blocks after the last index are not run. Parameters live under
`backbone`, so the extractor loads the same checkpoints as the model it wraps.
"""

from __future__ import annotations

from typing import Sequence

from flax import nnx

from vim_jax.models import intermediates


def default_out_indices(depth: int) -> tuple[int, ...]:
    """The last block of each quarter of the network: (5, 11, 17, 23) for 24 blocks, the blocks
    the official segmentation backbone reads."""
    return tuple(sorted({max(depth * (k + 1) // 4 - 1, 0) for k in range(4)}))


class FeatureExtractor(nnx.Module):
    """Wraps a model with `forward_intermediates`; `feature_info` lists, per output, its block,
    channels and stride in pixels (`reduction`), as timm's."""

    def __init__(self, backbone: nnx.Module, out_indices: Sequence[int] | int | None = None, norm: bool = False,
                 output_fmt: str = "NHWC"):
        cfg = backbone.cfg
        self.backbone = backbone
        self.out_indices = intermediates.block_indices(
            default_out_indices(cfg.depth) if out_indices is None else out_indices, cfg.depth)
        self.norm, self.output_fmt = norm, output_fmt
        self.feature_info = [{"module": f"blocks.{i}", "num_chs": cfg.embed_dim, "reduction": cfg.stride}
                             for i in self.out_indices]

    @property
    def cfg(self):
        return self.backbone.cfg

    def __call__(self, images):
        """Images `[batch, height, width, in_chans]` (float, normalised) -> list of float32 maps."""
        return self.backbone.forward_intermediates(images, self.out_indices, norm=self.norm,
                                                   output_fmt=self.output_fmt, intermediates_only=True)
