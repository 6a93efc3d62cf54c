"""BERT-whitening statistics saved beside a model (``whitening.safetensors``) and read back.

The file holds the streamed sums of `jaxformer.whitening.WhiteningStats`, not a kernel, so any
k can be fitted after loading; its header's ``whitening`` entry is a JSON object saying where the
sentences came from (pooling, source files, count).
"""

import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxformer.io.tensors import (CheckpointError, read_safetensors, read_safetensors_metadata,
                                  write_safetensors)
from jaxformer.whitening import WhiteningStats

WHITENING_FILE = "whitening.safetensors"
_FIELDS = ("count", "shift", "total", "outer")


def _file(path: str | Path) -> Path:
    path = Path(path)
    return path / WHITENING_FILE if path.is_dir() else path


def save_stats(stats: WhiteningStats, path: str | Path, *, metadata: dict[str, Any] | None = None
               ) -> Path:
    """Write `stats` to `path` (a file, or a model directory: ``DIR/whitening.safetensors``).

    `metadata` must be JSON-able; it goes into the safetensors header.
    """
    path = _file(path)
    tensors = {name: np.asarray(getattr(stats, name), np.float32) for name in _FIELDS}
    write_safetensors(tensors, path, metadata={"format": "np",
                                               "whitening": json.dumps(metadata or {})})
    return path


def load_stats(path: str | Path) -> tuple[WhiteningStats, dict[str, Any]]:
    """``(stats, metadata)`` from `save_stats`'s file or a model directory holding one.

    A file with missing, extra or inconsistently shaped tensors is refused whole
    (`CheckpointError`), never half-read.
    """
    path = _file(path)
    if not path.is_file():
        raise FileNotFoundError(f"whitening statistics: expected the file {path}, found none")
    tensors = read_safetensors(path)
    if set(tensors) != set(_FIELDS):
        raise CheckpointError(f"{path}: expected the tensors {sorted(_FIELDS)}, found "
                              f"{sorted(tensors)}")
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    e = shapes["shift"]
    if shapes["count"] != () or len(e) != 1 or shapes["total"] != e or \
            shapes["outer"] != (e[0], e[0]):
        raise CheckpointError(f"{path}: expected count [], shift [E], total [E], outer [E, E]; "
                              f"found {shapes}")
    try:
        meta = json.loads(read_safetensors_metadata(path).get("whitening", "{}"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: the header's 'whitening' entry is not JSON ({err.msg})"
                              ) from None
    stats = WhiteningStats(*(jnp.asarray(tensors[n], jnp.float32) for n in _FIELDS))
    return stats, meta
