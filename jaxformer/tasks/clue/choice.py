"""The multiple-choice CLUE tasks, C3 and CHID, for `run_clue`: one score per option, softmax.

Post 8739 (https://kexue.fm/archives/8739, code github.com/bojone/CLUE-bert4keras, ``src/c3.py``
and ``src/chid.py``) scores every (question, option) pair with its own forward pass: Dense(1)
on the last layer's first token, a softmax over the question's options, cross-entropy.

Layouts (segment ids all 0 by default; ``segment_ids="pair"`` gives 1 from the second segment):

- **C3**: ``[CLS] passage [SEP] question [SEP] option [SEP]``, the order of Su's ``c3.py``
  (``p_ids + q_ids + c_ids``), the passage's lines joined with ``"||"`` as there. When too long,
  the longest of option, question and passage loses its last token until the row fits
  (bert4keras' ``truncate_sequences(maxlen, -2, c, q, p)``; computed in closed form, ties cut
  the option, then the question, then the passage). Su pads a question to 4 options with the
  text "无效答案"; here the missing options are masked instead (``option_mask`` 0, score
  `mask_value`, so they never win and take no probability).
- **CHID**: one row per blank: ``[CLS] candidate [SEP] text [SEP]`` (Su's ``chid.py``:
  ``encode(c)[0] + token_ids``), where in `text` the current blank is ``[unused1]`` (`ClueConfig.blank_token`) and every
  other blank of the passage four ``[MASK]``. Both are inserted as ids: the WordPiece tokenizer
  splits a literal ``[unused1]`` into ``[ u ##nus ##ed ##1 ]``. The text is cut to a window
  centred on the blank: the longer side loses tokens at its far end until the row fits (Su
  does this on characters, dropping whole pieces; here on tokens, so a ``[MASK]`` run at the
  window's edge may be cut). The window leaves room for the record's longest candidate, so
  a blank's candidates share it; FewCLUE's 7 candidates are padded to 10 with masked options.

Decoding CHID: the scores of all blanks sharing one candidate list (a line of CLUE's file, Su
groups by it; each FewCLUE record alone) form a blanks x candidates matrix, decoded by
`hungarian_assign` (each idiom once) and by `independent_argmax`; `score` reports both
(``accuracy``, ``accuracy_argmax``, per blank). C3's prediction is the argmax option.

Shape letters: N rows (questions or blanks), B batch, C options, T tokens.
"""

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Integer, PRNGKeyArray

from jaxformer import functional as F
from jaxformer.global_pointer import mask_value
from jaxformer.initializers import truncated_normal
from jaxformer.io.clue import ChidExample, ChoiceQuestion
from jaxformer.models.encoder import Encoder
from jaxformer.models.modules import Dense
from jaxformer.tasks.base import TaskBase
from jaxformer.tasks.clue.chid_decode import hungarian_assign, independent_argmax
from jaxformer.tasks.clue.config import ClueConfig
from jaxformer.tasks.clue.metrics import accuracy
from jaxformer.tasks.theseus_recipe import truncate_encoder

C3_OPTIONS = 4
CHID_OPTIONS = 10
PASSAGE_JOIN = "||"
OTHER_BLANK, OTHER_BLANK_RUN = "[MASK]", 4
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "option_mask", "labels")
_BLANK = re.compile(r"#idiom\d*#")
_CLUE_BLANK = re.compile(r"#idiom\d+#")
Arrays = dict[str, np.ndarray]


class ChoiceScorer(nnx.Module):
    """``score[b, c] = Dense(1)(Drop(h[b, c, 0]))``: one score per option, from its first token."""

    def __init__(self, encoder: Encoder, *, rngs: nnx.Rngs, dropout: float | None = None):
        """Args: the encoder (held, not copied); `rngs` draws the scorer's weight, Su's
        ``TruncatedNormal(initializer_range)`` (uncorrected, as Keras'); `dropout` defaults to
        the encoder's ``hidden_dropout``."""
        cfg = encoder.config
        rate = cfg.hidden_dropout if dropout is None else dropout
        if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {rate!r}")
        self.encoder = encoder
        self.scorer = Dense(cfg.hidden_size, 1, rngs=rngs, param_dtype=jnp.dtype(cfg.param_dtype),
                            init=truncated_normal(cfg.initializer_range, corrected=False),
                            precision=cfg.matmul_precision)
        self.dropout_rate = rate

    def __call__(self, input_ids: Integer[Array, "B C T"], *,
                 attention_mask: Integer[Array, "B C T"],
                 token_type_ids: Integer[Array, "B C T"] | None = None,
                 option_mask: Integer[Array, "B C"] | None = None, deterministic: bool,
                 key: PRNGKeyArray | None = None) -> Float[Array, "B C"]:
        """Option scores ``[B, C]``; masked options (``option_mask`` 0) get `mask_value`."""
        b, c, t = input_ids.shape
        flat = lambda x: None if x is None else x.reshape(b * c, t)  # noqa: E731
        enc_key = None if key is None else jax.random.fold_in(key, 0)
        head_key = None if key is None else jax.random.fold_in(key, 1)
        out = self.encoder(flat(input_ids), attention_mask=flat(attention_mask),
                           token_type_ids=flat(token_type_ids), deterministic=deterministic,
                           key=enc_key)
        first = F.dropout(out.last_hidden_state[:, 0, :], self.dropout_rate, key=head_key,
                          deterministic=deterministic)
        scores = self.scorer(first)[:, 0].reshape(b, c)
        if option_mask is None:
            return scores
        return jnp.where(option_mask > 0, scores,
                         jnp.asarray(mask_value(scores.dtype), scores.dtype))


def new_choice_scorer(pretrained: Encoder, *, seed: int) -> ChoiceScorer:
    """A `ChoiceScorer` over a copy of `pretrained` (never modified), its head from `seed`."""
    return ChoiceScorer(truncate_encoder(pretrained, pretrained.config.num_layers),
                        rngs=nnx.Rngs(seed))


def choice_loss(scores: Float[Array, "B C"], labels: Integer[Array, "B"], *,
                weights: Float[Array, "B"] | None = None
                ) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Weighted mean softmax cross-entropy over the options and accuracy (fp32).

    Rows with ``labels < 0`` (unlabelled) weigh 0, as do padding rows (``weights`` 0); with no
    weight at all both numbers are 0.
    """
    logp = jax.nn.log_softmax(scores.astype(jnp.float32), axis=-1)
    valid = labels >= 0
    y = jnp.where(valid, labels, 0).astype(jnp.int32)
    nll = -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
    correct = (jnp.argmax(scores, axis=-1).astype(jnp.int32) == y).astype(jnp.float32)
    w = valid.astype(jnp.float32)
    if weights is not None:
        w = w * weights.astype(jnp.float32)
    total = jnp.sum(w)
    total = jnp.where(total > 0, total, jnp.float32(1))
    return jnp.sum(w * nll) / total, jnp.sum(w * correct) / total


@dataclasses.dataclass(frozen=True)
class ChoiceTask(TaskBase):
    """Cross-entropy over each row's options (`choice_loss`), metric ``accuracy``."""

    dropout: float | None = None

    def build_model(self, *, rngs: nnx.Rngs, encoder: Encoder | None = None) -> ChoiceScorer:
        """A scorer over `encoder` (held, not copied), its head drawn from `rngs`."""
        if encoder is None:
            raise ValueError("ChoiceTask.build_model needs encoder= (an Encoder), got None")
        return ChoiceScorer(encoder, rngs=rngs, dropout=self.dropout)

    def loss_fn(self, model: nnx.Module, batch: Mapping[str, Any], *,
                key: PRNGKeyArray | None, deterministic: bool
                ) -> tuple[Array, dict[str, Array]]:
        scores = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch.get("token_type_ids"),
                       option_mask=batch["option_mask"], deterministic=deterministic, key=key)
        loss, acc = choice_loss(scores, batch["labels"], weights=batch.get("weights"))
        return loss, {"accuracy": acc}

    def collate(self, data: Mapping[str, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
        """The model's columns only (CHID's blank -> record maps stay on the host)."""
        return TaskBase.collate(self, {k: data[k] for k in MODEL_KEYS if k in data}, rows)


# --------------------------------------------------------------------------- token layouts


def piece_ids(tokenizer: Any, texts: Sequence[str], *, chunk: int = 256) -> list[list[int]]:
    """The token ids of each text without [CLS]/[SEP], through the tokenizer's own
    `encode_batch` (so a jieba tokenizer segments as it does elsewhere)."""
    out: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        part = list(texts[start:start + chunk])
        enc = tokenizer.encode_batch(part, max_length=1 << 20)
        for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True):
            out.append([int(i) for i in ids[mask > 0][1:-1]])
    return out


def longest_first(lengths: Sequence[int], room: int) -> list[int]:
    """Kept lengths after cutting the longest piece by one token until ``sum <= room``; ties
    cut the earlier piece (bert4keras' ``truncate_sequences``), in closed form."""
    if sum(lengths) <= room:
        return list(lengths)
    lo, hi = 0, max(lengths)  # the largest cap L with sum(min(l, L)) <= room
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if sum(min(n, mid) for n in lengths) <= room else (lo, mid - 1)
    keep = [min(n, lo) for n in lengths]
    spare = room - sum(keep)
    for i in reversed(range(len(lengths))):  # the last-cut pieces keep one more token
        if spare and lengths[i] > lo:
            keep[i] += 1
            spare -= 1
    return keep


def c3_row(passage: list[int], question: list[int], option: list[int], *, max_len: int,
           cls: int, sep: int) -> tuple[list[int], list[int]]:
    """``(ids, segments)`` of ``[CLS] passage [SEP] question [SEP] option [SEP]`` (module doc);
    segments 0 up to the first [SEP], 1 after."""
    n_option, n_question, n_passage = longest_first(
        [len(option), len(question), len(passage)], max_len - 4)
    first = [cls] + passage[:n_passage] + [sep]
    second = question[:n_question] + [sep] + option[:n_option] + [sep]
    return first + second, [0] * len(first) + [1] * len(second)


def centred_window(left: list[int], right: list[int], room: int) -> tuple[int, int]:
    """How many tokens of `left` (its end) and `right` (its start) a window of `room` tokens
    keeps around a one-token blank: the longer side is cut first (Su's ``sample_split``)."""
    budget = room - 1
    if budget < 0:
        raise ValueError(f"no room for the blank: room={room}")
    if len(left) + len(right) <= budget:
        return len(left), len(right)
    keep_left = min(len(left), max(budget - len(right), (budget + 1) // 2))
    return keep_left, min(len(right), budget - keep_left)


def chid_text(pieces: Sequence[list[int]], blank: int, room: int, *, mark: int,
              mask: int) -> list[int]:
    """The text of blank `blank` of a passage split at its blanks into `pieces` (ids): that
    blank `mark`, the others ``[mask] * 4``, cut to `room` tokens centred on the blank."""
    run = [mask] * OTHER_BLANK_RUN
    left: list[int] = []
    for i, p in enumerate(pieces[:blank + 1]):
        left += (run if i else []) + p
    right: list[int] = []
    for i, p in enumerate(pieces[blank + 1:]):
        right += (run if i else []) + p
    keep_left, keep_right = centred_window(left, right, room)
    return left[len(left) - keep_left:] + [mark] + right[:keep_right]


def _stack(rows: Sequence[Sequence[tuple[list[int], list[int]] | None]], options: int,
           pad: int, filler: tuple[list[int], list[int]]) -> Arrays:
    """``[N, C, T]`` arrays of rows of ``(ids, segments)`` per option (None: masked)."""
    width = max(len(ids) for row in rows for ids, _ in (o or filler for o in row))
    n = len(rows)
    ids = np.full((n, options, width), pad, np.int32)
    types = np.zeros((n, options, width), np.int32)
    attn = np.zeros((n, options, width), np.int32)
    option_mask = np.zeros((n, options), np.int32)
    for i, row in enumerate(rows):
        for j in range(options):
            got = row[j] if j < len(row) else None
            tok, seg = filler if got is None else got
            ids[i, j, :len(tok)], types[i, j, :len(tok)], attn[i, j, :len(tok)] = tok, seg, 1
            option_mask[i, j] = got is not None
    return {"input_ids": ids, "attention_mask": attn, "token_type_ids": types,
            "option_mask": option_mask}


class ChidPrediction(NamedTuple):
    """One CHID record's candidate index per blank, jointly (Hungarian) and independently."""

    hungarian: tuple[int, ...]
    argmax: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ChoiceAdapter:
    """What `run_clue` needs of C3 and CHID (``config.task``): encode, build, train, predict,
    score and the submission (module doc)."""

    config: ClueConfig
    tokenizer: Any

    best_metric = "accuracy"

    def __post_init__(self) -> None:
        if self.config.task not in ("c3", "chid"):
            raise ValueError(f"ChoiceAdapter handles c3 and chid, got {self.config.task!r}")

    def _id(self, token: str, option: str | None = None) -> int:
        tid = self.tokenizer.backend.token_to_id(token)
        if tid is None:
            hint = (f"; set ClueConfig.{option} (--{option.replace('_', '-')}) to a token it "
                    "has" if option else "")
            raise ValueError(f"{self.config.task} needs a {token} token; the vocabulary has "
                             f"none{hint}")
        return int(tid)

    # ---------------------------------------------------------------- encode
    def encode(self, records: Sequence[Any]) -> Arrays:
        """``{input_ids, attention_mask, token_type_ids: [N, C, T], option_mask: [N, C],
        labels: [N]}`` int32 (-1 unlabelled); CHID's rows are blanks and add ``record``,
        ``blank`` (its index in the record) and ``group`` (the decoding group) ``[N]``."""
        if not records:
            raise ValueError("records must hold at least one record, got none")
        out = self._encode_c3(records) if self.config.task == "c3" else self._encode_chid(records)
        if self.config.segment_ids == "zero":
            out["token_type_ids"] = np.zeros_like(out["token_type_ids"])
        return out

    def _encode_c3(self, records: Sequence[ChoiceQuestion]) -> Arrays:
        for r in records:
            if not isinstance(r, ChoiceQuestion):
                raise TypeError(f"c3 records must be ChoiceQuestion, got {type(r).__name__}")
            if not 1 <= len(r.choices) <= C3_OPTIONS:
                raise ValueError(f"c3 question {r.id!r}: expected 1..{C3_OPTIONS} choices, got "
                                 f"{len(r.choices)}")
        texts = sorted({PASSAGE_JOIN.join(r.passage) for r in records}
                       | {r.question for r in records} | {c for r in records for c in r.choices})
        ids = dict(zip(texts, piece_ids(self.tokenizer, texts), strict=True))
        cls, sep = self.tokenizer.cls_id, self.tokenizer.sep_id
        rows = [[c3_row(ids[PASSAGE_JOIN.join(r.passage)], ids[r.question], ids[c],
                        max_len=self.config.max_len, cls=cls, sep=sep) for c in r.choices]
                for r in records]
        out = _stack(rows, C3_OPTIONS, self.tokenizer.pad_id, ([cls, sep], [0, 0]))
        out["labels"] = np.asarray([-1 if r.label is None else r.label for r in records],
                                   np.int32)
        return out

    def _encode_chid(self, records: Sequence[ChidExample]) -> Arrays:
        mark, mask = self._id(self.config.blank_token, "blank_token"), self._id(OTHER_BLANK)
        cls, sep = self.tokenizer.cls_id, self.tokenizer.sep_id
        pieces_of, texts = [], set()
        for r in records:
            if not isinstance(r, ChidExample):
                raise TypeError(f"chid records must be ChidExample, got {type(r).__name__}")
            pieces = _BLANK.split(r.content)
            if len(pieces) != len(r.blanks) + 1:
                raise ValueError(f"chid record {r.id!r}: expected {len(r.blanks)} blanks in "
                                 f"its content, found {len(pieces) - 1}")
            if len(r.candidates) > CHID_OPTIONS:
                raise ValueError(f"chid record {r.id!r}: expected at most {CHID_OPTIONS} "
                                 f"candidates, got {len(r.candidates)}")
            pieces_of.append(pieces)
            texts.update(pieces)
            texts.update(r.candidates)
        order = sorted(texts)
        ids = dict(zip(order, piece_ids(self.tokenizer, order), strict=True))
        rows, labels, record, blank = [], [], [], []
        for i, (r, pieces) in enumerate(zip(records, pieces_of, strict=True)):
            # An idiom is 4 tokens; a (malformed) long candidate keeps max_len // 4 of them.
            cands = [ids[c][:max(1, self.config.max_len // 4)] for c in r.candidates]
            room = self.config.max_len - 3 - max(len(c) for c in cands)
            piece_tokens = [ids[p] for p in pieces]
            for k in range(len(r.blanks)):
                text = chid_text(piece_tokens, k, room, mark=mark, mask=mask)
                rows.append([([cls] + c + [sep] + text + [sep],
                              [0] * (len(c) + 2) + [1] * (len(text) + 1)) for c in cands])
                labels.append(-1 if r.answers is None else r.answers[k])
                record.append(i)
                blank.append(k)
        if not rows:
            raise ValueError("chid records hold no #idiom# blank at all")
        out = _stack(rows, CHID_OPTIONS, self.tokenizer.pad_id, ([cls, sep], [0, 0]))
        out["labels"] = np.asarray(labels, np.int32)
        out["record"] = np.asarray(record, np.int32)
        out["blank"] = np.asarray(blank, np.int32)
        out["group"] = np.asarray(chid_groups(records), np.int32)[out["record"]]
        return out

    # ---------------------------------------------------------------- train
    def task(self) -> ChoiceTask:
        return ChoiceTask()

    def build(self, pretrained: Encoder) -> ChoiceScorer:
        """A scorer over a copy of `pretrained`, its head drawn from the config's seed."""
        return new_choice_scorer(pretrained, seed=self.config.seed)

    # ---------------------------------------------------------------- predict
    def scores(self, model: nnx.Module, data: Arrays, *, batch_size: int | None = None
               ) -> np.ndarray:
        """``[N, C]`` float32 option scores of every row (masked options at `mask_value`), in
        batches of `batch_size` rows (default: the config's, as the training evaluation)."""
        batch_size = batch_size or self.config.batch_size
        graphdef, state = nnx.split(model)

        @jax.jit
        def forward(state: Any, batch: dict[str, Array]) -> Array:
            return nnx.merge(graphdef, state)(
                batch["input_ids"], attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"], option_mask=batch["option_mask"],
                deterministic=True)

        n, out = len(data["input_ids"]), []
        for start in range(0, n, batch_size):
            rows = np.arange(start, start + batch_size) % n  # one compiled shape
            got = forward(state, {k: data[k][rows] for k in MODEL_KEYS[:4]})
            out.append(np.asarray(got, np.float32)[:min(batch_size, n - start)])
        return np.concatenate(out)

    def predict(self, model: nnx.Module, data: Arrays, records: Sequence[Any]) -> list[Any]:
        """C3: the argmax choice of each question; CHID: a `ChidPrediction` per record."""
        scores = self.scores(model, data)
        if self.config.task == "c3":
            return [int(j) for j in np.argmax(scores, axis=1)]
        return decode_groups(scores, data, records)

    def score(self, predictions: Sequence[Any], records: Sequence[Any]) -> dict[str, float]:
        """``{"accuracy": %}`` (CHID: per blank, Hungarian; plus ``accuracy_argmax``)."""
        if self.config.task == "c3":
            return {"accuracy": accuracy(list(predictions), [r.label for r in records])}
        gold = [a for r in records for a in r.answers]
        return {"accuracy": accuracy([j for p in predictions for j in p.hungarian], gold),
                "accuracy_argmax": accuracy([j for p in predictions for j in p.argmax], gold)}

    def submission(self, predictions: Sequence[Any], records: Sequence[Any]) -> dict[Any, int]:
        """C3 ``{question id: choice}``; CHID with CLUE's numbered blanks ``{"#idiomNNNNNN#":
        candidate}``, FewCLUE's one ``#idiom#`` per record ``{record id: candidate}``."""
        pairs = zip(records, predictions, strict=True)
        if self.config.task == "c3":
            return {r.id: int(p) for r, p in pairs}
        out: dict[Any, int] = {}
        for r, p in pairs:
            if all(_CLUE_BLANK.fullmatch(b) for b in r.blanks):
                out.update({b: int(j) for b, j in zip(r.blanks, p.hungarian, strict=True)})
            else:
                out[r.id] = int(p.hungarian[0])
        return out


def chid_groups(records: Sequence[ChidExample]) -> list[int]:
    """A decoding group per record: CLUE's passages of one line (ids ``<line>-<k>`` with
    numbered blanks and the same candidates, consecutive) share one, as Su decodes a line's
    blanks together; a line with more blanks than candidates, and every other record, is its
    own group."""
    def line(r: ChidExample) -> Any:
        numbered = all(_CLUE_BLANK.fullmatch(b) for b in r.blanks)
        if numbered and isinstance(r.id, str) and re.fullmatch(r".+-\d+", r.id):
            return (r.id.rsplit("-", 1)[0], r.candidates)
        return None

    keys = [line(r) for r in records]
    out, group, i = [0] * len(records), 0, 0
    while i < len(records):
        j = i + 1
        while keys[i] is not None and j < len(records) and keys[j] == keys[i]:
            j += 1
        if sum(len(r.blanks) for r in records[i:j]) > len(records[i].candidates):
            j = i + 1
        for k in range(i, j):
            out[k] = group
        group, i = group + 1, j
    return out


def decode_groups(scores: np.ndarray, data: Arrays, records: Sequence[ChidExample]
                  ) -> list[ChidPrediction]:
    """Each record's `ChidPrediction` from the blank rows' ``scores [N, C]`` (module doc): a
    group's [blanks, candidates] matrix, cut to its real candidates, is decoded both ways
    (argmax alone where blanks outnumber candidates)."""
    hung, arg = ([[0] * len(r.blanks) for r in records] for _ in range(2))
    for g in np.unique(data["group"]):
        rows = np.flatnonzero(data["group"] == g)
        cands = int(data["option_mask"][rows[0]].sum())
        matrix = scores[rows, :cands].astype(np.float64)
        joint = hungarian_assign(matrix) if len(rows) <= cands else independent_argmax(matrix)
        alone = independent_argmax(matrix)
        for n, h, a in zip(rows, joint, alone, strict=True):
            hung[data["record"][n]][data["blank"][n]] = h
            arg[data["record"][n]][data["blank"][n]] = a
    return [ChidPrediction(tuple(h), tuple(a)) for h, a in zip(hung, arg, strict=True)]
