"""Deterministic, resumable, per-host sharded batch iterators and device prefetch (no TF here).

One :class:`IndexSampler` decides, from a seed alone, which example indices fill every *global*
batch of the run; each host (``jax.process_index()`` of ``jax.process_count()``) reads only its
contiguous slice of each global batch. Because the order is a pure function of (seed, step), an
iterator's whole state is the global step: a checkpoint stores :meth:`ResumableIterator.get_state`
(a small dict of ints, JSON-serialisable) and :meth:`ResumableIterator.set_state` continues with
exactly the batches an uninterrupted run would have produced. Augmentation randomness is keyed on
each example's position in the global stream (``seeding.py``), so it resumes identically too.

Repeated augmentation follows DeiT's ``RASampler``: each epoch shuffles the dataset, repeats
every index ``num_repeats`` times back to back, and deals the repeated list round-robin to
``num_replicas`` data-parallel replicas (so the copies of an image land on different replicas of
the same global batch, each with its own augmentation); an epoch keeps the length it would have
without repeats, so it sees about ``1/num_repeats`` of the distinct images.

Batches are dicts of numpy arrays with ``image``, ``label`` and ``mask`` (False marks padding in
the last batch of an evaluation pass). :func:`prefetch_to_device` moves them to devices on a
background thread, sharded by a given :class:`jax.sharding.Sharding`.
"""

from __future__ import annotations

import abc
import math
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

Batch = dict[str, np.ndarray]
IteratorState = dict[str, int]


class IndexSampler:
    """Which example indices make up each global batch, and which slice belongs to this host.

    Args:
      num_examples: size of the split.
      global_batch_size: examples per step over all hosts.
      seed: the order (and the augmentations keyed on it) is a pure function of this.
      shuffle: a fresh permutation per epoch (train) or the natural order (eval).
      drop_remainder: drop the last partial batch (train). If False (eval), the last batch is
        padded with index -1 and ``mask`` False, so every host runs the same number of steps.
      num_repeats: repeated augmentation factor (DeiT uses 3); 1 turns it off.
      num_replicas: the data-parallel replicas that repeated copies are dealt over (DeiT's world
        size; typically the size of the mesh's data axis). Must divide ``global_batch_size``.
      process_index, process_count: this host and the number of hosts (default: from jax).
    """

    def __init__(self, num_examples: int, global_batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_remainder: bool = True, num_repeats: int = 1, num_replicas: int = 1,
                 process_index: int | None = None, process_count: int | None = None):
        self.num_examples = int(num_examples)
        self.global_batch_size = int(global_batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_remainder = bool(drop_remainder)
        self.num_repeats = int(num_repeats)
        self.num_replicas = int(num_replicas)
        self.process_index = jax.process_index() if process_index is None else int(process_index)
        self.process_count = jax.process_count() if process_count is None else int(process_count)
        if self.global_batch_size % self.process_count:
            raise ValueError(f"global batch {global_batch_size} is not divisible by {self.process_count} hosts")
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(f"process_index {self.process_index} not in [0, {self.process_count})")
        if self.num_repeats < 1:
            raise ValueError("num_repeats must be >= 1")
        if self.num_repeats > 1:
            if not self.drop_remainder:
                raise ValueError("repeated augmentation is for training: use drop_remainder=True")
            if self.global_batch_size % self.num_replicas:
                raise ValueError(f"global batch {global_batch_size} is not divisible by num_replicas {num_replicas}")
        if self.steps_per_epoch < 1:
            raise ValueError(f"{num_examples} examples make no full batch of {global_batch_size}")
        self._cached_epoch: tuple[int, np.ndarray] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Global steps per epoch (the same with or without repeated augmentation)."""
        if self.drop_remainder:
            return self.num_examples // self.global_batch_size
        return math.ceil(self.num_examples / self.global_batch_size)

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    def fingerprint(self) -> dict[str, int]:
        """What a saved state must agree with to be restorable into this sampler."""
        return {"seed": self.seed, "num_examples": self.num_examples,
                "global_batch_size": self.global_batch_size, "num_repeats": self.num_repeats}

    def epoch_order(self, epoch: int) -> np.ndarray:
        """All global batches of ``epoch`` concatenated: int64 [steps_per_epoch * global_batch_size]."""
        if self._cached_epoch is not None and self._cached_epoch[0] == epoch:
            return self._cached_epoch[1]
        n, batch = self.num_examples, self.global_batch_size
        if self.shuffle:
            # SeedSequence([seed, epoch]): independent, reproducible permutations per epoch.
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
            order = np.arange(n)
        total = self.steps_per_epoch * batch
        if self.num_repeats > 1:
            order = self._repeated_order(order)
        elif total <= n:
            order = order[:total]
        else:
            order = np.concatenate([order, np.full(total - n, -1)])
        order = order.astype(np.int64)
        self._cached_epoch = (epoch, order)
        return order

    def _repeated_order(self, permutation: np.ndarray) -> np.ndarray:
        # DeiT RASampler: repeat each index back to back, pad to a multiple of the replica count by
        # wrapping around, deal round-robin (replica r takes positions r, r + R, ...), and keep the
        # first steps * per-replica-batch of each replica's list so the epoch length is unchanged.
        replicas, repeats = self.num_replicas, self.num_repeats
        repeated = np.repeat(permutation, repeats)
        total = math.ceil(len(repeated) / replicas) * replicas
        repeated = np.concatenate([repeated, repeated[: total - len(repeated)]])
        per_replica = repeated.reshape(-1, replicas).T  # [R, total / R]; row r = repeated[r::R]
        replica_batch = self.global_batch_size // replicas
        per_replica = per_replica[:, : self.steps_per_epoch * replica_batch]
        # Global batch t = replica 0's t-th chunk, then replica 1's, ...: replicas' data-parallel
        # shards are contiguous slices of the global batch.
        return per_replica.reshape(replicas, self.steps_per_epoch, replica_batch).transpose(1, 0, 2).reshape(-1)

    def global_indices(self, step: int) -> np.ndarray:
        """Example indices of global batch ``step`` (-1 = padding)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        batch = self.global_batch_size
        return self.epoch_order(epoch)[within * batch:(within + 1) * batch]

    def global_positions(self, step: int) -> np.ndarray:
        """Each example's position in the run's global stream: the key of its augmentation."""
        return np.arange(step * self.global_batch_size, (step + 1) * self.global_batch_size, dtype=np.int64)

    def local_slice(self) -> slice:
        local = self.local_batch_size
        return slice(self.process_index * local, (self.process_index + 1) * local)

    def local_indices(self, step: int) -> np.ndarray:
        return self.global_indices(step)[self.local_slice()]

    def local_positions(self, step: int) -> np.ndarray:
        return self.global_positions(step)[self.local_slice()]


class ResumableIterator(abc.ABC):
    """Yields host-local batches for global steps ``start, start + 1, ...``; state = the next step.

    Subclasses implement :meth:`_batches_from`, a generator of batches starting at a given step.
    ``num_steps`` (None = endless, the training default) ends the iteration; evaluation
    iterators use one epoch.
    """

    def __init__(self, sampler: IndexSampler, num_steps: int | None = None):
        self.sampler = sampler
        self.num_steps = num_steps
        self._step = 0
        self._batches: Iterator[Batch] | None = None

    @abc.abstractmethod
    def _batches_from(self, start_step: int) -> Iterator[Batch]:
        """Batches for steps start_step, start_step + 1, ... (may run ahead internally)."""

    @property
    def step(self) -> int:
        """The global step of the next batch."""
        return self._step

    @property
    def epoch(self) -> int:
        return self._step // self.sampler.steps_per_epoch

    def __iter__(self) -> ResumableIterator:
        return self

    def __next__(self) -> Batch:
        if self.num_steps is not None and self._step >= self.num_steps:
            raise StopIteration
        if self._batches is None:
            self._batches = self._batches_from(self._step)
        batch = next(self._batches)
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
        """Drops the underlying generator (and whatever threads or buffers it holds)."""
        batches, self._batches = self._batches, None
        if batches is not None and hasattr(batches, "close"):
            batches.close()

    def __enter__(self) -> ResumableIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


BatchTransform = Callable[[dict[str, np.ndarray], np.ndarray], dict[str, np.ndarray]]


class ArrayIterator(ResumableIterator):
    """Batches gathered from in-memory numpy arrays (e.g. Fashion-MNIST).

    Args:
      arrays: equal-length arrays, e.g. ``{"image": uint8 [N, H, W], "label": int [N]}``.
      sampler: the index order (see :class:`IndexSampler`).
      transform: ``transform(batch, positions) -> batch``, applied to each host-local batch;
        ``positions`` are the examples' global stream positions, to key augmentation randomness on.
      num_steps: None for endless training; ``sampler.steps_per_epoch`` for one evaluation pass.
    """

    def __init__(self, arrays: dict[str, np.ndarray], sampler: IndexSampler,
                 transform: BatchTransform | None = None, num_steps: int | None = None):
        lengths = {len(v) for v in arrays.values()}
        if lengths != {sampler.num_examples}:
            raise ValueError(f"array lengths {lengths} differ from sampler.num_examples {sampler.num_examples}")
        super().__init__(sampler, num_steps)
        self.arrays = arrays
        self.transform = transform

    def _batches_from(self, start_step: int) -> Iterator[Batch]:
        step = start_step
        while True:
            indices = self.sampler.local_indices(step)
            valid = indices >= 0
            safe = np.where(valid, indices, 0)  # padding rows repeat example 0, masked out
            batch = {k: v[safe] for k, v in self.arrays.items()}
            batch["mask"] = valid
            if self.transform is not None:
                batch = self.transform(batch, self.sampler.local_positions(step))
            yield batch
            step += 1


class _End:
    def __init__(self, error: BaseException | None = None):
        self.error = error


def _put_batch(batch: Any, sharding: jax.sharding.Sharding | None) -> Any:
    if sharding is None:
        return jax.device_put(batch)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    # Several hosts: each holds its slice of the global batch; assemble one global jax.Array.
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


class DevicePrefetcher:
    """Runs a batch iterator on a background thread and puts its batches on devices ahead of use.

    ``get_state()`` is the wrapped iterator's state *after the last batch handed out* (not after
    the ones buffered), so a checkpoint taken between steps resumes at the right batch.
    """

    def __init__(self, iterator: Iterator[Batch], sharding: jax.sharding.Sharding | None = None,
                 buffer_size: int = 2):
        self._source = iterator
        self._sharding = sharding
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, buffer_size))
        self._stop = threading.Event()
        get_state = getattr(iterator, "get_state", None)
        self._state = get_state() if get_state else None  # before the thread starts advancing it
        self._done = False
        self._thread = threading.Thread(target=self._run, name="DevicePrefetcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        get_state = getattr(self._source, "get_state", None)
        try:
            for batch in self._source:
                item = (_put_batch(batch, self._sharding), get_state() if get_state else None)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(_End())
        except BaseException as error:  # re-raised in the consumer's thread
            self._queue.put(_End(error))

    def __iter__(self) -> DevicePrefetcher:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _End):
            self._done = True
            if item.error is not None:
                raise item.error
            raise StopIteration
        batch, self._state = item
        return batch

    def get_state(self) -> IteratorState | None:
        return None if self._state is None else dict(self._state)

    def close(self) -> None:
        """Stops the thread; the wrapped iterator is left where the thread stopped reading it."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._done = True

    def __del__(self):
        self._stop.set()


def prefetch_to_device(iterator: Iterator[Batch], sharding: jax.sharding.Sharding | None = None,
                       buffer_size: int = 2) -> DevicePrefetcher:
    """Wraps ``iterator`` so that batches arrive as jax.Arrays laid out by ``sharding``.

    Give ``NamedSharding(mesh, PartitionSpec("data"))`` to split every array's leading (batch) axis
    over the mesh's data axis. On several hosts each host's iterator yields its local slice and the
    result is the global array (``jax.make_array_from_process_local_data``). Restore a resumed
    state on the iterator *before* wrapping it; read ``get_state()`` from the prefetcher.
    """
    return DevicePrefetcher(iterator, sharding, buffer_size)
