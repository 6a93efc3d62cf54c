"""Task heads on top of an `Encoder`, and their losses as pure functions.

Shape letters: B batch, T tokens, E width, C classes.

`SequenceClassifier` is HF's ``BertForSequenceClassification``: dropout on the pooled output
(or on the ``[CLS]`` vector when the encoder has no pooler), then one ``Dense(E, C)``. Keys are
explicit: with ``key=k`` the encoder draws its dropout from ``fold_in(k, 0)`` and the head from
``fold_in(k, 1)``, so one key per step reproduces every mask in any process.
"""


import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Integer, PRNGKeyArray

from jaxformer import functional as F
from jaxformer.models.encoder import Encoder
from jaxformer.models.modules import Dense


class SequenceClassifier(nnx.Module):
    """``logits = Dense(Drop(pooled))``, with ``pooled`` = BERT pooler output or ``h[:, 0]``."""

    def __init__(self, encoder: Encoder, num_labels: int, *, rngs: nnx.Rngs,
                 dropout: float | None = None):
        """Wrap `encoder` with a fresh classifier.

        Args:
          encoder: the (possibly pretrained) encoder; held as ``self.encoder``.
          num_labels: C, the number of classes (>= 1).
          rngs: ``rngs.params()`` draws the classifier weight, N(0, initializer_range^2).
          dropout: head dropout rate; defaults to the encoder's ``hidden_dropout`` as in HF.
        """
        cfg = encoder.config
        if isinstance(num_labels, bool) or num_labels < 1:
            raise ValueError(f"num_labels must be an int >= 1, got {num_labels!r}")
        rate = cfg.hidden_dropout if dropout is None else dropout
        if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {rate!r}")
        self.encoder = encoder
        self.classifier = Dense(cfg.hidden_size, num_labels,
                                init=F.normal_init(cfg.initializer_range), rngs=rngs,
                                param_dtype=jnp.dtype(cfg.param_dtype),
                                precision=cfg.matmul_precision)
        self.dropout_rate = rate
        self.num_labels = num_labels

    def __call__(
        self,
        input_ids: Integer[Array, "B T"],
        *,
        attention_mask: Integer[Array, "B T"] | None = None,
        token_type_ids: Integer[Array, "B T"] | None = None,
        deterministic: bool,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "B C"]:
        """Class logits ``[B, C]``; ``deterministic=False`` needs `key` when any dropout is on."""
        cfg = self.encoder.config
        any_dropout = self.dropout_rate > 0 or cfg.hidden_dropout > 0 or cfg.attention_dropout > 0
        if not deterministic and key is None and any_dropout:
            raise ValueError("deterministic=False needs key= (a PRNG key for dropout), got None")
        enc_key = None if key is None else jax.random.fold_in(key, 0)
        head_key = None if key is None else jax.random.fold_in(key, 1)
        out = self.encoder(input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids, deterministic=deterministic,
                           key=enc_key)
        features = out.pooled if out.pooled is not None else out.last_hidden_state[:, 0, :]
        features = F.dropout(features, self.dropout_rate, key=head_key,
                             deterministic=deterministic)
        return self.classifier(features)


def classification_loss(
    logits: Float[Array, "B C"],
    labels: Integer[Array, "..."],
    *,
    weights: Float[Array, "..."] | None = None,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Mean softmax cross-entropy and accuracy of `logits` against integer `labels`.

    Args:
      logits: ``[B, C]`` unnormalised scores (any float dtype; the loss is taken in fp32).
      labels: ``[B]`` class ids in ``[0, C)``.
      weights: optional ``[B]`` per-example weights (e.g. 0 for padding rows of an eval
        batch); both numbers are then weighted means ``sum(w x) / sum(w)`` (0 when every
        weight is 0).

    Returns:
      ``(loss, accuracy)``, two fp32 scalars.
    """
    batch, classes = logits.shape
    if labels.shape != (batch,):
        raise ValueError(
            f"labels must have shape [B] = ({batch},) to match logits [B, C] = {(batch, classes)}, "
            f"got {tuple(labels.shape)}"
        )
    if weights is not None and weights.shape != (batch,):
        raise ValueError(
            f"weights must have shape [B] = ({batch},) to match logits, got {tuple(weights.shape)}"
        )
    if not isinstance(labels, jax.core.Tracer) and labels.size:
        lo, hi = int(np.min(labels)), int(np.max(labels))
        if lo < 0 or hi >= classes:
            raise ValueError(f"labels must lie in [0, C={classes}), got values in [{lo}, {hi}]")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    labels = labels.astype(jnp.int32)
    nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    correct = (jnp.argmax(logits, axis=-1).astype(jnp.int32) == labels).astype(jnp.float32)
    if weights is None:
        return jnp.mean(nll), jnp.mean(correct)
    w = weights.astype(jnp.float32)
    total = jnp.sum(w)
    total = jnp.where(total > 0, total, jnp.float32(1))  # all weights 0 (no target): 0, not NaN
    return jnp.sum(w * nll) / total, jnp.sum(w * correct) / total
