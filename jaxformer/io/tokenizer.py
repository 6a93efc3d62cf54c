"""BERT WordPiece tokenization: text -> int32 numpy id arrays, and back.

A thin wrapper over the Rust ``tokenizers`` library (fast, and the same
engine HF's "fast" tokenizers use, so ids match ``AutoTokenizer``). It loads
either a ``tokenizer.json`` or, for older checkpoints, builds the BERT
pipeline from ``vocab.txt`` + ``tokenizer_config.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from .tensors import CheckpointError, read_json

__all__ = ["WordPieceTokenizer"]

_PADDINGS = ("longest", "max_length")
# HF writes this sentinel (int(1e30)) for "no model_max_length known".
_NO_MAX_LENGTH = 10**20
_SPECIAL_KEYS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_DEFAULT_SPECIALS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}


def _token_str(value: Any) -> str | None:
    # tokenizer_config.json stores special tokens as "[CLS]" or {"content": "[CLS]", ...}.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _special_tokens(config: dict[str, Any]) -> dict[str, str]:
    out = dict(_DEFAULT_SPECIALS)
    for key in _SPECIAL_KEYS:
        tok = _token_str(config.get(key))
        if tok is not None:
            out[key] = tok
    return out


def _normalizer_lowercase(normalizer: Any) -> bool:
    """Whether a serialized normalizer (``tokenizer.json``'s dict) lowercases."""
    if not isinstance(normalizer, dict):
        return False
    kind = normalizer.get("type")
    if kind == "BertNormalizer":
        return bool(normalizer.get("lowercase", False))
    if kind == "Lowercase":
        return True
    if kind == "Sequence":
        return any(_normalizer_lowercase(n) for n in normalizer.get("normalizers", []))
    return False


def _read_vocab(path: Path) -> dict[str, int]:
    # Same rule as HF's load_vocab: one token per line, id = line number,
    # only the trailing newline stripped (tokens may contain other spaces).
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab[line.rstrip("\n")] = index
    if not vocab:
        raise CheckpointError(f"vocab file {path}: expected one token per line, got an empty file")
    return vocab


def _bert_from_vocab(
    vocab_path: Path, *, lowercase: bool, strip_accents: bool | None, chinese: bool, specials: dict[str, str]
) -> Tokenizer:
    """Build HF's BERT fast-tokenizer pipeline from a ``vocab.txt``."""
    vocab = _read_vocab(vocab_path)
    required = ("unk_token", "sep_token", "pad_token", "cls_token")
    missing = [specials[k] for k in required if specials[k] not in vocab]
    if missing:
        raise CheckpointError(
            f"vocab file {vocab_path}: expected special tokens {missing} in it, but they are absent"
        )
    cls, sep = specials["cls_token"], specials["sep_token"]
    tok = Tokenizer(
        models.WordPiece(
            vocab,
            unk_token=specials["unk_token"],
            continuing_subword_prefix="##",
            max_input_chars_per_word=100,
        )
    )
    # strip_accents=None means "strip iff lowercasing" (BERT uncased behaviour).
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=chinese, strip_accents=strip_accents, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    # Registered as special added tokens (matched verbatim before normalisation),
    # as HF does, so a literal "[MASK]" in text becomes one id in both loaders.
    present = [specials[k] for k in _SPECIAL_KEYS if specials[k] in vocab]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in present])
    return tok


def write_vocab(directory: Path, vocab: dict[str, int]) -> None:
    """Write ``vocab.txt`` (one token per line, in id order), refusing gaps and newlines."""
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    for expected, (token, tid) in enumerate(by_id):
        if tid != expected:
            raise ValueError(f"vocabulary: expected contiguous ids for vocab.txt, id {expected} is missing")
        if "\n" in token:
            raise ValueError(f"vocabulary: token id {tid} contains a newline, so vocab.txt cannot hold it")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("".join(t + "\n" for t, _ in by_id), encoding="utf-8")


def read_tokenizer_config(d: Path, *, looked_for: str) -> dict[str, Any]:
    """``tokenizer_config.json`` of directory `d` as a dict ({} when absent); a missing
    directory or a config that is not a JSON object is a `CheckpointError`."""
    if not d.is_dir():
        raise CheckpointError(f"tokenizer directory {d} does not exist (looked for {looked_for} in it)")
    config_path = d / "tokenizer_config.json"
    if not config_path.is_file():
        return {}
    raw = read_json(config_path, what="tokenizer config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"tokenizer config {config_path}: expected a JSON object, got {type(raw).__name__}")
    return raw


class WordPieceTokenizer:
    """BERT-style WordPiece tokenizer producing ``[B, T]`` int32 arrays.

    Wraps a ``tokenizers.Tokenizer`` whose model is WordPiece. Truncation
    and padding are per call (``encode_batch``); any stored in the wrapped
    tokenizer are removed so they cannot silently change results.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        model_max_length: int | None = None,
        special_tokens: dict[str, str] | None = None,
    ) -> None:
        spec = json.loads(tokenizer.to_str())
        kind = spec.get("model", {}).get("type")
        if kind != "WordPiece":
            raise ValueError(f"tokenizer: expected a WordPiece model, got {kind}")
        # Own a private copy so later edits by the caller cannot reach us.
        self._tok = Tokenizer.from_str(tokenizer.to_str())
        self._tok.no_truncation()
        self._tok.no_padding()
        self._specials = dict(_DEFAULT_SPECIALS)
        self._specials["unk_token"] = spec["model"].get("unk_token", "[UNK]")
        self._specials.update(special_tokens or {})
        ids: dict[str, int] = {}
        for key in ("pad_token", "cls_token", "sep_token", "unk_token"):
            token = self._specials[key]
            tid = self._tok.token_to_id(token)
            if tid is None:
                raise ValueError(f"tokenizer: expected {key} {token!r} in the vocabulary, but it is absent")
            ids[key] = tid
        self._ids = ids
        self._normalizer = spec.get("normalizer")
        self._lowercase = _normalizer_lowercase(self._normalizer)
        if model_max_length is not None and model_max_length < 1:
            raise ValueError(f"model_max_length: expected >= 1 or None, got {model_max_length}")
        self.model_max_length = model_max_length
        # (max_length, padding) -> configured copy; see _configured().
        self._cache: dict[tuple[int, str], Tokenizer] = {}

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_directory(
        cls, directory: str | os.PathLike[str], *, lowercase: bool | None = None
    ) -> WordPieceTokenizer:
        """Load from an HF checkpoint dir: ``tokenizer.json``, else ``vocab.txt``.

        ``lowercase`` overrides ``tokenizer_config.json``'s ``do_lower_case``
        when building from ``vocab.txt``; with ``tokenizer.json`` it may only
        confirm the file's normalizer (a mismatch raises ``ValueError``).
        """
        d = Path(directory)
        json_path, vocab_path = d / "tokenizer.json", d / "vocab.txt"
        config = read_tokenizer_config(d, looked_for="tokenizer.json or vocab.txt")
        max_len = config.get("model_max_length")
        model_max_length = max_len if isinstance(max_len, int) and 0 < max_len < _NO_MAX_LENGTH else None
        specials = _special_tokens(config)
        if json_path.is_file():
            try:
                tok = Tokenizer.from_file(str(json_path))
            except Exception as e:  # the Rust side raises a bare Exception
                raise CheckpointError(f"cannot load tokenizer file {json_path}: {e}") from e
            file_lower = _normalizer_lowercase(json.loads(tok.to_str()).get("normalizer"))
            if lowercase is not None and lowercase != file_lower:
                raise ValueError(
                    f"lowercase: {json_path}'s normalizer has lowercase={file_lower}, "
                    f"but lowercase={lowercase} "
                    f"was requested; omit the argument or edit tokenizer.json"
                )
            # tokenizer.json knows its own unk token; config specials cover the rest.
            specials.pop("unk_token")
            return cls(tok, model_max_length=model_max_length, special_tokens=specials)
        if vocab_path.is_file():
            do_lower = config.get("do_lower_case", True) if lowercase is None else lowercase
            strip = config.get("strip_accents")
            tok = _bert_from_vocab(
                vocab_path,
                lowercase=bool(do_lower),
                strip_accents=None if strip is None else bool(strip),
                chinese=bool(config.get("tokenize_chinese_chars", True)),
                specials=specials,
            )
            return cls(tok, model_max_length=model_max_length, special_tokens=specials)
        raise CheckpointError(f"tokenizer directory {d} has neither tokenizer.json nor vocab.txt")

    # ------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._ids["pad_token"]

    @property
    def cls_id(self) -> int:
        return self._ids["cls_token"]

    @property
    def sep_id(self) -> int:
        return self._ids["sep_token"]

    @property
    def unk_id(self) -> int:
        return self._ids["unk_token"]

    @property
    def lowercase(self) -> bool:
        return self._lowercase

    @property
    def backend(self) -> Tokenizer:
        """The wrapped ``tokenizers.Tokenizer`` (no truncation/padding set)."""
        return self._tok

    # --------------------------------------------------------------- encoding
    def _configured(self, max_length: int, padding: str) -> Tokenizer:
        # Truncation/padding are mutable settings on a Tokenizer; a private,
        # cached copy per setting keeps encode_batch free of shared-state
        # side effects (a copy costs ~20 ms, so cache a few).
        key = (max_length, padding)
        tok = self._cache.get(key)
        if tok is None:
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            tok = Tokenizer.from_str(self._tok.to_str())
            tok.enable_truncation(max_length, strategy="longest_first")
            tok.enable_padding(
                pad_id=self.pad_id,
                pad_type_id=0,
                pad_token=self._specials["pad_token"],
                length=max_length if padding == "max_length" else None,
            )
            self._cache[key] = tok
        return tok

    @staticmethod
    def _check_texts(name: str, texts: object) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(
                f"{name}: expected a list of str, got {type(texts).__name__} (wrap a single text in a list)"
            )
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"{name}[{i}]: expected str, got {type(t).__name__}")
        return list(texts)

    # Subclasses that split words in Python (jieba) return word lists here and set the flag.
    _is_pretokenized = False

    def _pretokenize(self, texts: list[str]) -> tuple[list[Any], list[Any]]:
        """What `encode_batch` hands the Rust tokenizer (raw texts, unless a subclass splits),
        and per text what `_offset_rows` needs to map offsets back to it."""
        return texts, [None] * len(texts)

    def _offset_rows(self, encs: Sequence[Any], aligns: tuple[list[Any], list[Any] | None]) -> np.ndarray:
        """``[B, T, 2]`` char offsets into each original text; (0, 0) for added tokens and padding."""
        del aligns  # the Rust normalizer tracks alignments itself (char offsets for a str)
        width = len(encs[0].ids) if encs else 0
        return np.array([e.offsets for e in encs], dtype=np.int32).reshape(len(encs), width, 2)

    def tokenize(self, text: str) -> list[str]:
        """Token strings of ``text`` without ``[CLS]``/``[SEP]``."""
        return list(self._tok.encode(text, add_special_tokens=False).tokens)

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        max_length: int,
        pairs: Sequence[str] | None = None,
        padding: str = "longest",
        return_offsets: bool = False,
    ) -> dict[str, np.ndarray]:
        """Tokenize a batch: ``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]``.

        Returns int32 arrays ``input_ids``, ``attention_mask``,
        ``token_type_ids``, each ``[B, T]``: ``T`` is ``max_length`` for
        ``padding="max_length"``, else the longest row (at most
        ``max_length``). Truncation is longest-first for pairs, as in HF.
        With ``return_offsets``, also ``offset_mapping`` int32 ``[B, T, 2]``:
        each token's ``[start, end)`` char offsets into its original text
        (the pair's own text for segment B), as HF's
        ``return_offsets_mapping``; ``[CLS]``, ``[SEP]`` and padding get (0, 0).
        """
        batch = self._check_texts("texts", texts)
        second = None if pairs is None else self._check_texts("pairs", pairs)
        if second is not None and len(second) != len(batch):
            raise ValueError(f"pairs: expected {len(batch)} texts (one per text), got {len(second)}")
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise TypeError(f"max_length: expected int, got {type(max_length).__name__}")
        post = self._tok.post_processor
        specials = 0 if post is None else post.num_special_tokens_to_add(second is not None)
        need = max(2, specials)
        if max_length < need:
            # tokenizers silently skips truncation when the special tokens alone
            # exceed max_length, so refuse up front.
            raise ValueError(
                f"max_length: expected >= {need} "
                f"(room for the special tokens{' of a pair' if second is not None else ''}), "
                f"got {max_length}"
            )
        if padding not in _PADDINGS:
            raise ValueError(f"padding: expected one of {_PADDINGS}, got {padding!r}")
        width = max_length if padding == "max_length" else 0
        if not batch:
            empty = np.zeros((0, width), dtype=np.int32)
            out = {"input_ids": empty, "attention_mask": empty.copy(), "token_type_ids": empty.copy()}
            if return_offsets:
                out["offset_mapping"] = np.zeros((0, width, 2), dtype=np.int32)
            return out
        tok = self._configured(max_length, padding)
        first, first_aligns = self._pretokenize(batch)
        second_aligns = None
        inputs: list[Any] = first
        if second is not None:
            words_b, second_aligns = self._pretokenize(second)
            inputs = list(zip(first, words_b))
        encs = tok.encode_batch(inputs, is_pretokenized=self._is_pretokenized)
        out = {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int32),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int32),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int32),
        }
        if return_offsets:
            out["offset_mapping"] = self._offset_rows(encs, (first_aligns, second_aligns))
        return out

    def decode(self, ids: Sequence[int] | np.ndarray, *, skip_special_tokens: bool = True) -> str:
        """Ids ``[T]`` back to text (WordPiece ``##`` pieces joined)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # ----------------------------------------------------------------- saving
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``tokenizer.json``, ``vocab.txt`` (id order) and ``tokenizer_config.json``.

        The result reloads identically with ``from_directory`` and with
        ``transformers.AutoTokenizer.from_pretrained``.
        """
        d = Path(directory)
        write_vocab(d, self._tok.get_vocab(with_added_tokens=True))
        self._tok.save(str(d / "tokenizer.json"))
        config: dict[str, Any] = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self._lowercase,
            **self._specials,
        }
        if isinstance(self._normalizer, dict) and self._normalizer.get("type") == "BertNormalizer":
            # Written so loaders that rebuild from vocab.txt get the same normalizer.
            config["strip_accents"] = self._normalizer.get("strip_accents")
            config["tokenize_chinese_chars"] = bool(self._normalizer.get("handle_chinese_chars", True))
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
