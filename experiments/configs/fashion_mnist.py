"""Vision Mamba on Fashion-MNIST (28x28 grey images, 10 classes).

Full run (one GPU; measured on one H100 80GB: 93.7% test top-1 after 70 epochs, 6.6 minutes from
the command to the end, 12,500 training images/s):

    vim-jax train --config experiments/configs/fashion_mnist.py --workdir runs/fashion_mnist

CPU run (README's main command: 7x7 patches, width 64, depth 4, d_state 4, 3 epochs; on two CPU
cores: 85.3% test top-1 in 2.9 minutes at ~1,240 images/s, experiments/results/fashion_mnist_cpu.md):

    vim-jax train --config experiments/configs/fashion_mnist.py:cpu --workdir runs/fashion_mnist_cpu

Smoke run (a two-block model, 40 steps; about a minute on a two-core CPU, ~55% test top-1):

    vim-jax train --config experiments/configs/fashion_mnist.py:smoke --workdir /tmp/fmnist_smoke

The model is Vim with 4x4 patches (7x7 = 49 tokens plus the middle class token), width 192 and
depth 10, trained in bfloat16 with AdamW, a per-step cosine schedule, label smoothing 0.1, random
crops (padding 2) and flips, drop path 0.1, and no mixup or cutmix. The data are read by
``vim_jax.data.fashion_mnist`` (numpy only, no TensorFlow) from ``/usr/share/datasets/fashion-mnist``
or ``$VIM_JAX_FASHION_MNIST_DIR``.
"""

from vim_jax.train.defaults import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.model_name = "vim_tiny"
    c.model.update(img_size=28, patch_size=4, stride=4, in_chans=1, num_classes=10,
                   embed_dim=192, depth=10, d_state=16, drop_path_rate=0.1, dtype="bfloat16")

    c.dataset.update(name="fashion_mnist", train_split="train", eval_split="test", num_classes=10,
                     image_size=28, channels=1, crop_padding=2, flip=True, num_repeats=1, repeat_replicas=1)
    c.augment.update(mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.1)

    c.global_batch_size = 256
    c.eval_batch_size = 1000
    c.num_epochs = 70.0
    c.optim.update(base_lr=2e-3, scale_lr_by_batch=False, warmup_lr=1e-6, warmup_epochs=1.0, min_lr=1e-5,
                   schedule_epochs=c.num_epochs, per_step=True, upstream_epoch_lag=False, weight_decay=0.05)
    c.ema_decay = None

    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    c.keep_checkpoints = 2

    if arg == "smoke":
        # A two-block model on 7x7 patches (16 tokens): checks the whole trainer end to end on a
        # CPU and learns a little. The two blocks are unrolled: XLA:CPU compiled the training step
        # in 6-9 s instead of 19 s with the scan over blocks (two shared cores); the parameters
        # are stacked either way, and the model's tests check that both give the same values and
        # gradients.
        c.model.update(patch_size=7, stride=7, embed_dim=32, depth=2, d_state=8, drop_path_rate=0.0,
                       dtype="float32", unroll_blocks=True)
        c.global_batch_size = 64
        c.eval_batch_size = 500
        c.num_train_steps = 40
        epochs = c.num_train_steps * c.global_batch_size / 60000
        c.optim.update(base_lr=3e-3, warmup_epochs=epochs / 8, schedule_epochs=epochs)
        c.eval_every_steps = 20
        c.log_every_steps = 5
        c.checkpoint_every_steps = 20
    elif arg == "cpu":
        # 16 patch tokens keep the sequential scan short; width 64 and 4 states per channel keep
        # the scan's elementwise work (batch x tokens x channels x states) small; four blocks are
        # unrolled (vim_jax.config.VimConfig.unroll_blocks).
        c.model.update(patch_size=7, stride=7, embed_dim=64, depth=4, d_state=4, drop_path_rate=0.0,
                       dtype="float32", unroll_blocks=True)
        c.global_batch_size = 128
        c.num_epochs = 3.0
        c.optim.update(base_lr=2e-3, warmup_epochs=0.2, schedule_epochs=c.num_epochs)
        c.log_every_steps = 50
    elif arg:
        raise ValueError(f"unknown argument {arg!r}; use fashion_mnist.py, fashion_mnist.py:cpu or fashion_mnist.py:smoke")
    return c
