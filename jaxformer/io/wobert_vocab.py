"""WoBERT's word-level vocabulary, built from a char-level BERT ``vocab.txt`` and jieba's dictionary.

Su, "提速不掉点：基于词颗粒度的中文WoBERT" (https://kexue.fm/archives/7758) and WoBERT's
``train.py`` (https://github.com/ZhuiyiTechnology/WoBERT):

1. Simplify the base vocab: keep ``[PAD] [UNK] [CLS] [SEP] [MASK]`` first, in that order, then
   every other token in id order except the redundant ones: a token longer than one char whose
   stem (a leading ``##`` stripped) contains a CJK ideograph or a punctuation char. That drops
   ``##`` + Chinese char pieces (a word-level model segments Chinese with jieba, never WordPiece),
   multi-char tokens with punctuation, and ``[unusedN]`` (``[`` is punctuation).
2. Add jieba's dictionary words in descending frequency (ties: dictionary order), skipping words
   already present, until ``num_words`` are added. Su adds 20,000 and gets 33,586 tokens.

"CJK" and "punctuation" are BERT's: :func:`~jaxformer.io.jieba_tokenizer.is_cjk_char` (the CJK
Unified Ideographs blocks and compatibility ideographs) and
:func:`~jaxformer.io.jieba_tokenizer.is_punctuation` (ASCII 33-47, 58-64, 91-96, 123-126 and
Unicode category ``P*``).
"""

import importlib.resources
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .jieba_tokenizer import JiebaWordPieceTokenizer, is_cjk_char, is_punctuation

__all__ = ["WOBERT_SPECIALS", "build_wobert_vocab", "is_redundant_token", "jieba_word_freqs", "save_wobert_vocab"]

WOBERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def is_redundant_token(token: str) -> bool:
    """Whether WoBERT drops ``token``: longer than one char, and its stem (``##`` stripped)
    holds a CJK ideograph or a punctuation char."""
    if len(token) <= 1:
        return False
    stem = token[2:] if token.startswith("##") else token
    return any(is_cjk_char(c) or is_punctuation(c) for c in stem)


def jieba_word_freqs() -> dict[str, int]:
    """jieba's bundled dictionary (``dict.txt``: ``word freq [tag]`` per line) as word -> freq,
    in dictionary order; a repeated word keeps its first position and its last frequency, as
    ``jieba.dt.FREQ`` does."""
    text = (importlib.resources.files("jieba") / "dict.txt").read_text(encoding="utf-8")
    freqs: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(" ")
        if not parts[0]:
            continue
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"jieba dict.txt line {number}: expected 'word freq [tag]', got {line!r}")
        freqs[parts[0]] = int(parts[1])
    return freqs


def _read_tokens(path: Path) -> list[str]:
    # One token per line, as vocab.txt; only the trailing newline stripped.
    if not path.is_file():
        raise FileNotFoundError(f"base_vocab_path {path}: expected an existing vocab.txt file, got no such file")
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    if not tokens:
        raise ValueError(f"base_vocab_path {path}: expected one token per line, got an empty file")
    return tokens


def build_wobert_vocab(
    base_vocab_path: str | os.PathLike[str],
    *,
    num_words: int,
    word_freqs: Mapping[str, int] | None = None,
) -> tuple[list[str], dict[str, int]]:
    """WoBERT's vocabulary: the simplified base vocab plus ``num_words`` jieba words.

    Args:
        base_vocab_path: a char-level BERT ``vocab.txt`` (e.g. bert-base-chinese's).
        num_words: how many dictionary words to add (Su: 20,000).
        word_freqs: word -> frequency, in dictionary order (ties keep it); default
            :func:`jieba_word_freqs`.

    Returns:
        ``(tokens, stats)``: the ``V`` tokens in id order, and counts ``base`` (distinct base
        tokens), ``dropped``, ``kept`` (specials included), ``added`` and ``final`` (= ``V``).
    """
    if isinstance(num_words, bool) or not isinstance(num_words, int) or num_words < 1:
        raise ValueError(f"num_words: expected an int >= 1, got {num_words!r}")
    base = list(dict.fromkeys(_read_tokens(Path(base_vocab_path))))  # distinct, first occurrence
    missing = [t for t in WOBERT_SPECIALS if t not in base]
    if missing:
        raise ValueError(f"base_vocab_path {base_vocab_path}: expected the special tokens {list(WOBERT_SPECIALS)} "
                         f"in it, got a vocab without {missing}")
    tokens = list(WOBERT_SPECIALS)
    dropped = 0
    for token in base:
        if token in WOBERT_SPECIALS:
            continue
        if is_redundant_token(token):
            dropped += 1
        else:
            tokens.append(token)
    kept = len(tokens)
    freqs = jieba_word_freqs() if word_freqs is None else word_freqs
    present = set(tokens)
    # sorted() is stable, so equal frequencies keep dictionary order.
    added = 0
    for word in sorted(freqs, key=lambda w: -freqs[w]):
        if added == num_words:
            break
        if word not in present and "\n" not in word:
            tokens.append(word)
            present.add(word)
            added += 1
    if added < num_words:
        raise ValueError(f"num_words: expected at most {added} (the dictionary's words not already in the "
                         f"vocab), got {num_words}")
    stats = {"base": len(base), "dropped": dropped, "kept": kept, "added": added, "final": len(tokens)}
    return tokens, stats


def save_wobert_vocab(
    tokens: list[str], directory: str | os.PathLike[str], **tokenizer_kwargs: Any
) -> JiebaWordPieceTokenizer:
    """Write a loadable WoBERT tokenizer directory (``vocab.txt`` + ``tokenizer_config.json``,
    segmenter ``"jieba"``) and return the tokenizer. ``tokenizer_kwargs`` go to
    :class:`JiebaWordPieceTokenizer` (e.g. ``model_max_length=512``)."""
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"tokens: expected distinct tokens, got {len(tokens) - len(set(tokens))} repeats")
    tokenizer_kwargs.setdefault("segmenter", "jieba")
    tok = JiebaWordPieceTokenizer({t: i for i, t in enumerate(tokens)}, **tokenizer_kwargs)
    tok.save(directory)
    return tok
