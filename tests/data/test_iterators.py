"""Sampler order, host sharding, repeated augmentation, resuming and device prefetch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from vim_jax.data.pipeline import array_iterator, prefetch_to_device
from vim_jax.data.sampler import IndexSampler
from vim_jax.data.seeding import hash_uniform


def test_each_epoch_is_a_fresh_permutation_and_reproducible():
    sampler = IndexSampler(100, 10, seed=5)
    epoch0 = np.concatenate([sampler.global_indices(s) for s in range(10)])
    epoch1 = np.concatenate([sampler.global_indices(s) for s in range(10, 20)])
    assert sorted(epoch0) == list(range(100)) and sorted(epoch1) == list(range(100))
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(epoch0, np.concatenate([IndexSampler(100, 10, seed=5).global_indices(s)
                                                          for s in range(10)]))
    assert not np.array_equal(epoch0, np.concatenate([IndexSampler(100, 10, seed=6).global_indices(s)
                                                      for s in range(10)]))


def test_drop_remainder_and_eval_padding():
    train = IndexSampler(25, 10, seed=0)
    assert train.steps_per_epoch == 2 and len(set(np.concatenate([train.global_indices(s) for s in (0, 1)]))) == 20
    evaluation = IndexSampler(25, 10, shuffle=False, drop_remainder=False)
    assert evaluation.steps_per_epoch == 3
    np.testing.assert_array_equal(evaluation.global_indices(2), [20, 21, 22, 23, 24, -1, -1, -1, -1, -1])


@pytest.mark.parametrize("hosts", [2, 4])
def test_hosts_partition_every_global_batch(hosts):
    whole = IndexSampler(96, 16, seed=1, process_index=0, process_count=1)
    parts = [IndexSampler(96, 16, seed=1, process_index=h, process_count=hosts) for h in range(hosts)]
    for step in range(12):  # two epochs
        local = [p.local_indices(step) for p in parts]
        assert all(len(x) == 16 // hosts for x in local)
        np.testing.assert_array_equal(np.concatenate(local), whole.global_indices(step))
        assert len(set(np.concatenate(local))) == 16  # disjoint
        np.testing.assert_array_equal(np.concatenate([p.local_positions(step) for p in parts]),
                                      whole.global_positions(step))


def test_repeated_augmentation_follows_deit_rasampler():
    n, batch, replicas = 96, 24, 4
    sampler = IndexSampler(n, batch, seed=2, num_repeats=3, num_replicas=replicas)
    assert sampler.steps_per_epoch == n // batch  # epoch length kept
    steps = [sampler.global_indices(s) for s in range(sampler.steps_per_epoch)]
    epoch = np.concatenate(steps)
    counts = np.bincount(epoch, minlength=n)
    assert set(counts.tolist()) == {0, 3} and (counts == 3).sum() == n // 3
    # DeiT: permute, repeat each index 3x back to back, replica r takes every R-th from r.
    perm = np.random.default_rng([2, 0]).permutation(n)
    repeated = np.repeat(perm, 3)
    replica_batch = batch // replicas
    for r in range(replicas):
        mine = np.concatenate([s[r * replica_batch:(r + 1) * replica_batch] for s in steps])
        np.testing.assert_array_equal(mine, repeated[r::replicas][:len(mine)])
    # The three copies of an image sit on three different replicas.
    replica_of = {}
    for s in steps:
        for pos, idx in enumerate(s):
            replica_of.setdefault(idx, set()).add(pos // replica_batch)
    assert all(len(v) == 3 for v in replica_of.values())


def _fake_arrays(n=50):
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (n, 4, 4)).astype(np.uint8), "label": np.arange(n)}


def _noisy_transform(batch, positions):
    # A stand-in augmentation keyed on stream positions, like the real ones.
    noise = hash_uniform(3, positions).astype(np.float32)
    return {**batch, "image": batch["image"] + noise[:, None, None]}


def test_resume_gives_exactly_the_uninterrupted_batches():
    def make():
        return array_iterator(_fake_arrays(), IndexSampler(50, 8, seed=4), _noisy_transform)

    reference = make()
    expected = [next(reference) for _ in range(15)]  # crosses epoch boundaries (6 steps/epoch)
    interrupted = make()
    for _ in range(7):
        next(interrupted)
    state = json.loads(json.dumps(interrupted.get_state()))  # what a checkpoint stores
    assert state["step"] == 7 and state["epoch"] == 1 and state["step_in_epoch"] == 1
    resumed = make()
    resumed.set_state(state)
    for want in expected[7:]:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_restoring_a_state_from_another_pipeline_is_refused():
    it = array_iterator(_fake_arrays(), IndexSampler(50, 8, seed=4))
    with pytest.raises(ValueError, match="different pipeline"):
        it.set_state({**it.get_state(), "seed": 5})


def test_eval_iterator_stops_after_one_pass_with_mask():
    it = array_iterator(_fake_arrays(), IndexSampler(50, 8, shuffle=False, drop_remainder=False), num_steps=7)
    batches = list(it)
    assert len(batches) == 7
    np.testing.assert_array_equal(np.concatenate([b["label"][b["mask"]] for b in batches]), np.arange(50))


def test_prefetch_to_device_yields_the_same_batches_and_tracks_consumed_state():
    source = array_iterator(_fake_arrays(), IndexSampler(50, 8, seed=4), _noisy_transform)
    reference = next(array_iterator(_fake_arrays(), IndexSampler(50, 8, seed=4), _noisy_transform))
    device = jax.devices()[0]
    prefetcher = prefetch_to_device(source, jax.sharding.SingleDeviceSharding(device), buffer_size=3)
    assert prefetcher.get_state()["step"] == 0
    first = next(prefetcher)
    assert isinstance(first["image"], jax.Array)
    np.testing.assert_array_equal(np.asarray(first["image"]), reference["image"])
    next(prefetcher)
    # The thread has read ahead, but the state is that after the two batches handed out.
    assert prefetcher.get_state()["step"] == 2
    prefetcher.close()


def test_prefetch_shards_batches_over_a_mesh_data_axis():
    # Several (fake CPU) devices need a fresh process: the flag must precede jax's start.
    code = textwrap.dedent("""
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        from vim_jax.data.pipeline import array_iterator, prefetch_to_device
        from vim_jax.data.sampler import IndexSampler
        assert jax.device_count() == 4
        mesh = Mesh(np.array(jax.devices()), ("data",))
        arrays = {"image": np.arange(64 * 3, dtype=np.float32).reshape(64, 3), "label": np.arange(64)}
        it = prefetch_to_device(array_iterator(arrays, IndexSampler(64, 16, seed=0)),
                                NamedSharding(mesh, PartitionSpec("data")))
        batch = next(it)
        expected = arrays["label"][IndexSampler(64, 16, seed=0).global_indices(0)]
        for key in ("image", "label", "mask"):
            shards = batch[key].addressable_shards
            assert len(shards) == 4 and all(s.data.shape[0] == 4 for s in shards), key
        np.testing.assert_array_equal(np.asarray(batch["label"]), expected)
        np.testing.assert_array_equal(np.asarray(batch["image"].addressable_shards[1].data)[:, 0] / 3, expected[4:8])
        it.close()
        print("ok")
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
