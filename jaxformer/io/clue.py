"""Readers of the CLUE 1.1 and FewCLUE tasks in their official file formats.

One record type per input layout (:class:`TextExample`, :class:`PairExample`, :class:`WscExample`,
:class:`CslExample`, :class:`SpanQuestion`, :class:`ChoiceQuestion`, :class:`ChidExample`,
:class:`NerExample`); :func:`read_clue` reads any task's file into them. Labels are ints indexing
:data:`CLUE_LABELS` (C3 and ChID: the index of the choice or candidate); a file without gold
labels (the test files) gives ``None``. A missing field or a label outside the task's list raises
ValueError naming ``file:line``; in the whole-document JSON files (CMRC2018, C3, ChID answer
files) the place is a JSON path instead. :func:`clue_splits` (a task's files in a folder),
:func:`clue_task` and :data:`CLUE_LABELS` live in ``clue_tasks`` and are re-exported here; the
submission files are ``clue_submit``'s.

NLI rows whose gold label is ``"-"`` (annotators without a majority: OCNLI, CMNLI) are skipped, as
the OCNLI README asks (https://github.com/CLUEbenchmark/OCNLI#data-format); the returned
:class:`ClueRecords` counts them in ``skipped``.

Formats: https://github.com/CLUEbenchmark/CLUE#数据集介绍与下载-introduction-of-datasets (CLUE 1.1),
https://github.com/CLUEbenchmark/FewCLUE#数据集介绍与下载 (FewCLUE).
"""

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .clue_tasks import (_LABEL_INDEX, CLUE_LABELS, CLUE_TASKS, CLUENER_TYPES, FEWCLUE_NAMES,
                         FEWCLUE_ONLY, _show, clue_splits, clue_task)
from .zh_datasets import _field, _read_json, _tsv_rows, json_records

Id = int | str
NO_GOLD = "-"  # OCNLI/CMNLI: no majority among the annotators


@dataclasses.dataclass(frozen=True)
class TextExample:
    """One text, one class (iflytek, tnews; FewCLUE eprstmt, csldcp)."""

    id: Id
    text: str
    label: int | None


@dataclasses.dataclass(frozen=True)
class PairExample:
    """Two texts, one class (afqmc, cmnli, ocnli; FewCLUE bustm)."""

    id: Id
    text_a: str
    text_b: str
    label: int | None


@dataclasses.dataclass(frozen=True)
class WscExample:
    """Does the pronoun `span2` refer to `span1`? Each span is ``(text, char index)``."""

    id: Id
    text: str
    span1: tuple[str, int]
    span2: tuple[str, int]
    label: int | None


@dataclasses.dataclass(frozen=True)
class CslExample:
    """Are all `keywords` the paper's own (csl)?"""

    id: Id
    abstract: str
    keywords: tuple[str, ...]
    label: int | None


@dataclasses.dataclass(frozen=True)
class SpanQuestion:
    """CMRC2018: answers are ``(text, char start)`` as the file gives them (the public files hold
    some starts of -1 or off by a character, so they are not checked against the context)."""

    qid: str
    context: str
    question: str
    answers: tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class ChoiceQuestion:
    """C3: `passage` is the document's lines (a dialogue's turns); `label` indexes `choices`."""

    id: Id
    passage: tuple[str, ...]
    question: str
    choices: tuple[str, ...]
    label: int | None

    @property
    def text(self) -> str:
        return "\n".join(self.passage)


@dataclasses.dataclass(frozen=True)
class ChidExample:
    """ChID: `content` with the idiom blanks `blanks` (``#idiom#`` in FewCLUE, ``#idiom000378#``
    in CLUE), `answers` one candidate index per blank."""

    id: Id
    content: str
    candidates: tuple[str, ...]
    blanks: tuple[str, ...]
    answers: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class NerExample:
    """CLUENER2020: spans ``(type, start, end)`` with `end` exclusive, sorted by position."""

    id: Id
    text: str
    spans: tuple[tuple[str, int, int], ...] | None


class ClueRecords(list):
    """A file's records in file order; `skipped` counts rows dropped for having no gold label."""

    def __init__(self, records=(), skipped=0):
        super().__init__(records)
        self.skipped = skipped


def _label(record, where, task, field="label"):
    """The index of ``record[field]`` in the task's label list; None when the field is absent
    (a test file). FewCLUE writes tnews/iflytek codes as ints, CLUE as strings: both map."""
    if field not in record:
        return None
    value = record[field]
    key = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    index = _LABEL_INDEX[task].get(key) if isinstance(key, str) else None
    if index is None:
        raise ValueError(f"{where}: expected field {field!r} to be one of the "
                         f"{len(CLUE_LABELS[task])} {task} labels {_show(CLUE_LABELS[task])}, "
                         f"found {value!r}")
    return index


def _strings(record, name, where):
    """A field holding a list of strings (csl keywords, ChID candidates, C3 choices), as a tuple."""
    values = _field(record, name, where, list)
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}: expected field {name!r} to be a list of strings, found "
                         f"{values!r:.80}")
    return tuple(values)


def _id(record, where, index):
    """The record's ``id`` (``idx`` in CLUEWSC's train/dev files), else its 0-based position."""
    for name in ("id", "idx"):
        if name in record:
            return _field(record, name, where, (int, str))
    return index


# --------------------------------------------------------------------------- JSON-lines readers


def _read_text(path: Path, task: str, field: str) -> ClueRecords:
    return ClueRecords(TextExample(_id(r, w, i), _field(r, field, w), _label(r, w, task))
                       for i, (w, r) in enumerate(json_records(path)))


def _read_pairs(path: Path, task: str) -> ClueRecords:
    """sentence1/sentence2/label JSON lines, or the headerless ``s1\\ts2\\tlabel`` TSV of the
    data folder's ``csts/`` copies (suffix .txt or .tsv)."""
    out, skipped = ClueRecords(), 0
    if path.suffix in (".txt", ".tsv"):
        rows = ((where, {"sentence1": a, "sentence2": b, "label": label})
                for where, _, (a, b, label) in _tsv_rows(path, 3))
    else:
        rows = json_records(path)
    for index, (where, record) in enumerate(rows):
        if record.get("label") == NO_GOLD and task in ("cmnli", "ocnli"):
            skipped += 1
            continue
        out.append(PairExample(_id(record, where, index), _field(record, "sentence1", where),
                               _field(record, "sentence2", where), _label(record, where, task)))
    out.skipped = skipped
    return out


def _span(target, k, text, where):
    span = (_field(target, f"span{k}_text", where), _field(target, f"span{k}_index", where, int))
    if text[span[1]:span[1] + len(span[0])] != span[0]:
        raise ValueError(f"{where}: expected span{k}_text {span[0]!r} at index {span[1]}, found "
                         f"{text[span[1]:span[1] + len(span[0])]!r}")
    return span


def _read_wsc(path: Path) -> ClueRecords:
    out = ClueRecords()
    for index, (where, record) in enumerate(json_records(path)):
        text, target = _field(record, "text", where), _field(record, "target", where, dict)
        out.append(WscExample(_id(record, where, index), text, _span(target, 1, text, where),
                              _span(target, 2, text, where), _label(record, where, "wsc")))
    return out


def _read_csl(path: Path) -> ClueRecords:
    out = ClueRecords()
    for index, (where, record) in enumerate(json_records(path)):
        out.append(CslExample(_id(record, where, index), _field(record, "abst", where),
                              _strings(record, "keyword", where), _label(record, where, "csl")))
    return out


def _read_cluener(path: Path) -> ClueRecords:
    """CLUENER2020 (https://github.com/CLUEbenchmark/CLUENER2020#数据字段解释): ``label`` is
    ``{type: {entity: [[start, end inclusive], ...]}}``; the test file has ``id`` and no label."""
    out = ClueRecords()
    for index, (where, record) in enumerate(json_records(path)):
        text = _field(record, "text", where)
        spans = None if "label" not in record else ner_spans(
            _field(record, "label", where, dict), text, where)
        out.append(NerExample(_id(record, where, index), text, spans))
    return out


def ner_spans(label: dict[str, Any], text: str | None, where: str
              ) -> tuple[tuple[str, int, int], ...]:
    """The sorted ``(type, start, end exclusive)`` spans of a CLUENER ``label`` object; each
    entity string must be `text`'s characters there (or, without `text`, as long as the span)."""
    spans = []
    for kind, entities in label.items():
        if kind not in CLUENER_TYPES:
            raise ValueError(f"{where}: expected entity types among {list(CLUENER_TYPES)}, "
                             f"found {kind!r}")
        if not isinstance(entities, dict):
            raise ValueError(f"{where}: expected {kind!r} to map entity -> [[start, end]], "
                             f"found {entities!r:.60}")
        for entity, positions in entities.items():
            for pos in positions if isinstance(positions, list) else [positions]:
                ok = (isinstance(pos, list) and len(pos) == 2
                      and all(isinstance(p, int) and not isinstance(p, bool) for p in pos))
                start, end = pos if ok else (-1, -1)
                found = text[start:end + 1] if text is not None and 0 <= start else None
                if not (ok and 0 <= start and end - start + 1 == len(entity)
                        and found in (None, entity)):
                    raise ValueError(f"{where}: expected {kind} {entity!r} at [start, end] "
                                     f"(inclusive) in the text, found {pos!r}"
                                     + (f" holding {found!r}" if found is not None else ""))
                spans.append((kind, start, end + 1))
    return tuple(sorted(spans, key=lambda s: (s[1], s[2], s[0])))


# --------------------------------------------------------------------------- ChID

# FewCLUE marks its one blank ``#idiom#``; CLUE numbers them (``#idiom000378#``, README, ChID).
_BLANK = re.compile(r"#idiom\d*#")


def _read_chid(path: Path, answer_path: Path | None = None) -> ClueRecords:
    """FewCLUE (``content`` a string with one ``#idiom#``, ``answer`` a candidate index) or CLUE
    (``content`` a list of passages, gold in ``<stem>_answer.json`` next to the file, as in
    https://github.com/huggingface/datasets/blob/main/datasets/clue/clue.py): one example per
    passage, its id ``<record id>-<passage index>``."""
    if answer_path is None and path.with_name(f"{path.stem}_answer.json").is_file():
        answer_path = path.with_name(f"{path.stem}_answer.json")
    gold = None if answer_path is None else _read_json(answer_path)
    if gold is not None and not isinstance(gold, dict):
        raise ValueError(f"{answer_path}: expected a JSON object blank -> candidate index, found "
                         f"{type(gold).__name__}")
    out = ClueRecords()
    for index, (where, record) in enumerate(json_records(path)):
        rid = _id(record, where, index)
        candidates = _strings(record, "candidates", where)
        content = _field(record, "content", where, (str, list))
        if isinstance(content, str):  # FewCLUE
            blanks = tuple(_BLANK.findall(content))
            if len(blanks) != 1:
                raise ValueError(f"{where}: expected one #idiom# blank in 'content', found "
                                 f"{len(blanks)}")
            answers = None
            if "answer" in record:
                answers = (_candidate(_field(record, "answer", where, int), candidates, where),)
            out.append(ChidExample(rid, content, candidates, blanks, answers))
            continue
        for k, passage in enumerate(content):
            if not isinstance(passage, str):
                raise ValueError(f"{where}: expected 'content' to be a list of strings, found "
                                 f"{type(passage).__name__} at position {k}")
            blanks = tuple(_BLANK.findall(passage))
            answers = None
            if gold is not None:
                missing = [b for b in blanks if b not in gold]
                if missing:
                    raise ValueError(f"{where}: expected the answers of {missing} in "
                                     f"{answer_path}, found none")
                answers = tuple(_candidate(gold[b], candidates, f"{answer_path}: {b}")
                                for b in blanks)
            out.append(ChidExample(f"{rid}-{k}", passage, candidates, blanks, answers))
    return out


def _candidate(value, candidates, where):
    if not (isinstance(value, int) and not isinstance(value, bool)
            and 0 <= value < len(candidates)):
        raise ValueError(f"{where}: expected an answer index in [0, {len(candidates)}) "
                         f"(the candidates), found {value!r}")
    return value


# --------------------------------------------------------------------------- whole-document JSON


def _need(value, name, where, kind):
    """`_field` of an object inside a whole-document JSON file (a non-object has no fields)."""
    return _field(value if isinstance(value, dict) else {}, name, where, kind)


def _read_cmrc2018(path: Path) -> ClueRecords:
    """SQuAD style (``data[].paragraphs[].qas[]``, the CLUE and ``squad-style-data`` files) or the
    original list of ``{context_text, qas: [{query_id, query_text, answers: [str]}]}``
    (https://github.com/ymcui/cmrc2018/tree/master/data), whose answers get the first position
    of their text in the context (-1 where absent)."""
    document = _read_json(path)
    out = ClueRecords()
    if isinstance(document, list):  # the original CMRC2018 format
        for i, item in enumerate(document):
            context = _need(item, "context_text", f"{path}: [{i}]", str)
            for j, qa in enumerate(_need(item, "qas", f"{path}: [{i}]", list)):
                where = f"{path}: [{i}].qas[{j}]"
                qid = _need(qa, "query_id", where, str)
                answers = _strings(qa, "answers", where) if "answers" in qa else ()
                out.append(SpanQuestion(qid, context, _need(qa, "query_text", where, str),
                                        tuple((a, context.find(a)) for a in answers)))
        return out
    for i, article in enumerate(_need(document, "data", str(path), list)):
        for j, paragraph in enumerate(_need(article, "paragraphs", f"{path}: data[{i}]", list)):
            at = f"{path}: data[{i}].paragraphs[{j}]"
            context = _need(paragraph, "context", at, str)
            for k, qa in enumerate(_need(paragraph, "qas", at, list)):
                where = f"{at}.qas[{k}]"
                qid = _need(qa, "id", where, str)
                answers = tuple(
                    (_need(a, "text", f"{where}.answers[{n}]", str),
                     _need(a, "answer_start", f"{where}.answers[{n}]", int))
                    for n, a in enumerate(qa.get("answers", [])))
                out.append(SpanQuestion(qid, context, _need(qa, "question", where, str),
                                        answers))
    return out


def _read_c3(path: Path) -> ClueRecords:
    """``[[document lines], [{question, choice, answer}], document id]`` items
    (https://github.com/nlpdata/c3#readme). A question's id is its ``id`` field (CLUE's test
    file) or ``<file stem>/<document id>/<question index>``; no or an empty ``answer`` is None."""
    out = ClueRecords()
    document = _read_json(path)
    if not isinstance(document, list):
        raise ValueError(f"{path}: expected a JSON list of [lines, questions, id] items, found "
                         f"{type(document).__name__}")
    for i, item in enumerate(document):
        where = f"{path}: [{i}]"
        if not (isinstance(item, list) and len(item) >= 2 and isinstance(item[0], list)
                and isinstance(item[1], list) and all(isinstance(s, str) for s in item[0])):
            raise ValueError(f"{where}: expected [[document lines], [questions], id], found "
                             f"{str(item)[:80]}")
        doc_id = item[2] if len(item) > 2 else i
        for j, q in enumerate(item[1]):
            at = f"{where}[1][{j}]"
            choices = _strings(q if isinstance(q, dict) else {}, "choice", at)
            answer = None if q.get("answer") in (None, "") else q["answer"]
            if answer is not None and answer not in choices:
                raise ValueError(f"{at}: expected field 'answer' to be one of the choices "
                                 f"{list(choices)}, found {answer!r}")
            qid = _need(q, "id", at, (int, str)) if "id" in q else f"{path.stem}/{doc_id}/{j}"
            out.append(ChoiceQuestion(qid, tuple(item[0]), _need(q, "question", at, str),
                                      choices, None if answer is None else choices.index(answer)))
    return out


# --------------------------------------------------------------------------- dispatch

_TEXT_FIELD = {"iflytek": "sentence", "tnews": "sentence", "eprstmt": "sentence",
               "csldcp": "content"}
_READERS = {"wsc": _read_wsc, "csl": _read_csl, "cmrc2018": _read_cmrc2018, "c3": _read_c3,
            "cluener": _read_cluener}
_TSV_TASKS = ("afqmc", "cmnli")


def read_clue(task: str, path: str | Path | Sequence[str | Path], *,
              answer_path: str | Path | None = None) -> ClueRecords:
    """The records of one `task` file (or of several read in turn, as :func:`clue_splits` gives
    C3's dialogue and mixed halves), in the task's official format: JSON lines, SQuAD JSON
    (cmrc2018), a JSON list (c3) or, for afqmc and cmnli, the ``s1\\ts2\\tlabel`` TSV (.txt).
    `answer_path`: ChID's gold file for CLUE's format (default ``<stem>_answer.json`` beside it).
    """
    task = clue_task(task)
    if not isinstance(path, (str, Path)):
        out = ClueRecords()
        for part in path:
            records = read_clue(task, part, answer_path=answer_path)
            out.extend(records)
            out.skipped += records.skipped
        return out
    path = Path(path)
    if path.suffix in (".txt", ".tsv") and task not in _TSV_TASKS:
        raise ValueError(f"{path}: a tab-separated file is read only for {list(_TSV_TASKS)}, "
                         f"not {task!r} (expected its .json file)")
    if task == "chid":
        return _read_chid(path, None if answer_path is None else Path(answer_path))
    if task in _TEXT_FIELD:
        return _read_text(path, task, _TEXT_FIELD[task])
    if task in ("afqmc", "cmnli", "ocnli", "bustm"):
        return _read_pairs(path, task)
    return _READERS[task](path)


__all__ = ["CLUENER_TYPES", "CLUE_LABELS", "CLUE_TASKS", "FEWCLUE_NAMES", "FEWCLUE_ONLY",
           "ChidExample", "ChoiceQuestion", "ClueRecords", "CslExample", "NerExample",
           "PairExample", "SpanQuestion", "TextExample", "WscExample", "clue_splits", "clue_task",
           "ner_spans", "read_clue"]
