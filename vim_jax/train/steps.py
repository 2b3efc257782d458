"""Pure step functions: the training step (loss, gradients, AdamW, EMA) and the evaluation step.

The model lives here as data: a graph definition (its structure, train or eval mode) and pure
nested dicts of arrays (parameters; BatchNorm statistics; RNG streams for dropout / drop path),
merged back into a module inside the jitted function. Everything a step changes is in
:class:`TrainState`, so the trainer can jit, shard, donate and checkpoint it as one value. What
the model is asked and how it is scored is the task's (``vim_jax.train.tasks``): the steps take
its ``loss`` and ``eval_sums``; the classification ones are the defaults here.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

# (key, batch) -> (model inputs, targets): the batch's (uint8) images made the model's inputs on
# device (normalisation, random erasing), and its targets (classification: mixup/cutmix + label
# smoothing, or not, giving soft targets [batch, classes]; segmentation: the label maps).
BatchToTargets = Callable[[jax.Array, dict], tuple[jax.Array, Any]]
# (model in train mode, inputs, targets, mask [batch]) -> (loss, {name: scalar} of its parts).
LossFn = Callable[[nnx.Module, jax.Array, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
# (model in eval mode, batch) -> sums over the batch's valid examples that evaluation adds up.
EvalSums = Callable[[nnx.Module, dict], dict[str, jax.Array]]


@flax.struct.dataclass
class TrainState:
    """What one training step reads and writes.

    Attributes:
      step: number of steps taken; also the global position in the training data.
      params: float32 parameters (``nnx.to_pure_dict`` layout).
      opt_state: the optimizer's state (Adam moments), laid out like ``params``.
      ema_params: exponential moving average of ``params``, or None when EMA is off.
      rngs: the model's RNG streams (dropout / drop path keys and counters).
      batch_stats: the running BatchNorm statistics (``nnx.BatchStat``; an empty dict for models
        without BatchNorm): updated by each training step, read by evaluation, never optimized.
    """

    step: jax.Array
    params: dict
    opt_state: optax.OptState
    ema_params: dict | None
    rngs: dict
    batch_stats: dict = flax.struct.field(default_factory=dict)


def soft_target_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-example ``-sum(targets * log_softmax(logits))`` (timm SoftTargetCrossEntropy), float32."""
    return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def ema_update(ema: dict, params: dict, decay: float) -> dict:
    """timm ModelEma: ``ema = decay * ema + (1 - decay) * params``."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def classification_loss(model: nnx.Module, images: jax.Array, targets: jax.Array,
                        mask: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean soft-target cross-entropy of the model's logits over the valid examples; no parts."""
    return _masked_mean(soft_target_cross_entropy(model(images), targets), mask), {}


def train_step(state: TrainState, batch: dict, *, graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
               schedule: optax.Schedule, batch_to_targets: BatchToTargets, augment_key: jax.Array,
               ema_decay: float | None, skip_nonfinite: bool,
               loss: LossFn = classification_loss) -> tuple[TrainState, dict[str, jax.Array]]:
    """One AdamW step on ``loss`` (default: the soft-target cross-entropy of a (mixed) batch).

    ``augment_key`` is folded with the step, so batch-level augmentation (mixup/cutmix) is a pure
    function of the step, like everything else in the state. BatchNorm statistics come out of the
    forward pass (train mode) into the new state. When ``skip_nonfinite`` is set, a step whose
    loss or gradients are not finite leaves parameters, optimizer state, EMA, BatchNorm statistics
    and RNG unchanged (only the step advances, past the offending batch). The metrics' ``parts``
    are the loss's named parts (e.g. decode and auxiliary losses).
    """
    inputs, targets = batch_to_targets(jax.random.fold_in(augment_key, state.step), batch)

    def loss_fn(params):
        model = nnx.merge(graphdef, params, state.batch_stats, state.rngs)
        value, parts = loss(model, inputs, targets, batch["mask"])
        return value, (parts, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)),
                       nnx.to_pure_dict(nnx.state(model, nnx.RngState)))

    (value, (parts, batch_stats, rngs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    lr = schedule(state.step)
    direction, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, d: p - lr * d, state.params, direction)
    ema = None if ema_decay is None else ema_update(state.ema_params, params, ema_decay)
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema, rngs=rngs,
                           batch_stats=batch_stats)

    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
    if skip_nonfinite:
        kept = state.replace(step=state.step + 1)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, kept)
    metrics = {"loss": value, "grad_norm": grad_norm, "lr": lr, "finite": finite,
               "param_norm": optax.tree.norm(new_state.params), "parts": parts}
    return new_state, metrics


def eval_step(params: dict, batch_stats: dict, rngs: dict, batch: dict, *, graphdef: nnx.GraphDef,
              eval_sums: EvalSums) -> dict[str, jax.Array]:
    """``eval_sums`` of the model (``graphdef``, eval mode, with these variables) on a batch."""
    return eval_sums(nnx.merge(graphdef, params, batch_stats, rngs), batch)


def classification_eval_sums(model: nnx.Module, batch: dict, *,
                             model_inputs: Callable[[jax.Array], jax.Array]) -> dict[str, jax.Array]:
    """Sums over the valid (``mask``) examples of a batch: cross-entropy, top-1 and top-5 hits.

    ``model_inputs`` turns the batch's (uint8) images into the model's inputs (normalisation).
    """
    logits = model(model_inputs(batch["image"])).astype(jnp.float32)
    labels = batch["label"]
    mask = batch["mask"].astype(jnp.float32)
    loss = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
    # Rank of the true class = number of classes scoring strictly higher (ties count as hits).
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    rank = jnp.sum(logits > true_logit, axis=-1)
    return {"loss": jnp.sum(loss * mask), "top1": jnp.sum((rank < 1) * mask),
            "top5": jnp.sum((rank < 5) * mask), "count": jnp.sum(mask)}


def summarize_eval(sums: dict[str, Any]) -> dict[str, float]:
    """Totals of :func:`classification_eval_sums` over a split -> mean loss and accuracies (in [0, 1])."""
    count = max(float(sums["count"]), 1.0)
    return {"loss": float(sums["loss"]) / count, "top1": float(sums["top1"]) / count,
            "top5": float(sums["top5"]) / count, "count": int(sums["count"])}
