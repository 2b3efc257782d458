"""Suite-wide settings and fixtures: faster-compiling random bits, a session compilation cache,
and each test module's compiled programs dropped when the module is done.

Random bits: jax's default "partitionable" threefry compiles to programs that XLA's CPU compiler
takes about three times longer to build than the classic threefry; the suite initialises many
small models (each initialiser is a compile of dozens of random draws), so it uses the classic
one. Both give well-distributed bits that do not depend on how an array is sharded; only the
values drawn for a given seed differ, and no test depends on those. Set through the environment
before jax is imported, so that the subprocesses the tests start draw the same bits as the
tests themselves.

Compilation cache: many tests compile the same program again (the same tiny model or scan in
another test or module, after the module's caches are cleared), so the session keeps XLA's
persistent compilation cache in a temporary directory; the subprocesses share it through
`tests.train.helpers.subprocess_env`.

Releasing compiled programs: the suite runs in one process, and JAX keeps every function it
compiled (and its traces) for the life of the process; across the whole suite that is gigabytes of
CPU executables no later module calls again. Later modules compile (or load from the cache) what
they need themselves, so results do not change.
"""

from __future__ import annotations

import ctypes
import gc
import os

os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_threefry_partitionable", os.environ["JAX_THREEFRY_PARTITIONABLE"] not in ("0", "false", "False"))

try:
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim  # glibc keeps freed memory otherwise
except (OSError, AttributeError):  # not glibc
    _MALLOC_TRIM = None

_CACHE_OPTIONS = {"jax_compilation_cache_dir": None, "jax_persistent_cache_min_compile_time_secs": 0.0,
                  "jax_persistent_cache_min_entry_size_bytes": 0}


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent XLA cache for the whole pytest run; the previous settings come back afterwards."""
    directory = str(tmp_path_factory.mktemp("xla_cache"))
    previous = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    for name, value in {**_CACHE_OPTIONS, "jax_compilation_cache_dir": directory}.items():
        jax.config.update(name, value)
    yield directory
    for name, value in previous.items():
        jax.config.update(name, value)


def _release_memory():
    """JAX's caches cleared, garbage collected, freed heap returned to the OS."""
    jax.clear_caches()
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """After each module: its compiled programs released (`_release_memory`)."""
    yield
    _release_memory()


@pytest.fixture
def release_after_each_test():
    """The same after every test, for modules whose tests share few programs and compile large
    ones (the interpreted kernels: their module grew by 2.6 GB otherwise). Recompiling a shared
    program then reads it from the session's compilation cache."""
    yield
    _release_memory()
