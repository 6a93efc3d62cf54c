"""The `Task` protocol: what a training objective supplies to the task-agnostic loop, and `fit`.

A task is a small frozen config object with five members: it builds its model, scores a batch
(``loss_fn``), counts and collates its data set, and evaluates a data set exactly. `fit` glues
one to `jaxformer.train.loop.train_loop`: epoch-shuffled batches from `shuffled_rows`, the
task's loss, and the task's evaluation. A data set is whatever the task's `collate` reads; for
`TaskBase` it is a dict of equal-length numpy arrays ``{name: [N, ...]}``.

Shape letters: B batch, N examples.
"""


import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from jaxtyping import PRNGKeyArray

from jaxformer.train.loop import (Callback, LoopConfig, LoopResult, evaluate_in_batches,
                                  shuffled_rows, take_rows, train_loop)
from jaxformer.train.step import TrainState

EvalStep = Callable[..., Mapping[str, jax.Array]]


@runtime_checkable
class Task(Protocol):
    """A training objective: model, loss, data access and evaluation.

    ``isinstance(obj, Task)`` checks that the five members exist (not their signatures).
    """

    def build_model(self, *, rngs: nnx.Rngs) -> nnx.Module:
        """A fresh model whose parameters are drawn from `rngs`."""
        ...

    def loss_fn(self, model: nnx.Module, batch: Mapping[str, jax.Array], *,
                key: PRNGKeyArray | None, deterministic: bool
                ) -> tuple[jax.Array, Mapping[str, jax.Array]]:
        """``(loss, metrics)``, scalars; an optional ``batch["weights"]`` ``[B]`` float32 weighs
        the examples (0 for padding rows), making every value a weighted mean."""
        ...

    def num_examples(self, data: Any) -> int:
        """N, the number of examples of data set `data` (checking it on the way)."""
        ...

    def collate(self, data: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The batch of data-set rows `rows` ``[B]``: numpy arrays ``[B, ...]``, integers int32."""
        ...

    def evaluate(self, eval_step: EvalStep, state: TrainState, data: Any, *, batch_size: int,
                 seed: int) -> dict[str, float]:
        """Mean loss and metrics over all of `data`, deterministic given `seed`."""
        ...


class TaskBase:
    """Defaults for a `Task` over a dict of equal-length numpy arrays.

    Subclasses write `build_model` and `loss_fn` (honouring ``batch["weights"]``); they may
    override the data members for other data layouts.
    """

    def build_model(self, *, rngs: nnx.Rngs) -> nnx.Module:
        raise NotImplementedError(f"{type(self).__name__} must define build_model")

    def loss_fn(self, model: nnx.Module, batch: Mapping[str, jax.Array], *,
                key: PRNGKeyArray | None, deterministic: bool
                ) -> tuple[jax.Array, Mapping[str, jax.Array]]:
        raise NotImplementedError(f"{type(self).__name__} must define loss_fn")

    def num_examples(self, data: Mapping[str, Any]) -> int:
        """The common length N of the arrays of `data` (a ValueError if they differ)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a dict of numpy arrays, got {type(data).__name__}")
        if not data:
            raise ValueError("data must hold at least one array, got an empty dict")
        lengths = {k: len(v) for k, v in data.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"data arrays must have equal length N, got {lengths}")
        return next(iter(lengths.values()))

    def collate(self, data: Mapping[str, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
        """``{k: data[k][rows]}``, integer arrays as int32."""
        return take_rows(data, rows)

    def evaluate(self, eval_step: EvalStep, state: TrainState, data: Any, *, batch_size: int,
                 seed: int) -> dict[str, float]:
        """The real-row-weighted mean of the loss and every metric over all of `data`, exactly.

        Every batch is padded to `batch_size` rows with copies of row 0 and carries a
        ``weights`` column (0 on padding), so one compiled shape serves all batches; batch ``i``
        is evaluated with key ``fold_in(key(seed), i)`` (`evaluate_in_batches`).
        """
        return evaluate_in_batches(eval_step, state, num_examples=self.num_examples(data),
                                   batch_of_rows=lambda rows: self.collate(data, rows),
                                   batch_size=batch_size, seed=seed)


def fit(
    task: Task,
    model: nnx.Module,
    train_data: Any,
    *,
    tx: optax.GradientTransformation,
    config: LoopConfig,
    eval_data: Any | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    metrics_path: str | os.PathLike | None = None,
    mesh: Mesh | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    run_config: Mapping[str, Any] | None = None,
) -> LoopResult:
    """Train `model` on `task` with `train_loop`.

    Batch ``s`` is ``task.collate(train_data, shuffled_rows(N, s, batch_size, seed))``; the
    evaluation (every ``config.eval_every`` steps and at the end, when `eval_data` is given) is
    ``task.evaluate(eval_step, state, eval_data, batch_size=config.batch_size,
    seed=config.seed)``. Every other argument is `train_loop`'s.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must implement the Task protocol (build_model, loss_fn, "
                        f"num_examples, collate, evaluate), got {type(task).__name__}")
    n = task.num_examples(train_data)
    if n < config.batch_size:
        raise ValueError(f"train_data has N={n} examples, fewer than "
                         f"batch_size={config.batch_size}")
    evaluate = None
    if eval_data is not None:
        task.num_examples(eval_data)  # fail before training, not at the first evaluation

        def evaluate(eval_step: EvalStep, state: TrainState) -> dict[str, float]:
            return task.evaluate(eval_step, state, eval_data, batch_size=config.batch_size,
                                 seed=config.seed)

    def batch_at(step: int) -> dict[str, np.ndarray]:
        rows = shuffled_rows(n, step, batch_size=config.batch_size, seed=config.seed)
        return task.collate(train_data, rows)

    return train_loop(model, loss_fn=task.loss_fn, tx=tx, batch_at=batch_at, config=config,
                      evaluate=evaluate, checkpoint_dir=checkpoint_dir,
                      metrics_path=metrics_path, mesh=mesh, callbacks=callbacks,
                      progress=progress, desc=type(task).__name__, run_config=run_config)
