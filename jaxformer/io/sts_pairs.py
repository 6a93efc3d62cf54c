"""Sentence-pair files for STS evaluation, in three formats, as one `SentencePairs` type.

| format  | layout                                                             | sets            |
|---------|--------------------------------------------------------------------|-----------------|
| `pairs` | headerless ``s1\\ts2\\tscore-or-label``                            | CNSD STS-B ``.data``, LCQMC, AFQMC, OPPO |
| `paws`  | TSV with the header ``id sentence1 sentence2 label``               | PAWS-X          |
| `stsb`  | ``stsbenchmark.tsv.gz`` (sentence-transformers' STS-B): a header naming at least ``split``, ``score``, ``sentence1``, ``sentence2``; gzip or plain | English STS-B |

A malformed line raises ValueError ``path:line: what was expected, what was found``.
NLI triplets for supervised SimCSE (premise, entailment, contradiction) come from a
``s1\\ts2\\tlabel`` NLI file (`nli_triplets`).
"""

import dataclasses
import gzip
from collections import defaultdict
from pathlib import Path

import numpy as np

from .zh_datasets import (PAWS_X_HEADER, _convert, _split_lines, _tsv_rows)

FORMATS = ("pairs", "paws", "stsb")
STSB_SPLITS = ("train", "dev", "test")
_STSB_COLUMNS = ("split", "score", "sentence1", "sentence2")


@dataclasses.dataclass(frozen=True)
class SentencePairs:
    """N scored sentence pairs from one file.

    Attributes:
      s1, s2: the two sides, N strings each.
      scores: [N] float32 gold scores (graded similarity or 0/1 labels).
      lines: [N] int32 1-based line numbers in `path`.
      path, format: where they came from.
    """

    s1: tuple[str, ...]
    s2: tuple[str, ...]
    scores: np.ndarray
    lines: np.ndarray
    path: str
    format: str

    def __len__(self) -> int:
        return len(self.s1)

    def sentences(self) -> list[str]:
        """Every distinct sentence of both sides, first appearance first (embed these once)."""
        return list(dict.fromkeys(self.s1 + self.s2))


def _pairs_rows(path):
    for where, number, (s1, s2, score) in _tsv_rows(path, 3):
        yield number, s1, s2, _convert(score, float, where, "score")


def _paws_rows(path):
    for where, number, (_, s1, s2, label) in _tsv_rows(path, 4, header=PAWS_X_HEADER):
        yield number, s1, s2, float(_convert(label, int, where, "label"))


def _stsb_rows(path, split):
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    columns = None
    for number, line in _split_lines(data, str(path)):
        where = f"{path}:{number}"
        fields = line.split("\t")
        if columns is None:
            missing = [c for c in _STSB_COLUMNS if c not in fields]
            if missing:
                raise ValueError(f"{where}: expected a header naming the columns "
                                 f"{list(_STSB_COLUMNS)}, found {line[:80]!r}")
            columns = {name: i for i, name in enumerate(fields)}
            continue
        if not line.strip():
            continue
        if len(fields) != len(columns):
            raise ValueError(f"{where}: expected {len(columns)} tab-separated fields, found "
                             f"{len(fields)} in {line[:80]!r}")
        if split is not None and fields[columns["split"]] != split:
            continue
        score = _convert(fields[columns["score"]], float, where, "score")
        yield number, fields[columns["sentence1"]], fields[columns["sentence2"]], score


def read_sts_pairs(path: str | Path, format: str = "pairs", *, split: str | None = None
                   ) -> SentencePairs:
    """The scored pairs of `path`.

    Args:
      path: the file.
      format: ``pairs``, ``paws`` or ``stsb`` (module docstring).
      split: ``stsb`` only: keep the rows of one split (``train``, ``dev`` or ``test``); None
        keeps all.
    """
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {list(FORMATS)}, got {format!r}")
    if split is not None and (format != "stsb" or split not in STSB_SPLITS):
        raise ValueError(f"split: expected None, or one of {list(STSB_SPLITS)} with format "
                         f"'stsb'; got {split!r} with format {format!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"path: expected an existing {format} file, found no file {path}")
    rows = {"pairs": lambda: _pairs_rows(path), "paws": lambda: _paws_rows(path),
            "stsb": lambda: _stsb_rows(path, split)}[format]()
    lines, s1, s2, scores = [], [], [], []
    for number, a, b, score in rows:
        if not np.isfinite(score):
            raise ValueError(f"{path}:{number}: expected a finite score, found {score!r}")
        lines.append(number)
        s1.append(a)
        s2.append(b)
        scores.append(score)
    if not lines:
        raise ValueError(f"{path}: expected at least one sentence pair, found none")
    return SentencePairs(tuple(s1), tuple(s2), np.asarray(scores, np.float32),
                         np.asarray(lines, np.int32), str(path), format)


def nli_triplets(path: str | Path) -> list[tuple[str, str, str]]:
    """``(premise, entailed, contradicted)`` triplets of a ``s1\\ts2\\tlabel`` NLI file
    (Chinese-MNLI): for each premise, every entailment hypothesis paired with its first
    contradiction (supervised SimCSE's positives and hard negatives, arXiv 2104.08821 §4)."""
    entailed: dict[str, list[str]] = defaultdict(list)
    contradicted: dict[str, list[str]] = defaultdict(list)
    for where, _, (premise, hypothesis, label) in _tsv_rows(path, 3):
        if label == "entailment":
            entailed[premise].append(hypothesis)
        elif label == "contradiction":
            contradicted[premise].append(hypothesis)
        elif label != "neutral":
            raise ValueError(f"{where}: expected the label entailment, neutral or contradiction, "
                             f"found {label!r}")
    return [(p, e, contradicted[p][0]) for p, hyps in entailed.items() if contradicted[p]
            for e in hyps]
