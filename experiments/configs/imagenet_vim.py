"""Vision Mamba on ImageNet-1k from scratch: the official recipe (DeiT codebase, 300 epochs).

    vim-jax train --config experiments/configs/imagenet_vim.py:tiny --workdir runs/vim_tiny \\
        --config.dataset.data_dir=/data/tfds --config.dataset.manual_dir=/data/imagenet_tars

(`:small`, `:base` likewise.) `manual_dir` holds ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar; the first run prepares them into `data_dir` with the TFDS `imagenet2012`
builder (hours), later runs only read `data_dir`. On several hosts add
`--config.distributed=True`; for large models shard parameters with `--config.mesh.fsdp=N`.

Recipe (upstream scripts pt-vim-t.sh / pt-vim-s.sh and DeiT's defaults): AdamW (0.9, 0.999,
1e-8), lr = base x batch / 512 with a per-epoch cosine to 1e-5 after 5 warm-up epochs from 1e-6,
no gradient clipping, EMA 0.99996 (reported accuracy: the non-EMA model), repeated augmentation
x3, Mixup 0.8 / CutMix 1.0 (switch 0.5), label smoothing 0.1, RandAugment rand-m9-mstd0.5-inc1,
random erasing 0.25, random-resized crop + flip; evaluation: resize 256, centre crop 224.

| arg   | global batch | base lr (scaled)  | weight decay | drop path |
|-------|--------------|-------------------|--------------|-----------|
| tiny  | 1024         | 5e-4 (1e-3)       | 0.1          | 0.0       |
| small | 512          | 1e-3 (1e-3)       | 0.05         | 0.05      |
| base  | 1024         | 5e-4 (1e-3)       | 0.05         | 0.1       |

Vim-B has no official training script: its row is DeiT's defaults (lr 5e-4, weight decay 0.05,
drop path 0.1) at Vim-Ti's batch size; treat it as an assumption. Upstream trained in float32
(mixed precision gave NaNs there); here the compute dtype is bfloat16 with float32 parameters,
optimizer state, scan state and residual stream; use `--config.model.dtype=float32` for the
upstream arithmetic.
"""

from vim_jax.train.defaults import default_config

RECIPES = {
    # arg: (registered model, global batch, base lr, weight decay, drop path)
    "tiny": ("vim_tiny", 1024, 5e-4, 0.1, 0.0),
    "small": ("vim_small", 512, 1e-3, 0.05, 0.05),
    "base": ("vim_base", 1024, 5e-4, 0.05, 0.1),
}


def get_config(arg: str | None = None):
    if arg not in RECIPES:
        raise ValueError(f"imagenet_vim.py needs an argument, one of {sorted(RECIPES)} (e.g. imagenet_vim.py:tiny)")
    model, batch, lr, weight_decay, drop_path = RECIPES[arg]
    c = default_config()
    c.model_name = model
    # remat: on an H100 a Vim-S step at batch 128 runs 14% faster with it (953 vs 832 img/s)
    # and plans 2.9 instead of 29 GiB (experiments/results/profile_nvidia_h100_80gb_hbm3.md).
    c.model.update(num_classes=1000, drop_path_rate=drop_path, dtype="bfloat16", remat=True)
    c.dataset.update(name="imagenet2012", data_dir=None, manual_dir=None, train_split="train",
                     eval_split="validation", num_classes=1000, image_size=224)
    # DeiT draws one mixup lambda per GPU (8 GPUs).
    c.augment.mix_groups = 8
    c.global_batch_size = batch
    c.eval_batch_size = 1000
    c.num_epochs = 300.0
    c.optim.update(base_lr=lr, weight_decay=weight_decay, schedule_epochs=c.num_epochs)
    c.ema_decay = 0.99996
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    return c
