"""Masked-LM pretraining as a `Task`: BERT's objective (Devlin et al. 2019, §3.1).

Per row, ``round(rate * n)`` of the ``n`` maskable tokens are selected (never [CLS], [SEP] or
padding); of those ``mask_prob`` become [MASK], ``random_prob`` a random id and the rest stay;
the loss is the cross-entropy on the selected positions only. Only those positions reach the
LM head (``max_predictions`` per row, BERT's ``max_predictions_per_seq``): the ``E x V`` readout
is the biggest matmul of a small model with a 21k-token vocabulary.

With ``whole_word=True`` a batch also carries ``word_starts`` ``[N, T]`` (1 where a token starts
a word) and the selection takes whole words (Cui et al. 2019, arXiv:1906.08101).

Randomness: the selection uses ``fold_in(key, 1)``, the 80/10/10 draw ``fold_in(key, 2)`` and the
model's dropout ``fold_in(key, 0)``, so a step key (and, in evaluation, the fixed eval key)
reproduces all three.

Shape letters: N examples, B batch, T tokens, P predicted positions, V vocabulary.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, PRNGKeyArray

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.lm import MaskedLM
from jaxformer.tasks.base import TaskBase
from jaxformer.train.loop import evaluate_in_batches
from jaxformer.train.lm import corrupt_selected, select_for_prediction, token_cross_entropy

MLM_KEYS = ("input_ids", "attention_mask", "word_starts")


@dataclasses.dataclass(frozen=True)
class MaskedLMTask(TaskBase):
    """Masked-LM pretraining of an `Encoder` with a tied `LMHead` (a `MaskedLM`).

    Attributes:
      encoder_config: the encoder to build (``build_model``); its ``vocab_size`` is the id range.
      mask_id: the [MASK] id.
      special_ids: ids never selected ([CLS], [SEP], [PAD]...); padding is excluded anyway.
      rate: share of maskable tokens selected per row (BERT: 0.15).
      mask_prob, random_prob: of the selected, the share turned into [MASK] / a random id
        (BERT: 0.8 / 0.1; the remaining 0.1 stay).
      whole_word: select whole words (needs ``word_starts`` in the data).
      max_predictions: positions per row sent to the head (default ``ceil(rate * T)``, which the
        exact per-row count never exceeds without whole-word masking).
    """

    encoder_config: EncoderConfig
    mask_id: int
    special_ids: tuple[int, ...] = ()
    rate: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1
    whole_word: bool = False
    max_predictions: int | None = None

    def __post_init__(self) -> None:
        vocab = self.encoder_config.vocab_size
        if self.encoder_config.causal:
            raise ValueError("encoder_config: expected a bidirectional encoder (causal=False), "
                             "got causal=True")
        if not isinstance(self.mask_id, int) or not 0 <= self.mask_id < vocab:
            raise ValueError(f"mask_id: expected an int in [0, vocab_size={vocab}), "
                             f"got {self.mask_id!r}")
        bad = [i for i in self.special_ids if not (isinstance(i, int) and 0 <= i < vocab)]
        if bad:
            raise ValueError(f"special_ids: expected ints in [0, {vocab}), got {bad}")
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"rate: expected a float in (0, 1), got {self.rate!r}")
        if not (0.0 <= self.mask_prob and 0.0 <= self.random_prob
                and self.mask_prob + self.random_prob <= 1.0):
            raise ValueError(f"mask_prob + random_prob: expected two shares >= 0 summing to <= 1, "
                             f"got {self.mask_prob!r} + {self.random_prob!r}")
        if self.max_predictions is not None and (not isinstance(self.max_predictions, int)
                                                 or self.max_predictions < 1):
            raise ValueError(f"max_predictions: expected None or an int >= 1, "
                             f"got {self.max_predictions!r}")

    # ------------------------------------------------------------------ Task
    def build_model(self, *, rngs: nnx.Rngs) -> MaskedLM:
        return MaskedLM(Encoder(self.encoder_config, rngs=rngs), rngs=rngs)

    def predictions_per_row(self, length: int) -> int:
        """P for rows of `length` tokens."""
        p = self.max_predictions or math.ceil(self.rate * length)
        return max(1, min(p, length))

    def corrupt(self, batch: Mapping[str, Array], *, key: PRNGKeyArray
                ) -> tuple[Array, Array, Array, Array]:
        """``(corrupted ids [B, T], positions [B, P], labels [B, P], weights [B, P])``."""
        ids, attn = batch["input_ids"], batch["attention_mask"]
        maskable = attn != jnp.zeros((), attn.dtype)
        for sid in self.special_ids:
            maskable = maskable & (ids != jnp.asarray(sid, ids.dtype))
        starts = None
        if self.whole_word:
            if "word_starts" not in batch:
                raise ValueError("whole_word=True needs batch['word_starts'] [B, T]; got keys "
                                 f"{sorted(batch)}")
            starts = batch["word_starts"] != jnp.zeros((), batch["word_starts"].dtype)
        selected, positions = select_for_prediction(
            maskable, key=jax.random.fold_in(key, 1), rate=self.rate,
            max_predictions=self.predictions_per_row(ids.shape[1]), word_starts=starts)
        corrupted = corrupt_selected(ids, selected, key=jax.random.fold_in(key, 2),
                                     mask_id=self.mask_id,
                                     vocab_size=self.encoder_config.vocab_size,
                                     mask_prob=self.mask_prob, random_prob=self.random_prob)
        labels = jnp.take_along_axis(ids, positions, axis=1)
        weights = jnp.take_along_axis(selected, positions, axis=1).astype(jnp.float32)
        return corrupted, positions, labels, weights

    def loss_fn(self, model: Any, batch: Mapping[str, Array], *, key: PRNGKeyArray | None,
                deterministic: bool) -> tuple[Array, Mapping[str, Array]]:
        if key is None:
            raise ValueError("key: the masked-LM loss draws its masking from a key, got None")
        corrupted, positions, labels, weights = self.corrupt(batch, key=key)
        if "weights" in batch:  # padding rows of an evaluation batch
            weights = weights * batch["weights"].astype(jnp.float32)[:, None]
        logits = model(corrupted, attention_mask=batch["attention_mask"],
                       deterministic=deterministic, key=jax.random.fold_in(key, 0),
                       positions=positions)
        loss, accuracy = token_cross_entropy(logits, labels, weights)
        return loss, {"accuracy": accuracy, "predicted_tokens": jnp.sum(weights)}

    def evaluate(self, eval_step: Callable[..., Mapping[str, Array]], state: Any,
                 data: Mapping[str, np.ndarray], *, batch_size: int, seed: int
                 ) -> dict[str, float]:
        """Token-level held-out loss and accuracy (each batch weighted by its predicted tokens,
        so the result is the mean over every scored token), with fixed masking keys."""
        return evaluate_in_batches(eval_step, state, num_examples=self.num_examples(data),
                                   batch_of_rows=lambda rows: self.collate(data, rows),
                                   batch_size=batch_size, seed=seed, weight_by="predicted_tokens")
