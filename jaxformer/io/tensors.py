"""Checkpoint tensors on disk <-> ``dict[str, np.ndarray]``.

This module knows file formats, not models: it returns flat name -> array
dictionaries exactly as stored (HF naming, PyTorch layouts) and leaves any
renaming or transposing to the models layer.

Formats read, in order of preference inside a checkpoint directory:

* ``model.safetensors``
* ``model.safetensors.index.json`` + its shards (large HF checkpoints)
* ``pytorch_model.bin`` / ``pytorch_model.bin.index.json`` + shards, only with
  ``allow_pickle=True`` (see :mod:`jaxformer.io.torch_pickle`).

bf16 tensors come back as ``ml_dtypes.bfloat16`` numpy arrays, which JAX
accepts directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

__all__ = [
    "CheckpointError",
    "SAFETENSORS_NAME",
    "SAFETENSORS_INDEX_NAME",
    "PICKLE_NAME",
    "PICKLE_INDEX_NAME",
    "read_state_dict",
    "read_safetensors",
    "write_safetensors",
    "read_json",
]

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAME = "pytorch_model.bin"
PICKLE_INDEX_NAME = "pytorch_model.bin.index.json"

# Listed in error messages so the user sees every name that was tried.
_LOOKED_FOR = (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, PICKLE_NAME, PICKLE_INDEX_NAME)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, unsafe, or does not match a model.

    Subclasses ``ValueError`` so callers that already catch bad-value errors
    keep working; the models layer raises it too for name/shape mismatches.
    """


def read_json(path: str | os.PathLike[str], *, what: str) -> Any:
    """Parse the JSON file ``path``; ``what`` says what it is, for error messages.

    Raises ``CheckpointError`` naming the file and the reason (missing, not a
    file, not UTF-8, or malformed with line/column) instead of a bare
    ``FileNotFoundError``/``JSONDecodeError`` that does not say which file of
    a checkpoint was the problem.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"cannot read {what}: expected a JSON file at {p}, but it does not exist")
    if not p.is_file():
        raise CheckpointError(
            f"cannot read {what}: expected a JSON file at {p}, but it is not a regular file"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(
            f"cannot read {what} {p}: expected UTF-8 text, got undecodable bytes ({e})"
        ) from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"cannot parse {what} {p}: malformed JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        ) from e


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every tensor of one ``.safetensors`` file into numpy arrays.

    Uses safetensors' numpy framework (bf16 -> ``ml_dtypes.bfloat16``). The
    arrays are copies, so the file can be deleted or overwritten afterwards.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"expected a safetensors file at {p}, but it does not exist")
    try:
        with safe_open(str(p), framework="np") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError / OSError types
        raise CheckpointError(f"cannot read safetensors file {p}: {e}") from e


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file's header (empty when it has none)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"expected a safetensors file at {p}, but it does not exist")
    try:
        with safe_open(str(p), framework="np") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own SafetensorError / OSError types
        raise CheckpointError(f"cannot read safetensors file {p}: {e}") from e


def _read_sharded(index_path: Path, read_shard: Any) -> dict[str, np.ndarray]:
    """Read an HF ``*.index.json`` (``{"weight_map": {name: shard_file}}``) and its shards.

    Every shard is read once; every name promised by the index must be in its
    shard, so a truncated download fails here rather than as a missing weight
    much later in the models layer.
    """
    index = read_json(index_path, what="checkpoint shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(
            f"shard index {index_path}: expected a non-empty 'weight_map' object mapping tensor "
            f"names to shard files, got {type(weight_map).__name__}"
        )
    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(str(shard), []).append(str(name))
    out: dict[str, np.ndarray] = {}
    for shard, names in sorted(by_shard.items()):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(
                f"shard index {index_path} names shard {shard!r} (for {len(names)} tensors, e.g. "
                f"{names[0]!r}), but {shard_path} does not exist"
            )
        tensors = read_shard(shard_path)
        missing = [n for n in names if n not in tensors]
        if missing:
            raise CheckpointError(
                f"shard {shard_path}: expected tensors {missing[:5]} (listed in {index_path.name}), "
                f"but the shard does not contain them ({len(missing)} missing)"
            )
        for n in names:
            out[n] = tensors[n]
    return out


def _refuse_pickle(path: Path) -> CheckpointError:
    return CheckpointError(
        f"found only a pickle checkpoint {path}. Pickle files can execute arbitrary code when "
        f"loaded, so they are read only with allow_pickle=True (jaxformer then uses a restricted, "
        f"torch-free reader that accepts tensors only). Better: convert it once to safetensors "
        f"(e.g. write_safetensors(read_state_dict(dir, allow_pickle=True), dir/'{SAFETENSORS_NAME}'))."
    )


def read_state_dict(
    directory: str | os.PathLike[str], *, allow_pickle: bool = False
) -> dict[str, np.ndarray]:
    """Read a checkpoint directory's weights as ``{name: array}``.

    ``directory`` may also be a single ``.safetensors`` or ``.bin`` file.
    Pickle checkpoints (``pytorch_model.bin``) are used only when no
    safetensors file exists, and only with ``allow_pickle=True``.
    """
    d = Path(directory)
    if d.is_file():
        if d.suffix == ".safetensors":
            return read_safetensors(d)
        if d.suffix in (".bin", ".pt", ".pth"):
            if not allow_pickle:
                raise _refuse_pickle(d)
            from .torch_pickle import load_torch_pickle  # lazy: torch_pickle imports this module

            return load_torch_pickle(d)
        raise CheckpointError(
            f"directory: expected a checkpoint directory or a .safetensors/.bin file, got file {d}"
        )
    if not d.exists():
        raise CheckpointError(
            f"checkpoint directory {d} does not exist (looked for {', '.join(_LOOKED_FOR)} in it)"
        )
    if (d / SAFETENSORS_NAME).is_file():
        return read_safetensors(d / SAFETENSORS_NAME)
    if (d / SAFETENSORS_INDEX_NAME).is_file():
        return _read_sharded(d / SAFETENSORS_INDEX_NAME, read_safetensors)
    for name in (PICKLE_NAME, PICKLE_INDEX_NAME):
        if (d / name).is_file():
            if not allow_pickle:
                raise _refuse_pickle(d / name)
            from .torch_pickle import load_torch_pickle

            if name == PICKLE_NAME:
                return load_torch_pickle(d / name)
            return _read_sharded(d / name, load_torch_pickle)
    present = sorted(p.name for p in d.iterdir())[:20]
    raise CheckpointError(
        f"checkpoint directory {d} has no weights: looked for {', '.join(_LOOKED_FOR)}; "
        f"found {present if present else 'no files'}"
    )


def write_safetensors(
    tensors: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` to the safetensors file ``path`` (parent dirs created).

    ``metadata`` defaults to ``{"format": "pt"}`` because transformers refuses
    to load safetensors files whose header lacks that key. Arrays are made
    C-contiguous (safetensors stores dense row-major bytes only).
    """
    if metadata is None:
        metadata = {"format": "pt"}
    meta: dict[str, str] = {}
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(
                f"metadata: expected str keys and str values, got {k!r}: {type(v).__name__}"
            )
        meta[k] = v
    arrays: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensors: expected str names, got {name!r} ({type(name).__name__})")
        if not isinstance(value, np.ndarray):
            raise TypeError(
                f"tensors[{name!r}]: expected a numpy array, got {type(value).__name__} "
                f"(convert with np.asarray first)"
            )
        if value.dtype == object:
            raise TypeError(f"tensors[{name!r}]: expected a numeric dtype, got object")
        # Not np.ascontiguousarray: it would turn 0-d scalars into shape (1,).
        arrays[name] = value if value.flags.c_contiguous else value.copy(order="C")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(p), metadata=meta)
