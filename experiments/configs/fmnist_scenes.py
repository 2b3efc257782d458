"""UperNet segmentors on Fashion-MNIST scenes (11 classes: background and the ten garments; see
docs/fmnist_scenes.md), with the official ADE20K recipe's optimizer, pipeline and evaluation.

CPU run (a four-block, 64-wide Vim-UperNet on 64x64 crops of 64-96 px scenes, 2000 steps; on a
shared, loaded two-core CPU: 9.8 minutes, 283 s of CPU time, test mIoU 0.122, pixel accuracy
0.815; the model has only begun to tell the garments apart):

    vim-jax train --config experiments/configs/fmnist_scenes.py:cpu --workdir runs/scenes_cpu

GPU runs, Vim-Ti or DeiT-Ti backbone under the same UperNet, at 512 or 1024 px crops:

    vim-jax train --config experiments/configs/fmnist_scenes.py:512 --workdir runs/scenes_512_vim
    vim-jax train --config experiments/configs/fmnist_scenes.py:512,deit --workdir runs/scenes_512_deit
    vim-jax train --config experiments/configs/fmnist_scenes.py:1024 --workdir runs/scenes_1024_vim
    vim-jax train --config experiments/configs/fmnist_scenes.py:1024,deit --workdir runs/scenes_1024_deit

then a colour overlay of a prediction:

    vim-jax predict --task segment --checkpoint runs/scenes_512_vim/checkpoints scene.png --out overlay.png

Recipe (``default_segmentation_config``, the official one): AdamW lr 1e-4, weight decay 0.05,
layer-wise decay 0.92, poly schedule after a linear warm-up, mmseg's training pipeline (keep-ratio
resize to ``scale`` x 0.5-2.0, random crop with ``cat_max_ratio`` 0.75, flip, photometric
distortion), decode + 0.4 x auxiliary cross-entropy, sliding-window evaluation (crop, and stride
2/3 of it: 341 at 512), mIoU and pixel accuracy. Both backbones train from scratch here (no
ImageNet weights), so the comparison is of architectures at equal steps, not of the published
fine-tuned numbers; ``--config.init_from=PATH`` starts the backbone from a classifier of the same
architecture instead (an official ``.pth`` or a ``vim-jax train`` run's ``checkpoints``; see
``ade20k_upernet.py``). Scenes are generated on the fly from the Fashion-MNIST files
(``apt-get install dataset-fashion-mnist`` or ``--config.dataset.data_dir``); a run reads the
training scenes of one seed and evaluates on test scenes built only from test garments.
"""

from vim_jax.train.defaults import backbone_overrides, default_segmentation_config

# Backbone name -> (registered segmentor). Both are "tiny": 192 wide, Vim 24 blocks, DeiT 12.
BACKBONES = {"vim": "upernet_vim_tiny", "deit": "upernet_deit_tiny"}
SIZES = ("cpu", "512", "1024")


def get_config(arg: str | None = None):
    size, _, backbone = (arg or "").partition(",")
    if size not in SIZES or (backbone and backbone not in BACKBONES) or (size == "cpu" and backbone):
        raise ValueError(f"fmnist_scenes.py takes cpu, 512[,vim|deit] or 1024[,vim|deit], got {arg!r}")
    c = default_segmentation_config()
    c.dataset.update(name="fmnist_scenes", data_dir=None, manual_dir=None, train_split="train", eval_split="test",
                     num_classes=11)
    c.model.update(num_classes=11)

    if size == "cpu":
        # The four-block test segmentor (32 wide, 8-px patches) on 64 px crops: a 8x8 patch grid.
        c.model_name = "upernet_vim_test"
        c.model.update(crop_size=64, slide_stride=48, decode_channels=32, aux_channels=16,
                       backbone_overrides=backbone_overrides(c.model_name, embed_dim=64, d_state=8))
        # Fewer, larger garments than the GPU scenes: a third to two thirds of the canvas.
        c.dataset.update(scene_size=(64, 96), scene_items=(1, 3), scene_item_scale=(0.35, 0.7), scale=(128, 64),
                         crop_size=(64, 64), eval_pad_size=(96, 96), num_train_scenes=2000, num_eval_scenes=64,
                         num_workers=0)
        c.global_batch_size = 8
        c.eval_batch_size = 16
        c.num_train_steps = 2000
        c.optim.update(base_lr=3e-3, poly_warmup_steps=100, layer_decay=None)
        c.log_every_steps = 50
        c.eval_every_steps = 500
        c.checkpoint_every_steps = 500
        c.keep_checkpoints = 2
        return c

    crop = int(size)
    c.model_name = BACKBONES[backbone or "vim"]
    # bf16 compute (float32 parameters, BatchNorm and logits); the position embedding at the crop's grid.
    c.model.update(crop_size=crop, slide_stride=crop * 2 // 3, dtype="bfloat16",
                   backbone_overrides=backbone_overrides(c.model_name, img_size=crop, dtype="bfloat16"))
    # Scenes of 1-2x the crop, resized so that their shorter side is the crop (x 0.5-2.0 in training):
    # evaluation windows are then 3 x 3 at most, in a square of twice the crop.
    c.dataset.update(scene_size=(crop // 2, crop), scale=(4 * crop, crop), crop_size=(crop, crop),
                     eval_pad_size=(2 * crop, 2 * crop), num_train_scenes=20000, num_eval_scenes=500)
    c.global_batch_size = 16
    c.eval_batch_size = 8
    c.num_train_steps = 16000
    c.eval_every_steps = 2000
    c.checkpoint_every_steps = 2000
    return c
