"""`scan_blocks` cut at stops: the same carry and outputs as one scan, the carry at each stop;
unrolled: the same values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vim_jax.models.backbone import scan_blocks, stack_blocks


class Affine(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.scale = nnx.Param(1.0 + 0.1 * nnx.initializers.normal()(rngs.params(), (3,)))

    def __call__(self, x):
        return x * self.scale[...] + 1.0


def _step(members, carry, offset):
    for block in members:
        carry = block(carry) + offset
    return carry, carry.sum()


@pytest.fixture(scope="module")
def blocks():
    return stack_blocks(Affine, 6, nnx.Rngs(0))


@pytest.mark.parametrize("group", [1, 2])
def test_stops_give_the_carry_after_those_groups_and_leave_the_result_unchanged(blocks, group):
    length = 6 // group
    x0, offsets = jnp.ones((3,)), jnp.arange(length, dtype=jnp.float32)
    whole, ys, none = scan_blocks(blocks, _step, x0, offsets, remat=False, group=group)
    assert none == [] and ys.shape == (length,)

    stops = (1, length - 1)
    cut, cut_ys, at_stops = scan_blocks(blocks, _step, x0, offsets, remat=True, group=group, stops=stops)
    np.testing.assert_allclose(cut, whole, rtol=1e-6)
    np.testing.assert_allclose(cut_ys, ys, rtol=1e-6)
    for stop, carry in zip(stops, at_stops):
        np.testing.assert_allclose(carry.sum(), ys[stop - 1], rtol=1e-6)


def test_end_skips_the_groups_after_it(blocks):
    x0, offsets = jnp.ones((3,)), jnp.arange(6, dtype=jnp.float32)
    _, ys, _ = scan_blocks(blocks, _step, x0, offsets, remat=False)
    carry, part_ys, (at_two,) = scan_blocks(blocks, _step, x0, offsets, remat=False, stops=(2,), end=4)
    assert part_ys.shape == (4,)
    np.testing.assert_allclose(carry.sum(), ys[3], rtol=1e-6)
    np.testing.assert_allclose(at_two.sum(), ys[1], rtol=1e-6)


def test_stops_past_the_end_are_refused(blocks):
    with pytest.raises(ValueError, match="stops"):
        scan_blocks(blocks, _step, jnp.ones((3,)), jnp.zeros((6,)), remat=False, stops=(5,), end=3)


def test_unrolled_scan_gives_the_same_values_and_gradients(blocks):
    offsets = jnp.arange(3, dtype=jnp.float32)

    def run(x0, unroll):
        carry, ys, _ = scan_blocks(blocks, _step, x0, offsets, remat=False, group=2, unroll=unroll)
        return carry.sum() + jnp.sum(ys ** 2), (carry, ys)

    x0 = jnp.asarray([0.5, -1.0, 2.0])
    (_, rolled), rolled_grad = jax.value_and_grad(run, has_aux=True)(x0, False)
    (_, unrolled), unrolled_grad = jax.value_and_grad(run, has_aux=True)(x0, True)
    for a, b in zip((*rolled, rolled_grad), (*unrolled, unrolled_grad)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6)
