"""Stride-8 fine-tuning of a pretrained Vision Mamba on ImageNet-1k (upstream ft-vim-t.sh / ft-vim-s.sh).

    vim-jax train --config experiments/configs/imagenet_vim_finetune.py:tiny --workdir runs/vim_tiny_stride8 \\
        --config.init_from=runs/vim_tiny/checkpoints \\
        --config.dataset.data_dir=/data/tfds

`init_from` takes an official `.pth` (e.g. vim_t_midclstok_76p1acc.pth) or a checkpoint of ours
(a run's `checkpoints` directory: its latest step). `vim_jax.convert.load_into` resizes the
position embedding from the 14x14 grid of stride 16 to the 27x27 grid of stride 8 around the
middle class token. (`:small` likewise.)

Recipe: 30 epochs at a constant 1e-5 (upstream: --lr 5e-6 at batch 1024, scaled x2, with
--warmup-lr 1e-5 --min-lr 1e-5, so warm-up and cosine are flat), weight decay 1e-8, drop path
0, everything else as in pre-training (imagenet_vim.py).
"""

from vim_jax.train.defaults import default_config

MODELS = {"tiny": "vim_tiny_stride8", "small": "vim_small_stride8"}


def get_config(arg: str | None = None):
    if arg not in MODELS:
        raise ValueError(f"imagenet_vim_finetune.py needs an argument, one of {sorted(MODELS)}")
    c = default_config()
    c.model_name = MODELS[arg]
    # remat: on an H100 a Vim-S step at batch 128 runs 14% faster with it (953 vs 832 img/s)
    # and plans 2.9 instead of 29 GiB (experiments/results/profile_nvidia_h100_80gb_hbm3.md).
    c.model.update(num_classes=1000, drop_path_rate=0.0, dtype="bfloat16", remat=True)
    c.init_from_required = True  # --config.init_from=PATH
    c.dataset.update(name="imagenet2012", data_dir=None, manual_dir=None, train_split="train",
                     eval_split="validation", num_classes=1000, image_size=224)
    c.augment.mix_groups = 8
    c.global_batch_size = 1024
    c.eval_batch_size = 500
    c.num_epochs = 30.0
    c.optim.update(base_lr=5e-6, warmup_lr=1e-5, min_lr=1e-5, schedule_epochs=c.num_epochs, weight_decay=1e-8)
    c.ema_decay = 0.99996
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    return c
