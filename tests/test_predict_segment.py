"""`vim-jax predict --task segment`: bad input gets one clear message (the overlay itself is
checked on a trained run in tests/train/test_segmentation_training.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vim_jax import cli
from vim_jax.predict import OVERLAY_SUFFIX, overlay_paths


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize("arguments, message", [
    (["--model", "vim_tiny"], "'vim_tiny' is not a segmentation model; use one of"),
    (["--out", "overlay.jpg"], "overlays are PNG files"),
    (["--alpha", "1.5"], "--alpha must lie in"),
    (["--backend", "reference"], "--backend applies to --task classify"),
    (["--checkpoint", "no/such/run"], "is not a vim_jax checkpoint"),
])
def test_bad_segmentation_arguments_exit_with_one_message(photo, arguments, message):
    with pytest.raises(SystemExit, match=message):
        cli.main(["predict", "--task", "segment", photo, *arguments])


def test_an_unreadable_image_is_named(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(SystemExit, match=f"cannot read image {broken}"):
        cli.main(["predict", "--task", "segment", str(broken), "--out", str(tmp_path / "out.png")])


def test_out_is_only_for_segmentation(photo):
    with pytest.raises(SystemExit, match="--out is for --task segment"):
        cli.main(["predict", photo, "--out", "x.png"])


def test_overlays_go_to_the_file_the_directory_or_the_current_directory(tmp_path):
    assert overlay_paths(["a/x.jpg"], str(tmp_path / "o.png")) == [tmp_path / "o.png"]
    assert overlay_paths(["a/x.jpg", "b/y.png"], str(tmp_path)) == [tmp_path / f"x{OVERLAY_SUFFIX}",
                                                                   tmp_path / f"y{OVERLAY_SUFFIX}"]
    assert [str(p) for p in overlay_paths(["a/x.jpg"], None)] == [f"x{OVERLAY_SUFFIX}"]
    with pytest.raises(ValueError, match="must be an existing directory"):
        overlay_paths(["x.jpg", "y.jpg"], str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="same file name"):
        overlay_paths(["a/x.jpg", "b/x.jpg"], str(tmp_path))
