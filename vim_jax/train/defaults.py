"""Every trainer setting with its default; experiment configs start from :func:`default_config`
(classification) or :func:`default_segmentation_config`.

Defaults are the official Vim (DeiT) ImageNet recipe wherever the recipe says something, and for
segmentation the official ADE20K UperNet recipe (hustvl/Vim ``seg/``, through mmsegmentation).
"""

from __future__ import annotations

import os

import ml_collections

from vim_jax import registry
from vim_jax.train.mesh import DEFAULT_RULES


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # parameters, data order, augmentation, dropout
    c.task = "classification"  # or "segmentation": the loss, evaluation and metrics (vim_jax.train.tasks)

    # Model: a registered name plus VimConfig overrides (dtype is the compute dtype; parameters,
    # optimizer state, the scan state and the residual stream stay float32).
    c.model_name = "vim_tiny"
    c.model = ml_collections.ConfigDict({"num_classes": 1000, "drop_path_rate": 0.0, "dtype": "float32"})
    # A pretrained checkpoint to start from (official .pth or ours); ignored when resuming.
    c.init_from = None
    c.init_from_required = False  # fine-tuning configs: refuse to start from random parameters
    # Where an official .pth's class token sits ("middle", "head", "head_tail", "none"), for a
    # segmentor's backbone, which drops it; None: as the file shows (one token: the middle, as
    # upstream's default and every released Vim). Our checkpoints record it.
    c.init_from_cls_token = None

    c.dataset = ml_collections.ConfigDict({
        "name": "imagenet2012",     # or "fashion_mnist"
        "data_dir": None,           # TFDS data dir (imagenet2012) / folder of the IDX files (fashion_mnist)
        "manual_dir": None,         # imagenet2012: folder of ILSVRC2012_img_{train,val}.tar, prepared once
        "train_split": "train",
        "eval_split": "validation",
        "num_classes": 1000,
        "image_size": 224,
        "num_repeats": 3,           # DeiT's repeated augmentation
        "repeat_replicas": 8,       # ... dealt over this many replicas (DeiT's 8 GPUs)
        # imagenet2012 only:
        "rand_augment": "rand-m9-mstd0.5-inc1",
        "random_erasing": 0.25,
        "eval_crop_pct": 0.875,
        # Grain worker processes decoding and augmenting (0: two threads of the trainer). Batches do
        # not depend on it, so the default takes what the machine has: all cores but two, at most 16.
        "num_workers": min(16, max(0, len(os.sched_getaffinity(0)) - 2)),
        # fashion_mnist only:
        "channels": 1,
        "crop_padding": 4,
        "flip": True,
    })
    c.augment = ml_collections.ConfigDict({
        "mixup_alpha": 0.8,
        "cutmix_alpha": 1.0,
        "mix_prob": 1.0,
        "switch_prob": 0.5,
        "label_smoothing": 0.1,
        "mix_groups": 1,  # independent mixup draws per global batch (DeiT: one per GPU)
    })

    c.global_batch_size = 1024
    c.eval_batch_size = 1024
    c.num_epochs = 300.0
    c.num_train_steps = None  # overrides num_epochs when set

    c.optim = ml_collections.ConfigDict({
        "base_lr": 5e-4,              # x global_batch_size / 512 when scale_lr_by_batch
        "scale_lr_by_batch": True,
        "warmup_lr": 1e-6,
        "warmup_epochs": 5.0,
        "min_lr": 1e-5,
        "schedule_epochs": 300.0,     # length of the cosine (DeiT: the number of epochs)
        "per_step": False,            # False: constant within an epoch, as upstream
        "upstream_epoch_lag": True,   # epoch e trains at the value of epoch e - 1 (upstream's order)
        "weight_decay": 0.05,
        "decay_A_log": True,          # upstream decays A_log (its no-decay tag is never read)
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "grad_clip_norm": None,       # upstream: no clipping
        "schedule": "cosine",         # or "poly": mmcv's poly policy by step (the segmentation recipe) ...
        "poly_power": 1.0,            # ... (1 - step / total) ** power ...
        "poly_warmup_steps": 0,       # ... after a linear warm-up of this many steps ...
        "poly_warmup_ratio": 1e-6,    # ... from this fraction of the value
        "layer_decay": None,          # layer-wise lr decay rate (BEiT's; segmentation: 0.92), None: off
        "layer_decay_rule": "per_block",  # or "official" (vim_jax.train.segmentation_optim)
    })
    c.ema_decay = 0.99996  # None: no EMA
    c.eval_ema = False     # also evaluate the EMA parameters (the reported numbers are non-EMA)

    # Parallelism: mesh axis sizes (-1: the remaining devices) and logical-axis -> mesh-axis rules.
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
    c.sharding_rules = DEFAULT_RULES
    c.distributed = False  # multi-host: join the run through jax.distributed.initialize ...
    c.coordinator_address = None  # ... with these three, where they are not auto-detected
    c.num_processes = None        #     (TPU pods, SLURM, Open MPI: leave them None)
    c.process_id = None

    # Precision and stability.
    c.skip_nonfinite_steps = False  # False: stop at a non-finite loss; True: skip that update

    # Logging, evaluation, checkpoints.
    c.log_every_steps = 50
    c.eval_every_steps = None        # None: at the end of every epoch (and of the run)
    c.max_eval_batches = None        # None: the whole split; N: its first N batches (quick checks)
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.async_checkpoints = True
    c.stop_after_steps = None        # save and stop once this step is reached (splits a run)
    c.prefetch_batches = 2
    c.tensorboard = True
    c.progress_bar = True
    return c


def default_segmentation_config() -> ml_collections.ConfigDict:
    """The official ADE20K UperNet recipe (hustvl/Vim ``seg/configs/vim/upernet``): AdamW lr 1e-4,
    weight decay 0.05, layer-wise decay 0.92 (upstream's rule: only the embeddings decay, see
    ``segmentation_optim``), poly schedule (power 1, to 0) after 1500 linear
    warm-up steps from 1e-6 of the rate, batch 32 (8 per GPU on 4 GPUs), 60k steps, 512x512 crops
    of the mmseg training pipeline, decode + 0.4 x auxiliary cross-entropy with ignore label 255,
    sliding-window evaluation (the model's crop 512, stride 341) every 1000 steps, mIoU and pixel
    accuracy. Experiment configs set the model and the data."""
    c = default_config()
    c.task = "segmentation"
    c.model_name = "upernet_vim_tiny"
    # Segmentor fields (SegmentorConfig); the backbone's drop path is in its backbone_overrides.
    c.model = ml_collections.ConfigDict({"num_classes": 150, "dtype": "float32"})
    c.dataset = ml_collections.ConfigDict({
        "name": "ade20k",           # or "fmnist_scenes"
        "data_dir": None,           # ade20k: TFDS data dir; fmnist_scenes: the Fashion-MNIST IDX folder
        "manual_dir": None,         # ade20k: the folder of ADEChallengeData2016.zip, prepared once
        "train_split": "train",
        "eval_split": "validation",
        "num_classes": 150,
        # The training pipeline (vim_jax.data.seg_transforms.SegTrainConfig) ...
        "scale": (2048, 512),       # (long, short) edge bounds of the keep-ratio resize ...
        "ratio_range": (0.5, 2.0),  # ... times a random factor in this range
        "crop_size": (512, 512),
        "cat_max_ratio": 0.75,
        "flip_prob": 0.5,
        "photometric": True,
        "photometric_on_device": True,  # drawn on the host, applied in the training step (same values)
        # ... and evaluation: the keep-ratio resize to `scale`, padded (mean colour, ignore label) to
        # one size so that batches stack and one program compiles; it must hold every resized image.
        "eval_pad_size": (2048, 2048),
        # fmnist_scenes only: canvas side bounds, garments per scene, their side as a fraction of
        # the canvas's shorter side, and the number of scenes per split.
        "scene_size": (256, 1024),
        "scene_items": (3, 8),
        "scene_item_scale": (0.1, 0.4),
        "num_train_scenes": 10000,
        "num_eval_scenes": 500,
        "num_workers": min(16, max(0, len(os.sched_getaffinity(0)) - 2)),
    })
    c.global_batch_size = 32
    c.eval_batch_size = 8
    c.num_train_steps = 60000
    c.optim.update(base_lr=1e-4, scale_lr_by_batch=False, weight_decay=0.05, min_lr=0.0, schedule="poly",
                   poly_power=1.0, poly_warmup_steps=1500, poly_warmup_ratio=1e-6, layer_decay=0.92,
                   layer_decay_rule="official")
    c.ema_decay = None
    c.log_every_steps = 50
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 4
    return c


def backbone_overrides(model_name: str, **changes) -> tuple[tuple[str, object], ...]:
    """The registered segmentor's ``backbone_overrides`` with ``changes`` (e.g. ``img_size=1024``,
    ``dtype="bfloat16"``) replacing or adding fields: a value for ``config.model.backbone_overrides``."""
    current = dict(registry.get_config(model_name).backbone_overrides)
    return tuple({**current, **changes}.items())
