"""Session fixture for the trainer tests: a persistent compilation cache.

The tests train tiny models for a few steps on the CPU. Most of their time would go to XLA
compiling the same train step again for every run, so the session shares a persistent
compilation cache (with the subprocesses the tests start too: see `helpers.subprocess_env`).
"""

from __future__ import annotations

import jax
import pytest

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
