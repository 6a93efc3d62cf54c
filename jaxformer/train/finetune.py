"""Fine-tune a `SequenceClassifier` with AdamW, periodic evaluation and exact resume.

`finetune` is a client of the task-agnostic `jaxformer.train.loop.train_loop`: it supplies the
classification loss (`classifier_loss`), the epoch-shuffled batches (`batch_at`, pure in
``(seed, step)``), exact evaluation over padded batches (`evaluate`) and BERT's AdamW; the loop
does the rest (resume, checkpoints, metrics). `jaxformer.tasks.ClassificationTask` reuses the
same loss and checks. A run killed at any moment and started again with the same arguments
reproduces the uninterrupted run's parameters and losses (see `jaxformer.train.loop`).

Command (a 40-step toy run; see ``tests/scripts/finetune_run.py``)::

    OUT=$(mktemp -d); python tests/scripts/finetune_run.py --out "$OUT" --checkpoint-dir "$OUT/ckpt"
"""


import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxformer.models.heads import classification_loss
from jaxformer.train.loop import (LoopConfig, evaluate_in_batches, shuffled_rows, take_rows,
                                  train_loop)
from jaxformer.train.optim import adamw
from jaxformer.train.step import TrainState

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclasses.dataclass(frozen=True, slots=True)
class FinetuneConfig:
    """Hyperparameters of `finetune` (defaults: BERT's GLUE recipe, Devlin et al. 2019 §4.1).

    Attributes:
      learning_rate: peak AdamW learning rate.
      batch_size: examples per step (a multiple of the mesh's data axis when sharded).
      total_steps: number of optimiser updates.
      warmup_steps: linear warmup length, in ``[0, total_steps]``.
      weight_decay: decoupled decay on rank >= 2 parameters.
      eval_every: evaluate every this many steps (0: only at the end).
      checkpoint_every: checkpoint every this many steps (0: only at the end).
      seed: drives the data order and the dropout keys (not the parameter init).
      max_to_keep: checkpoints kept on disk.
      clip_norm: global gradient-norm clip (None disables).
    """

    learning_rate: float = 2e-5
    batch_size: int = 32
    total_steps: int = 1000
    warmup_steps: int = 0
    weight_decay: float = 0.01
    eval_every: int = 0
    checkpoint_every: int = 0
    seed: int = 0
    max_to_keep: int = 3
    clip_norm: float | None = 1.0

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ValueError(f"FinetuneConfig.{name} must be {expected}, "
                             f"got {getattr(self, name)!r}")

        for name, low in (("batch_size", 1), ("total_steps", 1), ("warmup_steps", 0),
                          ("eval_every", 0), ("checkpoint_every", 0), ("seed", 0),
                          ("max_to_keep", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                fail(name, f"an int >= {low}")
        if self.warmup_steps > self.total_steps:
            fail("warmup_steps", f"<= total_steps={self.total_steps}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            fail("learning_rate", "a finite float > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            fail("weight_decay", "a finite float >= 0")
        clip = self.clip_norm
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            fail("clip_norm", "None or a finite float > 0")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (stored with every checkpoint)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What `finetune` returns.

    Attributes:
      model: the fine-tuned model (a new module; the input model is left unchanged).
      history: train loss of every step, ``history[s]`` for step ``s`` (0-based), including the
        steps run before a resume.
      eval_history: ``{"step", "loss", "accuracy"}`` of every evaluation, in order.
      eval_metrics: the last evaluation, or None without eval data.
      resumed_from: the checkpoint step this run restored, or None for a fresh start.
      state: the final `TrainState`.
    """

    model: nnx.Module
    history: list[float]
    eval_history: list[dict[str, float | int]]
    eval_metrics: dict[str, float | int] | None
    resumed_from: int | None
    state: TrainState


def classifier_loss(model: nnx.Module, batch: Mapping[str, Any], *, key: Any,
                    deterministic: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The loss_fn of a `SequenceClassifier` batch: mean CE, with accuracy as a metric."""
    logits = model(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                   token_type_ids=batch.get("token_type_ids"), deterministic=deterministic,
                   key=key)
    loss, accuracy = classification_loss(logits, batch["labels"], weights=batch.get("weights"))
    return loss, {"accuracy": accuracy}


def check_data(data: Mapping[str, Any], *, name: str) -> int:
    """Return N after checking `data` holds equal-length arrays with input_ids and labels."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{name} must be a dict of numpy arrays, got {type(data).__name__}")
    for required in ("input_ids", "labels"):
        if required not in data:
            raise ValueError(f"{name} needs key {required!r}; got keys {sorted(data)}")
    unknown = set(data) - {*INPUT_KEYS, "labels"}
    if unknown:
        raise ValueError(f"{name} has unknown keys {sorted(unknown)}; expected a subset of "
                         f"{[*INPUT_KEYS, 'labels']}")
    lengths = {k: len(v) for k, v in data.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{name} arrays must have equal length N, got {lengths}")
    return lengths["labels"]


def batch_at(data: Mapping[str, np.ndarray], step: int, *, batch_size: int, seed: int
             ) -> dict[str, np.ndarray]:
    """The train batch of `step`: a pure function of ``(seed, step)`` and the data
    (`shuffled_rows` of `data`, integer arrays as int32)."""
    n = len(data["labels"])
    return take_rows(data, shuffled_rows(n, step, batch_size=batch_size, seed=seed))


def evaluate(eval_step: Callable[..., dict[str, jax.Array]], state: TrainState,
             data: Mapping[str, np.ndarray], *, batch_size: int, seed: int = 0
             ) -> dict[str, float]:
    """Exact mean loss and accuracy over all of `data` (`evaluate_in_batches`: padded batches
    with a ``weights`` column; batch i gets key ``fold_in(key(seed), i)``, unused by a
    classifier in eval mode)."""
    return evaluate_in_batches(eval_step, state, num_examples=len(data["labels"]),
                               batch_of_rows=lambda rows: take_rows(data, rows),
                               batch_size=batch_size, seed=seed)


def finetune(
    model: nnx.Module,
    train_data: Mapping[str, np.ndarray],
    *,
    config: FinetuneConfig,
    eval_data: Mapping[str, np.ndarray] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    mesh: Mesh | None = None,
    callbacks: Sequence[Callable[[int, dict[str, float]], Any]] = (),
    progress: bool = True,
    metrics_path: str | os.PathLike | None = None,
) -> FinetuneResult:
    """Fine-tune `model` (a `SequenceClassifier`) on `train_data` for ``config.total_steps``.

    Args:
      model: called as ``model(input_ids, attention_mask=, token_type_ids=, deterministic=,
        key=) -> logits [B, C]``. It is not modified.
      train_data: equal-length numpy arrays ``input_ids`` ``[N, T]``, ``labels`` ``[N]`` and
        optionally ``attention_mask``, ``token_type_ids`` ``[N, T]``; N >= batch_size.
      config: the hyperparameters.
      eval_data: like `train_data`; evaluated every ``eval_every`` steps and at the end.
      checkpoint_dir: if set, resume from its newest checkpoint (when any) and save there.
      mesh: optional data-parallel mesh with a ``"data"`` axis.
      callbacks: ``cb(step, metrics)`` after every step; `step` counts completed updates and
        `metrics` are Python floats (``loss``, ``accuracy``, ``grad_norm``, ``learning_rate``).
      progress: show a tqdm bar.
      metrics_path: optional JSON-lines metrics file (one train line per step; see
        `train_loop`).

    Returns:
      A `FinetuneResult`.
    """
    n = check_data(train_data, name="train_data")
    if n < config.batch_size:
        raise ValueError(f"train_data has N={n} examples, fewer than "
                         f"batch_size={config.batch_size}")
    if eval_data is not None:
        check_data(eval_data, name="eval_data")
    tx = adamw(config.learning_rate, total_steps=config.total_steps,
               warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
               clip_norm=config.clip_norm)
    loop_config = LoopConfig(total_steps=config.total_steps, batch_size=config.batch_size,
                             eval_every=config.eval_every,
                             checkpoint_every=config.checkpoint_every,
                             max_to_keep=config.max_to_keep, seed=config.seed)
    run_eval = None if eval_data is None else (
        lambda eval_step, state: evaluate(eval_step, state, eval_data,
                                          batch_size=config.batch_size, seed=config.seed))
    result = train_loop(
        model, loss_fn=classifier_loss, tx=tx,
        batch_at=lambda s: batch_at(train_data, s, batch_size=config.batch_size,
                                    seed=config.seed),
        config=loop_config, evaluate=run_eval, checkpoint_dir=checkpoint_dir,
        metrics_path=metrics_path, mesh=mesh, callbacks=callbacks, progress=progress,
        desc="finetune", run_config=config.to_dict(),
    )
    return FinetuneResult(model=result.model, history=result.history,
                          eval_history=result.eval_history, eval_metrics=result.eval_metrics,
                          resumed_from=result.resumed_from, state=result.state)
