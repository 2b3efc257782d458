"""Which example indices fill every global batch of a run, and which slice belongs to this host.

One :class:`IndexSampler` decides, from a seed alone, the example indices of every *global*
batch; each host (``jax.process_index()`` of ``jax.process_count()``) reads only its contiguous
slice of each global batch. Because the order is a pure function of (seed, step), a pipeline's
whole position is the global step (see ``pipeline.py``). Augmentation randomness is keyed on each
example's position in the global stream (``seeding.py``), so it resumes identically too.

Repeated augmentation follows DeiT's ``RASampler``: each epoch shuffles the dataset, repeats
every index ``num_repeats`` times back to back, and deals the repeated list round-robin to
``num_replicas`` data-parallel replicas (so the copies of an image land on different replicas of
the same global batch, each with its own augmentation); an epoch keeps the length it would have
without repeats, so it sees about ``1/num_repeats`` of the distinct images.
"""

from __future__ import annotations

import math

import jax
import numpy as np


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
