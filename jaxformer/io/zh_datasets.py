"""Readers for the public Chinese NLP data sets, one small function per file format.

Every reader takes a path and returns plain Python lists; a malformed line raises ValueError
``path:line: what was expected, what was found``. The formats (see the data folder's README):

* :func:`read_pair_tsv`: ``s1\\ts2\\tlabel`` (AFQMC, LCQMC, OPPO-xiaobu, Chinese-MNLI);
  :func:`read_stsb`: ``s1\\ts2\\tscore`` (Chinese STS-B, CNSD); :func:`read_paws_x`: TSV with
  the header ``id sentence1 sentence2 label``.
* :func:`read_json_lines`: CLUE JSON lines (one object a line), with :func:`json_texts`,
  :func:`fewclue_texts` (the text fields of each FewCLUE task, :data:`FEWCLUE_TEXT_FIELDS`) and
  :func:`read_cluener` (text and entity spans).
* :func:`c3_texts`, :func:`cmrc2018_texts`: every text of a C3 or SQuAD-style CMRC2018 file.
* :func:`read_char_bio`: ``char tag`` lines, a blank line between sentences (People's Daily
  NER); :func:`read_msra_ner`: the same format inside ``dh_msra.zip``, read without extracting.
* :func:`read_thucnews`: ``title\\tlabel``; :func:`read_label_csv`: CSV ``label,review``
  (ChnSentiCorp, waimai).

The classification loaders that name files inside a data folder live in ``zh_tasks``.
"""

import csv
import json
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# FewCLUE's text fields per task (github.com/CLUEbenchmark/FewCLUE, datasets/<task>/*.json).
FEWCLUE_TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "bustm": ("sentence1", "sentence2"),
    "chid": ("content",),
    "cluewsc": ("text",),
    "csl": ("abst",),
    "csldcp": ("content",),
    "eprstmt": ("sentence",),
    "iflytek": ("sentence",),
    "ocnli": ("sentence1", "sentence2"),
    "tnews": ("sentence",),
}
CHID_BLANK = "#idiom#"
_BIO_TAG = re.compile(r"O|[BIES]-[A-Za-z_]+")


def _decode_lines(raw_lines, where):  # per-line helpers stay unannotated: no per-yield checks
    """``(line number, line without its end-of-line)`` of UTF-8 bytes; a leading BOM is
    dropped and a bad byte sequence names ``where:line``."""
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{where}:{number}: expected UTF-8 text, found an invalid byte "
                             f"sequence ({err.reason} at byte {err.start})") from None
        yield number, line.rstrip("\r\n")


def _split_lines(data, where):
    """`_decode_lines` of a whole file's bytes, decoded in one go (the fast path); only a file
    that fails to decode is walked line by line to name the bad line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        yield from _decode_lines(data.splitlines(keepends=True), where)
        return
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        yield number, line.rstrip("\r")


def _lines(path):
    return _split_lines(Path(path).read_bytes(), str(path))


def _tsv_rows(path, n_fields, *, header=None):
    """``(where, line, fields)`` of the non-blank lines of a tab-separated file, each with
    exactly `n_fields` fields; with `header`, the first line must be exactly that header."""
    first = header is not None
    for number, line in _lines(path):
        where = f"{path}:{number}"
        if first:
            if line.split("\t") != list(header):
                raise ValueError(f"{where}: expected the header {chr(9).join(header)!r}, "
                                 f"found {line[:80]!r}")
            first = False
            continue
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != n_fields:
            raise ValueError(f"{where}: expected {n_fields} tab-separated fields, found "
                             f"{len(fields)} in {line[:80]!r}")
        yield where, number, fields


def _convert(value: str, kind: Callable[[str], Any], where: str, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        name = getattr(kind, "__name__", str(kind))
        raise ValueError(f"{where}: expected the {what} to be {name}, found {value!r}") from None


def read_pair_tsv(path: str | Path, *, label_type: Callable[[str], Any] = int
                  ) -> tuple[list[tuple[str, str]], list[Any]]:
    """``(pairs, labels)`` of a headerless ``s1\\ts2\\tlabel`` file (AFQMC, LCQMC, OPPO-xiaobu:
    0/1 labels; Chinese-MNLI: pass ``label_type=str`` for its ``entailment``-style labels)."""
    pairs, labels = [], []
    for where, _, (s1, s2, label) in _tsv_rows(path, 3):
        pairs.append((s1, s2))
        labels.append(_convert(label, label_type, where, "label"))
    return pairs, labels


def read_stsb(path: str | Path) -> tuple[list[tuple[str, str]], list[float]]:
    """``(pairs, scores)`` of Chinese STS-B (CNSD): ``s1\\ts2\\tscore``, scores in [0, 5]."""
    pairs, scores = [], []
    for where, _, (s1, s2, score) in _tsv_rows(path, 3):
        value = _convert(score, float, where, "score")
        if not 0.0 <= value <= 5.0:
            raise ValueError(f"{where}: expected a score in [0, 5], found {score!r}")
        pairs.append((s1, s2))
        scores.append(value)
    return pairs, scores


PAWS_X_HEADER = ("id", "sentence1", "sentence2", "label")


def read_paws_x(path: str | Path) -> tuple[list[tuple[str, str]], list[int]]:
    """``(pairs, labels)`` of a PAWS-X TSV (header ``id sentence1 sentence2 label``)."""
    pairs, labels = [], []
    for where, _, (_, s1, s2, label) in _tsv_rows(path, 4, header=PAWS_X_HEADER):
        pairs.append((s1, s2))
        labels.append(_convert(label, int, where, "label"))
    return pairs, labels


# --------------------------------------------------------------------------- JSON


def json_records(path: str | Path) -> Iterator:
    """``(path:line, object)`` for each non-blank line of a JSON-lines file."""
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: expected one JSON object, found invalid JSON "
                             f"({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, found {type(record).__name__}")
        yield where, record


def read_json_lines(path: str | Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file (CLUE, FewCLUE, OCNLI, CLUENER), one per line."""
    return [record for _, record in json_records(path)]


def _field(record: dict[str, Any], name: str, where: str,
           kind: type | tuple[type, ...] = str) -> Any:
    if name not in record:
        raise ValueError(f"{where}: expected a field {name!r}, found only {sorted(record)}")
    value = record[name]
    if not isinstance(value, kind):
        want = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ValueError(f"{where}: expected field {name!r} to be {want}, found "
                         f"{type(value).__name__} {value!r:.60}")
    return value


def json_texts(path: str | Path, fields: Sequence[str]) -> list[str]:
    """The string `fields` of every record, in file order (record by record)."""
    return [_field(record, name, where) for where, record in json_records(path)
            for name in fields]


def fewclue_texts(path: str | Path, task: str) -> list[str]:
    """The texts of one FewCLUE file: the fields :data:`FEWCLUE_TEXT_FIELDS` names for `task`.

    CHID's ``content`` has a ``#idiom#`` blank; when the record has its ``answer`` (an index
    into ``candidates``) the blank is filled with that idiom, so the text reads naturally.
    """
    if task not in FEWCLUE_TEXT_FIELDS:
        raise ValueError(f"task must be one of {sorted(FEWCLUE_TEXT_FIELDS)}, got {task!r}")
    texts = []
    for where, record in json_records(path):
        for name in FEWCLUE_TEXT_FIELDS[task]:
            text = _field(record, name, where)
            if task == "chid" and isinstance(record.get("answer"), int):
                candidates = _field(record, "candidates", where, list)
                if not 0 <= record["answer"] < len(candidates):
                    raise ValueError(f"{where}: expected answer in [0, {len(candidates)}), "
                                     f"found {record['answer']}")
                text = text.replace(CHID_BLANK, candidates[record["answer"]])
            texts.append(text)
    return texts


def read_clue_classification(path: str | Path, *, text_field: str = "sentence",
                             label_field: str = "label",
                             name_field: str | None = None) -> tuple[list[str], list[Any], list[Any]]:
    """``(texts, labels, label names)`` of a CLUE classification file (tnews: ``label_desc``,
    iflytek: ``label_des`` as `name_field`; names are None where `name_field` is None)."""
    texts, labels, names = [], [], []
    for where, record in json_records(path):
        texts.append(_field(record, text_field, where))
        labels.append(_field(record, label_field, where, (int, str)))
        names.append(None if name_field is None else _field(record, name_field, where))
    return texts, labels, names


def read_cluener(path: str | Path) -> tuple[list[str], list[list[tuple[str, int, int]]]]:
    """``(texts, spans)`` of CLUENER2020: each span ``(type, start, end)`` with `end` exclusive
    (the file's ``[start, end]`` is inclusive), sorted; a span whose characters differ from its
    entity string is reported with ``file:line``."""
    texts, all_spans = [], []
    for where, record in json_records(path):
        text = _field(record, "text", where)
        spans = []
        for kind, entities in _field(record, "label", where, dict).items():
            for entity, positions in entities.items():
                for start, end in positions:
                    if text[start:end + 1] != entity:
                        raise ValueError(f"{where}: expected {entity!r} at [{start}, {end}], "
                                         f"found {text[start:end + 1]!r}")
                    spans.append((kind, start, end + 1))
        texts.append(text)
        all_spans.append(sorted(spans, key=lambda s: (s[1], s[2], s[0])))
    return texts, all_spans


def _read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: expected a JSON document, found invalid JSON "
                         f"({err.msg} at column {err.colno})") from None


def c3_texts(path: str | Path) -> list[str]:
    """Every text of a C3 file (``[[document lines], [{question, choice, answer}], id]`` items):
    the document lines, then each question, its choices and its answer."""
    texts = []
    for index, item in enumerate(_read_json(path)):
        if not (isinstance(item, list) and len(item) >= 2 and isinstance(item[0], list)):
            raise ValueError(f"{path}: item {index}: expected [[lines], [questions], id], found "
                             f"{json.dumps(item, ensure_ascii=False)[:80]}")
        texts += item[0]
        for q in item[1]:
            texts += [q["question"], *q["choice"], q["answer"]]
    return texts


def cmrc2018_texts(path: str | Path) -> list[str]:
    """Every text of a SQuAD-style CMRC2018 file: each context, then its questions and
    (distinct) answer strings."""
    document = _read_json(path)
    if not isinstance(document, dict) or "data" not in document:
        raise ValueError(f"{path}: expected a SQuAD object with a 'data' list, found "
                         f"{type(document).__name__}")
    texts = []
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            texts.append(paragraph["context"])
            for qa in paragraph["qas"]:
                texts.append(qa["question"])
                texts += dict.fromkeys(a["text"] for a in qa["answers"])
    return texts


# --------------------------------------------------------------------------- char BIO NER


def _char_bio(lines, where):
    sentences, tags = [], []
    chars: list[str] = []
    labels: list[str] = []
    seen: set[str] = set()  # tags already checked against _BIO_TAG
    for number, line in lines:
        if not line.strip():
            if chars:
                sentences.append(chars)
                tags.append(labels)
                chars, labels = [], []
            continue
        # The character may itself be a space-like one (U+3000), so split at the last separator.
        cut = max(line.rfind(" "), line.rfind("\t"))
        char, tag = line[:cut], line[cut + 1:]
        if cut != 1 or (tag not in seen and not _BIO_TAG.fullmatch(tag)):
            raise ValueError(f"{where}:{number}: expected 'char tag' (one character, a tag like "
                             f"O or B-PER), found {line[:40]!r}")
        seen.add(tag)
        chars.append(char)
        labels.append(tag)
    if chars:
        sentences.append(chars)
        tags.append(labels)
    return sentences, tags


def read_char_bio(path: str | Path) -> tuple[list[list[str]], list[list[str]]]:
    """``(sentences, tags)`` of a char-per-line BIO file (People's Daily NER ``example.dev``,
    ``example.test``): each sentence a list of characters, each tag list the same length."""
    return _char_bio(_lines(path), str(path))


def read_msra_ner(path: str | Path, member: str | None = None
                  ) -> tuple[list[list[str]], list[list[str]]]:
    """``(sentences, tags)`` of MSRA NER read straight from its zip (``dh_msra.zip``, one
    ``char\\ttag`` file); `member` picks the file when the zip holds more than one."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        if member is None:
            if len(names) != 1:
                raise ValueError(f"{path}: expected one file in the zip (or pass member=), "
                                 f"found {names}")
            member = names[0]
        elif member not in names:
            raise ValueError(f"{path}: expected a member {member!r}, found {names}")
        where = f"{path}:{member}"
        return _char_bio(_split_lines(archive.read(member), where), where)


# --------------------------------------------------------------------------- classification


def read_thucnews(path: str | Path) -> tuple[list[str], list[int]]:
    """``(titles, labels)`` of a THUCNews ``title\\tlabel`` file (labels index ``class.txt``)."""
    titles, labels = [], []
    for where, _, (title, label) in _tsv_rows(path, 2):
        titles.append(title)
        labels.append(_convert(label, int, where, "label"))
    return titles, labels


def read_names(path: str | Path) -> list[str]:
    """The non-blank stripped lines of a label-name file (THUCNews ``class.txt``)."""
    return [line.strip() for _, line in _lines(path) if line.strip()]


def read_label_csv(path: str | Path, *, header: Sequence[str] = ("label", "review")
                   ) -> tuple[list[str], list[int]]:
    """``(texts, labels)`` of a CSV with the header ``label,review`` (ChnSentiCorp, waimai);
    quoted reviews may hold commas and doubled quotes (RFC 4180, read by the csv module)."""
    path = Path(path)
    texts, labels = [], []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        seen_header = False
        for row in reader:
            where = f"{path}:{reader.line_num}"  # the record's last physical line
            if not seen_header:
                if row != list(header):
                    raise ValueError(f"{where}: expected the header {','.join(header)!r}, found "
                                     f"{','.join(row)[:80]!r}")
                seen_header = True
                continue
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{where}: expected 2 fields 'label,review', found {len(row)}")
            labels.append(_convert(row[0], int, where, "label"))
            texts.append(row[1])
    return texts, labels
