"""Fine-tune a `SequenceClassifier` with AdamW, periodic evaluation and exact resume.

Resume is exact because nothing in the loop has hidden state:

- the batch of step ``s`` is a pure function of ``(seed, s)``: epoch ``e = s // steps_per_epoch``
  is shuffled by ``np.random.default_rng([seed, e])`` (the last incomplete batch is dropped);
- the dropout key of step ``s`` is ``fold_in(jax.random.key(seed), s)``, taken inside the step;
- the train state (params, optimiser state, step) and the loss history are checkpointed
  together, atomically (orbax), every ``checkpoint_every`` steps and at the end.

So a run killed at any moment and started again with the same arguments restores the last
finalized checkpoint and reproduces the uninterrupted run's parameters and losses.

Command (a 40-step toy run; see ``tests/scripts/finetune_run.py``)::

    OUT=$(mktemp -d); python tests/scripts/finetune_run.py --out "$OUT" --checkpoint-dir "$OUT/ckpt"
"""


import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxformer.models.heads import classification_loss
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.optim import adamw
from jaxformer.train.step import (
    TrainState,
    init_train_state,
    make_eval_step,
    make_train_step,
    merge_model,
)

log = logging.getLogger(__name__)

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


def _as_device_dtypes(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Integer arrays become int32 explicitly (not silently truncated from int64 by jax).
    return {k: v.astype(np.int32) if np.issubdtype(v.dtype, np.integer) else v
            for k, v in rows.items()}


def batch_at(data: Mapping[str, np.ndarray], step: int, *, batch_size: int, seed: int
             ) -> dict[str, np.ndarray]:
    """The train batch of `step`: a pure function of ``(seed, step)`` and the data."""
    n = len(data["labels"])
    per_epoch = n // batch_size
    epoch, index = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    rows = order[index * batch_size:(index + 1) * batch_size]
    return _as_device_dtypes({k: np.asarray(v)[rows] for k, v in data.items()})


def evaluate(eval_step: Callable[..., dict[str, jax.Array]], state: TrainState,
             data: Mapping[str, np.ndarray], *, batch_size: int) -> dict[str, float]:
    """Exact mean loss and accuracy over all of `data`.

    Every batch is padded to `batch_size` rows (copies of row 0 with weight 0), so one compiled
    shape serves all batches and a sharded batch stays divisible by the mesh.
    """
    n = len(data["labels"])
    totals = {"loss": 0.0, "accuracy": 0.0}
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        real = len(rows)
        rows = np.concatenate([rows, np.zeros(batch_size - real, dtype=rows.dtype)])
        batch = _as_device_dtypes({k: np.asarray(v)[rows] for k, v in data.items()})
        batch["weights"] = (np.arange(batch_size) < real).astype(np.float32)
        metrics = eval_step(state, batch)
        for k in totals:
            totals[k] += float(metrics[k]) * real
    return {k: v / n for k, v in totals.items()}


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
    graphdef, state = init_train_state(model, tx)
    train_step = make_train_step(graphdef, tx, classifier_loss, mesh=mesh)
    eval_step = make_eval_step(graphdef, classifier_loss, mesh=mesh)

    history: list[float] = []
    eval_history: list[dict[str, float | int]] = []
    resumed_from = None
    ckpt = None if checkpoint_dir is None else Checkpointer(checkpoint_dir,
                                                            max_to_keep=config.max_to_keep)
    try:
        if ckpt is not None and ckpt.latest_step() is not None:
            resumed_from = ckpt.latest_step()
            state, extra = ckpt.restore(resumed_from, jax.eval_shape(lambda: state))
            history = [float(x) for x in extra.get("history", [])][:resumed_from]
            eval_history = list(extra.get("eval_history", []))
            saved_config = extra.get("config", {})
            changed = sorted(k for k, v in config.to_dict().items() if saved_config.get(k) != v)
            if changed:
                log.warning("resuming with a config that differs from the checkpoint's in %s; "
                            "the run will not reproduce an uninterrupted one", changed)
            log.info("resumed from checkpoint step %d in %s", resumed_from, ckpt.directory)

        def metadata() -> dict[str, Any]:
            return {"history": history, "eval_history": eval_history,
                    "config": config.to_dict(), "data_cursor": len(history),
                    "epoch": len(history) // (n // config.batch_size)}

        def run_eval(step: int) -> None:
            metrics = evaluate(eval_step, state, eval_data, batch_size=config.batch_size)
            eval_history.append({"step": step, **metrics})

        root_key = jax.random.key(config.seed)
        start = int(state.step)
        bar = tqdm(total=config.total_steps, initial=start, disable=not progress,
                   desc="finetune", dynamic_ncols=True)
        with bar:
            for s in range(start, config.total_steps):
                batch = batch_at(train_data, s, batch_size=config.batch_size, seed=config.seed)
                state, metrics = train_step(state, batch, key=root_key)
                metrics = {k: float(v) for k, v in metrics.items()}
                history.append(metrics["loss"])
                done = s + 1
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                for cb in callbacks:
                    cb(done, metrics)
                if eval_data is not None and config.eval_every and done % config.eval_every == 0:
                    run_eval(done)
                every = config.checkpoint_every
                if ckpt is not None and every and done % every == 0:
                    ckpt.save(done, state, extra=metadata())
        final = int(state.step)
        if eval_data is not None and (not eval_history or eval_history[-1]["step"] != final):
            run_eval(final)
        if ckpt is not None:
            ckpt.wait()
            if final not in ckpt.all_steps():
                ckpt.save(final, state, extra=metadata())
    finally:
        if ckpt is not None:
            ckpt.close()
    return FinetuneResult(
        model=merge_model(graphdef, state),
        history=history,
        eval_history=eval_history,
        eval_metrics=eval_history[-1] if eval_history else None,
        resumed_from=resumed_from,
        state=state,
    )
