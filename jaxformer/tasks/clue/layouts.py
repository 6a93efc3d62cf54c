"""The input layouts of post 8739's sentence-level CLUE tasks, as token-id arrays.

- single text (IFLYTEK, TNEWS): ``[CLS] text [SEP]``;
- pairs (AFQMC, CMNLI, OCNLI): ``[CLS] a [SEP] b [SEP]``, truncated longest-first, with every
  segment id 0 by default (the post: RoBERTa has no NSP, so segment 1 may be untrained; the
  option ``segment_ids="pair"`` gives BERT's 0/1);
- WSC: the text with span 1 wrapped as ``_..._`` and span 2 (the pronoun) as ``[...]``
  (CLUE-bert4keras ``wsc.py``), then as a single text;
- CSL: the keywords joined with "；" as text a and the abstract as text b.

Each encoder returns ``{"input_ids", "attention_mask", "token_type_ids": [N, T], "labels":
[N]}`` int32 (unlabelled records get label -1), padded to the longest row, at most `max_len`.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxformer.io.clue import CslExample, PairExample, TextExample, WscExample

Arrays = dict[str, np.ndarray]


def mark_wsc(text: str, span1: tuple[str, int], span2: tuple[str, int]) -> str:
    """`text` with span 1 as ``_span1_`` and span 2 as ``[span2]`` (char indices of the
    original text)."""
    (t1, i1), (t2, i2) = span1, span2
    for name, (t, i) in (("span1", span1), ("span2", span2)):
        if not (0 <= i and i + len(t) <= len(text)) or text[i:i + len(t)] != t:
            raise ValueError(f"{name} ({t!r} at {i}) does not match the text: expected "
                             f"{t!r}, found {text[i:i + len(t)]!r}")
    # (position, is_start, mark): inserted right to left so earlier indices stay valid; at one
    # position the start mark goes in first, so an end mark lands before it ("_a_[b]").
    inserts = [(i1, True, "_"), (i1 + len(t1), False, "_"), (i2, True, "["),
               (i2 + len(t2), False, "]")]
    chars = list(text)
    for pos, _, mark in sorted(inserts, reverse=True):
        chars.insert(pos, mark)
    return "".join(chars)


def text_pair(record: Any) -> tuple[str, str | None]:
    """``(text a, text b or None)`` of a sentence-level record, in the post's layout."""
    if isinstance(record, TextExample):
        return record.text, None
    if isinstance(record, PairExample):
        return record.text_a, record.text_b
    if isinstance(record, WscExample):
        return mark_wsc(record.text, record.span1, record.span2), None
    if isinstance(record, CslExample):
        return "；".join(record.keywords), record.abstract
    raise TypeError(f"records must be TextExample, PairExample, WscExample or CslExample, got "
                    f"{type(record).__name__}")


def encode_sentences(records: Sequence[Any], tokenizer: Any, *, max_len: int,
                     segment_ids: str = "zero") -> Arrays:
    """Token ids of sentence-level `records` (module doc): ``[N, T]`` arrays and ``labels``."""
    if segment_ids not in ("zero", "pair"):
        raise ValueError(f"segment_ids must be 'zero' or 'pair', got {segment_ids!r}")
    if not records:
        raise ValueError("records must hold at least one record, got none")
    pairs = [text_pair(r) for r in records]
    has_b = {b is not None for _, b in pairs}
    if len(has_b) != 1:
        raise ValueError("records mix single texts and pairs; encode one task at a time")
    second = [b for _, b in pairs] if has_b.pop() else None
    enc = tokenizer.encode_batch([a for a, _ in pairs], pairs=second, max_length=max_len)
    out = {k: np.asarray(enc[k], np.int32) for k in ("input_ids", "attention_mask",
                                                       "token_type_ids")}
    if segment_ids == "zero":
        out["token_type_ids"] = np.zeros_like(out["token_type_ids"])
    out["labels"] = np.asarray([-1 if r.label is None else r.label for r in records], np.int32)
    return out
