"""A thin wrapper over orbax's `CheckpointManager`: one train-state pytree plus JSON metadata.

Each checkpoint is a step directory with two items, ``state`` (orbax's StandardSave, i.e.
tensorstore/OCDBT arrays) and ``extra`` (a JSON file: data cursor, epoch, loss history, ...).

Atomicity comes from orbax, not from this file: a save is written into a temporary directory
(``<step>.orbax-checkpoint-tmp-*``) and renamed to ``<step>`` only once every file is complete,
so a process killed mid-save leaves the previous finalized checkpoint intact and usable; stale
temporary directories are removed when the next `Checkpointer` opens the directory. Saves are
asynchronous: `save` returns once the arrays are copied to host memory (so the caller may donate
or overwrite them at once) and the files are written in the background; `wait` blocks until
they are finalized.

Restoring is into the structure of an abstract target (``jax.eval_shape`` of the state, or any
state of the right shapes), so a fresh process can restore without the original arrays. The
checkpoint's stored tree is compared with the target *before* any array is read, and a mismatch
(different parameter names, shapes or dtypes, e.g. another model config) is refused as a whole.
"""


import json
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

def _path_name(path: tuple[Any, ...]) -> str:
    """A key path as dotted text; dict keys, attributes and indices all become plain names."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return ".".join(parts)


def _signature(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{dotted path: (shape, dtype)}`` of every array-like leaf of `tree`."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is None or dtype is None:
            continue
        out[_path_name(path)] = (tuple(shape), str(jax.numpy.dtype(dtype)))
    return out


def _preview(items: list[str], limit: int = 5) -> str:
    """Up to `limit` items, one per line, parameters before optimiser state."""
    items = sorted(items, key=lambda name: (not name.startswith("params."), name))
    more = [f"    ... and {len(items) - limit} more"] if len(items) > limit else []
    return "\n".join([f"    {item}" for item in items[:limit]] + more)


def finalized_steps(directory: str | os.PathLike) -> list[int]:
    """Steps with a finalized checkpoint in `directory`, read-only (safe while another process
    is writing: temporary directories of saves in flight are neither listed nor touched)."""
    path = Path(directory)
    if not path.is_dir():
        return []
    return sorted(ocp.path.step.checkpoint_steps(path))


class Checkpointer:
    """Save and restore `(state, extra)` pairs under `directory`, keeping the newest few.

    Args:
      directory: where the step directories go (created if missing).
      max_to_keep: how many finalized checkpoints to keep (None keeps all).
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3):
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or max_to_keep < 1):
            raise ValueError(f"max_to_keep must be an int >= 1 or None, got {max_to_keep!r}")
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
        )
        # Handlers named up front, so a fresh process can read metadata before any save.
        handlers = {"state": ocp.StandardCheckpointHandler(), "extra": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_handlers=handlers)

    def save(self, step: int, state: Any, *, extra: dict[str, Any] | None = None) -> None:
        """Start saving `state` (any pytree of arrays) and `extra` (JSON-able) as `step`."""
        if isinstance(step, bool) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        extra = {} if extra is None else extra
        try:
            json.dumps(extra, allow_nan=True)
        except (TypeError, ValueError) as err:
            raise TypeError(f"extra must be JSON-serialisable (dict of str/number/list/dict), "
                            f"got {err}") from None
        if step in self.all_steps():
            raise ValueError(f"a checkpoint for step={step} already exists in {self.directory}")
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    extra=ocp.args.JsonSave(extra)),
            force=True,
        )

    def all_steps(self) -> list[int]:
        """Every finalized step, ascending."""
        return sorted(self._manager.all_steps())

    def delete(self, step: int) -> None:
        """Remove finalized checkpoint `step` (a FileNotFoundError when there is none)."""
        if step not in self.all_steps():
            raise FileNotFoundError(f"no finalized checkpoint for step={step} in "
                                    f"{self.directory}; found steps {self.all_steps()}")
        self._manager.wait_until_finished()
        self._manager.delete(step)

    def latest_step(self) -> int | None:
        """The newest finalized step, or None when there is none."""
        return self._manager.latest_step()

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Read checkpoint `step` into the structure of `abstract_state`.

        Args:
          step: a finalized step (see `all_steps`).
          abstract_state: a pytree of `jax.ShapeDtypeStruct` (``jax.eval_shape(...)``) or of
            arrays; only its structure, shapes, dtypes and shardings are used, never its values.

        Returns:
          ``(state, extra)``: new arrays in the target's structure, and the JSON metadata.

        Raises:
          FileNotFoundError: no finalized checkpoint for `step`.
          ValueError: the checkpoint's tree differs from the target's (nothing is loaded).
        """
        steps = self.all_steps()
        if step not in steps:
            raise FileNotFoundError(
                f"no finalized checkpoint for step={step} in {self.directory}; found steps {steps}"
            )
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            abstract_state,
        )
        self._check_compatible(step, target)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                    extra=ocp.args.JsonRestore()),
        )
        return restored.state, dict(restored.extra or {})

    def _check_compatible(self, step: int, target: Any) -> None:
        """Raise one ValueError listing every difference between checkpoint and target."""
        stored_meta = self._manager.item_metadata(step)["state"]
        if stored_meta is None:  # no metadata written: fall back on orbax's own checks
            return
        stored, wanted = _signature(stored_meta), _signature(target)
        missing = sorted(set(wanted) - set(stored))
        unexpected = sorted(set(stored) - set(wanted))
        changed = [
            f"{name}: checkpoint {stored[name][0]} {stored[name][1]}, "
            f"target {wanted[name][0]} {wanted[name][1]}"
            for name in set(stored) & set(wanted) if stored[name] != wanted[name]
        ]
        if missing or unexpected or changed:
            lines = [f"checkpoint step={step} in {self.directory} does not match the target "
                     "state (different model config or optimiser?); nothing was restored."]
            if missing:
                lines.append(f"  in target, not in checkpoint ({len(missing)}):\n"
                             f"{_preview(missing)}")
            if unexpected:
                lines.append(f"  in checkpoint, not in target ({len(unexpected)}):\n"
                             f"{_preview(unexpected)}")
            if changed:
                lines.append(f"  shape/dtype differ ({len(changed)}):\n{_preview(changed)}")
            raise ValueError("\n".join(lines))

    def wait(self) -> None:
        """Block until every pending save is finalized on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and release orbax's background resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
