"""Shared fixtures: a fake ImageNet prepared once per session by the real TFDS builder."""

from __future__ import annotations

import pytest

from vim_jax.data.fake_imagenet import FakeImageNetSpec, write_fake_imagenet

# 4 classes x 6 images and 10 validation images: preparing takes about a second.
FAKE_SPEC = FakeImageNetSpec(num_classes=4, train_per_class=6, num_val=10, seed=3)


@pytest.fixture(scope="session")
def fake_imagenet(tmp_path_factory):
    """(data_dir, summary) of a TFDS imagenet2012 prepared from generated official-layout archives."""
    pytest.importorskip("tensorflow_datasets")
    from vim_jax.data.imagenet import prepare_imagenet

    root = tmp_path_factory.mktemp("fake_imagenet")
    summary = write_fake_imagenet(root / "manual", FAKE_SPEC)
    prepare_imagenet(root / "data", root / "manual")
    return root / "data", summary
