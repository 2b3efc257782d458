"""Fashion-MNIST: the IDX reader on the real Debian files, and the host/device transforms."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from vim_jax.data import fashion_mnist as fm
from vim_jax.data.constants import FASHION_MNIST_MEAN, FASHION_MNIST_STD

pytestmark = pytest.mark.skipif(not fm.fashion_mnist_dir().is_dir(),
                                reason="apt-get install dataset-fashion-mnist")


@pytest.mark.parametrize("split,count", [("train", 6000), ("test", 1000)])
def test_real_files_shapes_labels_and_class_histogram(split, count):
    images, labels = fm.load_fashion_mnist(split)
    n = 10 * count
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int32
    assert labels.min() == 0 and labels.max() == 9
    np.testing.assert_array_equal(np.bincount(labels), [count] * 10)
    assert len(fm.CLASS_NAMES) == 10


def test_normalisation_constants_match_the_train_set():
    images, _ = fm.load_fashion_mnist("train")
    counts = np.bincount(images.ravel(), minlength=256)  # exact moments from the histogram
    values = np.arange(256) / 255
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert abs(mean - FASHION_MNIST_MEAN[0]) < 1e-3 and abs(std - FASHION_MNIST_STD[0]) < 1e-3


def _write_idx(path, array, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip_and_rejects_bad_magic_and_length(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    _write_idx(tmp_path / "ok.gz", array)
    np.testing.assert_array_equal(fm.read_idx(tmp_path / "ok.gz"), array)
    _write_idx(tmp_path / "float.gz", array, magic_type=0x0D)
    with pytest.raises(ValueError, match="magic"):
        fm.read_idx(tmp_path / "float.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(9))
    with pytest.raises(ValueError, match="holds 9 bytes"):
        fm.read_idx(tmp_path / "short.gz")


def test_missing_files_error_names_path_and_package(tmp_path, monkeypatch):
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as error:
        fm.load_fashion_mnist("test")
    assert str(tmp_path / "nowhere" / "t10k-images-idx3-ubyte.gz") in str(error.value)
    assert "apt-get install dataset-fashion-mnist" in str(error.value)


def test_env_var_and_argument_override_the_directory(tmp_path, monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (10000, 28, 28))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10000) % 10)
    np.testing.assert_array_equal(fm.load_fashion_mnist("test", data_dir=tmp_path)[0], images)
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path))
    np.testing.assert_array_equal(fm.load_fashion_mnist("test")[0], images)


def _loop_crop_flip(image, dy, dx, flip, pad):
    padded = np.pad(image, pad)
    crop = padded[dy:dy + 28, dx:dx + 28]
    return crop[:, ::-1] if flip else crop


def test_numpy_crop_flip_matches_a_per_image_loop_and_really_flips():
    images, _ = fm.load_fashion_mnist("test")
    images = images[:64]
    dy, dx, flips = fm.random_crop_flip_params(7, np.arange(64), pad=4, flip=True)
    assert 0 <= dy.min() and dy.max() <= 8 and 0 <= dx.min() and dx.max() <= 8
    assert 0.25 < flips.mean() < 0.75 and len(set(dy.tolist())) > 4
    out = fm.random_crop_flip_numpy(images, dy, dx, flips, pad=4)
    for i in range(64):
        np.testing.assert_array_equal(out[i], _loop_crop_flip(images[i], dy[i], dx[i], flips[i], 4))
    # Offset (4, 4) without flip is the identity; with flip it mirrors columns.
    same = fm.random_crop_flip_numpy(images[:2], np.array([4, 4]), np.array([4, 4]), np.array([False, True]), 4)
    np.testing.assert_array_equal(same[0], images[0])
    np.testing.assert_array_equal(same[1], images[1][:, ::-1])


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (14, 1)])
def test_iterator_batches_layout(size, channels):
    spec = fm.FashionMnistPreprocess(image_size=size, channels=channels)
    batch = next(fm.fashion_mnist_iterator("train", 32, seed=0, spec=spec))
    assert batch["image"].shape == (32, 28, 28, 1) and batch["image"].dtype == np.uint8  # what crosses
    assert batch["label"].dtype == np.int32 and batch["mask"].all()
    images = np.asarray(jax.jit(lambda x: fm.fashion_mnist_to_float(x, spec))(batch["image"]))
    assert images.shape == (32, size, size, channels) and images.dtype == np.float32
    if channels == 3:
        np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_eval_iterator_is_plain_normalised_pixels_in_order_with_padded_last_batch():
    images, labels = fm.load_fashion_mnist("test")
    spec = fm.FashionMnistPreprocess(normalize=False)
    it = fm.fashion_mnist_iterator("test", 3000, spec=spec)
    batches = list(it)
    assert len(batches) == 4 and batches[-1]["mask"].sum() == 1000
    np.testing.assert_array_equal(batches[1]["image"][..., 0], images[3000:6000])
    np.testing.assert_allclose(np.asarray(fm.fashion_mnist_to_float(batches[1]["image"], spec))[..., 0],
                               images[3000:6000] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(batches[3]["label"][:1000], labels[9000:])
    normalised = np.asarray(fm.fashion_mnist_to_float(batches[1]["image"]))
    np.testing.assert_allclose(normalised, (images[3000:6000, :, :, None] / 255.0 - FASHION_MNIST_MEAN[0])
                               / FASHION_MNIST_STD[0], atol=1e-5)


def test_device_transform_eval_is_the_host_batch_made_float():
    images, labels = fm.load_fashion_mnist("test")
    spec = fm.FashionMnistPreprocess(image_size=32, channels=3)
    host = fm.fashion_mnist_numpy_transform({"image": images[:16], "label": labels[:16]}, np.arange(16),
                                            seed=0, train=False, spec=spec)["image"]
    device = jax.jit(lambda k, x: fm.fashion_mnist_device_transform(k, x, train=False, spec=spec))(
        jax.random.key(0), images[:16])
    np.testing.assert_allclose(np.asarray(device), np.asarray(fm.fashion_mnist_to_float(host, spec)), atol=1e-6)
    resized = jax.image.resize((images[:16] / 255.0 - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0],
                               (16, 32, 32), "linear")
    np.testing.assert_allclose(np.asarray(device)[..., 1], resized, atol=1e-5)


def test_device_transform_train_outputs_are_crops_or_flipped_crops():
    images, _ = fm.load_fashion_mnist("test")
    spec = fm.FashionMnistPreprocess(normalize=False)
    out = np.asarray(jax.jit(lambda k, x: fm.fashion_mnist_device_transform(k, x, train=True, spec=spec))(
        jax.random.key(1), images[:8]))
    assert out.shape == (8, 28, 28, 1)
    flips = 0
    for i in range(8):
        got = np.round(out[i, :, :, 0] * 255).astype(np.uint8)
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if np.array_equal(got, _loop_crop_flip(images[i], dy, dx, f, 4))]
        assert matches, f"example {i} is no crop of its input"
        flips += all(m[2] for m in matches)
    assert 0 < flips < 8


def test_fashion_mnist_path_never_imports_tensorflow():
    code = ("import sys; from vim_jax.data import fashion_mnist, pipeline, sampler, mixup, pil_transforms, imagenet_labels;"
            "fashion_mnist.load_fashion_mnist('test'); imagenet_labels.imagenet_class_names();"
            "assert not [m for m in sys.modules if m.startswith('tensorflow')], 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
