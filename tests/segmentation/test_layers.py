"""The segmentation layers against PyTorch in float64: bilinear resize, adaptive pooling, max
pooling, transposed conv, ConvModule, the pyramid's shapes, and pyramid pooling against a
hand-written numpy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from vim_jax.models.segmentation.heads import FCNHead, PyramidPooling, UperHead
from vim_jax.models.segmentation.layers import (ConvBNReLU, ConvTranspose2x2, adaptive_avg_pool, adaptive_pool_matrix,
                                                max_pool, resize_bilinear)
from vim_jax.models.segmentation.neck import Pyramid

@pytest.fixture(autouse=True, scope="module")
def float64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def to_torch(x):  # NHWC -> NCHW
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def from_torch(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


@pytest.mark.parametrize("src, dst", [((5, 7), (10, 14)), ((4, 4), (13, 9)), ((12, 10), (5, 3)), ((3, 3), (3, 3))])
def test_bilinear_resize_is_torch_align_corners_false(src, dst):
    x = rand(2, *src, 3)
    got = resize_bilinear(jnp.asarray(x), dst)
    expected = from_torch(F.interpolate(to_torch(x), size=dst, mode="bilinear", align_corners=False))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, out", [(7, 1), (7, 2), (7, 3), (5, 6), (16, 6), (2, 3)])
def test_adaptive_avg_pool_is_torch(size, out):
    x = rand(2, size, size + 1, 4)
    got = adaptive_avg_pool(jnp.asarray(x), out)
    expected = from_torch(F.adaptive_avg_pool2d(to_torch(x), out))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-6)


def test_adaptive_pool_bins_overlap_like_torch():
    # 5 -> 3: bins [0, 2), [1, 4), [3, 5)
    np.testing.assert_allclose(adaptive_pool_matrix(5, 3), [[.5, .5, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0],
                                                            [0, 0, 0, .5, .5]], rtol=1e-6)


@pytest.mark.parametrize("k, size", [(2, 8), (2, 7), (4, 9)])
def test_max_pool_is_torch_floor_mode(k, size):
    x = rand(1, size, size, 3)
    np.testing.assert_array_equal(np.asarray(max_pool(jnp.asarray(x), k)), from_torch(F.max_pool2d(to_torch(x), k, k)))


def test_transposed_conv_is_torch_conv_transpose_2x2():
    module = ConvTranspose2x2(3, 5, dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = rand(2, 3, 4, 3)
    kernel, bias = np.asarray(module.kernel[...], np.float64), np.asarray(module.bias[...], np.float64)
    weight = torch.from_numpy(np.transpose(kernel, (0, 3, 1, 2)).copy())  # [cin, cout, kh, kw]
    expected = from_torch(F.conv_transpose2d(to_torch(x), weight, torch.from_numpy(bias), stride=2))
    got = module(jnp.asarray(x))
    assert got.shape == (2, 6, 8, 5)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_conv_bn_relu_is_torch_conv_then_batch_norm_then_relu(kernel_size):
    module = ConvBNReLU(4, 6, kernel_size, dtype=jnp.float64, rngs=nnx.Rngs(0))
    kernel = rand(kernel_size, kernel_size, 4, 6, seed=1)
    module.kernel.set_value(jnp.asarray(kernel))  # float64 values replace the float32 ones
    module.bn.scale.set_value(jnp.asarray(rand(6, seed=2)))
    module.bn.bias.set_value(jnp.asarray(rand(6, seed=3)))
    x = rand(3, 5, 6, 4)
    weight = torch.from_numpy(np.transpose(kernel, (3, 2, 0, 1)).copy())
    bn = torch.nn.BatchNorm2d(6).double()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(np.array(module.bn.scale[...], np.float64)))
        bn.bias.copy_(torch.from_numpy(np.array(module.bn.bias[...], np.float64)))
    conv = F.conv2d(to_torch(x), weight, padding=kernel_size // 2)
    bn.train()
    expected_train = from_torch(F.relu(bn(conv)))  # batch statistics; updates the running ones
    got_train = module(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got_train), expected_train, rtol=1e-10, atol=1e-10)
    # Running statistics moved by momentum 0.1 (PyTorch's running var is the unbiased one).
    np.testing.assert_allclose(np.asarray(module.bn.mean[...]), bn.running_mean.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(module.bn.var[...]), bn.running_var.numpy(), rtol=1e-6, atol=1e-7)
    module.eval()
    bn.eval()
    np.testing.assert_allclose(np.asarray(module(jnp.asarray(x))), from_torch(F.relu(bn(conv))), rtol=1e-6, atol=1e-6)


def test_pyramid_pooling_against_a_numpy_reference():
    """Each branch: mean over PyTorch's adaptive bins, 1x1 conv, BatchNorm (batch statistics),
    ReLU, bilinear back (align_corners=False), written out with loops in float64."""
    module = PyramidPooling(3, 2, (1, 2, 3, 6), dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = rand(2, 7, 5, 3)
    got = module(jnp.asarray(x))

    def bins(n, s):
        return [((i * n) // s, -((-(i + 1) * n) // s)) for i in range(s)]

    def bilinear_axis(n_in, n_out):
        m = np.zeros((n_out, n_in))
        for i in range(n_out):
            src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            lo = min(int(np.floor(src)), n_in - 1)
            hi = min(lo + 1, n_in - 1)
            m[i, lo] += 1 - (src - lo)
            m[i, hi] += src - lo
        return m

    for branch, s in enumerate((1, 2, 3, 6)):
        pooled = np.zeros((2, s, s, 3))
        for i, (r0, r1) in enumerate(bins(7, s)):
            for j, (c0, c1) in enumerate(bins(5, s)):
                pooled[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
        y = pooled @ np.asarray(module.convs[branch].kernel[...], np.float64)[0, 0]
        y = (y - y.mean(axis=(0, 1, 2))) / np.sqrt(y.var(axis=(0, 1, 2)) + 1e-5)
        y = np.maximum(y, 0)
        expected = np.einsum("ih,bhwc,jw->bijc", bilinear_axis(s, 7), y, bilinear_axis(s, 5))
        np.testing.assert_allclose(np.asarray(got[branch]), expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("stride, grid, sizes", [(16, 4, [16, 8, 4, 2]), (8, 8, [16, 8, 4, 2]), (16, 5, [20, 10, 5, 2])])
def test_pyramid_gives_strides_4_8_16_32(stride, grid, sizes):
    """A 64x64 (80x80) image: patch grid 4 (5) at stride 16, 8 at stride 8 -> sides 64/4 ... 64/32."""
    neck = Pyramid(6, stride, rngs=nnx.Rngs(0))
    maps = neck([jnp.asarray(rand(2, grid, grid, 6, seed=i), jnp.float32) for i in range(4)])
    assert [m.shape for m in maps] == [(2, s, s, 6) for s in sizes]


def test_uperhead_and_fcn_give_logits_at_the_finest_and_their_input_map():
    head = UperHead([6] * 4, 8, 5, rngs=nnx.Rngs(0))
    aux = FCNHead(6, 4, 5, rngs=nnx.Rngs(1))
    head.eval(), aux.eval()
    maps = [jnp.asarray(rand(2, s, s, 6, seed=s), jnp.float32) for s in (16, 8, 4, 2)]
    logits, aux_logits = nnx.jit(lambda head, aux, maps: (head(maps), aux(maps[2])))(head, aux, maps)  # one compile
    assert logits.shape == (2, 16, 16, 5) and logits.dtype == jnp.float32
    assert aux_logits.shape == (2, 4, 4, 5)


def test_classifier_dropout_drops_whole_channels_in_train_mode_only():
    head = FCNHead(6, 4, 3, rngs=nnx.Rngs(0))
    head.classifier.dropout.rate = 0.5
    x = jnp.asarray(rand(2, 4, 4, 6), jnp.float32)
    head.eval()
    a, b = head(x), head(x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    head.train()
    dropped = head.classifier.dropout(jnp.ones((8, 4, 4, 4)))
    zero_channels = np.all(np.asarray(dropped) == 0, axis=(1, 2))
    assert zero_channels.any() and np.all((np.asarray(dropped) == 0) == zero_channels[:, None, None, :])
    assert set(np.unique(np.asarray(dropped))) <= {0.0, 2.0}  # kept channels scaled by 1 / (1 - 0.5)
