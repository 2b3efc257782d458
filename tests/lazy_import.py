"""Modules imported on first use rather than when pytest collects the tests.

TensorFlow (what the TFDS and augmentation modules import) adds about 450 MB to a process; the
test modules that need it name it through `LazyModule`, so that only the process that runs them
pays for it (under pytest-xdist, one worker runs them all: tests/conftest.py)."""

from __future__ import annotations

import importlib
import importlib.util

import pytest


def skip_module_without(name: str) -> None:
    """Skips the calling test module if `name` is not installed, without importing it."""
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"could not import {name!r}", allow_module_level=True)


class LazyModule:
    """Stands for the module `name`, which is imported when an attribute is first read."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)
