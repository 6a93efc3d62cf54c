"""CLUENER2020 (and char-BIO NER) with a GlobalPointer head, and the pieces CMRC2018 shares.

Post 8739 (https://kexue.fm/archives/8739) puts a GlobalPointer (Su,
https://kexue.fm/archives/8373) with one score matrix per entity type over the encoder's last
layer: ``[CLS] text [SEP]`` (max_len 256), head size 64, no bias, Su's multi-label
cross-entropy (`jaxformer.global_pointer.global_pointer_loss`); a span is predicted when its
score is above 0 (`jaxformer.global_pointer.decode_spans`). The official figure is the entity
micro F1 (`jaxformer.tasks.clue.metrics.entity_f1`).

Shared with `jaxformer.tasks.clue.span` (CMRC2018):

* `PointerModel`: a copy of the pretrained encoder and a `GlobalPointer` over its last layer;
  the pointer's own ``span_mask`` says which tokens may start or end a span (text tokens
  here; [CLS] and the context for CMRC2018).
* `PointerTask`: labels travel sparse, ``spans [N, S, 3]`` rows ``(type, start, end)`` in
  token positions (end inclusive, ``-1`` rows are padding), scattered into the ``[B, E, T, T]``
  label tensor in the graph (CLUENER's dense labels would be 10 x 256 x 256 per sentence). Its
  metric ``f1`` is Su's global-pointer F1 ``2 sum(y yhat) / sum(y + yhat)`` of the batch
  (``yhat = scores > 0``), the in-graph proxy that picks the best dev checkpoint.
* `char_to_token_span`, `pointer_outputs`: char spans to token spans through the tokenizer's
  offsets, and a batched jitted forward for prediction.

Character spans are ``(type, start, end exclusive)`` as `jaxformer.io.clue.NerExample`; an
entity whose characters fall outside the truncated input, or inside no token (spaces), gets no
label. Predicted token spans map back to ``(offset[start].start, offset[end].end)``, so an
entity boundary inside a multi-character token (a Latin word, a number) is predicted at the
token's boundary.

Shape letters: N examples, B batch, T tokens, E entity types, S labelled spans per example.
"""

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike
from jaxtyping import Array, PRNGKeyArray

from jaxformer.global_pointer import decode_spans, multilabel_categorical_crossentropy
from jaxformer.io.clue import NerExample
from jaxformer.io.clue_tasks import CLUENER_TYPES
from jaxformer.models.encoder import Encoder
from jaxformer.models.global_pointer import GlobalPointer
from jaxformer.models.theseus import truncate_encoder
from jaxformer.tasks.base import TaskBase
from jaxformer.tasks.clue.config import ClueConfig
from jaxformer.tasks.clue.metrics import bio_to_spans, entity_f1

MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "span_mask", "spans", "usable")


class PointerModel(nnx.Module):
    """``scores [B, E, T, T]`` of a GlobalPointer over an encoder's last hidden states."""

    def __init__(self, encoder: Encoder, num_types: int, head_size: int, *, rngs: nnx.Rngs,
                 use_bias: bool = True):
        self.encoder = encoder
        self.pointer = GlobalPointer(encoder.config.hidden_size, num_types, head_size,
                                     use_bias=use_bias, rngs=rngs)

    def __call__(self, input_ids: ArrayLike, *, attention_mask: ArrayLike | None = None,
                 token_type_ids: ArrayLike | None = None, span_mask: ArrayLike | None = None,
                 deterministic: bool, key: PRNGKeyArray | None = None) -> Array:
        """Span scores; spans touching a token with ``span_mask == 0`` (default: the attention
        mask) or ending before they start get `jaxformer.global_pointer.mask_value`."""
        out = self.encoder(input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids, deterministic=deterministic, key=key)
        mask = attention_mask if span_mask is None else span_mask
        return self.pointer(out.last_hidden_state, None if mask is None else jnp.asarray(mask))


def new_pointer_model(pretrained: Encoder, num_types: int, head_size: int, *, seed: int,
                      use_bias: bool) -> PointerModel:
    """A `PointerModel` over a copy of `pretrained` (never modified), its head from `seed`."""
    return PointerModel(truncate_encoder(pretrained, pretrained.config.num_layers), num_types,
                        head_size, rngs=nnx.Rngs(seed), use_bias=use_bias)


def span_labels(spans: ArrayLike, shape: tuple[int, int, int, int]) -> Array:
    """The bool ``[B, E, T, T]`` labels of sparse ``spans [B, S, 3]`` (-1 rows ignored)."""
    batch, types, tokens, _ = shape
    spans = jnp.asarray(spans)
    pad = spans[..., 0] < 0
    e = jnp.where(pad, types, spans[..., 0])  # out of bounds: dropped by the scatter
    i = jnp.where(pad, tokens, spans[..., 1])
    j = jnp.where(pad, tokens, spans[..., 2])
    b = jnp.broadcast_to(jnp.arange(batch)[:, None], e.shape)
    return jnp.zeros(shape, bool).at[b, e, i, j].set(True, mode="drop")


def pointer_f1(scores: Array, labels: Array, weights: Array) -> Array:
    """Su's global-pointer F1 ``2 sum(y yhat) / sum(y + yhat)`` (``yhat = scores > 0``), the
    sums weighted by example; 0 when both sums are empty."""
    pred = scores > 0
    count = lambda x: jnp.sum(x.astype(jnp.float32), axis=(1, 2, 3))  # noqa: E731
    hit = jnp.sum(weights * count(pred & labels))
    total = jnp.sum(weights * (count(pred) + count(labels)))
    return jnp.where(total > 0, 2 * hit / jnp.maximum(total, 1e-9), 0.0)


@dataclasses.dataclass(frozen=True)
class PointerTask(TaskBase):
    """Su's GlobalPointer loss over ``MODEL_KEYS`` batches (module doc).

    The loss is the mean over the batch's examples of `global_pointer_loss`'s per-(example,
    type) terms (so, unweighted, exactly `jaxformer.global_pointer.global_pointer_loss`),
    weighted by ``weights * usable`` (``usable``: 0 for an example without a usable label).
    `post` edits the scores before the loss (CMRC2018 masks spans); `metrics` adds
    task-specific metrics ``(scores, labels, batch, weights) -> dict``.
    """

    post: Callable[[Array], Array] | None = None
    metrics: Callable[..., dict[str, Array]] | None = None

    def loss_fn(self, model: nnx.Module, batch: Mapping[str, Any], *,
                key: PRNGKeyArray | None, deterministic: bool
                ) -> tuple[Array, dict[str, Array]]:
        scores = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch.get("token_type_ids"),
                       span_mask=batch["span_mask"], deterministic=deterministic, key=key)
        if self.post is not None:
            scores = self.post(scores)
        b, e, t, _ = scores.shape
        labels = span_labels(batch["spans"], scores.shape)
        per_row = multilabel_categorical_crossentropy(scores.reshape(b, e, t * t),
                                                      labels.reshape(b, e, t * t))
        weights = jnp.ones((b,), jnp.float32) if batch.get("weights") is None else \
            batch["weights"].astype(jnp.float32)
        weights = weights * batch["usable"].astype(jnp.float32)
        total = jnp.sum(weights)
        loss = jnp.sum(weights * per_row.mean(axis=1)) / jnp.maximum(total, 1e-9)
        metrics = {"f1": pointer_f1(scores, labels, weights)}
        if self.metrics is not None:
            metrics.update(self.metrics(scores, labels, batch, weights))
        return loss, metrics

    def collate(self, data: Mapping[str, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
        """The model's columns only (offsets and window maps stay on the host)."""
        return TaskBase.collate(self, {k: data[k] for k in MODEL_KEYS if k in data}, rows)


def pointer_outputs(model: nnx.Module, data: Mapping[str, np.ndarray], *, batch_size: int,
                    post: Callable[[Array], Any] = lambda s: s) -> Iterator[tuple[int, Any]]:
    """``(first row, post(scores) as numpy)`` per batch of `data`, in order, jitted.

    Every batch has `batch_size` rows (the last wraps around, then is cut), one compiled shape.
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state: Any, batch: dict[str, Array]) -> Any:
        scores = nnx.merge(graphdef, state)(
            batch["input_ids"], attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"], span_mask=batch["span_mask"],
            deterministic=True)
        return post(scores)

    n = len(data["input_ids"])
    for start in range(0, n, batch_size):
        rows = np.arange(start, start + batch_size) % n
        real = min(batch_size, n - start)
        out = forward(state, {k: data[k][rows] for k in
                              ("input_ids", "attention_mask", "token_type_ids", "span_mask")})
        yield start, jax.tree.map(lambda x: np.asarray(x)[:real], out)


def char_to_token_span(offsets: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
    """The token span ``(i, j)`` (inclusive) of chars ``[start, end)``: the tokens whose
    ``offsets [T, 2]`` overlap it; None when no text token does (specials have (0, 0)) or the
    tokens stop short of either end (a span cut by truncation)."""
    real = offsets[:, 1] > offsets[:, 0]
    hit = np.flatnonzero(real & (offsets[:, 1] > start) & (offsets[:, 0] < end))
    if hit.size == 0 or offsets[hit[0], 0] > start or offsets[hit[-1], 1] < end:
        return None
    return int(hit[0]), int(hit[-1])


def bio_records(path_or_sentences: str | Path | tuple[Sequence[Sequence[str]],
                                                      Sequence[Sequence[str]]],
                *, member: str | None = None) -> list[NerExample]:
    """`NerExample` records (ids 0, 1, ...) of char-BIO sentences, spans from `bio_to_spans`.

    `path_or_sentences`: a People's Daily style char-per-line file (`read_char_bio`), MSRA's
    zip (`read_msra_ner`, `member` picks its file), or ``(sentences, tags)`` as they return.
    A "character" of more than one letter stays one unit: spans count letters of the text.
    """
    if isinstance(path_or_sentences, (str, Path)):
        from jaxformer.io.zh_datasets import read_char_bio, read_msra_ner

        path = Path(path_or_sentences)
        sentences, tags = (read_msra_ner(path, member) if path.suffix == ".zip"
                           else read_char_bio(path))
    else:
        sentences, tags = path_or_sentences
    if len(sentences) != len(tags):
        raise ValueError(f"expected one tag list per sentence, got {len(sentences)} sentences "
                         f"and {len(tags)} tag lists")
    out = []
    for n, (chars, marks) in enumerate(zip(sentences, tags, strict=True)):
        if len(chars) != len(marks):
            raise ValueError(f"sentence {n}: {len(chars)} characters but {len(marks)} tags")
        at = np.concatenate([[0], np.cumsum([len(c) for c in chars])]).astype(int)
        spans = tuple((kind, int(at[s]), int(at[e])) for kind, s, e in bio_to_spans(marks))
        out.append(NerExample(n, "".join(chars), spans))
    return out


@dataclasses.dataclass(frozen=True)
class NerAdapter:
    """What `run_clue` needs of CLUENER (or any NER with char spans): encode ... submission.

    Attributes:
      types: the entity types, one GlobalPointer matrix each (e.g. ``("PER", "LOC", "ORG")``
        for MSRA / People's Daily through `bio_records`).
      limit: use only the first `limit` records of every split (smoke runs); None: all.
      use_bias: the pointer's Dense bias (Su's CLUENER head has none).
    """

    config: ClueConfig
    tokenizer: Any
    types: tuple[str, ...] = CLUENER_TYPES
    limit: int | None = None
    use_bias: bool = False

    best_metric = "f1"

    def take(self, records: Sequence[Any]) -> Sequence[Any]:
        return records if self.limit is None else records[:self.limit]

    def encode(self, records: Sequence[NerExample]) -> dict[str, np.ndarray]:
        """``{input_ids, attention_mask, token_type_ids, span_mask: [N, T], spans: [N, S, 3],
        usable: [N], offsets: [N, T, 2]}`` (T = max_len; S at least 1)."""
        records = self.take(records)
        enc = self.tokenizer.encode_batch([r.text for r in records],
                                          max_length=self.config.max_len,
                                          padding="max_length", return_offsets=True)
        offsets = enc["offset_mapping"]
        index = {t: e for e, t in enumerate(self.types)}
        rows = []
        for r, off in zip(records, offsets, strict=True):
            row = set()
            for kind, start, end in r.spans or ():
                if kind not in index:
                    raise ValueError(f"record {r.id!r}: entity type {kind!r} is not among "
                                     f"{list(self.types)}")
                tokens = char_to_token_span(off, start, end)
                if tokens is not None:
                    row.add((index[kind], *tokens))
            rows.append(sorted(row))
        spans = np.full((len(records), max([1, *map(len, rows)]), 3), -1, np.int32)
        for n, row in enumerate(rows):
            if row:
                spans[n, :len(row)] = row
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "token_type_ids": np.zeros_like(enc["input_ids"]),
                "span_mask": (offsets[..., 1] > offsets[..., 0]).astype(np.int32),
                "spans": spans,
                "usable": np.array([r.spans is not None for r in records], np.float32),
                "offsets": offsets}

    def task(self) -> PointerTask:
        return PointerTask()

    def build(self, pretrained: Encoder) -> PointerModel:
        return new_pointer_model(pretrained, len(self.types), self.config.head_size,
                                 seed=self.config.seed, use_bias=self.use_bias)

    def decode(self, scores: np.ndarray, offsets: np.ndarray
               ) -> list[tuple[tuple[str, int, int], ...]]:
        """Char spans ``(type, start, end exclusive)`` of ``scores [B, E, T, T] > 0``."""
        out = []
        for found, off in zip(decode_spans(scores), offsets, strict=True):
            out.append(tuple(sorted({(self.types[e], int(off[i, 0]), int(off[j, 1]))
                                     for e, i, j, _ in found if off[j, 1] > off[i, 0]},
                                    key=lambda s: (s[1], s[2], s[0]))))
        return out

    def predict(self, model: nnx.Module, data: dict[str, np.ndarray], records: Sequence[Any],
                *, batch_size: int | None = None) -> list[tuple[tuple[str, int, int], ...]]:
        """Each record's predicted char spans, in record order."""
        out: list[tuple[tuple[str, int, int], ...]] = []
        size = batch_size or self.config.micro_batch
        for start, scores in pointer_outputs(model, data, batch_size=size):
            out.extend(self.decode(scores, data["offsets"][start:start + len(scores)]))
        return out

    def score(self, predictions: Sequence[Any], records: Sequence[NerExample]
              ) -> dict[str, Any]:
        """`entity_f1` (micro, per type) against the records' spans."""
        records = self.take(records)
        return entity_f1(list(predictions), [r.spans for r in records])

    def submission(self, predictions: Sequence[Any], records: Sequence[NerExample]
                   ) -> dict[Any, NerExample]:
        """``{id: NerExample(id, text, predicted spans)}`` for the CLUENER writer."""
        return {r.id: NerExample(r.id, r.text, tuple(p))
                for r, p in zip(self.take(records), predictions, strict=True)}
