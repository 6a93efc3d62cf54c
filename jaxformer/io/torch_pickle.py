"""A torch-free, restricted reader for ``torch.save`` state-dict checkpoints.

Since PyTorch 1.6, ``torch.save`` writes a zip archive::

    <prefix>/data.pkl      pickle of the object; tensors refer to storages by key
    <prefix>/data/<key>    raw bytes of one storage (numel * itemsize bytes)
    <prefix>/byteorder     "little" or "big" (absent in old files: little)

Unpickling arbitrary data runs arbitrary code, so this reader resolves only
the handful of globals a plain state dict needs (``OrderedDict``, the tensor
/ parameter rebuild functions, the typed storage classes) to *our own* inert
stand-ins; it never imports torch. Every other global raises
``CheckpointError`` before anything is called. Tensor offsets/sizes/strides
are bounds-checked against their storage before any strided view is made,
so a crafted file cannot make numpy read outside the storage buffer.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from .tensors import CheckpointError

__all__ = ["load_torch_pickle"]

# torch.<Name>Storage -> numpy dtype of its elements.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
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


class _Inert:
    """Base for the stand-ins handed to the unpickler.

    They have no ``__dict__`` and refuse pickle's BUILD opcode, so a crafted
    pickle cannot set attributes on them or feed them to ``__setstate__``.
    """

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise CheckpointError(
            f"refusing to set pickle state on {type(self).__name__}: not a tensor state dict"
        )


class _StorageType(_Inert):
    """Stand-in for ``torch.FloatStorage`` etc.: only carries the dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = dtype


class _Storage(_Inert):
    """One storage's elements as a flat, read-only numpy array."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


class _Tensor(_Inert):
    """A rebuilt tensor (contiguous copy); unwrapped after unpickling."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _is_int(x: object) -> bool:
    # bool is an int subclass but never a valid size/stride/offset.
    return isinstance(x, int) and not isinstance(x, bool)


def _rebuild_tensor(storage: object, storage_offset: object, size: object, stride: object) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"tensor rebuild: expected a storage, got {type(storage).__name__}")
    if not _is_int(storage_offset) or storage_offset < 0:
        raise CheckpointError(f"tensor rebuild: expected storage_offset >= 0, got {storage_offset!r}")
    if not isinstance(size, tuple) or not all(_is_int(s) and s >= 0 for s in size):
        raise CheckpointError(f"tensor rebuild: expected size as a tuple of ints >= 0, got {size!r}")
    strides_ok = isinstance(stride, tuple) and all(_is_int(s) and s >= 0 for s in stride)
    if not strides_ok or len(stride) != len(size):
        raise CheckpointError(
            f"tensor rebuild: expected stride as {len(size)} ints >= 0 (size {size}), got {stride!r}"
        )
    flat = storage.array
    if 0 in size:
        return _Tensor(np.zeros(size, dtype=flat.dtype))
    # Highest element index the view touches; must lie inside the storage.
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise CheckpointError(
            f"tensor rebuild: offset {storage_offset}, size {size}, stride {stride} reach element "
            f"{last}, but the storage has only {flat.size} elements"
        )
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[storage_offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    # Copy: gives a C-contiguous array that no longer aliases shared storages.
    return _Tensor(np.array(view, order="C", copy=True))


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> _Tensor:
    # requires_grad / hooks / metadata are training-time state: ignored.
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: object, requires_grad: object = False, backward_hooks: object = None) -> _Tensor:
    if not isinstance(data, _Tensor):
        raise CheckpointError(f"parameter rebuild: expected a tensor, got {type(data).__name__}")
    return data


def _rebuild_parameter_with_state(
    data: object, requires_grad: object = False, backward_hooks: object = None, state: object = None
) -> _Tensor:
    return _rebuild_parameter(data)


def _size(*args: object) -> tuple:
    # torch.Size(iterable) is only ever a tuple of ints here.
    return tuple(*args)


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): _size,
    **{("torch", name): _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only state-dict globals and reads storages from the zip."""

    def __init__(self, data: Any, archive: zipfile.ZipFile, prefix: str, big_endian: bool) -> None:
        super().__init__(data)
        self._archive = archive
        self._prefix = prefix
        self._big_endian = big_endian
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refusing to unpickle global {module}.{name}: not a tensor state dict"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(
                f"persistent id: expected ('storage', type, key, location, numel), got {pid!r:.200}"
            )
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"persistent id: expected a torch storage type, got {storage_type!r:.100}")
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise CheckpointError(
                f"persistent id: expected str key and int numel >= 0, got {key!r}, {numel!r}"
            )
        cached = self._storages.get(key)
        if cached is not None:
            if cached.array.dtype != storage_type.dtype:
                raise CheckpointError(
                    f"storage {key!r}: expected one dtype, got {cached.array.dtype} and {storage_type.dtype}"
                )
            return cached
        member = f"{self._prefix}/data/{key}"
        try:
            raw = self._archive.read(member)
        except KeyError:
            raise CheckpointError(
                f"storage {key!r}: expected archive member {member}, but it is missing"
            ) from None
        dtype = storage_type.dtype
        nbytes = numel * dtype.itemsize
        if len(raw) < nbytes:
            raise CheckpointError(
                f"storage {member}: expected {nbytes} bytes ({numel} x {dtype}), got {len(raw)}"
            )
        flat = np.frombuffer(raw, dtype=dtype, count=numel)
        if self._big_endian and dtype.itemsize > 1:
            # Swap each scalar component (complex numbers are two floats).
            unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
            flat = flat.view(f"u{unit}").byteswap().view(dtype)
        storage = _Storage(flat)
        self._storages[key] = storage
        return storage


def _find_prefix(names: list[str], path: Path) -> str:
    """The archive's top folder: the one holding ``data.pkl`` (torch names it after the file)."""
    prefixes = [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(prefixes) != 1:
        raise CheckpointError(
            f"{path}: expected exactly one '<prefix>/data.pkl' in the zip (a torch.save archive), "
            f"got {len(prefixes)}; TorchScript archives and other zip files are not supported"
        )
    return prefixes[0]


def load_torch_pickle(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a ``torch.save``'d state dict (zip format) into ``{name: array}``.

    Arrays are C-contiguous copies with the stored shapes (PyTorch layout);
    bf16 becomes ``ml_dtypes.bfloat16``. Raises ``CheckpointError`` for the
    legacy non-zip format, for anything but a flat dict of tensors, and for
    any pickle global outside the state-dict allow-list.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"expected a torch checkpoint file at {p}, but it does not exist")
    if not zipfile.is_zipfile(p):
        raise CheckpointError(
            f"{p} is not a zip archive: the legacy torch.save format (PyTorch < 1.6 or "
            f"_use_new_zipfile_serialization=False) is unsupported; re-save it with a current "
            f"torch.save or convert it to safetensors"
        )
    with zipfile.ZipFile(p) as archive:
        prefix = _find_prefix(archive.namelist(), p)
        big_endian = False
        if f"{prefix}/byteorder" in archive.namelist():
            order = archive.read(f"{prefix}/byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise CheckpointError(f"{p}: expected byteorder 'little' or 'big', got {order!r}")
            big_endian = order == "big"
        with archive.open(f"{prefix}/data.pkl") as data:
            unpickler = _RestrictedUnpickler(data, archive, prefix, big_endian)
            try:
                obj = unpickler.load()
            except CheckpointError:
                raise
            except Exception as e:  # malformed pickle stream, wrong arity, ...
                raise CheckpointError(f"{p}: cannot unpickle data.pkl as a tensor state dict: {e!r}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{p}: expected a dict of tensors at the top level, got {type(obj).__name__}"
        )
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _Tensor):
            raise CheckpointError(
                f"{p}: expected a flat dict of str -> tensor, got {name!r}: {type(value).__name__} "
                f"(nested checkpoints such as {{'state_dict': ...}} are not supported)"
            )
        out[name] = value.array
    return out
