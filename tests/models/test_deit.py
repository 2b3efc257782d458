"""DeiT baseline: shapes, registry, numerics against a numpy transcription, attention choice, modes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vim_jax
from vim_jax.models import deit_presets  # noqa: F401  (registers the DeiT models)
from vim_jax.models.deit import Attention, DeiT, DeiTConfig, attention_implementation

SMALL = DeiTConfig(img_size=16, patch_size=4, stride=4, in_chans=3, num_classes=5, embed_dim=24, depth=3,
                   num_heads=2)


def _images(cfg, batch=2, seed=0):
    return jax.random.normal(jax.random.key(seed), (batch, cfg.img_size, cfg.img_size, cfg.in_chans))


def _params(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _randomize(model, seed, scale=0.3):
    """Replaces every parameter by noise: at init, biases are zero and activations tiny, which would
    hide a wrong bias slot or a tanh-approximated GELU."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(seed)  # numpy: jax.random would compile a sampler per parameter shape
    nnx.update(model, jax.tree.unflatten(treedef, [jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype)
                                                   for a in leaves]))


# numpy transcription of timm's VisionTransformer forward (stride == patch size) -----------------
def _np_layernorm(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_attention(x, p, num_heads):
    b, length, d = x.shape
    hd = d // num_heads
    w = p["qkv_kernel"].reshape(d, 3 * d)  # timm's qkv.weight.T
    qkv = x @ w + p["qkv_bias"].reshape(3 * d)
    q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(b, length, num_heads, hd).transpose(0, 2, 1, 3) for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(b, length, d)
    return o @ p["proj_kernel"].reshape(d, d) + p["proj_bias"]


def _np_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _np_deit(images, params, cfg):
    b, p = images.shape[0], cfg.patch_size
    g = cfg.img_size // p
    patches = images.reshape(b, g, p, g, p, cfg.in_chans).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
    x = patches @ params["patch_embed"]["kernel"].reshape(-1, cfg.embed_dim) + params["patch_embed"]["bias"]
    if cfg.pool == "token":
        x = np.concatenate([np.broadcast_to(params["cls_token"], (b, 1, cfg.embed_dim)), x], axis=1)
    x = x + params["pos_embed"]
    for i in range(cfg.depth):
        blk = jax.tree.map(lambda a: a[i], params["blocks"])
        x = x + _np_attention(_np_layernorm(x, blk["norm1"], cfg.norm_eps), blk["attn"], cfg.num_heads)
        h = _np_layernorm(x, blk["norm2"], cfg.norm_eps)
        h = _np_gelu(h @ blk["mlp"]["fc1"]["kernel"] + blk["mlp"]["fc1"]["bias"])
        x = x + h @ blk["mlp"]["fc2"]["kernel"] + blk["mlp"]["fc2"]["bias"]
    x = _np_layernorm(x, params["norm"], cfg.norm_eps)
    pooled = x[:, 0] if cfg.pool == "token" else x.mean(1)
    return pooled @ params["head"]["kernel"] + params["head"]["bias"]


# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["token", "mean"])
def test_shapes(pool):
    cfg = SMALL.replace(pool=pool)
    model = DeiT(cfg, rngs=nnx.Rngs(0))
    x = _images(cfg, batch=3)
    features = model.forward_features(x)
    assert features.shape == (3, cfg.seq_len, cfg.embed_dim) and features.dtype == jnp.float32
    assert cfg.seq_len == 16 + (pool == "token")
    assert model.forward_head(features, pre_logits=True).shape == (3, cfg.embed_dim)
    assert model(x).shape == (3, cfg.num_classes)


@pytest.mark.parametrize("name, params", [("deit_tiny", 5_717_416), ("deit_small", 22_050_664),
                                          ("deit_base", 86_567_656)])
def test_registered_sizes_match_timm(name, params):
    model = nnx.eval_shape(lambda: vim_jax.create_model(name))
    assert sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))) == params
    assert vim_jax.get_config(f"{name}_patch16_224") == vim_jax.get_config(name)


def test_trainer_style_overrides():
    model = vim_jax.create_model("deit_tiny", num_classes=10, img_size=28, in_chans=1, patch_size=4, stride=4)
    assert model(jnp.zeros((2, 28, 28, 1))).shape == (2, 10)


@pytest.mark.parametrize("pool", ["token", "mean"])
def test_forward_matches_numpy_transcription(pool):
    cfg = SMALL.replace(pool=pool)
    model = DeiT(cfg, rngs=nnx.Rngs(1))
    _randomize(model, 2)
    model.eval()
    x = _images(cfg)
    expected = _np_deit(np.asarray(x, np.float64), jax.tree.map(lambda a: a.astype(np.float64), _params(model)), cfg)
    # float32 lands within ~3e-7 of float64; a tanh-approximated GELU would be off by ~6e-5.
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-5, atol=5e-6)


def test_attention_matches_einsum_reference():
    cfg = SMALL.replace(num_heads=3)
    attn = Attention(cfg, rngs=nnx.Rngs(2))
    _randomize(attn, 3)
    x = jax.random.normal(jax.random.key(5), (2, 7, cfg.embed_dim))
    expected = _np_attention(np.asarray(x, np.float64), jax.tree.map(lambda a: a.astype(np.float64),
                                                                     _params(attn)), cfg.num_heads)
    np.testing.assert_allclose(np.asarray(attn(x)), expected, rtol=1e-5, atol=1e-5)


def test_jit_matches_eager():
    model = DeiT(SMALL, rngs=nnx.Rngs(0))
    model.eval()
    x = _images(SMALL)
    np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, x: m(x))(model, x)), np.asarray(model(x)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_flash_and_xla_attention_agree(dtype):
    flash, xla = SMALL.replace(attention="flash", dtype=dtype), SMALL.replace(attention="xla", dtype=dtype)
    a, b = DeiT(flash, rngs=nnx.Rngs(0)), DeiT(xla, rngs=nnx.Rngs(0))
    a.eval(), b.eval()
    x = _images(SMALL)
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), rtol=1e-6, atol=1e-6)


def test_attention_resolution():
    assert attention_implementation(SMALL.replace(attention="xla"), 197, jnp.bfloat16) == "xla"
    # float32 is never cuDNN flash; on a CPU nothing is.
    assert attention_implementation(SMALL, 197, jnp.float32) == "xla"
    if jax.default_backend() == "cpu":
        assert attention_implementation(SMALL, 197, jnp.bfloat16) == "xla"


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = DeiT(SMALL.replace(dtype="bfloat16"), rngs=nnx.Rngs(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    logits = model(_images(SMALL))
    assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


def test_train_mode_drops_paths_and_eval_mode_does_not():
    cfg = SMALL.replace(drop_path_rate=0.5)
    model, plain = DeiT(cfg, rngs=nnx.Rngs(0)), DeiT(SMALL, rngs=nnx.Rngs(0))  # same init: same seed
    x = _images(cfg, batch=8)
    plain.eval()
    reference = np.asarray(plain(x))
    model.train()
    first, second = np.asarray(model(x)), np.asarray(model(x))
    assert not np.allclose(first, reference, atol=1e-4)
    assert not np.allclose(first, second, atol=1e-4)  # a fresh draw each call
    model.eval()
    np.testing.assert_allclose(np.asarray(model(x)), reference, rtol=1e-6, atol=1e-6)


def test_gradients_finite_and_identical_with_remat_and_unrolled_blocks():
    x, labels = _images(SMALL), jnp.array([1, 3])

    def grads(cfg):
        model = DeiT(cfg, rngs=nnx.Rngs(0))
        model.eval()
        loss = lambda m: -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(m(x)), labels[:, None], 1))
        return nnx.grad(loss)(model)

    plain = grads(SMALL)
    for variant in (SMALL.replace(remat=True), SMALL.replace(unroll_blocks=True)):
        for g, h in zip(jax.tree.leaves(plain), jax.tree.leaves(grads(variant))):
            assert np.all(np.isfinite(g))
            np.testing.assert_allclose(np.asarray(g), np.asarray(h), rtol=1e-5, atol=1e-7)
    assert np.abs(np.asarray(plain["blocks"]["attn"]["qkv_kernel"])).max() > 0


def test_input_checks():
    model = DeiT(SMALL, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="channels-first"):
        model(jnp.zeros((2, 3, 16, 16)))
    with pytest.raises(ValueError, match="patch grid"):
        model(jnp.zeros((2, 32, 32, 3)))
    with pytest.raises(TypeError, match="floating point"):
        model(jnp.zeros((2, 16, 16, 3), jnp.uint8))


def test_config_validation():
    with pytest.raises(ValueError, match="num_heads"):
        DeiTConfig(embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="attention"):
        DeiTConfig(attention="cudnn")


def test_trainer_decays_exactly_the_weight_matrices():
    """timm's rule (no decay for 1-D tensors, pos_embed, cls_token), as the trainer's mask applies it."""
    from vim_jax.train import mesh, optim

    abstract = nnx.state(nnx.eval_shape(lambda: DeiT(SMALL, rngs=nnx.Rngs(0))), nnx.Param)
    mask = optim.weight_decay_mask(nnx.to_pure_dict(abstract), mesh.logical_axes_of(abstract))
    decayed = {"/".join(str(k.key) for k in path) for path, on in jax.tree_util.tree_flatten_with_path(mask)[0] if on}
    assert decayed == {"patch_embed/kernel", "blocks/attn/qkv_kernel", "blocks/attn/proj_kernel",
                       "blocks/mlp/fc1/kernel", "blocks/mlp/fc2/kernel", "head/kernel"}


def test_flash_forward_attention_differentiates_through_xla():
    """The custom VJP's plumbing, with a forward implementation a CPU has (cuDNN's needs a GPU)."""
    from vim_jax.models.deit import flash_forward_attention

    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 9, 2, 8))
    attention = flash_forward_attention("xla")
    plain = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")
    np.testing.assert_allclose(np.asarray(attention(q, k, v)), np.asarray(plain(q, k, v)), rtol=1e-6)
    weights = jax.random.normal(jax.random.key(1), q.shape)
    loss = lambda f: lambda *a: jnp.sum(f(*a) * weights)
    for ours, reference in zip(jax.grad(loss(attention), (0, 1, 2))(q, k, v), jax.grad(loss(plain), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=1e-5, atol=1e-6)
        assert np.abs(np.asarray(ours)).max() > 0
