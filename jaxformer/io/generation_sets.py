"""Generation pairs from CLUE files: CSL keywords and CMRC2018 question generation.

Used by ``python -m benchmarks.exp_unilm_r2`` (UniLM seq2seq, `jaxformer.tasks.seq2seq`); the
files are read by `jaxformer.io.clue.read_clue`.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .clue import read_clue

KEYWORD_SEPARATOR = "；"
Pairs = list[tuple[str, str]]


def csl_keyword_pairs(path: str | Path) -> Pairs:
    """``(abstract, "；".join(keywords))`` per distinct abstract with a record labelled 1.

    FewCLUE's csl holds each abstract several times, with label 1 (every keyword the paper's
    own) or 0 (some made up), and its label-1 records of one abstract carry different subsets
    and orders of the paper's keywords. So an abstract appears once, and its target is the
    union of its label-1 keywords in order of first appearance (label-0 keywords never enter).
    """
    keywords: dict[str, list[str]] = {}
    for r in read_clue("csl", path):
        if r.label == 1:
            seen = keywords.setdefault(r.abstract, [])
            seen += [k for k in r.keywords if k not in seen]
    return [(a, KEYWORD_SEPARATOR.join(k)) for a, k in keywords.items()]


def article_of(qid: str) -> str:
    """CMRC2018's article id of a question id (``DEV_12_QUERY_3`` -> ``DEV_12``)."""
    return qid.split("_QUERY_")[0]


def split_articles(records: Sequence[Any], *, seed: int = 0) -> tuple[list[Any], list[Any]]:
    """Questions of a seeded half of the articles, and of the other half."""
    articles = sorted({article_of(r.qid) for r in records})
    perm = np.random.default_rng(seed).permutation(len(articles))
    first = {articles[i] for i in perm[:len(articles) // 2]}
    return ([r for r in records if article_of(r.qid) in first],
            [r for r in records if article_of(r.qid) not in first])


def question_pair(record: Any, *, window: int) -> tuple[str, str] | None:
    """``(answer [SEP] passage window, question)``, or None when no answer lies in the passage.

    The window is ``window`` characters starting ``window // 2`` before the answer (shifted to
    stay inside the passage); the first answer whose start (or, for a start of -1 or off the
    text, whose first occurrence) locates it is used.
    """
    context = record.context
    for text, start in record.answers:
        if not text:
            continue
        if not (0 <= start and context[start:start + len(text)] == text):
            start = context.find(text)
        if start < 0:
            continue
        lo = max(0, min(start - window // 2, len(context) - window))
        return f"{text}[SEP]{context[lo:lo + window]}", record.question
    return None
