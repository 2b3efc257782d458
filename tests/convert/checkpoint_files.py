"""Real checkpoint files for the conversion tests, written with torch the way the official code does.

`write_training_checkpoint` saves what the official `main.py` saves: `model`, `model_ema`,
`optimizer` (real AdamW state after one step), `lr_scheduler`, `epoch`, `scaler` and `args` (an
`argparse.Namespace`). `write_zip_checkpoint` assembles a `.pth` zip from a hand-made pickle, for
files torch itself would never write (malicious or corrupt ones).
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import zipfile
from pathlib import Path

import jax
import numpy as np
import torch
from flax import nnx

from tests.official_torch import random_official_state_dict
from vim_jax.config import VimConfig
from vim_jax.models.vim_keys import VIM_KEYS
from vim_jax.models.vim import VisionMamba

# The float64 oracle runs thousands of tiny ops; extra threads only add contention on small CPUs.
torch.set_num_threads(1)


def torch_state_dict(state_dict: dict[str, np.ndarray]) -> collections.OrderedDict:
    return collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in state_dict.items())


def official_args(cfg: VimConfig, **extra) -> argparse.Namespace:
    """A subset of the official run's command line, as its checkpoints pickle it."""
    return argparse.Namespace(
        model="vim_small_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2",
        batch_size=128, epochs=300, input_size=cfg.img_size, drop_path=0.05, model_ema=True,
        model_ema_decay=0.99996, opt="adamw", opt_eps=1e-8, opt_betas=None, weight_decay=0.05, lr=1e-3,
        sched="cosine", warmup_lr=1e-6, min_lr=1e-5, color_jitter=0.3, aa="rand-m9-mstd0.5-inc1",
        smoothing=0.1, train_interpolation="bicubic", repeated_aug=True, reprob=0.25, mixup=0.8, cutmix=1.0,
        data_path="/data/imagenet", data_set="IMNET", output_dir="./output/vim_small", device="cuda", seed=0,
        dist_url="env://", no_amp=True, **extra)


def write_training_checkpoint(path, state_dict: dict[str, np.ndarray], cfg: VimConfig, *,
                              ema_state_dict: dict[str, np.ndarray] | None = None) -> Path:
    """`torch.save` of a full official training dict around `state_dict`."""
    model = torch_state_dict(state_dict)
    params = [torch.nn.Parameter(t.clone()) for t in model.values()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=300)
    torch.save({
        "model": model,
        "model_ema": torch_state_dict(ema_state_dict if ema_state_dict is not None else state_dict),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "epoch": 299,
        "scaler": torch.amp.GradScaler("cpu").state_dict(),
        "args": official_args(cfg),
    }, path)
    return Path(path)


def write_bare_state_dict(path, state_dict: dict[str, np.ndarray]) -> Path:
    torch.save(torch_state_dict(state_dict), path)
    return Path(path)


class _Storage:
    """Pickled as torch's persistent storage record ('storage', type, key, location, numel)."""

    def __init__(self, key: str, storage_type, numel: int):
        self.record = ("storage", storage_type, key, "cpu", numel)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.record if isinstance(obj, _Storage) else None


class Reduce:
    """Pickles as `function(*args)`: a REDUCE of whatever global `function` names."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def tensor_record(key: str, numel: int, offset: int, size, stride) -> Reduce:
    """The pickle torch writes for a float32 tensor viewing storage `key`."""
    return Reduce(torch._utils._rebuild_tensor_v2, _Storage(key, torch.FloatStorage, numel), offset,
                  tuple(size), tuple(stride), False, collections.OrderedDict())


def write_zip_checkpoint(path, obj, storages: dict[str, bytes] | None = None, *, suffix: bytes = b"") -> Path:
    """A torch-layout zip around `pickle(obj)` (protocol 2, as torch.save), with `suffix` opcodes
    spliced in before the final STOP."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(obj)
    data = buffer.getvalue()
    assert data.endswith(b".")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data[:-1] + suffix + b".")
        archive.writestr("archive/byteorder", "little")
        for key, raw in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", raw)
    return Path(path)


def abstract_vim(cfg: VimConfig) -> VisionMamba:
    """A VisionMamba with abstract parameters (nothing initialised), as `create_model` makes."""
    return nnx.eval_shape(lambda r: VisionMamba(cfg, rngs=r), nnx.Rngs(0))


def random_params(cfg: VimConfig, seed: int) -> dict:
    """Random weights in our parameter layout (`nnx.to_pure_dict`), made in numpy."""
    shapes = jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(nnx.state(abstract_vim(cfg), nnx.Param)))
    return VIM_KEYS.official_to_ours(random_official_state_dict(cfg, seed), cfg, shapes)


def relative_error(got, ref) -> float:
    return float(np.linalg.norm(np.asarray(got, np.float64) - ref) / np.linalg.norm(ref))
