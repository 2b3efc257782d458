"""forward_intermediates / features_only: shapes at any size and stride, class tokens removed
wherever they sit, and values equal to the plain forward of the same blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vim_jax
from vim_jax.convert import resize_pos_embed
from vim_jax.models.features import FeatureExtractor, default_out_indices


def images(batch, height, width=None, seed=0):
    shape = (batch, height, width or height, 3)
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def truncated(model, name, depth, **overrides):
    """A model of the first `depth` blocks of `model`, sharing its weights."""
    short = vim_jax.create_model(name, depth=depth, **overrides)
    state = nnx.state(model, nnx.Param)
    short_state = nnx.state(short, nnx.Param)
    short_state["blocks"] = jax.tree.map(lambda a: a[:depth], state["blocks"])
    for key in short_state:
        if key != "blocks":
            short_state[key] = state[key]
    nnx.update(short, short_state)
    short.eval()
    return short


@pytest.mark.parametrize("name", ["vim_test", "deit_test"])
@pytest.mark.parametrize("size, grid", [((32, 32), (4, 4)), ((48, 48), (6, 6)), ((40, 56), (5, 7))])
def test_maps_are_nhwc_on_the_input_grid(name, size, grid):
    model = vim_jax.create_model(name, depth=4, features_only=True, out_indices=(1, 3))
    model.eval()
    maps = model(images(2, *size))
    assert [m.shape for m in maps] == [(2, *grid, 32)] * 2 and all(m.dtype == jnp.float32 for m in maps)
    assert [f["reduction"] for f in model.feature_info] == [8, 8]


def test_stride_smaller_than_patch_gives_its_own_grid():
    model = vim_jax.create_model("vim_test", stride=4, features_only=True, out_indices=(-1,))
    model.eval()
    assert model(images(1, 40))[0].shape == (1, 9, 9, 32)  # (40 - 8) // 4 + 1


@pytest.mark.slow
@pytest.mark.parametrize("cls_token, pool", [("middle", "token"), ("head", "token"), ("head_tail", "token"),
                                             ("none", "mean")])
def test_normed_maps_equal_the_plain_forward_of_the_first_blocks(cls_token, pool):
    overrides = dict(cls_token=cls_token, pool=pool)
    model = vim_jax.create_model("vim_test", depth=3, **overrides)
    model.eval()
    x = images(2, 32)
    final, maps = model.forward_intermediates(x, indices=[0, -1], norm=True)
    positions = list(model.cfg.cls_positions)
    np.testing.assert_array_equal(np.asarray(final), np.asarray(model.forward_features(x)))
    np.testing.assert_array_equal(np.asarray(maps[1]), np.delete(np.asarray(final), positions, axis=1).reshape(2, 4, 4, 32))
    tokens = np.asarray(truncated(model, "vim_test", 1, **overrides).forward_features(x))
    np.testing.assert_allclose(np.asarray(maps[0]), np.delete(tokens, positions, axis=1).reshape(2, 4, 4, 32),
                               rtol=1e-5, atol=1e-5)


def test_unnormed_maps_are_the_mixer_outputs_of_a_block_by_block_loop_in_nhwc_or_nchw():
    model = vim_jax.create_model("vim_test", depth=3)
    model.eval()
    x = images(2, 32)
    maps = model.forward_intermediates(x, indices=None, intermediates_only=True)
    tokens, _, _ = model._embed(x, model.cfg.grid_size)
    residual, h = tokens, jnp.zeros_like(tokens)
    graphdef, state = nnx.split(model.blocks)
    mid = model.cfg.cls_positions[0]
    for i in range(3):
        block = nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))
        residual, h = block(residual, h, 0.0, None, True)
        expected = np.delete(np.asarray(h), mid, axis=1).reshape(2, 4, 4, 32)
        np.testing.assert_allclose(np.asarray(maps[i]), expected, rtol=1e-5, atol=1e-5)
    nchw = model.forward_intermediates(x, indices=[0], output_fmt="NCHW", intermediates_only=True)[0]
    np.testing.assert_array_equal(np.asarray(nchw), np.asarray(maps[0]).transpose(0, 3, 1, 2))


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides", [("vim_test", {"cls_token": "middle"}),
                                             ("vim_test", {"cls_token": "head_tail"}),
                                             ("vim_test", {"rope": True, "rope_residual": True}),
                                             ("deit_test", {})])
def test_other_sizes_resize_the_position_embedding_keeping_class_rows(name, overrides):
    """At 48x48 the features equal those of a model built for 48 whose position embedding is the
    checkpoint converter's resize of the 32x32 one."""
    model = vim_jax.create_model(name, **overrides)
    model.eval()
    big = vim_jax.create_model(name, img_size=48, **overrides)
    state = nnx.state(model, nnx.Param)
    cls_token = overrides.get("cls_token", "middle") if name == "vim_test" else "head"
    state["pos_embed"] = nnx.Param(jnp.asarray(resize_pos_embed(
        np.asarray(state["pos_embed"][...]), big.cfg.grid_size, cls_token=cls_token)))
    nnx.update(big, state)
    big.eval()
    x = images(2, 48)
    final, maps = model.forward_intermediates(x, indices=[-1], norm=True)
    np.testing.assert_allclose(np.asarray(final), np.asarray(big.forward_features(x)), rtol=1e-4, atol=1e-4)
    assert maps[0].shape == (2, 6, 6, 32)


def test_intermediates_only_skips_later_blocks_without_changing_the_maps():
    model = vim_jax.create_model("vim_test", depth=4)
    model.eval()
    x = images(1, 32)
    _, full = model.forward_intermediates(x, indices=[0, 1])
    only = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    for a, b in zip(full, only):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_features_only_extractor_jits_and_matches_the_backbone():
    extractor = vim_jax.create_model("vim_test", depth=4, features_only=True)
    assert isinstance(extractor, FeatureExtractor) and extractor.out_indices == (0, 1, 2, 3)
    assert not hasattr(extractor.backbone, "head")
    extractor.eval()
    x = images(2, 40)
    jitted = nnx.jit(lambda m, x: m(x))(extractor, x)
    eager = extractor.backbone.forward_intermediates(x, extractor.out_indices, intermediates_only=True)
    for a, b in zip(jitted, eager):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_default_out_indices_are_the_quarter_ends():
    assert default_out_indices(24) == (5, 11, 17, 23)
    assert default_out_indices(12) == (2, 5, 8, 11)
    assert default_out_indices(2) == (0, 1)


@pytest.mark.parametrize("call, message", [
    (lambda: vim_jax.create_model("vim_test", features_only=True, out_indices=(5,)), "out of range"),
    (lambda: vim_jax.create_model("vim_test", features_only=True, out_indices=3), "last 3 blocks of 2"),
    (lambda: vim_jax.create_model("vim_test", out_indices=(1,)), "features_only=True"),
    (lambda: vim_jax.create_model("vim_test", depth=4, bidirectional_layers=True)
     .forward_intermediates(images(1, 32), indices=[0]), "end a pair"),
    (lambda: vim_jax.create_model("vim_test").forward_intermediates(images(1, 4), indices=[0]),
     "smaller than one patch"),
    (lambda: vim_jax.create_model("vim_test", scan_orders=("column", "reversed_column"))
     .forward_intermediates(images(1, 48), indices=[0]), "laid out on the"),
    (lambda: vim_jax.create_model("vim_test").forward_intermediates(images(1, 32), output_fmt="HWC"),
     "output_fmt"),
])
def test_bad_feature_requests_are_explained(call, message):
    with pytest.raises(ValueError, match=message):
        nnx.eval_shape(call)  # shapes only: the checks come before any computation, nothing compiles


def test_bidirectional_layers_give_features_at_pair_ends():
    model = vim_jax.create_model("vim_test", depth=4, bidirectional_layers=True)
    model.eval()
    x = images(1, 32)
    final, maps = model.forward_intermediates(x, indices=[3], norm=True)
    np.testing.assert_allclose(np.delete(np.asarray(final), model.cfg.cls_positions, axis=1).reshape(1, 4, 4, 32),
                               np.asarray(maps[0]), rtol=1e-6)
