"""Scan orders: the permutations by hand on small grids, and models that scan in them.

The model-level checks use 1x1 patches, so tokens are pixels and any token order can be produced
by rearranging the pixels of the image: a Vim scanning order `o` on an image must then equal the
raster Vim (same parameters) on the image whose raster order lists the pixels in order `o`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vim_jax.config import VimConfig
from vim_jax.models import scan_orders
from vim_jax.models.scan_orders import CROSS_SCAN, inverse, patch_order, sequence_order
from vim_jax.models.vim import VisionMamba

SLOW = pytest.mark.slow
ALL_BASES = ("raster", "column", "zigzag_rows", "zigzag_columns", "window1", "window2", "window3", "window4")


# The orders, by hand ---------------------------------------------------------------------------
# Row-major patch indices of a 2x3 grid:  0 1 2      of a 3x3 grid:  0 1 2
#                                          3 4 5                      3 4 5
#                                                                     6 7 8
HAND = [
    ("column", (2, 3), [0, 3, 1, 4, 2, 5]),
    ("column", (3, 2), [0, 2, 4, 1, 3, 5]),
    ("zigzag_rows", (2, 3), [0, 1, 2, 5, 4, 3]),
    ("zigzag_rows", (3, 3), [0, 1, 2, 5, 4, 3, 6, 7, 8]),
    ("zigzag_columns", (2, 3), [0, 3, 4, 1, 2, 5]),
    ("zigzag_columns", (3, 3), [0, 3, 6, 7, 4, 1, 2, 5, 8]),
    ("window2", (4, 4), [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]),
    # Windows that do not divide the grid: the partial windows at the edges come last in their row.
    ("window2", (3, 3), [0, 1, 3, 4, 2, 5, 6, 7, 8]),
    ("window3", (4, 4), [0, 1, 2, 4, 5, 6, 8, 9, 10, 3, 7, 11, 12, 13, 14, 15]),
    ("window2", (5, 5), [0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 15, 16, 12, 13, 17, 18, 14, 19, 20, 21, 22, 23, 24]),
]


@pytest.mark.parametrize("name, grid, expected", HAND)
def test_orders_visit_the_grid_as_named(name, grid, expected):
    np.testing.assert_array_equal(patch_order(name, grid), expected)


@pytest.mark.parametrize("base", ALL_BASES)
@pytest.mark.parametrize("grid", [(1, 1), (1, 4), (4, 1), (3, 5), (5, 5), (6, 6), (7, 4)])
def test_every_order_is_a_permutation_with_an_inverse(base, grid):
    order = patch_order(base, grid)
    np.testing.assert_array_equal(np.sort(order), np.arange(grid[0] * grid[1]))
    for cls in [(), (0,), (grid[0] * grid[1] // 2,), (0, grid[0] * grid[1] + 1)]:
        for name in (base, "reversed_" + base):
            perm, _ = sequence_order(name, grid, cls)
            if perm is not None:
                np.testing.assert_array_equal(np.sort(perm), np.arange(grid[0] * grid[1] + len(cls)))
                np.testing.assert_array_equal(perm[inverse(perm)], np.arange(perm.size))
                np.testing.assert_array_equal(inverse(perm)[perm], np.arange(perm.size))


def test_orders_on_a_rectangular_grid_follow_its_rows_and_columns():
    h, w = 3, 5
    grid = np.arange(h * w).reshape(h, w)
    snake_rows, snake_columns = grid.copy(), grid.T.copy()
    snake_rows[1::2] = snake_rows[1::2, ::-1]
    snake_columns[1::2] = snake_columns[1::2, ::-1]
    np.testing.assert_array_equal(patch_order("column", (h, w)), grid.T.reshape(-1))
    np.testing.assert_array_equal(patch_order("zigzag_rows", (h, w)), snake_rows.reshape(-1))
    np.testing.assert_array_equal(patch_order("zigzag_columns", (h, w)), snake_columns.reshape(-1))


@pytest.mark.parametrize("grid", [(4, 4), (5, 5)])
def test_raster_and_identity_orders_need_no_permutation(grid):
    assert sequence_order("raster", grid, (12,)) == (None, False)
    assert sequence_order("reversed_raster", grid, (12,)) == (None, True)
    assert sequence_order("window1", grid, ()) == (None, False)  # 1x1 windows: raster
    assert sequence_order("window8", grid, ()) == (None, False)  # one window covers the grid
    assert sequence_order("zigzag_rows", (grid[0], 1), ()) == (None, False)  # one column: no turns
    perm, reverse = sequence_order("reversed_column", grid, ())
    assert reverse and perm is not None


@pytest.mark.parametrize("cls_token", ["middle", "head", "head_tail", "none"])
@pytest.mark.parametrize("name", ["column", "zigzag_rows", "reversed_zigzag_columns", "window2"])
def test_class_tokens_keep_their_positions(cls_token, name):
    cfg = VimConfig(img_size=5, patch_size=1, stride=1, cls_token=cls_token, pool="mean")
    grid, cls = cfg.grid_size, cfg.cls_positions
    assert cls == {"middle": (12,), "head": (0,), "head_tail": (0, 26), "none": ()}[cls_token]
    perm, _ = sequence_order(name, grid, cls)
    np.testing.assert_array_equal(perm[list(cls)], list(cls))
    slots = np.setdiff1d(np.arange(cfg.seq_len), cls)
    # The patch slots, read in scan order, hold the patches in the order's sequence.
    np.testing.assert_array_equal(perm[slots], slots[patch_order(name.removeprefix("reversed_"), grid)])


def test_unknown_names_are_refused():
    for bad in ("diagonal", "reversed_", "windowx", "reversed_reversed_raster"):
        with pytest.raises(ValueError, match="unknown scan order"):
            scan_orders.check_name(bad)
    with pytest.raises(ValueError, match="unknown scan order"):
        VimConfig(scan_orders=("raster", "spiral"))


# Models that scan in these orders --------------------------------------------------------------
PIXELS = VimConfig(img_size=5, patch_size=1, stride=1, in_chans=1, num_classes=3, embed_dim=16, depth=2, d_state=4,
                   cls_token="none", pool="mean", abs_pos_embed=False)


def _model(cfg, seed=0):
    model = VisionMamba(cfg, rngs=nnx.Rngs(seed))
    model.eval()
    return model


def _images(cfg, batch=2):
    return jax.random.normal(jax.random.key(7), (batch, cfg.img_size, cfg.img_size, cfg.in_chans))


def _rearranged(images, sequence):
    """The image whose raster pixel order is `images`' pixels taken in `sequence` (1x1 patches)."""
    b, s, _, c = images.shape
    return images.reshape(b, s * s, c)[:, sequence].reshape(images.shape)


# Every order without a class token; each class-token placement with one order (each case
# compiles two models, so the product of the two lists would be slow). The permutations
# themselves are checked by hand above: the fast tier keeps a case with one class token, one with
# two, and one without.
@pytest.mark.parametrize("order, cls_token", [
    ("column", "none"), pytest.param("zigzag_rows", "none", marks=SLOW), pytest.param("zigzag_columns", "none", marks=SLOW),
    pytest.param("window2", "none", marks=SLOW), pytest.param("window4", "none", marks=SLOW), ("window2", "middle"),
    pytest.param("column", "head", marks=SLOW), ("zigzag_rows", "head_tail")])
def test_scanning_an_order_equals_raster_on_the_rearranged_image(order, cls_token):
    pool = "mean" if cls_token == "none" else "token"
    raster = PIXELS.replace(cls_token=cls_token, pool=pool)
    ordered = raster.replace(scan_orders=(order, "reversed_" + order))
    images = _images(raster)
    a, b = _model(ordered), _model(raster)  # same seed and shapes: the same parameters
    perm, _ = sequence_order(order, raster.grid_size, raster.cls_positions)
    features_a = a.forward_features(images)
    features_b = b.forward_features(_rearranged(images, patch_order(order, raster.grid_size)))
    # Token slot perm[q] of the ordered model is slot q of the raster model.
    np.testing.assert_allclose(np.asarray(features_a[:, perm]), np.asarray(features_b), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(a.forward_head(features_a)), np.asarray(b.forward_head(features_b)),
                               rtol=2e-5, atol=2e-5)
    assert not np.allclose(np.asarray(features_a), np.asarray(b.forward_features(images)), atol=1e-3)


def test_column_scan_on_an_image_equals_raster_scan_on_its_transpose():
    """With symmetric patch kernels the transposed image's tokens are the transposed token grid."""
    raster = PIXELS.replace(img_size=12, patch_size=2, stride=2, in_chans=3)
    column = raster.replace(scan_orders=("column", "reversed_column"))
    a, b = _model(column), _model(raster)
    for m in (a, b):
        k = m.patch_embed.kernel[...]
        m.patch_embed.kernel[...] = (k + k.transpose(1, 0, 2, 3)) / 2
    images = _images(raster)
    g = raster.grid_size[0]
    features_a = a.forward_features(images)
    features_b = b.forward_features(images.transpose(0, 2, 1, 3))
    transpose_tokens = np.arange(g * g).reshape(g, g).T.reshape(-1)
    np.testing.assert_allclose(np.asarray(features_a[:, transpose_tokens]), np.asarray(features_b),
                               rtol=2e-5, atol=2e-5)


def test_cross_scan_on_an_image_equals_swapped_cross_scan_on_its_transpose():
    cross = PIXELS.replace(scan_orders=CROSS_SCAN)
    swapped = PIXELS.replace(scan_orders=("column", "raster", "reversed_column", "reversed_raster"))
    images = _images(cross)
    column = patch_order("column", cross.grid_size)
    features_a = _model(cross).forward_features(images)
    features_b = _model(swapped).forward_features(_rearranged(images, column))
    np.testing.assert_allclose(np.asarray(features_a[:, column]), np.asarray(features_b), rtol=2e-5, atol=2e-5)


def test_explicit_raster_pair_is_the_default_model_exactly():
    default = VimConfig(img_size=32, patch_size=8, stride=8, embed_dim=32, depth=2, d_state=8, num_classes=10)
    explicit = default.replace(scan_orders=("raster", "reversed_raster"))
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    np.testing.assert_array_equal(np.asarray(_model(default)(images)), np.asarray(_model(explicit)(images)))


# A gradient compile each: the fast tier trains the four-direction cross scan only.
@pytest.mark.parametrize("orders", [CROSS_SCAN] + [pytest.param(pair, marks=SLOW) for pair in
                                                   [("zigzag_rows", "reversed_zigzag_rows"), ("window2", "reversed_window2")]])
def test_multi_order_models_run_forward_and_backward(orders):
    cfg = VimConfig(img_size=32, patch_size=8, stride=8, embed_dim=32, depth=2, d_state=8, num_classes=10,
                    scan_orders=orders)
    model = VisionMamba(cfg, rngs=nnx.Rngs(0))
    images, labels = jax.random.normal(jax.random.key(1), (2, 32, 32, 3)), jnp.array([1, 4])

    @nnx.jit
    def loss_and_grad(model):
        loss = lambda m: -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(m(images)), labels[:, None], 1))
        return nnx.value_and_grad(loss)(model)

    loss, grads = loss_and_grad(model)
    assert np.isfinite(float(loss))
    a_log = np.asarray(grads["blocks"]["mixer"]["A_log"])  # [depth, directions, E, N]
    assert a_log.shape[1] == len(orders) and np.all(np.isfinite(a_log))
    assert np.all(np.abs(a_log).reshape(cfg.depth, len(orders), -1).max(-1) > 0)  # every direction learns


def test_v1_convolves_in_its_first_order():
    raster = PIXELS.replace(bimamba="v1")
    column = raster.replace(scan_orders=("column", "reversed_column"))
    images = _images(raster)
    order = patch_order("column", raster.grid_size)
    features_a = _model(column).forward_features(images)
    features_b = _model(raster).forward_features(_rearranged(images, order))
    np.testing.assert_allclose(np.asarray(features_a[:, order]), np.asarray(features_b), rtol=2e-5, atol=2e-5)
