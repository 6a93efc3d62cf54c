"""Chinese word-level tokenization: jieba words first, then BERT WordPiece.

Word-level Chinese checkpoints (RoFormer, WoBERT) add Chinese words to a BERT
``vocab.txt``. The rule, from Su's WoBERT post (https://kexue.fm/archives/7758)
and bert4keras' ``Tokenizer(pre_tokenize=...)``, which HF's
``RoFormerTokenizer`` also implements:

1. normalise as BERT does (clean control chars, lower-case, strip accents);
2. segment the text with jieba (``HMM=False``);
3. keep every jieba word found in the vocabulary as one token;
4. split any other word as BERT does (around CJK ideographs and on
   whitespace, and, in bert4keras, around punctuation), then run WordPiece.

Plain BERT pre-tokenization would split every CJK character, so the added
words would never match. :class:`JiebaWordPieceTokenizer` does steps 1-4 in
Python and hands the words to the Rust ``tokenizers`` engine with
``is_pretokenized=True``; it keeps, per normalised char, the original char it
came from, so ``offset_mapping`` points into the original text.

Two segmenters, both jieba's dictionary and algorithm:

* ``"rjieba"`` (default): the Rust port HF's ``RoFormerTokenizer`` uses; ids
  then match HF exactly (HF does not split punctuation inside
  out-of-vocabulary words, so neither does this by default).
* ``"jieba"``: the ``jieba`` package, ``cut(..., HMM=False)``, as WoBERT's
  ``train.py``; punctuation inside out-of-vocabulary words is split, as in
  bert4keras.
"""

import json
import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, processors

from .tensors import CheckpointError, read_json
from .tokenizer import (_NO_MAX_LENGTH, _SPECIAL_KEYS, WordPieceTokenizer, _read_vocab, _special_tokens,
                        read_tokenizer_config, write_vocab)

__all__ = [
    "JIEBA_TOKENIZER_CLASSES",
    "ROFORMER_TOKENIZER_CLASSES",
    "SEGMENTERS",
    "JiebaWordPieceTokenizer",
    "RoFormerTokenizer",
    "Segmenter",
    "is_cjk_char",
    "is_punctuation",
]

SEGMENTERS = ("rjieba", "jieba")
# tokenizer_config.json's tokenizer_class values that mean "jieba + WordPiece".
JIEBA_TOKENIZER_CLASSES = ("RoFormerTokenizer", "RoFormerTokenizerFast")
ROFORMER_TOKENIZER_CLASSES = JIEBA_TOKENIZER_CLASSES
# Extra tokenizer_config.json keys (transformers ignores unknown keys).
SEGMENTER_KEY = "jaxformer_segmenter"
SPLIT_PUNCTUATION_KEY = "jaxformer_split_punctuation"

# BERT's _is_chinese_char: the CJK Unified Ideographs blocks (base, extensions A-E) and the
# compatibility ideographs; not Hiragana, Katakana or Hangul.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def is_cjk_char(ch: str) -> bool:
    """Whether ``ch`` is a CJK ideograph in BERT's sense (``_is_chinese_char``)."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def is_punctuation(ch: str) -> bool:
    """BERT's ``_is_punctuation``: every non-alphanumeric printable ASCII char (33-47, 58-64,
    91-96, 123-126, so ``$ + < = > ^ ` | ~`` count) plus any Unicode category ``P*``."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _import_rjieba() -> Any:
    try:
        import rjieba
    except ImportError as e:  # pragma: no cover - rjieba is a declared dependency
        raise ImportError("segmenter='rjieba' needs the rjieba package (pip install 'rjieba>=0.2,<0.3')") from e
    return rjieba


def _new_jieba() -> Any:
    """A private, initialised ``jieba.Tokenizer`` (not the global ``jieba.dt``, which callers may
    have given a user dictionary). Initialising parses jieba's bundled dict.txt and, on first use
    on a machine, writes a cache file (``jieba.cache``) to the temp dir, which later calls reuse."""
    try:
        import jieba
    except ImportError as e:  # pragma: no cover - jieba is a declared dependency
        raise ImportError("segmenter='jieba' needs the jieba package (pip install 'jieba>=0.42.1,<0.43')") from e
    tok = jieba.Tokenizer()
    # jieba logs "Building prefix dict ..." at DEBUG through its own stderr handler; silence it
    # while initialising, and put the caller's level back.
    logger = logging.getLogger("jieba")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        tok.initialize()
    finally:
        logger.setLevel(level)
    return tok


class Segmenter:
    """``segment(text) -> [(word, start)]``: jieba's dictionary segmentation (``HMM=False``) by
    ``"jieba"`` or ``"rjieba"``; the backend loads on first use."""

    def __init__(self, name: str) -> None:
        if name not in SEGMENTERS:
            raise ValueError(f"segmenter: expected one of {SEGMENTERS}, got {name!r}")
        self.name = name
        self._backend: Any = None

    def __call__(self, text: str) -> list[tuple[str, int]]:
        if self._backend is None:
            self._backend = _import_rjieba() if self.name == "rjieba" else _new_jieba()
        if self.name == "rjieba":
            return [(w, s) for w, s, _ in self._backend.tokenize(text, hmm=False)]
        return [(w, s) for w, s, _ in self._backend.tokenize(text, HMM=False)]


class JiebaWordPieceTokenizer(WordPieceTokenizer):
    """Jieba-segmenting WordPiece tokenizer with ``WordPieceTokenizer``'s interface.

    The text is split on special tokens (``[CLS]``, ``[SEP]``, ``[MASK]``... as whole ids);
    each other span is normalised (``BertNormalizer`` without CJK splitting; lower-casing and
    accent stripping per ``lowercase``/``strip_accents``, ``None`` = strip iff lower-casing)
    and segmented by the ``segmenter``. A word in the vocabulary is one word; any other is split
    around CJK ideographs, on whitespace and, if ``split_punctuation`` (default: true for
    ``"jieba"``, false for ``"rjieba"``), around punctuation. WordPiece runs on each word.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        *,
        segmenter: str = "rjieba",
        split_punctuation: bool | None = None,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        model_max_length: int | None = None,
        special_tokens: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(vocab, dict) or not vocab:
            raise ValueError(f"vocab: expected a non-empty dict token -> id, got {type(vocab).__name__} "
                             f"of length {len(vocab) if isinstance(vocab, dict) else 'n/a'}")
        self._segment = Segmenter(segmenter)
        specials = _special_tokens(dict(special_tokens or {}))
        tok = Tokenizer(
            models.WordPiece(
                dict(vocab), unk_token=specials["unk_token"], continuing_subword_prefix="##",
                max_input_chars_per_word=100,
            )
        )
        # No normalizer/pre-tokenizer on the Rust side: both run in Python (_analyse) and the
        # words arrive pre-split.
        tok.decoder = decoders.WordPiece(prefix="##")
        cls, sep = specials["cls_token"], specials["sep_token"]
        for key in ("cls_token", "sep_token"):
            if specials[key] not in vocab:
                raise ValueError(f"vocab: expected {key} {specials[key]!r} in it, but it is absent")
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
        )
        super().__init__(tok, model_max_length=model_max_length, special_tokens=specials)
        self._vocab = dict(vocab)
        self._do_lower = bool(lowercase)
        self._strip_accents = strip_accents
        self._split_punct = (segmenter == "jieba") if split_punctuation is None else bool(split_punctuation)
        self._text_norm = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=False, strip_accents=strip_accents, lowercase=self._do_lower
        )
        self._char_norm: dict[str, str] = {}  # char -> its normalised string (cache)
        # Special tokens are matched verbatim in the raw text (before normalisation),
        # longest first, as HF's added-token matcher does.
        present = sorted({specials[k] for k in _SPECIAL_KEYS if specials[k] in vocab}, key=len, reverse=True)
        self._special_set = frozenset(present)
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t in present) + ")") if present else None

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_directory(  # type: ignore[override]
        cls,
        directory: str | os.PathLike[str],
        *,
        lowercase: bool | None = None,
        segmenter: str | None = None,
    ) -> "JiebaWordPieceTokenizer":
        """Load ``vocab.txt`` (else the WordPiece vocab inside ``tokenizer.json``) and
        ``tokenizer_config.json``.

        ``lowercase`` overrides the config's ``do_lower_case`` (default true); ``segmenter``
        overrides its ``jaxformer_segmenter`` (default ``"rjieba"``, as HF RoFormer checkpoints).
        """
        d = Path(directory)
        config = read_tokenizer_config(d, looked_for="vocab.txt")
        vocab_path, json_path = d / "vocab.txt", d / "tokenizer.json"
        if vocab_path.is_file():
            vocab = _read_vocab(vocab_path)
        elif json_path.is_file():
            spec = read_json(json_path, what="tokenizer file")
            model = spec.get("model") if isinstance(spec, dict) else None
            if not isinstance(model, dict) or model.get("type") != "WordPiece" or not isinstance(
                model.get("vocab"), dict
            ):
                raise CheckpointError(f"tokenizer file {json_path}: expected a WordPiece model with a vocab")
            vocab = {str(k): int(v) for k, v in model["vocab"].items()}
        else:
            raise CheckpointError(f"tokenizer directory {d} has neither vocab.txt nor tokenizer.json")
        specials = _special_tokens(config)
        required = ("unk_token", "sep_token", "pad_token", "cls_token")
        missing = [specials[k] for k in required if specials[k] not in vocab]
        if missing:
            raise CheckpointError(
                f"tokenizer directory {d}: expected special tokens {missing} in the vocabulary, but they are absent"
            )
        seg = config.get(SEGMENTER_KEY, "rjieba") if segmenter is None else segmenter
        if seg not in SEGMENTERS:
            raise CheckpointError(f"tokenizer config {d / 'tokenizer_config.json'}: expected {SEGMENTER_KEY} in {SEGMENTERS}, "
                                  f"got {seg!r}")
        split = config.get(SPLIT_PUNCTUATION_KEY)
        max_len = config.get("model_max_length")
        model_max_length = max_len if isinstance(max_len, int) and 0 < max_len < _NO_MAX_LENGTH else None
        do_lower = config.get("do_lower_case", True) if lowercase is None else lowercase
        strip = config.get("strip_accents")
        return cls(
            vocab,
            segmenter=seg,
            split_punctuation=None if split is None else bool(split),
            lowercase=bool(do_lower),
            strip_accents=None if strip is None else bool(strip),
            model_max_length=model_max_length,
            special_tokens=specials,
        )

    @property
    def lowercase(self) -> bool:
        return self._do_lower

    @property
    def segmenter(self) -> str:
        return self._segment.name

    @property
    def split_punctuation(self) -> bool:
        return self._split_punct

    # -------------------------------------------------------- pre-tokenizing
    def _norm_char(self, ch: str) -> str:
        out = self._char_norm.get(ch)
        if out is None:
            out = self._char_norm[ch] = self._text_norm.normalize_str(ch)
        return out

    def normalize(self, text: str) -> str:
        """The text the segmenter sees: BERT's normalisation, applied char by char."""
        return "".join(self._norm_char(ch) for ch in text)

    def _split_oov(self, word: str, start: int, out: list[tuple[str, int]]) -> None:
        # An out-of-vocabulary word, as BERT's basic tokenizer: whitespace separates,
        # CJK chars (and punctuation if asked) stand alone; each piece keeps its start.
        begin = -1
        for i, ch in enumerate(word):
            alone = is_cjk_char(ch) or (self._split_punct and is_punctuation(ch))
            if ch.isspace() or alone:
                if begin >= 0:
                    out.append((word[begin:i], start + begin))
                    begin = -1
                if alone:
                    out.append((ch, start + i))
            elif begin < 0:
                begin = i
        if begin >= 0:
            out.append((word[begin:], start + begin))

    def _analyse(self, text: str) -> tuple[list[str], list[int], list[int], list[int]]:
        """``text`` -> (words, each word's start in the normalised text, and for each normalised
        char the ``[start, end)`` of the original char it came from)."""
        words: list[tuple[str, int]] = []
        src_start: list[int] = []
        src_end: list[int] = []
        spans = [text] if self._special_re is None else self._special_re.split(text)
        pos = 0  # in the original text
        for i, span in enumerate(spans):
            if i % 2 == 1 and span in self._special_set:
                # A special token: one word, never normalised.
                words.append((span, len(src_start)))
                src_start.extend(range(pos, pos + len(span)))
                src_end.extend(range(pos + 1, pos + len(span) + 1))
            elif span:
                base = len(src_start)
                pieces = []
                for k, ch in enumerate(span):
                    normed = self._norm_char(ch)
                    pieces.append(normed)
                    src_start.extend([pos + k] * len(normed))
                    src_end.extend([pos + k + 1] * len(normed))
                norm = "".join(pieces)
                for word, start in self._segment(norm):
                    if word in self._vocab:
                        words.append((word, base + start))
                    else:
                        self._split_oov(word, base + start, words)
            pos += len(span)
        return [w for w, _ in words], [s for _, s in words], src_start, src_end

    def words(self, text: str) -> list[str]:
        """The pre-tokenized words of ``text`` (before WordPiece)."""
        return self._analyse(text)[0]

    def tokenize(self, text: str) -> list[str]:
        """Token strings of ``text`` without ``[CLS]``/``[SEP]``."""
        enc = self._tok.encode(self.words(text), is_pretokenized=True, add_special_tokens=False)
        return list(enc.tokens)

    # --------------------------------------------------------------- encoding
    # `WordPieceTokenizer.encode_batch` does validation, truncation and padding; only the word
    # split differs: jieba words go to the Rust tokenizer already split.
    _is_pretokenized = True

    def _pretokenize(self, texts: list[str]) -> tuple[list[Any], list[Any]]:
        analyses = [self._analyse(t) for t in texts]
        return [a[0] for a in analyses], analyses

    def _offset_rows(self, encs: Sequence[Any], aligns: tuple[list[Any], list[Any] | None]) -> np.ndarray:
        # The Rust engine gives word-relative offsets for pre-tokenized input; map them through
        # the word's start in the normalised text to the original chars.
        width = len(encs[0].ids) if encs else 0
        out = np.zeros((len(encs), width, 2), dtype=np.int32)
        for row, enc in enumerate(encs):
            for t, (seq, word, (a, b)) in enumerate(zip(enc.sequence_ids, enc.word_ids, enc.offsets)):
                if seq is None or word is None or b <= a:
                    continue
                side = aligns[seq]
                assert side is not None
                _, starts, src_start, src_end = side[row]
                out[row, t] = (src_start[starts[word] + a], src_end[starts[word] + b - 1])
        return out

    # ----------------------------------------------------------------- saving
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``vocab.txt`` (id order) and ``tokenizer_config.json``
        (``tokenizer_class: RoFormerTokenizer``, plus the segmenter and punctuation rule under
        ``jaxformer_*`` keys); no ``tokenizer.json``, whose pre-tokenizer could not express the
        jieba step. Reloads identically with ``from_directory``; ``transformers.AutoTokenizer``
        loads it as HF's ``RoFormerTokenizer`` (rjieba, punctuation inside unknown words
        unsplit), which matches exactly for the default ``segmenter="rjieba"``."""
        d = Path(directory)
        write_vocab(d, self._vocab)
        config: dict[str, Any] = {
            "tokenizer_class": "RoFormerTokenizer",
            "do_lower_case": self._do_lower,
            "strip_accents": self._strip_accents,
            "tokenize_chinese_chars": True,
            SEGMENTER_KEY: self.segmenter,
            SPLIT_PUNCTUATION_KEY: self._split_punct,
            **self._specials,
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")


# HF's name for the same rule (rjieba by default); kept so existing code and checkpoints load.
RoFormerTokenizer = JiebaWordPieceTokenizer
