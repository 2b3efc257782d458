"""Counter-based randomness for input pipelines: a value per (seed, example position, stream).

Keying every random draw on the example's position in the global stream, rather than on a
stateful generator, is what makes the pipelines resumable (restart at any step and the same
numbers come out) and independent of how many hosts or worker threads share the work.
"""

from __future__ import annotations

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # SplitMix64's finaliser: a well-tested 64-bit mixer (Steele et al. 2014); wrapping uint64
    # arithmetic is intended, hence errstate.
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def hash_bits(seed: int, positions: np.ndarray, stream: int = 0) -> np.ndarray:
    """64 random-looking bits per position, a pure function of (seed, position, stream)."""
    positions = np.asarray(positions).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ _splitmix64(np.uint64(stream)))
        return _splitmix64(key ^ _splitmix64(positions))


def hash_uniform(seed: int, positions: np.ndarray, stream: int = 0) -> np.ndarray:
    """Uniform float64 in [0, 1) per position (53 random bits)."""
    return (hash_bits(seed, positions, stream) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def hash_randint(seed: int, positions: np.ndarray, high: int | np.ndarray, stream: int = 0) -> np.ndarray:
    """Integers uniform in [0, high) per position (high may be an array broadcast with positions)."""
    return np.floor(hash_uniform(seed, positions, stream) * high).astype(np.int64)


def example_seeds(seed: int, positions: np.ndarray) -> np.ndarray:
    """A [n, 2] int64 seed per example for TF's stateless random ops (tf.random.stateless_*)."""
    positions = np.asarray(positions, np.int64)
    return np.stack([np.full_like(positions, seed), positions], axis=-1)
