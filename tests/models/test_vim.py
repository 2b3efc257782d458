"""The Vim family: presets, registry, config checks, modes, precision, initialisation, backends."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vim_jax
from tests.convert.checkpoint_files import abstract_vim
from vim_jax import VimConfig
from vim_jax.registry import resolve

RELEASED = ["vim_tiny", "vim_tiny_stride8", "vim_small", "vim_small_stride8", "vim_base"]


def images(batch, size=32, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, size, size, 3)), jnp.float32)


# Each released preset is a 224-px compile of a 24-block model: seconds to a minute on a CPU.
# vim_tiny, vim_tiny_stride8 and vim_small are built, compiled and run against the official
# forward pass in tests/convert/test_official_parity.py; the other two are run here.
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) for name in ("vim_small_stride8", "vim_base")]
                         + ["vim_test"])
def test_preset_builds_jits_and_runs(name):
    model = vim_jax.create_model(name)
    cfg = model.cfg
    model.eval()
    logits = nnx.jit(lambda m, x: m(x))(model, images(1, cfg.img_size))
    assert logits.shape == (1, cfg.num_classes) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))
    # The shape only: the values are the logits' (computed above), a second forward pass is a second compile.
    features = nnx.eval_shape(lambda m, x: m.forward_features(x), model, images(1, cfg.img_size))
    assert features.shape == (1, cfg.seq_len, cfg.embed_dim)


@pytest.mark.parametrize("name", RELEASED)
def test_released_presets_give_logits_and_features_of_their_shapes(name):
    """Traced abstractly: no parameters are drawn and nothing is compiled."""
    cfg = vim_jax.get_config(name)
    model = abstract_vim(cfg)
    model.eval()
    x = jax.ShapeDtypeStruct((1, cfg.img_size, cfg.img_size, 3), jnp.float32)
    logits, features = nnx.eval_shape(lambda m, x: (m(x), m.forward_features(x)), model, x)
    assert (logits.shape, logits.dtype) == ((1, cfg.num_classes), jnp.float32)
    assert features.shape == (1, cfg.seq_len, cfg.embed_dim)


def test_released_configs_are_the_official_ones():
    expected = {"vim_tiny": (192, 16, 197), "vim_tiny_stride8": (192, 8, 730), "vim_small": (384, 16, 197),
                "vim_small_stride8": (384, 8, 730), "vim_base": (768, 16, 197)}
    for name, (dim, stride, tokens) in expected.items():
        cfg = vim_jax.get_config(name)
        assert (cfg.embed_dim, cfg.stride, cfg.seq_len) == (dim, stride, tokens)
        assert (cfg.depth, cfg.d_state, cfg.patch_size, cfg.bimamba, cfg.cls_token) == (24, 16, 16, "v2", "middle")
        assert cfg.dt_rank_ == math.ceil(dim / 16) and cfg.d_inner == 2 * dim
        assert cfg.cls_positions == ((tokens - 1) // 2,)


def test_official_long_names_are_aliases():
    long = "vim_small_patch16_stride8_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2"
    assert resolve(long).name == "vim_small_stride8"
    assert long in vim_jax.list_models(include_aliases=True)
    assert "vim_small" in vim_jax.list_models("vim_s*") and "vim_tiny" not in vim_jax.list_models("vim_s*")


def test_unknown_model_name_suggests_close_ones():
    with pytest.raises(ValueError, match="unknown model 'vim_smal'.*did you mean 'vim_small'"):
        vim_jax.create_model("vim_smal")


def test_unknown_config_field_is_named():
    with pytest.raises(ValueError, match="no field.*'embed_size'"):
        vim_jax.create_model("vim_test", embed_size=8)


@pytest.mark.parametrize("fields, message", [
    ({"bimamba": "v3"}, "bimamba='v3'"),
    ({"cls_token": "tail"}, "cls_token='tail'"),
    ({"cls_token": "none", "pool": "token"}, "needs a class token"),
    ({"depth": 3, "bidirectional_layers": True}, "depth must be even"),
    ({"scan_orders": ("raster", "spiral")}, "unknown scan order 'spiral'"),
    ({"bimamba": "none", "scan_orders": ("raster", "reversed_raster")}, "one direction"),
    ({"dtype": "int8"}, "dtype='int8'"),
])
def test_bad_config_values_are_explained(fields, message):
    with pytest.raises(ValueError, match=message):
        VimConfig(**fields)


def test_dropout_and_drop_path_follow_train_and_eval_modes():
    model = vim_jax.create_model("vim_test", depth=4, drop_path_rate=0.5, drop_rate=0.1)
    x = images(4)
    model.train()
    a, b = model(x), model(x)
    assert not np.allclose(a, b), "train mode must draw new masks each call"
    model.eval()
    c, d = model(x), model(x)
    np.testing.assert_array_equal(c, d)
    assert not np.allclose(a, c)


def test_drop_path_rates_rise_linearly_and_drop_whole_samples():
    from vim_jax.models.layers import drop_path
    x = jnp.ones((4000, 3, 2))
    y = drop_path(x, 0.3, jax.random.key(0), deterministic=False)
    per_sample = np.asarray(y[:, 0, 0])
    np.testing.assert_allclose(per_sample[per_sample != 0], 1 / 0.7, rtol=1e-6)
    assert np.all(np.asarray(y) == per_sample[:, None, None])
    assert abs((per_sample == 0).mean() - 0.3) < 0.03


def test_bfloat16_compute_keeps_float32_parameters_and_tracks_float32():
    model32 = vim_jax.create_model("vim_test")
    model16 = vim_jax.create_model("vim_test", dtype="bfloat16")
    nnx.update(model16, nnx.state(model32, nnx.Param))
    params = jax.tree.leaves(nnx.state(model16, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)
    x = images(2)
    forward = nnx.jit(lambda m, x: m(x))
    ref, got = np.asarray(forward(model32, x)), np.asarray(forward(model16, x))
    assert got.dtype == np.float32
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 3e-2


def _value_and_grad(**overrides):
    """`sum(logits**2)` and its gradients for a two-block `vim_test` on two images."""
    model = vim_jax.create_model("vim_test", depth=2, seed=7, **overrides)
    x = images(2)
    return nnx.jit(nnx.value_and_grad(lambda m: jnp.sum(m(x) ** 2)))(model)


@pytest.fixture(scope="module")
def default_value_and_grad():
    """The default model's loss and gradients, which the unrolled and rematerialised models must give."""
    return _value_and_grad()


@pytest.mark.slow  # a gradient compile per backend; tests/ops checks the backends agree op by op
def test_backends_agree_inside_the_model_values_and_gradients():
    grads, outs = {}, {}
    for backend in ("reference", "associative"):
        outs[backend], grads[backend] = _value_and_grad(scan_backend=backend)
    np.testing.assert_allclose(outs["reference"], outs["associative"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads["reference"]), jax.tree.leaves(grads["associative"]), strict=True):
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(a) + 1e-7


def test_unrolled_blocks_give_the_same_values_and_gradients(default_value_and_grad):
    out, grads = default_value_and_grad
    unrolled_out, unrolled_grads = _value_and_grad(unroll_blocks=True)
    np.testing.assert_allclose(unrolled_out, out, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(unrolled_grads), strict=True):
        assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(a) + 1e-7


def _interpreted_mosaic():
    import pallas_kernels.mosaic_scan as ms

    return ms.MosaicScan(ms.MosaicScanConfig(tile=8, bwd_min_ctas=0), interpret=True)


@pytest.mark.parametrize("backend,tol", [
    (None, 1e-6),  # this platform's scan (on CPU: sequential, no fused conv kernel) after the prologue in XLA
    # the Mosaic kernel with its conv prologue, interpreted (17 tokens, 64 channels, both directions)
    pytest.param("mosaic", 1e-4, marks=pytest.mark.slow),
])
def test_fused_conv_scan_gives_the_unfused_values_and_gradients(default_value_and_grad, monkeypatch, backend, tol):
    from pallas_kernels.mosaic_scan import conv_vjp

    calls = []
    real_op, real_kernel = vim_jax.ops.conv_selective_scan_bidirectional, conv_vjp.scan_forward
    monkeypatch.setattr(vim_jax.ops, "conv_selective_scan_bidirectional",
                        lambda *a, **k: calls.append("op") or real_op(*a, **k))
    monkeypatch.setattr(conv_vjp, "scan_forward", lambda *a, **k: calls.append("kernel") or real_kernel(*a, **k))
    out, grads = default_value_and_grad
    fused_out, fused_grads = _value_and_grad(
        fused_conv_scan=True, scan_backend=_interpreted_mosaic() if backend == "mosaic" else backend)
    # The mixer took the fused op, and with Mosaic its kernel ran (not the composition).
    assert "op" in calls and ("kernel" in calls) == (backend == "mosaic")
    np.testing.assert_allclose(fused_out, out, rtol=tol)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(fused_grads), strict=True):
        assert np.linalg.norm(a - b) <= tol * np.linalg.norm(a) + 1e-7


def test_released_mixer_uses_the_fused_bidirectional_scan(monkeypatch):
    calls = {"bi": 0, "single": 0}
    real_bi, real_single = vim_jax.ops.selective_scan_bidirectional, vim_jax.ops.selective_scan

    def bi(*a, **k):
        calls["bi"] += 1
        return real_bi(*a, **k)

    def single(*a, **k):
        calls["single"] += 1
        return real_single(*a, **k)

    monkeypatch.setattr(vim_jax.ops, "selective_scan_bidirectional", bi)
    monkeypatch.setattr(vim_jax.ops, "selective_scan", single)
    # Traced abstractly (the calls are counted at tracing; nothing needs compiling).
    nnx.eval_shape(lambda: vim_jax.create_model("vim_test")(images(1)))
    assert calls == {"bi": 1, "single": 0}  # one traced call inside the layer scan
    nnx.eval_shape(lambda: vim_jax.create_model("vim_test", scan_orders=("column", "reversed_column"))(images(1)))
    assert calls["single"] == 2


def test_initialisation_follows_upstream():
    model = vim_jax.create_model("vim_tiny", seed=3)  # 24 blocks, as every released model
    cfg = model.cfg
    mixer = nnx.to_pure_dict(nnx.state(model, nnx.Param))["blocks"]["mixer"]
    e, n, r = cfg.d_inner, cfg.d_state, cfg.dt_rank_
    np.testing.assert_allclose(mixer["A_log"], np.broadcast_to(np.log(np.arange(1, n + 1)), (24, 2, e, n)), rtol=1e-6)
    np.testing.assert_array_equal(mixer["D"], 1.0)
    dt_forward = jax.nn.softplus(mixer["dt_proj_bias"][:, 0])
    assert 0.99e-3 <= float(dt_forward.min()) and float(dt_forward.max()) <= 0.1001
    np.testing.assert_array_equal(mixer["dt_proj_bias"][:, 1], 0.0)  # upstream's quirk
    assert float(np.abs(mixer["dt_proj_kernel"]).max()) <= r ** -0.5
    assert float(np.abs(mixer["out_proj"]).max()) <= 1 / math.sqrt(e) / math.sqrt(24) + 1e-7
    assert float(np.abs(mixer["conv_kernel"]).max()) <= 0.5
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert abs(float(np.std(params["pos_embed"])) - 0.02) < 0.002
    np.testing.assert_array_equal(params["head"]["bias"], 0.0)
    fixed = nnx.to_pure_dict(nnx.state(vim_jax.create_model("vim_test", fix_backward_dt_init=True), nnx.Param))
    dt_backward = jax.nn.softplus(fixed["blocks"]["mixer"]["dt_proj_bias"][:, 1])
    assert float(dt_backward.min()) >= 0.99e-3


def test_rope_rotates_patches_and_leaves_class_tokens():
    from vim_jax.models.layers import apply_rope, rope_tables
    cos, sin = rope_tables(8, (2, 2), 14)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 5, 8)), jnp.float32)
    patch_index = np.array([0, 1, 3, 4])
    y = apply_rope(x, cos, sin, patch_index)
    np.testing.assert_array_equal(y[:, 2], x[:, 2])
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-6)
    np.testing.assert_allclose(y[:, 0], x[:, 0], rtol=1e-6)  # position (0, 0) has angle 0
    assert not np.allclose(y[:, 4], x[:, 4])


def test_features_and_head_compose_to_logits():
    model = vim_jax.create_model("vim_test", cls_token="head_tail")
    x = images(3)
    f = model.forward_features(x)
    np.testing.assert_allclose(model.forward_head(f), model(x), rtol=1e-6)
    pooled = model.forward_head(f, pre_logits=True)
    np.testing.assert_allclose(pooled, (f[:, 0] + f[:, -1]) / 2, rtol=1e-6)


def test_remat_gives_the_same_gradients(default_value_and_grad):
    _, grads = default_value_and_grad
    _, remat_grads = _value_and_grad(remat=True)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(remat_grads), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_models_of_one_config_share_the_compiled_initialiser_not_the_parameters():
    """`create_model` compiles one initialiser per config and reuses it: the seed is its input."""
    from flax import traverse_util

    def params(**kwargs):
        model = vim_jax.create_model("vim_test", **kwargs)
        return traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))

    first, again, other = params(seed=0), params(seed=0), params(seed=1)
    given = params(rngs=nnx.Rngs(params=1, dropout=2))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=str(key))
        np.testing.assert_array_equal(other[key], given[key], err_msg=str(key))
    drawn = [("pos_embed",), ("cls_token",), ("patch_embed", "kernel"), ("head", "kernel"),
             ("blocks", "mixer", "in_proj"), ("blocks", "mixer", "conv_kernel"), ("blocks", "mixer", "dt_proj_bias")]
    for key in drawn:
        assert not np.array_equal(first[key], other[key]), key
