"""The segmentation pieces train together: a few AdamW steps with layer-wise decay on one batch
lower the decode + auxiliary loss, update the BatchNorm statistics and leave decayed groups
moving less."""

from __future__ import annotations

import pytest

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

import vim_jax
from vim_jax.train.optim import make_optimizer
from vim_jax.train.segmentation_loss import segmentation_loss
from vim_jax.train.segmentation_optim import layer_decay_scales

pytestmark = pytest.mark.slow  # six optimizer steps of a segmentor: half a minute


def test_a_few_steps_fit_one_batch():
    model = vim_jax.create_model("upernet_vim_test")
    model.train()
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((2, 32, 32, 3)), jnp.float32)
    labels = np.where(np.asarray(images[..., 0]) > 0, 1, 2)
    labels[:, :4] = 255  # an ignored band
    labels = jnp.asarray(labels, jnp.int32)

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)  # BatchNorm statistics, RNG streams
    optim = ml_collections.ConfigDict(dict(grad_clip_norm=None, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05))
    scales = layer_decay_scales(params, num_layers=model.cfg.backbone_config.depth, rate=0.5)
    tx = make_optimizer(optim, jax.tree.map(lambda p: p.ndim > 1, params), lr_scales=scales)

    @jax.jit
    def step(params, rest, opt_state):
        def loss_fn(params):
            m = nnx.merge(graphdef, params, rest)
            logits, aux = m.forward_train(images)
            loss, _ = segmentation_loss(logits, aux, labels)
            return loss, nnx.to_pure_dict(nnx.state(m, nnx.Not(nnx.Param)))

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        direction, opt_state = tx.update(grads, opt_state, params)
        return jax.tree.map(lambda p, d: p - 1e-3 * d, params, direction), rest, opt_state, loss

    opt_state = tx.init(params)
    start = params
    stats_before = np.asarray(rest["decode_head"]["fpn_bottleneck"]["bn"]["mean"]).copy()
    losses = []
    for _ in range(6):
        params, rest, opt_state, loss = step(params, rest, opt_state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert not np.allclose(np.asarray(rest["decode_head"]["fpn_bottleneck"]["bn"]["mean"]), stats_before)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), params, start)
    bb = moved["backbone"]["backbone"]
    assert 0 < bb["pos_embed"] < moved["decode_head"]["classifier"]["kernel"]
