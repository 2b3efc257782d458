"""Resumable, per-host batch pipelines on Grain, with worker processes and device prefetch.

Global step ``s`` of a run becomes this host's batch ``s`` through one Grain pipeline::

    grain.MapDataset.range(start_step, num_steps)   # global steps
        .map(StepBatch(sampler, load))              # this host's indices of step s -> load -> batch
        .to_iter_dataset(ReadOptions(num_threads))   # batches built ahead by threads ...
        .mp_prefetch(MultiprocessingOptions(...))   # ... or by worker processes (num_workers > 0)
        .map(put on devices) + ThreadPrefetch        # prefetch_to_device: jax.Arrays, sharded

:class:`~vim_jax.data.sampler.IndexSampler` fixes which examples fill every global batch, and
augmentations are keyed on each example's stream position, so a batch is a pure function of its
step and Grain may build any number of them in parallel, in any process, and still hand them out
in order. The position saved in a checkpoint is therefore the global step alone
(:meth:`DataIterator.get_state`, a small JSON dict): resuming rebuilds the pipeline from that
step, which also works when the resumed run uses another number of workers (Grain's own
multi-worker state is tied to the worker count). The order and the per-host slices come from
``IndexSampler`` rather than Grain's ``shuffle`` and ``ShardByJaxProcess`` because DeiT's repeated
augmentation deals an image's copies over the replicas of one *global* batch, which needs the
global view.

Batches are dicts of numpy arrays with ``image``, ``label`` and ``mask`` (False marks padding in
the last batch of an evaluation pass).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import grain
import jax
import numpy as np
from grain.experimental import ThreadPrefetchIterDataset

from vim_jax.data.sampler import IndexSampler

Batch = dict[str, np.ndarray]
IteratorState = dict[str, int]
# load(indices, positions) -> batch: reads (and augments) the examples at ``indices``, keying
# randomness on their global stream ``positions``. Must pickle, to run in worker processes.
BatchLoader = Callable[[np.ndarray, np.ndarray], Batch]


@dataclasses.dataclass(frozen=True)
class StepBatch:
    """Grain map transform: a global step -> this host's batch of that step."""

    sampler: IndexSampler
    load: BatchLoader

    def __call__(self, step: int) -> Batch:
        indices = self.sampler.local_indices(step)
        valid = indices >= 0
        # Padding (only in an evaluation pass's last batch) re-reads example 0, masked out.
        batch = self.load(np.where(valid, indices, 0), self.sampler.local_positions(step))
        return {**batch, "mask": valid}


BatchTransform = Callable[[Batch, np.ndarray], Batch]


@dataclasses.dataclass(frozen=True)
class ArrayLoader:
    """A :data:`BatchLoader` gathering rows of in-memory arrays, then ``transform(batch, positions)``."""

    arrays: dict[str, np.ndarray]
    transform: BatchTransform | None = None

    def __call__(self, indices: np.ndarray, positions: np.ndarray) -> Batch:
        batch = {k: v[indices] for k, v in self.arrays.items()}
        return batch if self.transform is None else self.transform(batch, positions)


@dataclasses.dataclass(frozen=True)
class PutOnDevices:
    """Grain map transform: a host batch -> jax.Arrays laid out by ``sharding``; ``buffer_size``
    batches are moved ahead of use (see :func:`prefetch_to_device`)."""

    sharding: jax.sharding.Sharding | None
    buffer_size: int = 2

    def __call__(self, batch: Any) -> Any:
        if self.sharding is None:
            return jax.device_put(batch)
        if jax.process_count() == 1:
            return jax.device_put(batch, self.sharding)
        # Several hosts: each holds its slice of the global batch; assemble one global jax.Array.
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.sharding, x), batch)


def _allow_grain_flags() -> None:
    # Grain's worker processes read absl flags; outside an absl app nobody parses them.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class DataIterator:
    """Host-local batches for global steps ``step, step + 1, ...``, built by a Grain pipeline.

    Args:
      sampler: the index order (see :class:`IndexSampler`).
      load: ``load(indices, positions) -> batch`` (see ``BatchLoader``).
      num_steps: None for endless training; ``sampler.steps_per_epoch`` for one evaluation pass.
      num_workers: Grain worker processes building batches (0: threads of this process).
      num_threads: threads building batches in this process (or in each worker).
      device: put batches on devices, ahead of use (None: numpy batches).
      start_step: the global step of the first batch.
    """

    def __init__(self, sampler: IndexSampler, load: BatchLoader, *, num_steps: int | None = None,
                 num_workers: int = 0, num_threads: int = 1, device: PutOnDevices | None = None,
                 start_step: int = 0):
        if num_workers < 0 or num_threads < 1:
            raise ValueError(f"num_workers={num_workers} must be >= 0 and num_threads={num_threads} >= 1")
        self.sampler = sampler
        self.load = load
        self.num_steps = num_steps
        self.num_workers = num_workers
        self.num_threads = num_threads
        self.device = device
        self._step = start_step
        self._iterator: grain.DatasetIterator | None = None

    def dataset(self, start_step: int) -> grain.IterDataset:
        """The Grain pipeline producing the batches of steps ``start_step, start_step + 1, ...``."""
        stop = sys.maxsize if self.num_steps is None else max(self.num_steps, start_step)
        ds = grain.MapDataset.range(start_step, stop).map(StepBatch(self.sampler, self.load))
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=self.num_threads,
                                                  prefetch_buffer_size=2 * self.num_threads))
        if self.num_workers:
            _allow_grain_flags()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers,
                                                             per_worker_buffer_size=2))
        if self.device is not None:
            ds = ThreadPrefetchIterDataset(ds.map(self.device), prefetch_buffer_size=max(1, self.device.buffer_size))
        return ds

    @property
    def step(self) -> int:
        """The global step of the next batch."""
        return self._step

    @property
    def epoch(self) -> int:
        return self._step // self.sampler.steps_per_epoch

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> Batch:
        if self.num_steps is not None and self._step >= self.num_steps:
            raise StopIteration
        if self._iterator is None:
            self._iterator = iter(self.dataset(self._step))
        batch = next(self._iterator)
        self._step += 1
        return batch

    def get_state(self) -> IteratorState:
        """A JSON-serialisable dict; ``step`` is all that resuming needs, the rest is checked."""
        return {"step": self._step, "epoch": self.epoch,
                "step_in_epoch": self._step % self.sampler.steps_per_epoch, **self.sampler.fingerprint()}

    def set_state(self, state: IteratorState) -> None:
        """Continue from a state saved by :meth:`get_state` (of this or an identical pipeline)."""
        expected = self.sampler.fingerprint()
        saved = {k: int(state[k]) for k in expected if k in state}
        if saved != {k: expected[k] for k in saved}:
            raise ValueError(f"iterator state {dict(state)} was saved by a different pipeline ({expected})")
        self.close()
        self._step = int(state["step"])

    def close(self) -> None:
        """Stops the pipeline's threads and worker processes (it restarts at :attr:`step` if used again)."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            iterator.close()

    def __enter__(self) -> DataIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prefetch_to_device(iterator: DataIterator, sharding: jax.sharding.Sharding | None = None,
                       buffer_size: int = 2) -> DataIterator:
    """A copy of ``iterator`` (from its current step) whose batches arrive as jax.Arrays laid out
    by ``sharding``, ``buffer_size`` of them moved ahead of use by a background thread.

    Give ``NamedSharding(mesh, PartitionSpec("data"))`` to split every array's leading (batch) axis
    over the mesh's data axis. On several hosts each host's pipeline builds its local slice and the
    result is the global array (``jax.make_array_from_process_local_data``). ``get_state()`` counts
    the batches handed out, not the ones buffered, so a checkpoint taken between steps resumes at
    the right batch.
    """
    return DataIterator(iterator.sampler, iterator.load, num_steps=iterator.num_steps,
                        num_workers=iterator.num_workers, num_threads=iterator.num_threads,
                        device=PutOnDevices(sharding, buffer_size), start_step=iterator.step)


def array_iterator(arrays: dict[str, np.ndarray], sampler: IndexSampler, transform: BatchTransform | None = None,
                   num_steps: int | None = None, num_threads: int = 1) -> DataIterator:
    """Batches gathered from in-memory numpy arrays (e.g. Fashion-MNIST).

    Args:
      arrays: equal-length arrays, e.g. ``{"image": uint8 [N, H, W], "label": int [N]}``.
      sampler: the index order (see :class:`IndexSampler`).
      transform: ``transform(batch, positions) -> batch``, applied to each host-local batch;
        ``positions`` are the examples' global stream positions, to key augmentation randomness on.
      num_steps: None for endless training; ``sampler.steps_per_epoch`` for one evaluation pass.
      num_threads: threads building batches ahead.
    """
    lengths = {len(v) for v in arrays.values()}
    if lengths != {sampler.num_examples}:
        raise ValueError(f"array lengths {lengths} differ from sampler.num_examples {sampler.num_examples}")
    return DataIterator(sampler, ArrayLoader(arrays, transform), num_steps=num_steps, num_threads=num_threads)
