"""One task-agnostic training loop: pure batches, evaluation, JSON-lines metrics, orbax
checkpoints and exact resume.

The loop knows nothing about the task: it takes a ``loss_fn`` (see `make_train_step`), an optax
transformation, ``batch_at(step) -> batch`` and an optional ``evaluate(eval_step, state) ->
metrics``. Fine-tuning (`jaxformer.train.finetune`) and every task of `jaxformer.tasks` are
clients of it.

Resume is exact because nothing in the loop has hidden state:

- the batch of step ``s`` is ``batch_at(s)``, a pure function of the step (`shuffled_rows` gives
  the usual epoch-shuffled order as a pure function of ``(seed, s)``);
- the dropout/masking key of step ``s`` is ``fold_in(jax.random.key(seed), s)``, taken inside
  the train step; evaluation uses fixed keys chosen by `evaluate`;
- the train state (params, optimiser state, step), the loss history and the eval history are
  checkpointed together, atomically (orbax), every ``checkpoint_every`` steps and at the end;
- the metrics file is cut back to the restored step on resume, and a train line carries that
  step's own metrics (no running average that a kill would lose).

So a run killed at any moment and started again with the same arguments ends with the same
parameters, histories and metrics file as an uninterrupted run (no line holds wall-clock time).
"""


import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.nnx.filterlib import Filter
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.step import (
    LossFn,
    TrainState,
    init_train_state,
    make_eval_step,
    make_train_step,
    merge_model,
)

log = logging.getLogger(__name__)

BatchFn = Callable[[int], Mapping[str, np.ndarray]]
EvalFn = Callable[[Callable[..., dict[str, jax.Array]], TrainState], Mapping[str, Any]]
Callback = Callable[[int, dict[str, float]], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class LoopConfig:
    """The loop's own settings (the optimiser's live in `tx`, the task's in the task).

    Attributes:
      total_steps: number of optimiser updates (>= 1).
      batch_size: examples per step (>= 1; a multiple of the mesh's data axis when sharded).
      eval_every: evaluate every this many steps (0: only at the end).
      checkpoint_every: checkpoint every this many steps (0: only at the end).
      log_every: write a train line to the metrics file every this many steps (>= 1), and at
        the last step.
      max_to_keep: checkpoints kept on disk (>= 1).
      seed: drives the data order, the dropout/masking keys and the eval keys (>= 0).
      best_metric: keep the state of the best evaluation by this metric (e.g. ``"accuracy"``),
        returned as `LoopResult.best_model` and, with a checkpoint directory, saved in its
        ``best/`` folder; None keeps only the last state.
      best_mode: ``"max"`` or ``"min"``: which way `best_metric` improves. Ties keep the earlier.
      accumulate: gradient accumulation (`make_train_step`): each step's `batch_size` rows run
        as `accumulate` micro-batches of ``batch_size / accumulate`` rows, one update per step.
    """

    total_steps: int
    batch_size: int
    eval_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 1
    max_to_keep: int = 3
    seed: int = 0
    best_metric: str | None = None
    best_mode: str = "max"
    accumulate: int = 1

    def __post_init__(self) -> None:
        for name, low in (("total_steps", 1), ("batch_size", 1), ("eval_every", 0),
                          ("checkpoint_every", 0), ("log_every", 1), ("max_to_keep", 1),
                          ("seed", 0), ("accumulate", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"LoopConfig.{name} must be an int >= {low}, got {value!r}")
        if self.best_metric is not None and not (isinstance(self.best_metric, str)
                                                 and self.best_metric):
            raise ValueError(f"LoopConfig.best_metric must be None or a metric name, "
                             f"got {self.best_metric!r}")
        if self.best_mode not in ("max", "min"):
            raise ValueError(f"LoopConfig.best_mode must be 'max' or 'min', "
                             f"got {self.best_mode!r}")
        if self.batch_size % self.accumulate:
            raise ValueError(f"LoopConfig.batch_size must be a multiple of accumulate="
                             f"{self.accumulate}, got {self.batch_size}")

    def improves(self, value: float, best: float | None) -> bool:
        """Whether `value` of `best_metric` beats `best` (None: nothing yet). NaN never does."""
        if value != value:  # NaN
            return False
        if best is None:
            return True
        return value > best if self.best_mode == "max" else value < best

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (stored with every checkpoint)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """What `train_loop` returns.

    Attributes:
      model: the trained model (a new module; the input model is left unchanged).
      state: the final `TrainState`.
      history: train loss of every step, ``history[s]`` for step ``s`` (0-based), including the
        steps run before a resume.
      eval_history: ``{"step", "loss", <metrics>}`` of every evaluation, in order.
      eval_metrics: the last evaluation, or None without `evaluate`.
      resumed_from: the checkpoint step this run restored, or None for a fresh start.
      best_model: the model at the best evaluation by ``config.best_metric`` (None without
        one, or when no evaluation was finite).
      best_metrics: that evaluation (``{"step", "loss", <metrics>}``), or None.
    """

    model: nnx.Module
    state: TrainState
    history: list[float]
    eval_history: list[dict[str, float | int]]
    eval_metrics: dict[str, float | int] | None
    resumed_from: int | None
    best_model: nnx.Module | None = None
    best_metrics: dict[str, float | int] | None = None


def shuffled_rows(n: int, step: int, *, batch_size: int, seed: int) -> np.ndarray:
    """The row indices ``[batch_size]`` of train step `step` over a data set of `n` rows.

    Pure in ``(n, step, batch_size, seed)``: epoch ``e = step // (n // batch_size)`` is the
    permutation ``np.random.default_rng([seed, e]).permutation(n)`` cut into batches, the last
    incomplete batch dropped (every row is seen once per epoch, except those ``n % batch_size``).
    """
    for name, value, low in (("batch_size", batch_size, 1), ("step", step, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if n < batch_size:
        raise ValueError(f"the data set has n={n} rows, fewer than batch_size={batch_size}; "
                         f"need n >= batch_size")
    epoch, index = divmod(int(step), n // batch_size)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[index * batch_size:(index + 1) * batch_size]


def take_rows(data: Mapping[str, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
    """``{k: data[k][rows]}`` as numpy, integer arrays as int32 (explicitly, rather than
    silently truncated from int64 by jax)."""
    out = {}
    for k, v in data.items():
        v = np.asarray(v)[rows]
        out[k] = v.astype(np.int32) if np.issubdtype(v.dtype, np.integer) else v
    return out


def evaluate_in_batches(
    eval_step: Callable[..., Mapping[str, jax.Array]],
    state: TrainState,
    *,
    num_examples: int,
    batch_of_rows: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    batch_size: int,
    seed: int,
    weight_by: str | None = None,
) -> dict[str, float]:
    """The mean of the loss and every metric over all `num_examples` rows, exactly.

    Every batch is padded to `batch_size` rows (copies of row 0) and gets a ``weights`` column
    ``[B]`` (1 real, 0 padding), so one compiled shape serves all batches and a sharded batch
    stays divisible by the mesh. Batch ``i`` is evaluated with ``key = fold_in(key(seed), i)``
    (deterministic even for a loss that draws from its key).

    By default each batch's value is the weighted mean over its real rows, so weighting it by
    its count of real rows gives the mean over the data set. With ``weight_by=NAME`` (a metric
    the step returns: the count its means were taken over, e.g. MLM's ``"predicted_tokens"``)
    each batch is weighted by that count instead, so the result is the mean over every scored
    token; the returned ``weight_by`` entry is the total count.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1 to evaluate, got {num_examples}")
    root = jax.random.key(seed)
    totals: dict[str, float] = {}
    weight_total = 0.0
    for i, start in enumerate(range(0, num_examples, batch_size)):
        real = min(batch_size, num_examples - start)
        rows = np.arange(start, start + batch_size)
        rows[real:] = 0
        batch = dict(batch_of_rows(rows))
        if "weights" in batch:
            raise ValueError("evaluation batches must not carry their own 'weights' column: "
                             "it is the padding mask set here")
        batch["weights"] = (np.arange(batch_size) < real).astype(np.float32)
        metrics = eval_step(state, batch, key=jax.random.fold_in(root, i))
        if weight_by is not None and weight_by not in metrics:
            raise KeyError(f"weight_by: expected one of the step's metrics {sorted(metrics)}, "
                           f"got {weight_by!r}")
        weight = float(real) if weight_by is None else float(metrics[weight_by])
        weight_total += weight
        for k, v in metrics.items():
            if k != weight_by:
                totals[k] = totals.get(k, 0.0) + float(v) * weight
    if weight_total == 0:
        raise ValueError(f"weight_by: every batch of the {num_examples} rows has "
                         f"{weight_by!r} = 0, so there is nothing to average over")
    out = {k: v / weight_total for k, v in totals.items()}
    if weight_by is not None:
        out[weight_by] = weight_total
    return out


class MetricsLog:
    """An append-only JSON-lines file of metrics records, each with a ``"step"``.

    Opening it keeps only the complete lines with ``step <= keep_through`` (the restored step;
    0 for a fresh start), so a resumed run's file equals an uninterrupted run's. The cut is
    written to a temporary file and renamed over the old one, so a kill leaves one or the other.
    """

    def __init__(self, path: str | os.PathLike, *, keep_through: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [line for line in self._read_lines() if line["step"] <= keep_through]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)
        # Closed by `close` (the loop's finally), not a with-block: it stays open for the run.
        self._file: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def _read_lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = []
        for text in self.path.read_text(encoding="utf-8").splitlines():
            try:  # a run killed mid-write may leave a torn last line: drop it
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                continue
        return lines

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(dict(record)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _changed_settings(stored: Any, current: dict[str, Any]) -> list[str]:
    """Dotted names of the settings in `current` that differ from the checkpoint's `stored`."""
    current = json.loads(json.dumps(current))  # tuples -> lists, as they come back from JSON
    stored = stored if isinstance(stored, dict) else {}
    changed = []
    for section, values in current.items():
        old = stored.get(section)
        if isinstance(values, dict) and isinstance(old, dict):
            changed += [f"{section}.{k}" for k in sorted(set(values) | set(old))
                        if values.get(k) != old.get(k)]
        elif values != old:
            changed.append(section)
    return changed


def train_loop(
    model: nnx.Module,
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    batch_at: BatchFn,
    config: LoopConfig,
    evaluate: EvalFn | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    metrics_path: str | os.PathLike | None = None,
    mesh: Mesh | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    desc: str = "train",
    run_config: Mapping[str, Any] | None = None,
    trainable: Filter = nnx.Param,
) -> LoopResult:
    """Train `model` for ``config.total_steps`` updates of `tx` on `loss_fn`.

    Args:
      model: any NNX module; it is not modified.
      loss_fn: ``loss_fn(model, batch, *, key, deterministic) -> (loss, metrics)``.
      tx: the optax transformation (e.g. `jaxformer.train.optim.adamw`).
      batch_at: ``batch_at(step) -> {name: array [B, ...]}``, a pure function of the step (0-based),
        so a resumed run sees the same data.
      config: the `LoopConfig`.
      evaluate: ``evaluate(eval_step, state) -> {name: float}``, called every ``eval_every``
        steps and at the end; ``eval_step(state, batch, *, key=None)`` is from `make_eval_step`.
      checkpoint_dir: if set, resume from its newest finalized checkpoint (when any; one of
        another model is refused whole) and save there.
      metrics_path: if set, a JSON-lines file: ``{"step", "split": "train", "loss", <metrics>,
        "grad_norm", "learning_rate"}`` every ``log_every`` steps and ``{"step", "split":
        "eval", ...}`` per evaluation; cut back to the restored step on resume.
      mesh: optional data-parallel mesh with a ``"data"`` axis.
      callbacks: ``cb(step, metrics)`` after every step; `step` counts completed updates and
        `metrics` are Python floats.
      progress: show a tqdm bar (loss in its postfix).
      desc: the bar's label.
      run_config: JSON-able settings of the caller (task, optimiser), stored with every
        checkpoint; resuming with different ones (or a different `config`) logs a warning.
      trainable: NNX filter of the variables `tx` updates (`init_train_state`); the rest are
        carried unchanged.

    Returns:
      A `LoopResult`.
    """
    if not isinstance(config, LoopConfig):
        raise TypeError(f"config must be a LoopConfig, got {type(config).__name__}")
    graphdef, state = init_train_state(model, tx, trainable=trainable)
    train_step = make_train_step(graphdef, tx, loss_fn, mesh=mesh, trainable=trainable,
                                 accumulate=config.accumulate)
    eval_step = None if evaluate is None else make_eval_step(graphdef, loss_fn, mesh=mesh)
    settings = {"loop": config.to_dict(), "run": None if run_config is None else dict(run_config)}

    history: list[float] = []
    eval_history: list[dict[str, float | int]] = []
    resumed_from = None
    ckpt = None if checkpoint_dir is None else Checkpointer(checkpoint_dir,
                                                            max_to_keep=config.max_to_keep)
    metrics_log = None
    best = _BestKeeper(config, None if checkpoint_dir is None else Path(checkpoint_dir) / "best")
    try:
        if ckpt is not None and ckpt.latest_step() is not None:
            resumed_from = ckpt.latest_step()
            state, extra = ckpt.restore(resumed_from, jax.eval_shape(lambda: state))
            history = [float(x) for x in extra.get("history", [])][:resumed_from]
            eval_history = [e for e in extra.get("eval_history", []) if e["step"] <= resumed_from]
            changed = _changed_settings(extra.get("config"), settings)
            if changed:
                log.warning("resuming with settings that differ from the checkpoint's in %s; "
                            "the run will not reproduce an uninterrupted one", changed)
            log.info("resumed from checkpoint step %d in %s", resumed_from, ckpt.directory)
            best.resume(eval_history, resumed_from, state)
        start = int(state.step)
        if metrics_path is not None:
            metrics_log = MetricsLog(metrics_path, keep_through=start)

        def metadata() -> dict[str, Any]:
            return {"history": history, "eval_history": eval_history, "config": settings,
                    "data_cursor": len(history)}

        def run_eval(step: int) -> None:
            metrics = {k: float(v) for k, v in evaluate(eval_step, state).items()}
            eval_history.append({"step": step, **metrics})
            if metrics_log is not None:
                metrics_log.write({"step": step, "split": "eval", **metrics})
            best.offer(eval_history[-1], state)

        root_key = jax.random.key(config.seed)
        bar = tqdm(total=config.total_steps, initial=min(start, config.total_steps),
                   disable=not progress, desc=desc, dynamic_ncols=True)
        with bar:
            for s in range(start, config.total_steps):
                state, raw = train_step(state, batch_at(s), key=root_key)
                metrics = {k: float(v) for k, v in raw.items()}
                history.append(metrics["loss"])
                done = s + 1
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                last = done == config.total_steps
                if metrics_log is not None and (done % config.log_every == 0 or last):
                    metrics_log.write({"step": done, "split": "train", "loss": metrics["loss"],
                                       **{k: v for k, v in metrics.items() if k != "loss"}})
                for cb in callbacks:
                    cb(done, metrics)
                if evaluate is not None and config.eval_every and done % config.eval_every == 0:
                    run_eval(done)
                # The last step's checkpoint is saved after the final evaluation (below), so
                # it always holds that evaluation and a resume never repeats it.
                every = config.checkpoint_every
                if ckpt is not None and every and done % every == 0 and not last:
                    ckpt.save(done, state, extra=metadata())
        final = int(state.step)
        if evaluate is not None and (not eval_history or eval_history[-1]["step"] != final):
            run_eval(final)
        if ckpt is not None:
            ckpt.wait()
            if final not in ckpt.all_steps():
                ckpt.save(final, state, extra=metadata())
    finally:
        if metrics_log is not None:
            metrics_log.close()
        if ckpt is not None:
            ckpt.close()
        best.close()
    return LoopResult(
        model=merge_model(graphdef, state),
        state=state,
        history=history,
        eval_history=eval_history,
        eval_metrics=eval_history[-1] if eval_history else None,
        resumed_from=resumed_from,
        best_model=None if best.state is None else merge_model(graphdef, best.state),
        best_metrics=best.metrics,
    )


class _BestKeeper:
    """The state of the best evaluation so far (``LoopConfig.best_metric``), in memory and, with
    a directory, as a one-checkpoint orbax folder saved at each improvement.

    On resume the best is re-derived from the restored eval history (evaluations after the
    restored step are redone by the resumed run, exactly) and its state read back from the
    folder; a best saved after the restored step (the run was killed between the two saves) is
    dropped, since the resumed run will reach and save it again.
    """

    def __init__(self, config: LoopConfig, directory: Path | None):
        self.config = config
        self.metrics: dict[str, float | int] | None = None
        self.state: TrainState | None = None
        self.ckpt = (Checkpointer(directory, max_to_keep=1)
                     if directory is not None and config.best_metric is not None else None)

    def _value(self, record: Mapping[str, Any]) -> float:
        name = self.config.best_metric
        if name not in record:
            raise KeyError(f"LoopConfig.best_metric={name!r} is not among the evaluation's "
                           f"metrics {sorted(k for k in record if k != 'step')}")
        return float(record[name])

    def offer(self, record: dict[str, float | int], state: TrainState) -> None:
        if self.config.best_metric is None:
            return
        current = None if self.metrics is None else self._value(self.metrics)
        if not self.config.improves(self._value(record), current):
            return
        self.metrics = dict(record)
        # A copy: the train step donates `state`'s buffers on the next update.
        self.state = jax.tree.map(jnp.copy, state)
        if self.ckpt is not None:
            step = int(record["step"])
            for old in self.ckpt.all_steps():
                if old >= step:
                    self.ckpt.delete(old)
            self.ckpt.save(step, self.state, extra={"metrics": self.metrics})

    def resume(self, eval_history: list[dict[str, float | int]], restored_step: int,
               state: TrainState) -> None:
        if self.config.best_metric is None:
            return
        best = None
        for record in eval_history:
            if self.config.improves(self._value(record), None if best is None
                                    else self._value(best)):
                best = record
        if best is None:
            return
        if self.ckpt is None or int(best["step"]) not in self.ckpt.all_steps():
            if int(best["step"]) == restored_step:  # the restored state is the best one
                self.metrics, self.state = dict(best), jax.tree.map(jnp.copy, state)
                return
            log.warning("no saved best state for step %s; the best is tracked from here on",
                        best["step"])
            return
        for old in self.ckpt.all_steps():
            if old > restored_step:
                self.ckpt.delete(old)
        self.state, _ = self.ckpt.restore(int(best["step"]), jax.eval_shape(lambda: state))
        self.metrics = dict(best)

    def close(self) -> None:
        if self.ckpt is not None:
            self.ckpt.close()
