"""Suite-wide fixture: each test module's compiled programs are dropped when the module is done.

The suite runs in one process, and JAX keeps every function it compiled (and its traces) for the
life of the process; across the whole suite that is gigabytes of CPU executables no later module
calls again. Later modules compile what they need themselves, so results do not change.
"""

from __future__ import annotations

import ctypes
import gc

import jax
import pytest

try:
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim  # glibc keeps freed memory otherwise
except (OSError, AttributeError):  # not glibc
    _MALLOC_TRIM = None


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """After each module: JAX's caches cleared, garbage collected, freed heap returned to the OS."""
    yield
    jax.clear_caches()
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
