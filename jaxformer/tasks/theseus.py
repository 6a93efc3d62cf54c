"""BERT-of-Theseus (Xu et al. 2020; Su, https://kexue.fm/archives/7575) as a `Task`, and the
three-phase recipe that runs it: fine-tune the predecessor, train the successor by module
replacement, fine-tune the successor alone.

The replacement phase trains a `jaxformer.models.theseus.TheseusClassifier` with the task loss
only (no distillation term): each step draws the successor weights of its J slots
(`jaxformer.replacement.successor_weights`) at rate ``p_t`` (`replacement_rate`) and runs the
mixed stack; only the successor's blocks (and embeddings, when drawn) are trained
(`successor_filter` as the loop's ``trainable``), so the predecessor and the shared head stay
bit-identical. Evaluation runs the successor alone, as Su's ``K.in_train_phase`` does, so the
best dev checkpoint of the phase is the best successor.

Keys: the loop passes ``fold_in(root, step)``; the draws use ``fold_in(that, COIN_STREAM)``
and then the slot index, the dropout the rest (`TheseusClassifier`'s streams). The schedule
needs the step itself, which the batch carries as a ``step`` column ``[B]`` (`with_step`), so
the batch of step s stays a pure function of s and a resumed run draws the same coins.

Shape letters: N examples, B batch, T tokens, C classes, J slots.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import PRNGKeyArray

from jaxformer.models.encoder import Encoder
from jaxformer.models.heads import SequenceClassifier, classification_loss
from jaxformer.models.theseus import TheseusClassifier
from jaxformer.replacement import (MIXES, SCHEDULES, check_rate, replacement_rate,
                                   successor_weights)
from jaxformer.tasks.base import TaskBase
from jaxformer.train.finetune import check_data

COIN_STREAM = 3
SUCCESSOR_INITS = ("pretrained", "predecessor")


@dataclasses.dataclass(frozen=True)
class TheseusConfig:
    """How replacement training draws and schedules (`jaxformer.replacement`'s module doc).

    Attributes:
      schedule: ``"constant"`` (p, then 1 from `replace_until`) or ``"linear"``
        (``min(slope * t + rate, 1)``, the paper's curriculum).
      rate: p (constant) or the intercept b (linear), in [0, 1]. Su: 0.5, "no tuning needed".
      slope: k of the linear schedule per step (>= 0; the official MRPC example: 0.0006).
      replace_until: constant only: p becomes 1 from this step on (None: never).
      mix: ``"bernoulli"`` (the post), or, beyond the post, ``"uniform"`` (continuous ε) or
        ``"anneal"`` (deterministic ε = 1 - p_t).
      per_example: one draw per module per example instead of per batch (Su's code: per batch).
      embeddings: the embedding layer is in the draw too (Su's code; the official code keeps
        the predecessor's embeddings).
      compute: ``"cond"`` runs only the chosen branch of each module (one draw per batch,
        Bernoulli only); ``"select"`` runs both and keeps one, as Su's equation (1).
      successor_init: ``"pretrained"``: the first M blocks of the pretrained encoder (Su's
        code); ``"predecessor"``: the first M blocks of the fine-tuned predecessor (the
        official code).
    """

    schedule: str = "constant"
    rate: float = 0.5
    slope: float = 0.0
    replace_until: int | None = None
    mix: str = "bernoulli"
    per_example: bool = False
    embeddings: bool = False
    compute: str = "cond"
    successor_init: str = "pretrained"

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ValueError(f"TheseusConfig.{name} must be {expected}, "
                             f"got {getattr(self, name)!r}")

        if self.schedule not in SCHEDULES:
            fail("schedule", f"one of {list(SCHEDULES)}")
        check_rate("TheseusConfig.rate", self.rate)
        if not (isinstance(self.slope, (int, float)) and math.isfinite(self.slope)
                and self.slope >= 0):
            fail("slope", "a finite number >= 0")
        if self.schedule == "constant" and self.slope:
            fail("slope", "0 with schedule='constant' (slope is the linear schedule's)")
        until = self.replace_until
        if until is not None and (isinstance(until, bool) or not isinstance(until, int)
                                  or until < 0):
            fail("replace_until", "None or an int >= 0")
        if until is not None and self.schedule != "constant":
            fail("replace_until", "None with schedule='linear' (it is the constant schedule's)")
        if self.mix not in MIXES:
            fail("mix", f"one of {list(MIXES)}")
        if self.compute not in ("cond", "select"):
            fail("compute", "'cond' or 'select'")
        if self.compute == "cond" and (self.per_example or self.mix != "bernoulli"):
            fail("compute", "'select' when per_example=True or mix is not 'bernoulli' (a cond "
                 "branches on one 0/1 draw per batch)")
        if self.successor_init not in SUCCESSOR_INITS:
            fail("successor_init", f"one of {list(SUCCESSOR_INITS)}")
        for name in ("per_example", "embeddings"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "a bool")

    def rate_at(self, step: Any) -> jax.Array:
        """p_t at optimiser step `step` (float32 scalar)."""
        return replacement_rate(step, schedule=self.schedule, rate=self.rate, slope=self.slope,
                                replace_until=self.replace_until)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


THESEUS_PRESETS = {
    # Su's bert_of_theseus.py: p = 0.5 per batch, embeddings drawn, successor = the first M
    # pretrained blocks.
    "su2020": TheseusConfig(rate=0.5, embeddings=True, successor_init="pretrained"),
    # JetRunner/BERT-of-Theseus README (MRPC): constant 0.5 until step 2500, then 1.
    "xu2020-constant": TheseusConfig(rate=0.5, replace_until=2500,
                                     successor_init="predecessor"),
    # ... and the curriculum: p_t = min(0.0006 t + 0.3, 1).
    "xu2020-linear": TheseusConfig(schedule="linear", rate=0.3, slope=0.0006,
                                   successor_init="predecessor"),
}


def with_step(batch: Mapping[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
    """`batch` plus the ``step`` column ``[B]`` int32 the replacement loss reads its p_t from."""
    size = len(next(iter(batch.values())))
    return {**batch, "step": np.full((size,), step, np.int32)}


@dataclasses.dataclass(frozen=True)
class TheseusTask(TaskBase):
    """Replacement training of a `TheseusClassifier` on a classification data set.

    Data: as `jaxformer.tasks.ClassificationTask` (``input_ids``, ``labels``, optional
    ``attention_mask``, ``token_type_ids``); train batches also carry ``step`` (`with_step`).

    Attributes:
      config: the `TheseusConfig`.
      num_labels: C.
    """

    config: TheseusConfig
    num_labels: int

    def __post_init__(self) -> None:
        if not isinstance(self.config, TheseusConfig):
            raise TypeError(f"TheseusTask.config must be a TheseusConfig, "
                            f"got {type(self.config).__name__}")
        if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, int) \
                or self.num_labels < 1:
            raise ValueError(f"TheseusTask.num_labels must be an int >= 1, "
                             f"got {self.num_labels!r}")

    def build_model(self, *, rngs: nnx.Rngs | None = None,
                    predecessor: SequenceClassifier | None = None,
                    successor: Encoder | None = None) -> TheseusClassifier:
        """The `TheseusClassifier` of `predecessor` and `successor` (both needed; `rngs` is
        unused: nothing new is drawn)."""
        if predecessor is None or successor is None:
            raise ValueError("TheseusTask.build_model needs predecessor= (a fine-tuned "
                             "SequenceClassifier) and successor= (an Encoder)")
        if predecessor.num_labels != self.num_labels:
            raise ValueError(f"the predecessor's head has {predecessor.num_labels} classes; "
                             f"expected num_labels={self.num_labels}")
        return TheseusClassifier(predecessor, successor, embeddings=self.config.embeddings)

    def weights_at(self, model: TheseusClassifier, key: PRNGKeyArray, step: Any, batch_size: int
                   ) -> jax.Array:
        """The successor weights ``[J]`` or ``[J, B]`` of the step whose key is `key`."""
        cfg = self.config
        return successor_weights(jax.random.fold_in(key, COIN_STREAM), cfg.rate_at(step),
                                 num_slots=model.num_slots, mix=cfg.mix,
                                 batch_size=batch_size if cfg.per_example else None)

    def loss_fn(self, model: nnx.Module, batch: Mapping[str, jax.Array], *,
                key: PRNGKeyArray | None, deterministic: bool
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean CE (weighted by ``batch["weights"]``), with ``accuracy`` and, in training, the
        step's ``replace_rate`` p_t and ``successor_share`` (mean drawn weight)."""
        if not isinstance(model, TheseusClassifier):
            raise TypeError(f"TheseusTask trains a TheseusClassifier, got {type(model).__name__}")
        inputs = dict(attention_mask=batch.get("attention_mask"),
                      token_type_ids=batch.get("token_type_ids"))
        metrics = {}
        if deterministic:  # evaluation: the successor alone
            logits = model(batch["input_ids"], **inputs, deterministic=True, key=key)
        else:
            if "step" not in batch:
                raise ValueError("a TheseusTask train batch needs a 'step' column [B] (the "
                                 "schedule's t); build it with with_step(batch, step)")
            if key is None:
                raise ValueError("TheseusTask training needs key= (the step's key), got None")
            step = batch["step"][0]
            cfg = self.config
            weights = self.weights_at(model, key, step, batch["input_ids"].shape[0])
            logits = model(batch["input_ids"], **inputs, deterministic=False, key=key,
                           weights=weights, compute=cfg.compute,
                           binary=cfg.mix == "bernoulli")
            metrics = {"replace_rate": cfg.rate_at(step), "successor_share": jnp.mean(weights)}
        loss, accuracy = classification_loss(logits, batch["labels"],
                                             weights=batch.get("weights"))
        return loss, {"accuracy": accuracy, **metrics}

    def num_examples(self, data: Mapping[str, Any]) -> int:
        """N, after checking the keys (``input_ids``, ``labels`` required) and lengths."""
        return check_data(data, name="data")
