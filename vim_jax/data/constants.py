"""Normalisation constants shared by the TF, numpy and PIL paths (importing this needs no TF)."""

# ImageNet RGB mean/std on the [0, 1] scale, as in timm/DeiT (IMAGENET_DEFAULT_MEAN/STD).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The official evaluation transform: resize the shorter side to int(224 / 0.875) = 256, crop 224.
IMAGENET_EVAL_CROP_PCT = 0.875
IMAGENET_IMAGE_SIZE = 224
IMAGENET_NUM_CLASSES = 1000

# Fashion-MNIST train-set pixel mean/std on the [0, 1] scale (tests recompute them from the files).
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
FASHION_MNIST_NUM_CLASSES = 10
