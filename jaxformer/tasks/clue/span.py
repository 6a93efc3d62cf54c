"""CMRC2018 (span extraction) with a one-type GlobalPointer, as post 8739 does.

Layout: ``[CLS] question [SEP] context window [SEP]``, padded to ``max_len`` (post: 512). The
context is tokenized once and cut into windows that start every ``doc_stride`` tokens (post:
128) and are as long as the row allows, the last one reaching the context's end, so every
context token is in some window. The question keeps at most ``min(max_len // 4, max_len - 3 -
doc_stride)`` tokens, so a window is never shorter than the stride.

Labels (Su's convention): a window's label is the answer's token span when it lies wholly in
the window's context part, else ``(0, 0)``, the [CLS] "no answer here" span. Only spans inside
the context, and ``(0, 0)``, are valid: the pointer's ``span_mask`` is [CLS] plus the context
tokens, and the spans ``(0, j > 0)`` are masked too. The answer is the first one whose text is
at its ``answer_start``; otherwise (a start of -1 or off by some characters) the first
occurrence of an answer's text in the context; a question with neither gets weight 0 in the
loss (``usable``), so it trains nothing but is still predicted.

Prediction: per window the best span with ``1 <= start <= end``, both in the context, at most
``max_answer_len`` tokens (default 64, about 2.5x the longest dev answers' characters), then
per question the best-scoring window's span, mapped to context characters by the tokenizer's
offsets: ``context[offset[start].start : offset[end].end]``. The ``(0, 0)`` score is ignored, so
every question gets an answer (the official score counts a missing one as 0 anyway).

The official figures are `cmrc2018_scores` (EM, F1, their average). During training the best
dev checkpoint is chosen by ``f1``, Su's global-pointer F1 of the windows' labels (the label
``(0, 0)`` counts as a positive); ``exact`` is the window-level argmax-equals-label accuracy.
`run_clue` counts an epoch as ``questions // batch_size`` updates while the batches hold
windows, so an "epoch" sees about as many windows as there are questions.

Shape letters: N windows, B batch, T tokens (= max_len), Q questions.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike
from jaxtyping import Array

from jaxformer.global_pointer import mask_value
from jaxformer.io.clue import SpanQuestion
from jaxformer.models.encoder import Encoder
from jaxformer.tasks.clue.config import ClueConfig
from jaxformer.tasks.clue.metrics import cmrc2018_scores
from jaxformer.tasks.clue.ner import (PointerModel, PointerTask, char_to_token_span,
                                      new_pointer_model, pointer_outputs)

MAX_ANSWER_TOKENS = 64


def answer_chars(record: SpanQuestion) -> tuple[int, int] | None:
    """``(start, end exclusive)`` of the record's training answer (module doc), or None."""
    for text, start in record.answers:
        if text and start >= 0 and record.context[start:start + len(text)] == text:
            return start, start + len(text)
    for text, _ in record.answers:
        at = record.context.find(text) if text else -1
        if at >= 0:
            return at, at + len(text)
    return None


def window_starts(length: int, room: int, stride: int) -> list[int]:
    """Token starts of the windows of `room` tokens over `length` (stride <= room)."""
    starts = [0]
    while starts[-1] + room < length:
        starts.append(starts[-1] + stride)
    return starts


def mask_cls_row(scores: Array) -> Array:
    """`scores` ``[B, E, T, T]`` with the spans ``(0, j > 0)`` masked: [CLS] is only (0, 0)."""
    t = scores.shape[-1]
    bad = (jnp.arange(t)[:, None] == 0) & (jnp.arange(t)[None, :] > 0)
    return jnp.where(bad, jnp.asarray(mask_value(scores.dtype), scores.dtype), scores)


def best_spans(scores: ArrayLike, max_answer_len: int = MAX_ANSWER_TOKENS
               ) -> tuple[Array, Array, Array]:
    """``(start, end, score)`` ``[B]`` of each row's best span of ``scores [B, T, T]`` with
    ``1 <= start <= end < start + max_answer_len`` (masked entries never beat a real one)."""
    scores = jnp.asarray(scores)
    t = scores.shape[-1]
    i, j = jnp.arange(t)[:, None], jnp.arange(t)[None, :]
    ok = (i >= 1) & (j >= i) & (j - i < max_answer_len)
    s = jnp.where(ok, scores, jnp.asarray(mask_value(scores.dtype), scores.dtype))
    flat = jnp.argmax(s.reshape(s.shape[0], -1), axis=-1)
    return flat // t, flat % t, jnp.max(s.reshape(s.shape[0], -1), axis=-1)


def pick_answers(start: np.ndarray, end: np.ndarray, score: np.ndarray,
                 data: dict[str, np.ndarray], records: Sequence[SpanQuestion]) -> list[str]:
    """Each question's answer text: the span of its best window (`best_spans` per window)."""
    best = np.full(len(records), -np.inf)
    out = [""] * len(records)
    for n, q in enumerate(data["question"]):
        off = data["offsets"][n]
        a, b = int(start[n]), int(end[n])
        if score[n] > best[q] and off[b, 1] > off[a, 0] and data["span_mask"][n, a]:
            best[q] = score[n]
            out[q] = records[q].context[off[a, 0]:off[b, 1]]
    return out


def _exact(scores: Array, labels: Array, batch: dict[str, Array], weights: Array
           ) -> dict[str, Array]:
    b, _, t, _ = scores.shape
    pred = jnp.argmax(scores[:, 0].reshape(b, -1), axis=-1)
    gold = jnp.argmax(labels[:, 0].reshape(b, -1), axis=-1)
    hit = (pred == gold).astype(jnp.float32)
    return {"exact": jnp.sum(weights * hit) / jnp.maximum(jnp.sum(weights), 1e-9)}


@dataclasses.dataclass(frozen=True)
class SpanAdapter:
    """What `run_clue` needs of CMRC2018: encode, build, train, predict, score, submission.

    Attributes:
      limit: use only the first `limit` questions of every split (smoke runs); None: all.
      max_answer_len: the longest predicted answer, in tokens.
    """

    config: ClueConfig
    tokenizer: Any
    limit: int | None = None
    max_answer_len: int = MAX_ANSWER_TOKENS

    best_metric = "f1"

    def take(self, records: Sequence[Any]) -> Sequence[Any]:
        return records if self.limit is None else records[:self.limit]

    @property
    def max_question(self) -> int:
        cfg = self.config
        room = min(cfg.max_len // 4, cfg.max_len - 3 - cfg.doc_stride)
        if room < 1:
            raise ValueError(f"max_len={cfg.max_len} leaves no room for a question beside a "
                             f"window of doc_stride={cfg.doc_stride} tokens")
        return room

    def encode(self, records: Sequence[SpanQuestion]) -> dict[str, np.ndarray]:
        """Windows ``{input_ids, attention_mask, token_type_ids, span_mask: [N, T], spans:
        [N, 1, 3], usable: [N], offsets: [N, T, 2] (into the context), question: [N]}``."""
        records = self.take(records)
        tok, cfg = self.tokenizer, self.config
        contexts = sorted({r.context for r in records})
        which = {c: n for n, c in enumerate(contexts)}
        ctx = tok.encode_batch(contexts, max_length=1 << 30, return_offsets=True) if \
            contexts else None
        qs = tok.encode_batch([r.question for r in records], max_length=self.max_question + 2)
        rows: dict[str, list[Any]] = {k: [] for k in ("input_ids", "token_type_ids",
                                                        "span_mask", "spans", "usable",
                                                        "offsets", "question")}
        t = cfg.max_len
        for q, r in enumerate(records):
            c = which[r.context]
            length = int(ctx["attention_mask"][c].sum()) - 2
            ids, offs = ctx["input_ids"][c][1:1 + length], ctx["offset_mapping"][c][1:1 + length]
            question = qs["input_ids"][q][1:int(qs["attention_mask"][q].sum()) - 1]
            head = 2 + len(question)  # the first context position
            room = t - 1 - head
            chars = answer_chars(r)
            tokens = None if chars is None else char_to_token_span(offs, *chars)
            for s in window_starts(length, room, cfg.doc_stride):
                part = ids[s:s + room]
                row = np.full(t, tok.pad_id, np.int32)
                row[:head + len(part) + 1] = [tok.cls_id, *question, tok.sep_id, *part,
                                              tok.sep_id]
                types = np.zeros(t, np.int32)
                if cfg.segment_ids == "pair":
                    types[head:head + len(part) + 1] = 1
                mask = np.zeros(t, np.int32)
                mask[0] = 1
                mask[head:head + len(part)] = 1
                off = np.zeros((t, 2), np.int32)
                off[head:head + len(part)] = offs[s:s + room]
                label = (0, 0, 0)
                if tokens is not None and s <= tokens[0] and tokens[1] < s + len(part):
                    label = (0, head + tokens[0] - s, head + tokens[1] - s)
                for k, v in (("input_ids", row), ("token_type_ids", types), ("span_mask", mask),
                             ("spans", [label]), ("usable", float(tokens is not None)),
                             ("offsets", off), ("question", q)):
                    rows[k].append(v)
        out = {k: np.asarray(v, np.float32 if k == "usable" else np.int32)
               for k, v in rows.items()}
        if not records:
            out.update(input_ids=np.zeros((0, t), np.int32), token_type_ids=np.zeros(
                (0, t), np.int32), span_mask=np.zeros((0, t), np.int32), spans=np.zeros(
                (0, 1, 3), np.int32), offsets=np.zeros((0, t, 2), np.int32))
        out["attention_mask"] = (out["input_ids"] != tok.pad_id).astype(np.int32)
        return out

    def task(self) -> PointerTask:
        """Su's loss with the [CLS] row reduced to (0, 0); metrics ``f1`` and ``exact``."""
        return PointerTask(post=mask_cls_row, metrics=_exact)

    def build(self, pretrained: Encoder) -> PointerModel:
        """A one-type `PointerModel` over a copy of `pretrained`, its head from the seed."""
        return new_pointer_model(pretrained, 1, self.config.head_size, seed=self.config.seed,
                                 use_bias=True)

    def predict(self, model: nnx.Module, data: dict[str, np.ndarray],
                records: Sequence[SpanQuestion], *, batch_size: int | None = None
                ) -> list[str]:
        """Each question's answer text, in record order (module doc)."""
        records = self.take(records)
        start, end, score = [], [], []
        post = lambda s: best_spans(s[:, 0], self.max_answer_len)  # noqa: E731
        for _, (a, b, v) in pointer_outputs(model, data, post=post,
                                            batch_size=batch_size or self.config.micro_batch):
            start.append(a)
            end.append(b)
            score.append(v)
        if not start:
            return [""] * len(records)
        return pick_answers(np.concatenate(start), np.concatenate(end), np.concatenate(score),
                            data, records)

    def score(self, predictions: Sequence[str], records: Sequence[SpanQuestion]
              ) -> dict[str, float | int]:
        """`cmrc2018_scores` (em, f1, average, total, skipped) over the answered questions;
        {} when none has answers (an unlabelled test file)."""
        pairs = [(r, p) for r, p in zip(self.take(records), predictions, strict=True)
                 if r.answers]
        if not pairs:
            return {}
        return cmrc2018_scores({r.qid: p for r, p in pairs},
                               {r.qid: [a for a, _ in r.answers] for r, _ in pairs})

    def submission(self, predictions: Sequence[str], records: Sequence[SpanQuestion]
                   ) -> dict[str, str]:
        """``{question id: answer text}`` for the CMRC2018 writer."""
        return {r.qid: p for r, p in zip(self.take(records), predictions, strict=True)}
