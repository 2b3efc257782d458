"""AdamW with the official Vim/DeiT learning-rate schedule and weight-decay exclusions.

Schedule (timm ``CosineLRScheduler`` as DeiT's ``create_scheduler`` builds it, stepped once per
epoch): with ``peak = base_lr * global_batch / 512``, epoch ``t`` trains at

    warmup_lr + t * (peak - warmup_lr) / warmup_epochs                     if t < warmup_epochs
    min_lr + (peak - min_lr) * (1 + cos(pi * min(t, epochs) / epochs)) / 2  otherwise

(the cosine counts from epoch 0, not from the end of the warm-up). Upstream calls
``lr_scheduler.step(epoch)`` *after* epoch ``epoch``, so epoch ``e`` really trains at the value for
``max(e - 1, 0)``; ``upstream_epoch_lag`` reproduces that. ``per_step`` evaluates the same curve
at fractional epochs instead (smoother, for short runs).

Weight decay (timm ``param_groups_weight_decay``): no decay for tensors that are 1-D in the
official layout (biases, norm weights, ``D``) nor for ``pos_embed`` and ``cls_token``. Our
parameters stack the blocks (``layers``) and the scan directions (``direction``) on leading
axes, so a tensor's official rank is its number of logical axes other than those two. The
official runs decay the 2-D ``A_log`` (its no-decay tag was never read); ``decay_A_log=False``
excludes it instead.

The segmentation recipe (``schedule="poly"``, ``layer_decay``) uses mmcv's poly schedule by step
and BEiT's layer-wise learning-rate decay instead (``vim_jax.train.segmentation_optim``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vim_jax.train import segmentation_optim

NO_DECAY_NAMES = ("pos_embed", "cls_token")
STACKING_AXES = ("layers", "direction")
LR_REFERENCE_BATCH = 512  # DeiT: lr = args.lr * global_batch / 512


def peak_learning_rate(optim: ml_collections.ConfigDict, global_batch_size: int) -> float:
    scale = global_batch_size / LR_REFERENCE_BATCH if optim.scale_lr_by_batch else 1.0
    return optim.base_lr * scale


SCHEDULES = ("cosine", "poly")


def learning_rate_schedule(optim: ml_collections.ConfigDict, global_batch_size: int,
                           steps_per_epoch: int, total_steps: int | None = None) -> optax.Schedule:
    """Step -> learning rate (see the module docstring); jit-able and callable on host ints.

    ``optim.schedule`` "poly" is mmcv's poly policy over ``total_steps`` with a linear warm-up of
    ``optim.poly_warmup_steps`` from ``optim.poly_warmup_ratio`` times the value.
    """
    peak = peak_learning_rate(optim, global_batch_size)
    if optim.schedule not in SCHEDULES:
        raise ValueError(f"config.optim.schedule={optim.schedule!r}; expected one of {SCHEDULES}")
    if optim.schedule == "poly":
        if total_steps is None:
            raise ValueError("the poly schedule needs the run's total number of steps")
        return segmentation_optim.poly_schedule(peak, total_steps, power=optim.poly_power, min_lr=optim.min_lr,
                                                warmup_steps=optim.poly_warmup_steps,
                                                warmup_ratio=optim.poly_warmup_ratio)
    warmup_lr, min_lr = optim.warmup_lr, optim.min_lr
    warmup_epochs, epochs = optim.warmup_epochs, optim.schedule_epochs

    def schedule(step):
        epoch = jnp.asarray(step, jnp.float32) / steps_per_epoch
        if not optim.per_step:
            epoch = jnp.floor(epoch)
            if optim.upstream_epoch_lag:
                epoch = jnp.maximum(epoch - 1.0, 0.0)
        warmup = warmup_lr + epoch * (peak - warmup_lr) / max(warmup_epochs, 1e-12)
        cosine = min_lr + 0.5 * (peak - min_lr) * (1.0 + jnp.cos(math.pi * jnp.minimum(epoch, epochs) / epochs))
        return jnp.where(epoch < warmup_epochs, warmup, cosine)

    return schedule


def official_rank(logical_axes, shape) -> int:
    """Rank of a parameter in the official (per-block, per-direction) layout."""
    if logical_axes is None:
        return len(shape)
    return sum(axis not in STACKING_AXES for axis in logical_axes)


def weight_decay_mask(param_shapes: dict, logical_axes: dict, decay_A_log: bool = True) -> dict:
    """Pure nested dict of bools, True where weight decay applies.

    Args:
      param_shapes: nested dict of arrays or ShapeDtypeStructs (``nnx.to_pure_dict`` layout).
      logical_axes: the same nested dict holding each parameter's logical axis names.
      decay_A_log: decay ``A_log`` (the official runs do) or exclude it.
    """
    def decide(path, value, axes):
        name = path[-1].key
        if name in NO_DECAY_NAMES:
            return False
        if name == "A_log":
            return decay_A_log
        return official_rank(axes, value.shape) > 1

    # `logical_axes` is read up to the parameters' structure: each tuple of names arrives whole.
    return jax.tree_util.tree_map_with_path(decide, param_shapes, logical_axes)


def scale_by_tree(scales: dict) -> optax.GradientTransformation:
    """Multiplies each update by its entry of `scales` (a float or a broadcastable array)."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def layer_lr_scales(optim: ml_collections.ConfigDict, param_shapes: dict) -> dict | None:
    """Layer-wise learning-rate factors per parameter (``optim.layer_decay``: the rate; None: none),
    over as many layers as the parameters stack blocks."""
    if not optim.layer_decay:
        return None
    return segmentation_optim.layer_decay_scales(
        param_shapes, num_layers=segmentation_optim.stacked_block_count(param_shapes), rate=optim.layer_decay,
        rule=optim.layer_decay_rule)


def make_optimizer(optim: ml_collections.ConfigDict, decay_mask: dict,
                   lr_scales: dict | None = None) -> optax.GradientTransformation:
    """AdamW's update *direction*: Adam's step plus decoupled weight decay (optionally after a
    global-norm clip), before the learning rate.

    The train step multiplies it by ``-learning_rate(step)``, which is PyTorch's AdamW
    (``p -= lr * (adam + weight_decay * p)``). The schedule reads the trainer's step, not the
    optimizer's update count, so skipped non-finite steps do not shift the schedule.
    ``lr_scales`` (per-parameter factors, e.g. layer-wise decay) multiply the whole update, the
    decoupled weight decay included, as a PyTorch parameter group's ``lr`` does.
    """
    parts = [optax.clip_by_global_norm(optim.grad_clip_norm)] if optim.grad_clip_norm else []
    parts += [optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=optim.eps),
              optax.add_decayed_weights(optim.weight_decay, mask=decay_mask)]
    if lr_scales is not None:
        parts.append(scale_by_tree(lr_scales))
    return optax.chain(*parts)
