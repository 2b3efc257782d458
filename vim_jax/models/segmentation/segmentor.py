"""`Segmentor`: backbone features -> pyramid -> UperNet (+ FCN auxiliary head), mmseg's
EncoderDecoder for a plain (single-stride) backbone."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from vim_jax.models.features import FeatureExtractor
from vim_jax.models.segmentation.config import SegmentorConfig
from vim_jax.models.segmentation.heads import FCNHead, UperHead
from vim_jax.models.segmentation.layers import resize_bilinear
from vim_jax.models.segmentation.neck import Pyramid


class Segmentor(nnx.Module):
    """Semantic segmentation over channels-last images `[batch, height, width, in_chans]`.

    `forward_train` gives the decode head's logits at stride 4 and the auxiliary head's at
    stride 16 (or None); calling the model gives the decode logits upsampled to the image size
    (bilinear, as mmseg's `encode_decode`). Any image size whose patch grid is divisible by 2 (by
    4 for stride-8 backbones) works; the backbone's position embedding is resized to it.
    Dropout, drop path and BatchNorm statistics follow `model.train()` / `model.eval()`.
    """

    def __init__(self, cfg: SegmentorConfig, *, rngs: nnx.Rngs):
        from vim_jax.registry import resolve  # the registry imports the presets that import this

        self.cfg = cfg
        backbone_cfg = cfg.backbone_config
        backbone = resolve(cfg.backbone).build(backbone_cfg, rngs)
        self.backbone = FeatureExtractor(backbone, cfg.out_indices)
        dim, dtype = backbone_cfg.embed_dim, jnp.dtype(cfg.dtype)
        self.neck = Pyramid(dim, backbone_cfg.stride, dtype=dtype, rngs=rngs)
        self.decode_head = UperHead([dim] * 4, cfg.decode_channels, cfg.num_classes, pool_scales=cfg.pool_scales,
                                    dropout=cfg.dropout, dtype=dtype, rngs=rngs)
        self.auxiliary_head = (FCNHead(dim, cfg.aux_channels, cfg.num_classes, num_convs=cfg.aux_num_convs,
                                       dropout=cfg.dropout, dtype=dtype, rngs=rngs) if cfg.aux_channels else None)

    # Where the backbone model sits in the parameter tree (under the feature extractor).
    BACKBONE_PATH = ("backbone", "backbone")

    @property
    def backbone_model(self) -> nnx.Module:
        """The backbone model itself (a VisionMamba, DeiT, ...): what a classifier's checkpoint
        initialises (`vim_jax.convert.read_backbone_params`); its parameters are at `BACKBONE_PATH`."""
        return self.backbone.backbone

    def forward_train(self, images):
        """-> (decode logits `[b, h/4, w/4, classes]`, auxiliary logits `[b, h/16, w/16, classes]`
        or None), float32."""
        pyramid = self.neck(self.backbone(images))
        aux = None if self.auxiliary_head is None else self.auxiliary_head(pyramid[self.cfg.aux_in_index])
        return self.decode_head(pyramid), aux

    def __call__(self, images):
        """Images -> decode logits `[batch, height, width, classes]` at the image size, float32."""
        logits, _ = self.forward_train(images)
        return resize_bilinear(logits, images.shape[1:3])
