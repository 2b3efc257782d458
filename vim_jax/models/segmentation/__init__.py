"""Semantic segmentation on any features_only backbone: pyramid neck, UperNet, FCN auxiliary head,
sliding-window inference."""

from vim_jax.models.segmentation.config import SegmentorConfig, registered_segmentors
from vim_jax.models.segmentation.layers import resize_bilinear
from vim_jax.models.segmentation.segmentor import Segmentor
from vim_jax.models.segmentation.sliding import slide_inference

__all__ = ["Segmentor", "SegmentorConfig", "registered_segmentors", "resize_bilinear", "slide_inference"]
