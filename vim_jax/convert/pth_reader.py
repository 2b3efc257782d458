"""Reads PyTorch `.pth` files into numpy without torch and without running pickled code.

`torch.save` (torch >= 1.6) writes a zip archive: `<archive>/data.pkl` (a pickle of the saved
object whose tensors refer to storages by key), `<archive>/data/<key>` (each storage's raw bytes)
and `<archive>/byteorder`. Unpickling with `pickle.load` would run whatever callables the file
names, so this module unpickles with an allow-list: only the globals a checkpoint needs resolve
(tensor and parameter rebuilders, the storage types, `OrderedDict`, `argparse.Namespace` — turned
into a plain dict — a few plain builtins and numpy scalars); any other global is refused, naming
it, before anything is called.

`open_pth` returns the saved object with a `StoredTensor` for each tensor (shape and dtype known,
bytes read by `materialize`), so picking `model` out of a full training dict never reads the optimizer
state; `read_pth` returns everything as numpy arrays.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import dataclasses
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np


class CheckpointFormatError(ValueError):
    """The file is not a PyTorch checkpoint this reader accepts (with the reason)."""


class UnsafeCheckpointError(CheckpointFormatError):
    """The pickle names a global outside the allow-list; nothing it names was called."""


_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
}

# What torch.save(..., _use_new_zipfile_serialization=False) writes first: pickle.dumps(MAGIC_NUMBER).
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]


def _refuse_build(self, state):
    # The pickle BUILD opcode would otherwise overwrite the attributes of the reader's own records
    # (e.g. a tensor's shape after its bounds were checked).
    raise UnsafeCheckpointError(f"the pickle tries to set the state of a {type(self).__name__}; refusing it")


@dataclasses.dataclass(frozen=True)
class _Archive:
    path: Path
    prefix: str  # "<archive>/"
    byteorder: str  # "little" or "big"

    def read_storage(self, archive: zipfile.ZipFile, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{self.prefix}data/{key}"
        try:
            data = archive.read(name)
        except KeyError:
            raise CheckpointFormatError(f"{self.path}: storage {name!r} is missing from the archive") from None
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise CheckpointFormatError(f"{self.path}: cannot read storage {name!r} ({err}); the file is corrupt") from err
        stored = dtype.newbyteorder(">" if self.byteorder == "big" else "<") if dtype.itemsize > 1 else dtype
        if len(data) < numel * dtype.itemsize:
            raise CheckpointFormatError(f"{self.path}: storage {name!r} holds {len(data)} bytes, "
                                        f"expected {numel * dtype.itemsize}; the file is corrupt")
        return np.frombuffer(data, stored, count=numel).astype(dtype, copy=False)


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    archive: _Archive
    key: str
    dtype: np.dtype
    numel: int

    __setstate__ = _refuse_build


@dataclasses.dataclass(frozen=True)
class StoredTensor:
    """A tensor of a `.pth` file: its shape and dtype; `materialize` reads its values."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    __setstate__ = _refuse_build

    @property
    def dtype(self) -> np.dtype:
        return self.storage.dtype

    def _view(self, storage: np.ndarray) -> np.ndarray:
        """This tensor as a new C-contiguous array, cut from its storage's elements."""
        if 0 in self.shape:
            return np.zeros(self.shape, self.dtype)
        view = np.lib.stride_tricks.as_strided(
            storage[self.offset:], self.shape, tuple(s * storage.itemsize for s in self.stride), writeable=False)
        return np.array(view, order="C")


class _StorageType:
    """Stands in for `torch.FloatStorage` & co. in the pickle: only its element dtype matters."""

    def __init__(self, name: str):
        self.dtype = _STORAGE_DTYPES[name]

    __setstate__ = _refuse_build


class _PickledNamespace:
    """Receives an `argparse.Namespace`'s attributes; `open_pth` turns it into a plain dict."""


def _ints(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise CheckpointFormatError(f"tensor {what} must be non-negative integers, got {value!r}")
    return tuple(value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *metadata):
    if not isinstance(storage, _StorageRef):
        raise CheckpointFormatError(f"a tensor's storage must be a persistent storage record, got {type(storage).__name__}")
    size, stride = _ints(size, "sizes"), _ints(stride, "strides")
    if len(size) != len(stride) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointFormatError(f"malformed tensor record: size {size}, stride {stride}, offset {storage_offset!r}")
    # Every element the view can reach must lie inside its storage: as_strided does not check.
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) if 0 not in size else -1
    if last >= storage.numel:
        raise CheckpointFormatError(f"tensor of shape {size} (stride {stride}, offset {storage_offset}) reaches "
                                    f"element {last} of a storage of {storage.numel}; the file is corrupt")
    return StoredTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _latin1_encode(text, encoding="latin1"):
    # Protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"); no other codec is needed.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafeCheckpointError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _numpy_scalar():
    core = getattr(np, "_core", None) or np.core
    return core.multiarray.scalar


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("argparse", "Namespace"): _PickledNamespace,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar(),
    ("numpy._core.multiarray", "scalar"): _numpy_scalar(),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: _Archive):
        super().__init__(file, encoding="utf-8")
        self.archive = archive

    def find_class(self, module: str, name: str):
        module = "builtins" if module == "__builtin__" else module  # protocol-2 spelling
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise UnsafeCheckpointError(
            f"{self.archive.path}: the checkpoint's pickle names the global '{module}.{name}', which a "
            "weights checkpoint does not need; refusing to load it (nothing was executed). Only tensors, "
            "containers, plain values and argparse.Namespace are accepted.")

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[4], int) or pid[4] < 0):
            raise CheckpointFormatError(f"{self.archive.path}: unsupported persistent record {pid!r}")
        _, storage_type, key, _location, numel = pid
        return _StorageRef(self.archive, str(key), storage_type.dtype, numel)


def _describe_non_zip(head: bytes) -> str:
    if head.startswith(_LEGACY_MAGIC):
        return ("is in PyTorch's legacy (pre-1.6, non-zip) serialization format, which this reader does not "
                "accept; re-save it with torch>=1.6: torch.save(torch.load(path), new_path)")
    if head.startswith(b"PK"):
        return "is a damaged or truncated zip archive (its central directory is missing)"
    if head[:1] == b"\x80":
        return "is a plain pickle, not a torch.save zip archive"
    if head.lstrip()[:1] in (b"{", b"[") and head.isascii():
        return "looks like JSON text, not a PyTorch checkpoint"
    if not head:
        return "is empty"
    return f"is not a PyTorch checkpoint (no zip signature; it starts with {head[:8]!r})"


def _open_archive(path: Path) -> tuple[_Archive, bytes]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(64)
    if not zipfile.is_zipfile(path):
        raise CheckpointFormatError(f"{path} {_describe_non_zip(head)}")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise CheckpointFormatError(
                    f"{path} is a zip archive but not one written by torch.save (expected one "
                    f"'<archive>/data.pkl', found {len(pickles)})")
            prefix = pickles[0][: -len("data.pkl")]
            names = set(archive.namelist())
            byteorder = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
            data_pkl = archive.read(pickles[0])
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointFormatError(f"{path} is a damaged or truncated zip archive ({err})") from err
    if byteorder not in ("little", "big"):
        raise CheckpointFormatError(f"{path}: unknown byte order {byteorder!r}")
    return _Archive(path, prefix, byteorder), data_pkl


def _plain(obj):
    """Namespaces -> dicts, recursively through the containers a checkpoint holds."""
    if isinstance(obj, _PickledNamespace):
        return {k: _plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return type(obj)((k, _plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def open_pth(path: str | os.PathLike) -> Any:
    """Unpickles a `torch.save` zip archive safely; tensors become `StoredTensor`s (read lazily).

    Raises `FileNotFoundError`, `CheckpointFormatError` (legacy format, truncated or corrupt file,
    not a checkpoint) or `UnsafeCheckpointError` (a global outside the allow-list), each naming
    the file and the reason.
    """
    archive, data_pkl = _open_archive(Path(path))
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data_pkl), archive).load()
    except CheckpointFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise CheckpointFormatError(f"{archive.path}: cannot unpickle data.pkl ({type(err).__name__}: {err})") from err
    return _plain(obj)


def materialize(obj: Any) -> Any:
    """`obj` with every `StoredTensor` replaced by its numpy array; each archive is opened once and
    each storage read once, however many tensors view it."""
    storages: dict[tuple[Path, str], np.ndarray] = {}
    with contextlib.ExitStack() as stack:
        opened: dict[Path, zipfile.ZipFile] = {}

        def read(tensor: StoredTensor) -> np.ndarray:
            ref = tensor.storage
            archive = ref.archive
            if archive.path not in opened:
                try:
                    opened[archive.path] = stack.enter_context(zipfile.ZipFile(archive.path))
                except (zipfile.BadZipFile, OSError) as err:
                    raise CheckpointFormatError(f"{archive.path}: cannot reopen the archive ({err})") from err
            if (archive.path, ref.key) not in storages:
                storages[archive.path, ref.key] = archive.read_storage(opened[archive.path], ref.key, ref.dtype,
                                                                       ref.numel)
            return tensor._view(storages[archive.path, ref.key])

        def walk(x):
            if isinstance(x, StoredTensor):
                return read(x)
            if isinstance(x, dict):
                return type(x)((k, walk(v)) for k, v in x.items())
            if isinstance(x, (list, tuple)):
                return type(x)(walk(v) for v in x)
            return x

        return walk(obj)


def read_pth(path: str | os.PathLike) -> Any:
    """Reads a whole `torch.save` file: its object with numpy arrays for tensors (see `open_pth`)."""
    return materialize(open_pth(path))
