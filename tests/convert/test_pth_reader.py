"""The torch-free `.pth` reader against `torch.load`, and its refusals (unsafe, corrupt, not a checkpoint)."""

from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from tests.convert.checkpoint_files import Reduce, tensor_record, write_zip_checkpoint
from vim_jax.convert.pth_reader import (
    CheckpointFormatError,
    StoredTensor,
    UnsafeCheckpointError,
    materialize,
    open_pth,
    read_pth,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool, torch.complex64]


def _tensors():
    base = torch.arange(60, dtype=torch.float64).reshape(3, 4, 5) * 0.37 - 7
    out = {f"{dt}".removeprefix("torch."): (base > 3 if dt == torch.bool else base.to(dt)) for dt in DTYPES}
    storage_owner = torch.arange(100, dtype=torch.float32)
    out.update({
        "transposed": base.float().permute(2, 0, 1),       # non-contiguous
        "slice_with_offset": storage_owner[17:41].view(4, 6)[:, 1::2],  # offset + strides
        "shares_storage": storage_owner[50:60],           # same storage as the slice
        "expanded": torch.tensor([1.5, -2.0]).expand(3, 2),  # stride 0
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 7),
        "parameter": torch.nn.Parameter(torch.ones(2, 2)),
    })
    return out


def _compare(ours, ref):
    if isinstance(ref, torch.Tensor):
        want = ref.detach().float().numpy() if ref.dtype == torch.bfloat16 else ref.detach().numpy()
        got = ours.astype(np.float32) if ours.dtype == ml_dtypes.bfloat16 else ours
        assert isinstance(ours, np.ndarray) and ours.flags.c_contiguous
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif isinstance(ref, argparse.Namespace):
        assert type(ours) is dict
        _compare(ours, vars(ref))
    elif isinstance(ref, dict):
        assert type(ours) is type(ref) and list(ours) == list(ref)
        for k in ref:
            _compare(ours[k], ref[k])
    elif isinstance(ref, (list, tuple)):
        assert type(ours) is type(ref) and len(ours) == len(ref)
        for a, b in zip(ours, ref):
            _compare(a, b)
    else:
        assert type(ours) is type(ref) and ours == ref


def test_reads_every_dtype_view_and_container_like_torch_load(tmp_path):
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    obj = {
        "model": collections.OrderedDict(model.state_dict()), "tensors": _tensors(),
        "optimizer": optimizer.state_dict(), "epoch": 7, "scaler": torch.amp.GradScaler("cpu").state_dict(),
        "args": argparse.Namespace(lr=1e-3, betas=(0.9, 0.999), milestones=[1, 2], name="vim", flag=None,
                                   tags={"a", "b"}, frozen=frozenset({3}), z=1 + 2j, raw=b"\x00\xff",
                                   np_float=np.float64(0.25), np_int=np.int32(-3)),
    }
    path = tmp_path / "all.pth"
    torch.save(obj, path)
    _compare(read_pth(path), torch.load(path, weights_only=False))


def test_open_reads_no_storage_until_asked(tmp_path):
    """Selecting `model` never touches the optimizer's bytes: delete them and it still loads."""
    path = tmp_path / "full.pth"
    torch.save({"model": {"w": torch.ones(3)}, "optimizer": {"m": torch.full((5,), 2.0)}}, path)
    stripped = tmp_path / "stripped.pth"
    keep = lambda name: not name.endswith("/data/1")  # storages are numbered in pickling order
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(stripped, "w") as dst:
        for name in filter(keep, src.namelist()):
            dst.writestr(name, src.read(name))
    opened = open_pth(stripped)
    assert isinstance(opened["optimizer"]["m"], StoredTensor) and opened["optimizer"]["m"].shape == (5,)
    np.testing.assert_array_equal(materialize(opened["model"])["w"], np.ones(3, np.float32))
    with pytest.raises(CheckpointFormatError, match="storage 'full/data/1' is missing"):
        read_pth(stripped)


def test_big_endian_archives(tmp_path):
    path = tmp_path / "little.pth"
    values = {"f": torch.linspace(-3, 3, 7), "i": torch.arange(-4, 4, dtype=torch.int64)}
    torch.save(values, path)
    swapped = tmp_path / "big.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(swapped, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in name:
                width = 4 if name.endswith("/0") else 8
                data = np.frombuffer(data, f"<i{width}").astype(f">i{width}").tobytes()
            dst.writestr(name, data)
    got = read_pth(swapped)
    np.testing.assert_array_equal(got["f"], values["f"].numpy())
    np.testing.assert_array_equal(got["i"], values["i"].numpy())


def test_malicious_reduce_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(2)}, "payload": Reduce(os.system, f"touch {marker}")}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"'(posix|os|nt)\.system'") as err:
        read_pth(path)
    assert "nothing was executed" in str(err.value)
    assert not marker.exists()


def test_pickle_cannot_rewrite_a_checked_tensor(tmp_path):
    """A BUILD opcode setting a tensor record's shape after its bounds check is refused."""
    build_huge_shape = b"}X\x05\x00\x00\x00shapeJ\x00\xca\x9a;\x85sb"  # {"shape": (10**9,)} then BUILD
    path = write_zip_checkpoint(tmp_path / "build.pth", tensor_record("0", 4, 0, (4,), (1,)),
                                {"0": np.ones(4, np.float32).tobytes()}, suffix=build_huge_shape)
    with pytest.raises(UnsafeCheckpointError, match="set the state of a StoredTensor"):
        read_pth(path)


def test_view_beyond_its_storage_is_refused(tmp_path):
    path = write_zip_checkpoint(tmp_path / "oob.pth", tensor_record("0", 4, 2, (3,), (1,)),
                                {"0": np.ones(4, np.float32).tobytes()})
    with pytest.raises(CheckpointFormatError, match="reaches element 4 of a storage of 4"):
        read_pth(path)


def test_storage_shorter_than_declared(tmp_path):
    path = write_zip_checkpoint(tmp_path / "short.pth", tensor_record("0", 8, 0, (8,), (1,)),
                                {"0": np.ones(4, np.float32).tobytes()})
    with pytest.raises(CheckpointFormatError, match="holds 16 bytes, expected 32"):
        read_pth(path)


def test_unknown_global_in_a_handmade_archive_is_named(tmp_path):
    path = write_zip_checkpoint(tmp_path / "g.pth", {"x": Reduce(collections.Counter, [1, 1])})
    with pytest.raises(UnsafeCheckpointError, match="'collections.Counter'"):
        read_pth(path)


def _torch_file(tmp_path):
    path = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.arange(4096.0)}}, path)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p, good: p.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2]), "damaged or truncated zip"),
    (lambda p, good: p.write_bytes(np.random.default_rng(0).bytes(4096)), "is not a PyTorch checkpoint"),
    (lambda p, good: p.write_text(json.dumps({"model": {"w": [1, 2]}})), "looks like JSON"),
    (lambda p, good: torch.save({"w": torch.ones(2)}, p, _use_new_zipfile_serialization=False), "legacy"),
    (lambda p, good: p.write_bytes(pickle.dumps({"w": [1.0]})), "plain pickle"),
    (lambda p, good: p.write_bytes(b""), "is empty"),
    (lambda p, good: zipfile.ZipFile(p, "w").writestr("notes.txt", "hi"), "not one written by torch.save"),
], ids=["truncated", "random-bytes", "json", "legacy-format", "plain-pickle", "empty", "other-zip"])
def test_not_a_readable_checkpoint(tmp_path, make, message):
    path = tmp_path / "bad.pth"
    make(path, _torch_file(tmp_path))
    with pytest.raises(CheckpointFormatError, match=message) as err:
        read_pth(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        read_pth(tmp_path / "nope.pth")
