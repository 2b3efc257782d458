"""UperNet + Vim on ADE20K (150 classes): the official segmentation recipe of hustvl/Vim (`seg/`,
mmsegmentation 0.29), 512x512 crops, 60k steps.

    vim-jax train --config experiments/configs/ade20k_upernet.py:tiny --workdir runs/upernet_vim_tiny \\
        --config.dataset.data_dir=/data/tfds --config.dataset.manual_dir=/data/ade20k

(`:small` likewise.) The official recipe starts the backbone from the ImageNet classifier; add
`--config.init_from=vim_t_midclstok_76p1acc.pth` (`vim_s_midclstok_80p5acc.pth` for `:small`), or
a classifier run of ours (`--config.init_from=runs/vim_tiny/checkpoints`): its blocks fill the
backbone, its class token and that token's position-embedding row are dropped (the middle row of
the released models), the 14 x 14 patch rows are resized to the 32 x 32 grid of the 512 crop
(bicubic), and its classifier is not used; the pyramid, UperNet and the auxiliary head start from
scratch (`vim_jax.convert.read_backbone_params`). `manual_dir` holds the official `ADEChallengeData2016.zip`
(http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip); the first run prepares
it into `data_dir` with the TFDS builder `ade20k_scene_parsing` (`vim_jax/data/ade20k.py`), later
runs only read `data_dir`. Evaluate, and segment a photo:

    vim-jax eval --config experiments/configs/ade20k_upernet.py:tiny --workdir runs/upernet_vim_tiny \\
        --config.dataset.data_dir=/data/tfds
    vim-jax predict --task segment --checkpoint runs/upernet_vim_tiny/checkpoints photo.jpg --out photo.png

Recipe (`upernet_vim_{tiny,small}_24_512_slide_60k.py`): AdamW (0.9, 0.999), lr 1e-4, weight
decay 0.05, layer-wise decay 0.92 over 24 layers (upstream's rule, which decays only the
embeddings of a Vim backbone: `vim_jax.train.segmentation_optim`; `--config.optim.layer_decay_rule=
per_block` decays block by block as intended), poly schedule (power 1, to 0) after 1500 linear
warm-up steps from 1e-6 of the rate, no gradient clipping, 60k steps at batch 32 (8 per GPU on 4
GPUs), drop path 0.1, SyncBN (BatchNorm over the global batch); data: `reduce_zero_label`,
resize to (2048, 512) x 0.5-2.0, random 512 crop with `cat_max_ratio` 0.75, flip, photometric
distortion, pad 512; loss: cross-entropy with ignore label 255 (mean over all pixels) + 0.4 x the
FCN auxiliary head's; evaluation every 1000 steps: resize to (2048, 512), sliding windows 512 /
stride 341, mIoU, pixel accuracy. Upstream's fine-tuning scripts (`seg/scripts/ft_vim_*_upernet.sh`)
override lr to 2e-4 and the weight decay to 0.1 for Vim-Ti: `--config.optim.base_lr=2e-4
--config.optim.weight_decay=0.1`.

Differences: without `--config.init_from` the backbone trains from scratch (upstream's scripts
always pass ImageNet weights as `model.backbone.pretrained`). Upstream resizes the position
embedding as if its class token led the sequence; here its row is found where it is. Evaluation pads every resized image to 2048 x 2048 (mean colour, ignore label) so
that one program compiles, and places its windows over that canvas, so pixels near the right or
bottom edge are averaged over other windows than in mmseg; padded pixels are not scored.
"""

from vim_jax.train.defaults import backbone_overrides, default_segmentation_config

MODELS = {"tiny": "upernet_vim_tiny", "small": "upernet_vim_small"}


def get_config(arg: str | None = None):
    if arg not in MODELS:
        raise ValueError(f"ade20k_upernet.py needs an argument, one of {sorted(MODELS)} (e.g. ade20k_upernet.py:tiny)")
    c = default_segmentation_config()
    c.model_name = MODELS[arg]
    # bf16 compute (upstream: AMP), float32 parameters, BatchNorm and logits.
    c.model.update(num_classes=150, dtype="bfloat16",
                   backbone_overrides=backbone_overrides(c.model_name, dtype="bfloat16"))
    c.dataset.update(name="ade20k", data_dir=None, manual_dir=None, train_split="train", eval_split="validation",
                     num_classes=150)
    return c
