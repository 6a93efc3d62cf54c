"""SimCSE as a `Task`: train sentence embeddings contrastively, with dropout as the only noise.

Unsupervised (Gao, Yao & Chen 2021, arXiv:2104.08821; Su's Chinese study,
https://kexue.fm/archives/8348): every sentence of the batch is encoded twice and the two
dropout masks make the positive pair; the other sentences are the negatives
(`jaxformer.contrastive.simcse_loss`). As in Su's code the two views are one forward pass over
the batch with every row repeated, ``[x1, x1, x2, x2, ...]`` (``2B`` rows, each with its own
dropout mask, drawn from the step key). The interleaved layout keeps the copies of a sentence
next to each other, so a batch split over devices along B stays split the same way. Supervised
(``supervised=True``, the paper's eq. 5): premise, entailment and (optionally) contradiction are
encoded in one pass of ``2B`` or ``3B`` rows (`supervised_simcse_loss`).

Dropout: the views differ only by dropout, so its rate is a hyperparameter of the task (the
paper's best is 0.1, Su's Chinese runs use 0.3). The encoder's rates live in its config
(``hidden_dropout``: embeddings and sub-layer outputs; ``attention_dropout``: attention
probabilities), so `build_model` returns an encoder whose config carries the task's rates; an
existing (pretrained) encoder is rebuilt around its own parameters with those rates
(`encoder_with_dropout`). `loss_fn` refuses a model whose rates differ.

Evaluation is `TaskBase`'s: the mean loss with dropout off, where the two views coincide (one
forward of ``B`` rows), i.e. in-batch retrieval of each sentence among the others.

Data: numpy arrays ``input_ids``, ``attention_mask`` ``[N, T]`` and optionally
``token_type_ids``; supervised data add ``pos_input_ids``, ``pos_attention_mask`` and
optionally ``neg_input_ids``, ``neg_attention_mask`` (each optionally with ``*_token_type_ids``),
all with the same T. `simcse_data` tokenises sentences into that layout.

Shape letters: N examples, B batch, T tokens, E width, K encoded groups (1, 2 or 3).
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, PRNGKeyArray

from jaxformer.contrastive import alignment, simcse_loss, supervised_simcse_loss, uniformity
from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.sentence import pool
from jaxformer.pooling import POOLINGS
from jaxformer.tasks.base import TaskBase

# Column prefixes of the sentence groups: anchor, positive (entailment), hard negative.
GROUPS = ("", "pos_", "neg_")
COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def encoder_with_dropout(encoder: Encoder, *, hidden_dropout: float, attention_dropout: float
                         ) -> Encoder:
    """`encoder` with the given dropout rates and the same parameters (arrays shared, not copied).

    The rates are read from the config when the modules are built, so the module tree is
    rebuilt abstractly (`nnx.eval_shape`, no parameter is drawn) from the new config and
    merged with `encoder`'s state; returns `encoder` itself when the rates already match.
    """
    cfg = encoder.config
    if (cfg.hidden_dropout, cfg.attention_dropout) == (hidden_dropout, attention_dropout):
        return encoder
    new_cfg = dataclasses.replace(cfg, hidden_dropout=hidden_dropout,
                                  attention_dropout=attention_dropout)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: type(encoder)(new_cfg, rngs=nnx.Rngs(0))))
    _, state = nnx.split(encoder)
    return nnx.merge(graphdef, state)


def simcse_data(tokenizer: Any, sentences: Sequence[str], max_length: int, *,
                positives: Sequence[str] | None = None,
                negatives: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Tokenise sentences into `SimCSETask` data, every group padded to one common T.

    Args:
      tokenizer: anything with ``encode_batch(texts, max_length=) -> {"input_ids",
        "attention_mask", "token_type_ids"}`` (int ``[N, T]``) and ``pad_id``, e.g.
        `jaxformer.io.WordPieceTokenizer`.
      sentences: the N (anchor) sentences.
      max_length: truncation length in tokens, [CLS] and [SEP] included (Su: 64).
      positives: N entailment sentences (supervised data; ``pos_*`` columns).
      negatives: N contradiction sentences (``neg_*`` columns; needs `positives`).

    Returns:
      int32 arrays ``input_ids``, ``attention_mask``, ``token_type_ids`` ``[N, T]``, plus the
      ``pos_``/``neg_``-prefixed ones when given.
    """
    if negatives is not None and positives is None:
        raise ValueError("negatives: hard negatives need positives too (supervised data), "
                         "got positives=None")
    groups = {"": list(sentences)}
    for prefix, texts in (("pos_", positives), ("neg_", negatives)):
        if texts is not None:
            if len(texts) != len(groups[""]):
                raise ValueError(f"{prefix}sentences: expected {len(groups[''])} (one per "
                                 f"sentence), got {len(texts)}")
            groups[prefix] = list(texts)
    encoded = {p: tokenizer.encode_batch(texts, max_length=max_length)
               for p, texts in groups.items()}
    length = max(enc["input_ids"].shape[1] for enc in encoded.values())
    fill = {"input_ids": tokenizer.pad_id, "attention_mask": 0, "token_type_ids": 0}
    data = {}
    for prefix, enc in encoded.items():
        for name in (c for c in COLUMNS if c in enc):
            column = np.asarray(enc[name], np.int32)
            data[prefix + name] = np.pad(column, ((0, 0), (0, length - column.shape[1])),
                                         constant_values=fill[name])
    return data


@dataclasses.dataclass(frozen=True)
class SimCSETask(TaskBase):
    """Contrastive sentence-embedding training of an `Encoder` (module doc).

    Attributes:
      encoder_config: the encoder `build_model` creates; None when it always wraps an existing
        (e.g. pretrained) encoder, ``build_model(rngs=..., encoder=enc)``.
      pooling: the sentence vector, one of `jaxformer.pooling.POOLINGS`; ``"cls"`` (the
        paper's and Su's best).
      temperature: τ of the softmax over cosines (0.05 in both).
      dropout: the encoder's ``hidden_dropout`` during training, in [0, 1): 0.1 in the paper,
        0.3 in Su's Chinese runs (bert4keras' ``dropout_rate``, the hidden rate).
      attention_dropout: the encoder's ``attention_dropout``; None takes `dropout` (0 for
        linear attention, which has no attention probabilities to drop).
      supervised: train on (premise, entailment[, contradiction]) triples (eq. 5) instead of
        one sentence set.
    """

    encoder_config: EncoderConfig | None
    pooling: str = "cls"
    temperature: float = 0.05
    dropout: float = 0.1
    attention_dropout: float | None = None
    supervised: bool = False

    def __post_init__(self) -> None:
        cfg = self.encoder_config
        if cfg is not None and not isinstance(cfg, EncoderConfig):
            raise TypeError(f"SimCSETask.encoder_config: expected an EncoderConfig or None, "
                            f"got {type(cfg).__name__}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"SimCSETask.pooling: expected one of {list(POOLINGS)}, "
                             f"got {self.pooling!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) \
                or not (math.isfinite(t) and t > 0):
            raise ValueError(f"SimCSETask.temperature: expected a finite float > 0, got {t!r}")
        for name in ("dropout", "attention_dropout"):
            rate = getattr(self, name)
            if rate is None and name == "attention_dropout":
                continue
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) \
                    or not (math.isfinite(rate) and 0.0 <= rate < 1.0):
                raise ValueError(f"SimCSETask.{name}: expected a float in [0, 1), got {rate!r}")
        if not isinstance(self.supervised, bool):
            raise TypeError(f"SimCSETask.supervised: expected a bool, "
                            f"got {type(self.supervised).__name__}")
        if cfg is not None:
            self._check_encoder_config(cfg, "encoder_config")

    # ------------------------------------------------------------------ model
    def rates(self, cfg: EncoderConfig) -> tuple[float, float]:
        """``(hidden_dropout, attention_dropout)`` the task trains an encoder of `cfg` with."""
        attention = self.attention_dropout
        if attention is None:
            attention = self.dropout if cfg.attention == "softmax" else 0.0
        return float(self.dropout), float(attention)

    def _check_encoder_config(self, cfg: EncoderConfig, name: str) -> None:
        if cfg.causal:
            raise ValueError(f"{name}: expected a bidirectional encoder (causal=False), got "
                             f"causal=True")
        if self.pooling == "pooler" and not cfg.use_pooler:
            raise ValueError(f"{name}: pooling='pooler' needs an encoder with a pooler "
                             f"(use_pooler=True), got use_pooler=False")
        if self.pooling == "first-last-avg" and cfg.num_layers < 1:
            raise ValueError(f"{name}: pooling='first-last-avg' needs num_layers >= 1, "
                             f"got {cfg.num_layers}")
        hidden, attention = self.rates(cfg)
        # EncoderConfig validates the rates (e.g. linear attention needs attention_dropout=0).
        dataclasses.replace(cfg, hidden_dropout=hidden, attention_dropout=attention)

    def build_model(self, *, rngs: nnx.Rngs, encoder: Encoder | None = None) -> Encoder:
        """The encoder to train, with the task's dropout rates in its config.

        Args:
          rngs: draws the parameters when the encoder is built from `encoder_config`.
          encoder: use this (e.g. pretrained) encoder's parameters instead, rebuilt with the
            task's rates by `encoder_with_dropout` (its arrays are shared, not copied).
        """
        if encoder is None:
            if self.encoder_config is None:
                raise ValueError("build_model needs encoder= (an Encoder) when "
                                 "SimCSETask.encoder_config is None, got neither")
            hidden, attention = self.rates(self.encoder_config)
            return Encoder(dataclasses.replace(self.encoder_config, hidden_dropout=hidden,
                                               attention_dropout=attention), rngs=rngs)
        if not isinstance(encoder, Encoder):
            raise TypeError(f"encoder: expected an Encoder, got {type(encoder).__name__}")
        self._check_encoder_config(encoder.config, "encoder.config")
        hidden, attention = self.rates(encoder.config)
        return encoder_with_dropout(encoder, hidden_dropout=hidden, attention_dropout=attention)

    def encoder_of(self, model: nnx.Module) -> Encoder:
        """The sentence encoder of a (trained) model of this task: the model itself, as the task
        adds no training-only head. It keeps the task's dropout rates in its config, which
        inference (``deterministic=True``) ignores."""
        if not isinstance(model, Encoder):
            raise TypeError(f"model: expected an Encoder (from SimCSETask.build_model), got "
                            f"{type(model).__name__}")
        return model

    # ------------------------------------------------------------------ loss
    def embed(self, model: Encoder, groups: Sequence[tuple[Array | None, ...]], *,
              repeats: int, key: PRNGKeyArray | None, deterministic: bool
              ) -> Float[Array, "B K E"]:
        """Pooled vectors of K = ``len(groups) * repeats`` encodings per row, in one forward.

        `groups` holds ``(input_ids, attention_mask, token_type_ids)`` ``[B, T]`` per sentence
        group (a missing mask means no padding, missing segment ids are 0). The K encodings of
        row b are consecutive, as in Su's ``[x1, x1, x2, x2, ...]``, and each gets its own
        dropout mask.
        """
        def rows(i: int) -> Array | None:
            cols = [g[i] for g in groups]
            if all(c is None for c in cols):
                return None
            fill = jnp.ones_like if i == 1 else jnp.zeros_like
            cols = [fill(g[0]) if c is None else c for c, g in zip(cols, groups, strict=True)]
            stacked = jnp.repeat(jnp.stack(cols, axis=1), repeats, axis=1)  # [B, K, T]
            return stacked.reshape(-1, stacked.shape[-1])
        ids, mask, types = rows(0), rows(1), rows(2)
        mask = jnp.ones_like(ids) if mask is None else mask
        out = model(ids, attention_mask=mask, token_type_ids=types, deterministic=deterministic,
                    key=None if key is None else jax.random.fold_in(key, 0))
        vectors = pool(out, mask, self.pooling)
        return vectors.reshape(groups[0][0].shape[0], -1, vectors.shape[-1])

    def loss_fn(self, model: Any, batch: Mapping[str, Array], *, key: PRNGKeyArray | None,
                deterministic: bool) -> tuple[Array, dict[str, Array]]:
        """The SimCSE loss of `batch` (weighted by ``batch["weights"]`` when present), with
        ``positive_cosine``, ``alignment`` and ``uniformity`` (of the first view) as metrics."""
        cfg = getattr(model, "config", None)
        if not isinstance(cfg, EncoderConfig):
            raise TypeError(f"model: expected an Encoder (from SimCSETask.build_model), got "
                            f"{type(model).__name__}")
        if (cfg.hidden_dropout, cfg.attention_dropout) != self.rates(cfg):
            raise ValueError(f"model: expected dropout rates (hidden, attention) = "
                             f"{self.rates(cfg)}, got {(cfg.hidden_dropout, cfg.attention_dropout)}"
                             f"; build it with SimCSETask.build_model (encoder= for a "
                             f"pretrained one)")
        prefixes = [p for p in GROUPS if p + "input_ids" in batch]
        groups = [tuple(batch.get(p + c) for c in COLUMNS) for p in prefixes]
        weights = batch.get("weights")
        if self.supervised:
            if "pos_input_ids" not in batch:
                raise ValueError(f"batch: supervised SimCSE needs 'pos_input_ids'; got keys "
                                 f"{sorted(batch)}")
            z = self.embed(model, groups, repeats=1, key=key, deterministic=deterministic)
            anchor, positive = z[:, 0], z[:, 1]
            negative = z[:, 2] if z.shape[1] > 2 else None
            loss, metrics = supervised_simcse_loss(anchor, positive, negative,
                                                   temperature=self.temperature, weights=weights)
        else:
            # Without dropout both views are the same vectors: encode once.
            repeats = 1 if deterministic else 2
            z = self.embed(model, groups[:1], repeats=repeats, key=key,
                           deterministic=deterministic)
            anchor, positive = z[:, 0], z[:, repeats - 1]
            loss, metrics = simcse_loss(anchor, positive, temperature=self.temperature,
                                        weights=weights)
        return loss, {**metrics, "alignment": alignment(anchor, positive, weights=weights),
                      "uniformity": uniformity(anchor, weights=weights)}

    # ------------------------------------------------------------------ data
    def num_examples(self, data: Mapping[str, Any]) -> int:
        """N, after checking the columns (module doc), their lengths and their common T."""
        n = super().num_examples(data)
        required = ["input_ids", "attention_mask"]
        if self.supervised:
            required += ["pos_input_ids", "pos_attention_mask"]
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"data: missing {missing} (supervised={self.supervised}); got keys "
                             f"{sorted(data)}")
        groups = GROUPS if self.supervised else GROUPS[:1]
        allowed = {p + c for p in groups for c in COLUMNS}
        unknown = sorted(set(data) - allowed)
        if unknown:
            hint = "" if self.supervised else " (pos_*/neg_* columns need supervised=True)"
            raise ValueError(f"data: unknown keys {unknown}{hint}; expected a subset of "
                             f"{sorted(allowed)}")
        if ("neg_input_ids" in data) != ("neg_attention_mask" in data):
            raise ValueError("data: hard negatives need both 'neg_input_ids' and "
                             "'neg_attention_mask', got one")
        shapes = {k: np.shape(v) for k, v in data.items()}
        bad = {k: s for k, s in shapes.items() if len(s) != 2}
        if bad:
            raise ValueError(f"data: expected every column of rank 2 [N, T], got {bad}")
        if len({s[1] for s in shapes.values()}) != 1:
            raise ValueError(f"data: expected one common T for every column (simcse_data pads "
                             f"them), got {shapes}")
        return n
