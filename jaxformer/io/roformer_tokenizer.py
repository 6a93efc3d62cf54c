"""Chinese RoFormer tokenization: jieba words first, then BERT WordPiece.

Chinese RoFormer checkpoints (``tokenizer_class: "RoFormerTokenizer"``) have
a word-level vocabulary: HF's ``RoFormerTokenizer`` segments the normalised
text with ``rjieba`` (``hmm=False``), keeps every jieba word found in the
vocabulary whole, splits the remaining words around CJK characters and on
whitespace, and only then runs WordPiece. Reusing the plain BERT pipeline
on such a checkpoint gives char-level ids the model was never trained on.

:class:`RoFormerTokenizer` does that pre-tokenization in Python and hands the
words to the Rust ``tokenizers`` engine with ``is_pretokenized=True``, so the
wrapped tokenizer has no custom (unserialisable) pre-tokenizer attached.
"""

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, processors

from .tensors import CheckpointError, read_json
from .tokenizer import (
    _NO_MAX_LENGTH,
    _SPECIAL_KEYS,
    WordPieceTokenizer,
    _read_vocab,
    _special_tokens,
    write_vocab,
)

__all__ = ["RoFormerTokenizer", "ROFORMER_TOKENIZER_CLASSES"]

# tokenizer_config.json's tokenizer_class values that mean "jieba + WordPiece".
ROFORMER_TOKENIZER_CLASSES = ("RoFormerTokenizer", "RoFormerTokenizerFast")


def _import_rjieba() -> Any:
    try:
        import rjieba
    except ImportError as e:  # pragma: no cover - rjieba is a declared dependency
        raise ImportError(
            "RoFormerTokenizer needs the rjieba package (pip install 'rjieba>=0.2,<0.3')"
        ) from e
    return rjieba


class RoFormerTokenizer(WordPieceTokenizer):
    """Jieba-segmenting WordPiece tokenizer with ``WordPieceTokenizer``'s interface.

    Matches HF ``RoFormerTokenizer``: the text is split on special tokens
    (``[CLS]``, ``[SEP]``, ``[MASK]``... as whole ids), each other span is
    normalised (``BertNormalizer`` without CJK splitting; lowercasing and
    accent stripping per ``do_lower_case``/``strip_accents``) and segmented
    by ``rjieba.tokenize(span, hmm=False)``. A jieba word in the vocabulary
    becomes one word; any other is split around CJK ideographs and on
    whitespace. WordPiece then runs on each word.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        model_max_length: int | None = None,
        special_tokens: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(vocab, dict) or not vocab:
            raise ValueError("vocab: expected a non-empty dict token -> id")
        specials = _special_tokens(dict(special_tokens or {}))
        tok = Tokenizer(
            models.WordPiece(
                dict(vocab), unk_token=specials["unk_token"], continuing_subword_prefix="##",
                max_input_chars_per_word=100,
            )
        )
        # No normalizer/pre-tokenizer on the Rust side: both run in Python
        # (_words) and the words arrive pre-split.
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
        self._jieba = _import_rjieba()
        self._vocab = dict(vocab)
        self._do_lower = bool(lowercase)
        self._strip_accents = strip_accents
        self._text_norm = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=False, strip_accents=strip_accents, lowercase=self._do_lower
        )
        # HF's JiebaPreTokenizer splits out-of-vocab jieba words with this one.
        self._word_norm = normalizers.BertNormalizer(
            clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False
        )
        # Special tokens are matched verbatim in the raw text (before
        # normalisation), longest first, as HF's added-token matcher does.
        present = sorted({specials[k] for k in _SPECIAL_KEYS if specials[k] in vocab}, key=len, reverse=True)
        self._special_set = frozenset(present)
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t in present) + ")") if present else None

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_directory(  # type: ignore[override]
        cls, directory: str | os.PathLike[str], *, lowercase: bool | None = None
    ) -> "RoFormerTokenizer":
        """Load from an HF RoFormer checkpoint dir: ``vocab.txt`` (else the
        WordPiece vocab inside ``tokenizer.json``) + ``tokenizer_config.json``.

        ``lowercase`` overrides the config's ``do_lower_case`` (default true).
        """
        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"tokenizer directory {d} does not exist (looked for vocab.txt in it)")
        config: dict[str, Any] = {}
        config_path = d / "tokenizer_config.json"
        if config_path.is_file():
            raw = read_json(config_path, what="tokenizer config")
            if not isinstance(raw, dict):
                raise CheckpointError(
                    f"tokenizer config {config_path}: expected a JSON object, got {type(raw).__name__}"
                )
            config = raw
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
        missing = [specials[k] for k in ("unk_token", "sep_token", "pad_token", "cls_token") if specials[k] not in vocab]
        if missing:
            raise CheckpointError(
                f"tokenizer directory {d}: expected special tokens {missing} in the vocabulary, but they are absent"
            )
        max_len = config.get("model_max_length")
        model_max_length = max_len if isinstance(max_len, int) and 0 < max_len < _NO_MAX_LENGTH else None
        do_lower = config.get("do_lower_case", True) if lowercase is None else lowercase
        strip = config.get("strip_accents")
        return cls(
            vocab,
            lowercase=bool(do_lower),
            strip_accents=None if strip is None else bool(strip),
            model_max_length=model_max_length,
            special_tokens=specials,
        )

    @property
    def lowercase(self) -> bool:
        return self._do_lower

    # -------------------------------------------------------- pre-tokenizing
    def _segment_words(self, span: str, out: list[str]) -> None:
        text = self._text_norm.normalize_str(span)
        for word, start, _end in self._jieba.tokenize(text, hmm=False):
            if word in self._vocab:
                out.append(word)
                continue
            # As HF's JiebaPreTokenizer: split around CJK chars and on
            # whitespace, then take each piece's length from the word's start
            # (so a piece after a skipped space is offset exactly as in HF).
            for piece in self._word_norm.normalize_str(word).split():
                chunk = text[start : start + len(piece)]
                start += len(piece)
                if chunk:
                    out.append(chunk)

    def words(self, text: str) -> list[str]:
        """The pre-tokenized words of ``text`` (before WordPiece)."""
        out: list[str] = []
        spans = [text] if self._special_re is None else self._special_re.split(text)
        for i, span in enumerate(spans):
            if i % 2 == 1 and span in self._special_set:
                out.append(span)  # a special token: one id, never normalised
            elif span:
                self._segment_words(span, out)
        return out

    def tokenize(self, text: str) -> list[str]:
        """Token strings of ``text`` without ``[CLS]``/``[SEP]``."""
        enc = self._tok.encode(self.words(text), is_pretokenized=True, add_special_tokens=False)
        return list(enc.tokens)

    # --------------------------------------------------------------- encoding
    # `WordPieceTokenizer.encode_batch` does validation, truncation and padding; only the
    # word split differs: jieba words go to the Rust tokenizer already split.
    _is_pretokenized = True

    def _pretokenize(self, texts: list[str]) -> list[Any]:
        return [self.words(t) for t in texts]

    # ----------------------------------------------------------------- saving
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``vocab.txt`` (id order) and ``tokenizer_config.json``
        (``tokenizer_class: RoFormerTokenizer``); no ``tokenizer.json``, whose
        pre-tokenizer could not express the jieba step. Reloads identically
        with ``from_directory`` and with ``transformers.AutoTokenizer``."""
        d = Path(directory)
        write_vocab(d, self._vocab)
        config: dict[str, Any] = {
            "tokenizer_class": "RoFormerTokenizer",
            "do_lower_case": self._do_lower,
            "strip_accents": self._strip_accents,
            "tokenize_chinese_chars": True,
            **self._specials,
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
