"""Every trainer setting with its default; experiment configs start from :func:`default_config`.

Defaults are the official Vim (DeiT) ImageNet recipe wherever the recipe says something.
"""

from __future__ import annotations

import os

import ml_collections

from vim_jax.train.mesh import DEFAULT_RULES


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # parameters, data order, augmentation, dropout

    # Model: a registered name plus VimConfig overrides (dtype is the compute dtype; parameters,
    # optimizer state, the scan state and the residual stream stay float32).
    c.model_name = "vim_tiny"
    c.model = ml_collections.ConfigDict({"num_classes": 1000, "drop_path_rate": 0.0, "dtype": "float32"})
    # A pretrained checkpoint to start from (official .pth or ours); ignored when resuming.
    c.init_from = None
    c.init_from_required = False  # fine-tuning configs: refuse to start from random parameters

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
