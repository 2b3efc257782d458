"""Semantic-segmentation pieces that know no model: metrics and colour overlays.

* ``metrics``  confusion matrix (JAX, jit-able) and mIoU / pixel accuracy from it.
* ``overlay``  fixed palettes (ADE20K's 150 colours, one for the Fashion-MNIST scenes) and
               colour overlays of label maps on images, saved as PNG with an optional legend.
"""
