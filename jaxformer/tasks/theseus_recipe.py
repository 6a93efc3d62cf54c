"""The three phases of BERT-of-Theseus in one call, and the truncation baseline it is measured
against (Su, https://kexue.fm/archives/7575; his bert_of_theseus.py).

1. **predecessor**: fine-tune the pretrained encoder (N blocks) with a fresh classifier;
2. **replacement**: train a successor of M blocks inside the frozen predecessor by module
   replacement (`jaxformer.tasks.theseus.TheseusTask`);
3. **successor**: fine-tune the successor alone, all of it (Su: "还是全部训练的").

Each phase is one `train_loop` run in its own folder under `directory` (``predecessor/``,
``replacement/``, ``successor/``) with ``best_metric="accuracy"``: it evaluates on the dev set
``evals_per_epoch`` times per epoch, keeps its best dev state (``best/``), and hands that state
to the next phase, as Su's code keeps each phase's best dev checkpoint. A killed call, started
again with the same arguments, resumes the phase it was in; finished phases are read back from
their folders, not retrained.

`truncation_baseline` fine-tunes the first M pretrained blocks directly (the "truncated to M
layers" rows of the post's table).

Shape letters: N examples, T tokens.
"""

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optax
from flax import nnx

from jaxformer.models.encoder import Encoder
from jaxformer.models.heads import SequenceClassifier
from jaxformer.models.theseus import (TheseusClassifier, successor_classifier, successor_filter,
                                      truncate_encoder)
from jaxformer.tasks.theseus import TheseusConfig, TheseusTask, with_step
from jaxformer.train.finetune import batch_at, check_data, classifier_loss, evaluate
from jaxformer.train.loop import LoopConfig, LoopResult, train_loop
from jaxformer.train.optim import adamw, standard_promotion

PHASES = ("predecessor", "replacement", "successor")
LR_SCHEDULES = ("constant", "linear")


@dataclasses.dataclass(frozen=True)
class TheseusRecipe:
    """Hyperparameters of the three phases (defaults: Su's bert_of_theseus.py).

    Attributes:
      successor_layers: M, the successor's block count (divides the predecessor's).
      batch_size: examples per step (Su: 32).
      learning_rate: every phase's peak rate (Su: Adam 2e-5 throughout).
      predecessor_epochs, replacement_epochs, successor_epochs: Su: 5, 10, 5.
      evals_per_epoch: dev evaluations per epoch (each a best-checkpoint candidate).
      lr_schedule: ``"constant"`` (Adam at a fixed rate, Su) or ``"linear"`` (AdamW with
        warmup and linear decay, the official code).
      warmup: the linear schedule's warmup fraction, in [0, 1).
      weight_decay: decoupled decay (linear schedule only; 0 for Su's Adam).
      seed: data order, dropout, coins and the classifier's initial weights.
      theseus: the replacement settings.
    """

    successor_layers: int = 3
    batch_size: int = 32
    learning_rate: float = 2e-5
    predecessor_epochs: int = 5
    replacement_epochs: int = 10
    successor_epochs: int = 5
    evals_per_epoch: int = 1
    lr_schedule: str = "constant"
    warmup: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    theseus: TheseusConfig = TheseusConfig()

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ValueError(f"TheseusRecipe.{name} must be {expected}, "
                             f"got {getattr(self, name)!r}")

        for name, low in (("successor_layers", 1), ("batch_size", 1), ("predecessor_epochs", 1),
                          ("replacement_epochs", 1), ("successor_epochs", 1),
                          ("evals_per_epoch", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                fail(name, f"an int >= {low}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            fail("learning_rate", "a finite float > 0")
        if self.lr_schedule not in LR_SCHEDULES:
            fail("lr_schedule", f"one of {list(LR_SCHEDULES)}")
        if not (math.isfinite(self.warmup) and 0 <= self.warmup < 1):
            fail("warmup", "a float in [0, 1)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            fail("weight_decay", "a finite float >= 0")
        if self.lr_schedule == "constant" and (self.warmup or self.weight_decay):
            fail("lr_schedule", "'linear' when warmup or weight_decay is set (the constant "
                 "schedule is plain Adam)")
        if not isinstance(self.theseus, TheseusConfig):
            fail("theseus", "a TheseusConfig")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def optimizer(recipe: TheseusRecipe, total_steps: int) -> optax.GradientTransformation:
    """Adam at a constant rate, or AdamW with warmup and linear decay (`TheseusRecipe`)."""
    if recipe.lr_schedule == "constant":
        return standard_promotion(optax.inject_hyperparams(optax.adam)(
            learning_rate=recipe.learning_rate))
    return adamw(recipe.learning_rate, total_steps=total_steps,
                 warmup_steps=int(recipe.warmup * total_steps),
                 weight_decay=recipe.weight_decay, clip_norm=None)


def _loop_config(recipe: TheseusRecipe, n: int, epochs: int) -> LoopConfig:
    per_epoch = n // recipe.batch_size
    if per_epoch < 1:
        raise ValueError(f"train data has N={n} examples, fewer than "
                         f"batch_size={recipe.batch_size}")
    return LoopConfig(total_steps=per_epoch * epochs, batch_size=recipe.batch_size,
                      eval_every=max(1, per_epoch // recipe.evals_per_epoch),
                      checkpoint_every=max(1, per_epoch // recipe.evals_per_epoch),
                      max_to_keep=1, seed=recipe.seed, best_metric="accuracy")


def _run(model: nnx.Module, loss_fn: Callable[..., Any], train: Mapping[str, np.ndarray],
         dev: Mapping[str, np.ndarray], *, recipe: TheseusRecipe, epochs: int,
         directory: Path | None, desc: str, add_step: bool = False, trainable: Any = nnx.Param,
         progress: bool = True, run_config: Mapping[str, Any] | None = None) -> LoopResult:
    config = _loop_config(recipe, check_data(train, name="train"), epochs)
    check_data(dev, name="dev")

    def batch_of(step: int) -> dict[str, np.ndarray]:
        batch = batch_at(train, step, batch_size=recipe.batch_size, seed=recipe.seed)
        return with_step(batch, step) if add_step else batch

    def run_eval(eval_step: Any, state: Any) -> dict[str, float]:
        return evaluate(eval_step, state, dev, batch_size=recipe.batch_size, seed=recipe.seed)

    return train_loop(model, loss_fn=loss_fn, tx=optimizer(recipe, config.total_steps),
                      batch_at=batch_of, config=config, evaluate=run_eval,
                      checkpoint_dir=None if directory is None else directory / "ckpt",
                      metrics_path=None if directory is None else directory / "metrics.jsonl",
                      progress=progress, desc=desc, trainable=trainable,
                      run_config={"recipe": recipe.to_dict(), "phase": desc,
                                  **(run_config or {})})


@dataclasses.dataclass(frozen=True)
class TheseusResult:
    """What `compress` returns.

    Attributes:
      predecessor: the best-dev fine-tuned predecessor.
      successor: the best-dev successor after its own fine-tuning (a `SequenceClassifier`).
      replaced: the best-dev successor straight after replacement (before phase 3).
      phases: per phase, ``{"best": {"step", "loss", "accuracy"}, "eval_history": [...],
        "steps": int, "resumed_from": int | None}``.
    """

    predecessor: SequenceClassifier
    successor: SequenceClassifier
    replaced: SequenceClassifier
    phases: dict[str, dict[str, Any]]


def _summary(result: LoopResult) -> dict[str, Any]:
    return {"best": result.best_metrics, "eval_history": result.eval_history,
            "steps": len(result.history), "resumed_from": result.resumed_from,
            "final_train_loss": result.history[-1] if result.history else None}


def new_classifier(encoder: Encoder, num_labels: int, *, seed: int) -> SequenceClassifier:
    """A `SequenceClassifier` over a copy of `encoder`, its head drawn from ``Rngs(seed)``."""
    return SequenceClassifier(truncate_encoder(encoder, encoder.config.num_layers), num_labels,
                              rngs=nnx.Rngs(seed))


def compress(
    pretrained: Encoder,
    train: Mapping[str, np.ndarray],
    dev: Mapping[str, np.ndarray],
    *,
    num_labels: int,
    recipe: TheseusRecipe,
    directory: str | os.PathLike | None = None,
    predecessor: SequenceClassifier | None = None,
    progress: bool = True,
) -> TheseusResult:
    """Run the three phases (module doc) and return the best model of each.

    Args:
      pretrained: the pretrained encoder (N blocks); it is copied, never modified.
      train, dev: classification data (`jaxformer.tasks.ClassificationTask`'s layout).
      num_labels: C.
      recipe: the hyperparameters.
      directory: the phases' folders (resume and best checkpoints); None keeps all in memory.
      predecessor: an already fine-tuned predecessor: phase 1 is skipped.
      progress: tqdm bars.
    """
    root = None if directory is None else Path(directory)
    sub = (lambda name: None if root is None else root / name)  # noqa: E731
    phases: dict[str, dict[str, Any]] = {}
    if predecessor is None:
        predecessor, phases["predecessor"] = fit_predecessor(
            pretrained, train, dev, num_labels=num_labels, recipe=recipe,
            directory=sub("predecessor"), progress=progress)
    elif predecessor.num_labels != num_labels:
        raise ValueError(f"predecessor has a head of {predecessor.num_labels} classes; expected "
                         f"num_labels={num_labels}")
    cfg = recipe.theseus
    source = pretrained if cfg.successor_init == "pretrained" else predecessor.encoder
    successor = truncate_encoder(source, recipe.successor_layers)
    task = TheseusTask(cfg, num_labels)
    theseus = task.build_model(predecessor=predecessor, successor=successor)
    result = _run(theseus, task.loss_fn, train, dev, recipe=recipe,
                  epochs=recipe.replacement_epochs, directory=sub("replacement"),
                  desc="replacement", add_step=True, trainable=successor_filter(theseus),
                  progress=progress, run_config={"theseus": cfg.to_dict()})
    best: TheseusClassifier = result.best_model
    replaced = successor_classifier(best)
    phases["replacement"] = _summary(result)
    result = _run(successor_classifier(best), classifier_loss, train, dev, recipe=recipe,
                  epochs=recipe.successor_epochs, directory=sub("successor"),
                  desc="successor", progress=progress)
    phases["successor"] = _summary(result)
    return TheseusResult(predecessor=predecessor, successor=result.best_model,
                         replaced=replaced, phases=phases)


def fit_predecessor(
    pretrained: Encoder,
    train: Mapping[str, np.ndarray],
    dev: Mapping[str, np.ndarray],
    *,
    num_labels: int,
    recipe: TheseusRecipe,
    directory: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[SequenceClassifier, dict[str, Any]]:
    """Phase 1 alone: fine-tune all of `pretrained` for ``recipe.predecessor_epochs`` epochs;
    returns ``(best-dev model, summary)``. Several `compress` calls (one per successor size)
    can then share it through their ``predecessor=``."""
    result = _run(new_classifier(pretrained, num_labels, seed=recipe.seed), classifier_loss,
                  train, dev, recipe=recipe, epochs=recipe.predecessor_epochs,
                  directory=None if directory is None else Path(directory), desc="predecessor",
                  progress=progress)
    return result.best_model, _summary(result)


def truncation_baseline(
    pretrained: Encoder,
    train: Mapping[str, np.ndarray],
    dev: Mapping[str, np.ndarray],
    *,
    num_labels: int,
    num_layers: int,
    recipe: TheseusRecipe,
    directory: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[SequenceClassifier, dict[str, Any]]:
    """Fine-tune the first `num_layers` pretrained blocks directly for
    ``recipe.predecessor_epochs`` epochs (`fit_predecessor` of the truncated encoder); returns
    ``(best-dev model, summary)``."""
    return fit_predecessor(truncate_encoder(pretrained, num_layers), train, dev,
                           num_labels=num_labels, recipe=recipe, directory=directory,
                           progress=progress)
