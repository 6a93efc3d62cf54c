"""Sequence classification as a `Task`: a `SequenceClassifier` trained with mean cross-entropy.

The loss and the data checks are `jaxformer.train.finetune`'s (`classifier_loss`,
`check_data`), so `finetune` and ``fit(ClassificationTask(...), ...)`` train the same way.

Data: equal-length numpy arrays ``input_ids`` ``[N, T]``, ``labels`` ``[N]`` and optionally
``attention_mask`` and ``token_type_ids`` ``[N, T]``.

Shape letters: B batch, N examples, T tokens, C classes.
"""


import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx
from jaxtyping import PRNGKeyArray

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.heads import SequenceClassifier
from jaxformer.tasks.base import TaskBase
from jaxformer.train.finetune import check_data, classifier_loss


@dataclasses.dataclass(frozen=True)
class ClassificationTask(TaskBase):
    """Classify a token sequence into one of `num_labels` classes.

    Attributes:
      encoder_config: the encoder `build_model` creates; None when the model always wraps an
        existing (e.g. pretrained) encoder, ``build_model(rngs=..., encoder=enc)``.
      num_labels: C, the number of classes (>= 1).
      dropout: the head's dropout rate; None takes the encoder's ``hidden_dropout`` (HF's rule,
        see `SequenceClassifier`).
    """

    encoder_config: EncoderConfig | None
    num_labels: int
    dropout: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool) \
                or self.num_labels < 1:
            raise ValueError(f"ClassificationTask.num_labels must be an int >= 1, "
                             f"got {self.num_labels!r}")
        rate = self.dropout
        if rate is not None and not (math.isfinite(rate) and 0.0 <= rate < 1.0):
            raise ValueError(f"ClassificationTask.dropout must be None or in [0, 1), got {rate!r}")
        if self.encoder_config is not None and not isinstance(self.encoder_config,
                                                              EncoderConfig):
            raise TypeError(f"ClassificationTask.encoder_config must be an EncoderConfig or "
                            f"None, got {type(self.encoder_config).__name__}")

    def build_model(self, *, rngs: nnx.Rngs, encoder: Encoder | None = None
                    ) -> SequenceClassifier:
        """A `SequenceClassifier` with a fresh head drawn from `rngs`.

        Args:
          rngs: draws the encoder (when built here) and then the classifier weight.
          encoder: wrap this (e.g. pretrained, `jaxformer.models.pretrained.load_pretrained`)
            encoder instead of building one from `encoder_config`; it is held, not copied.
        """
        if encoder is None:
            if self.encoder_config is None:
                raise ValueError("build_model needs encoder= (an Encoder) when "
                                 "ClassificationTask.encoder_config is None, got neither")
            encoder = Encoder(self.encoder_config, rngs=rngs)
        return SequenceClassifier(encoder, self.num_labels, rngs=rngs, dropout=self.dropout)

    def loss_fn(self, model: nnx.Module, batch: Mapping[str, jax.Array], *,
                key: PRNGKeyArray | None, deterministic: bool
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean CE over the batch (weighted by ``batch["weights"]`` when present), with
        ``accuracy`` as a metric (`classifier_loss`)."""
        return classifier_loss(model, batch, key=key, deterministic=deterministic)

    def num_examples(self, data: Mapping[str, Any]) -> int:
        """N, after checking the keys (``input_ids``, ``labels`` required) and lengths."""
        return check_data(data, name="data")
