"""Submission files for the CLUE and FewCLUE leaderboards (https://www.cluebenchmarks.com).

:func:`write_submission` writes a task's predictions under the file name and layout the site
expects (UTF-8, ``ensure_ascii=False``, atomically); :func:`read_submission` reads one back. The
site takes the task files zipped together (FewCLUE's README: ``zip fewclue_submit_examples.zip
*.json``).

Layouts, by task:

* classification (iflytek, tnews, afqmc, cmnli, ocnli, wsc, csl; FewCLUE also bustm, eprstmt,
  csldcp): JSON lines ``{"id": ..., "label": "<label string>"}``; predictions map id -> label,
  either the label string or its index in :data:`~jaxformer.io.clue.CLUE_LABELS`.
* c3: JSON lines ``{"id": question id, "label": choice index}``.
* chid: CLUE, one JSON object ``{"#idiom623377#": candidate index}``; FewCLUE, JSON lines
  ``{"id": ..., "answer": candidate index}``.
* cmrc2018: one JSON object ``{question id: answer text}``.
* cluener: JSON lines ``{"id": ..., "label": {type: {entity: [[start, end inclusive]]}}}``;
  predictions map id -> ``(text, spans)`` (or a :class:`~jaxformer.io.clue.NerExample`), spans
  ``(type, start, end exclusive)``; read back as id -> sorted spans.
"""

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .clue import NerExample, ner_spans
from .clue_tasks import CLUE_LABELS, CLUENER_TYPES, FEWCLUE_NAMES, FEWCLUE_ONLY, _show, clue_task
from .zh_corpus import write_text_atomic
from .zh_datasets import _field, _read_json, json_records

# CLUE 1.1 names, as the CLUE repository's own baselines write them:
# https://github.com/CLUEbenchmark/CLUE/blob/master/baselines/paddlenlp/classification/run_clue_classifier.py
# ("For version 1.1": ocnli_50k, cluewsc11, tnews11, else <task>_predict.json; labels as strings),
# https://github.com/CLUEbenchmark/CLUE/blob/master/baselines/paddlenlp/mrc/run_c3.py (c311, the
# choice index),
# https://github.com/CLUEbenchmark/CLUE/blob/master/baselines/paddlenlp/mrc/run_chid.py
# (chid11, blank -> candidate index) and .../mrc/run_cmrc2018.py (cmrc2018, qid -> answer, which
# https://github.com/ymcui/cmrc2018/blob/master/squad-style-data/cmrc2018_evaluate.py reads).
# The CLUE README itself only says "xxx_predict.json" and links the sample zip
# https://storage.googleapis.com/cluebenchmark/tasks/clue_submit_examples.zip (not read here).
# CLUE's submission guide ("CLUE benchmark 任务提交说明", update of 2021-09-04, in the project
# https://github.com/CLUEbenchmark/CLUE) names every file <lower-case task>_predict.json except
# the 1.1 test updates (tnews11, cluewsc11, c311, chid11); it covers the nine classification and
# reading tasks, not CLUENER, whose cluener_predict.json follows that rule and is the sample
# file shipped inside
# cluener_public.zip (listed by MMOCR's NER data docs, docs/en/datasets/ner.md, e.g.
# https://huggingface.co/spaces/tomofi/MMOCR/blob/main/docs/en/datasets/ner.md); the layout is the
# one CLUENER2020's baselines write (as test_submit.json):
# https://github.com/CLUEbenchmark/CLUENER2020/blob/master/pytorch_version/run_ner_crf.py
CLUE_SUBMISSION_FILES = {
    "iflytek": "iflytek_predict.json", "tnews": "tnews11_predict.json",
    "afqmc": "afqmc_predict.json", "cmnli": "cmnli_predict.json",
    "ocnli": "ocnli_50k_predict.json", "wsc": "cluewsc11_predict.json",
    "csl": "csl_predict.json", "cmrc2018": "cmrc2018_predict.json", "c3": "c311_predict.json",
    "chid": "chid11_predict.json", "cluener": "cluener_predict.json",
}
# FewCLUE's sample submissions, https://github.com/CLUEbenchmark/FewCLUE/tree/main/resources/
# fewclue_submit_examples (one run: <name>_predict.json) and fewclue_m_submit_examples (one per
# sample: <name>_predict_{0..4,all}.json); the tasks CLUE shares get an "f".
FEWCLUE_SUBMISSION_NAMES = {
    "bustm": "bustm", "chid": "chidf", "wsc": "cluewscf", "csldcp": "csldcp", "csl": "cslf",
    "eprstmt": "eprstmt", "iflytek": "iflytekf", "ocnli": "ocnlif", "tnews": "tnewsf",
}
FEWCLUE_RUNS = (0, 1, 2, 3, 4, "all")


def submission_name(task: str, *, fewclue: bool = False,
                    fewclue_run: int | str | None = None) -> str:
    """The file name the site expects for `task`; FewCLUE's multi-run board adds the run
    (`fewclue_run` in 0..4 or "all", the train_k sample the predictions come from)."""
    task = clue_task(task)
    if not fewclue:
        if task in FEWCLUE_ONLY:
            raise ValueError(f"{task!r} is a FewCLUE task only; pass fewclue=True")
        if fewclue_run is not None:
            raise ValueError("fewclue_run is for FewCLUE submissions; pass fewclue=True")
        return CLUE_SUBMISSION_FILES[task]
    if task not in FEWCLUE_NAMES:
        raise ValueError(f"{task!r} is not a FewCLUE task (those are {sorted(FEWCLUE_NAMES)})")
    stem = f"{FEWCLUE_SUBMISSION_NAMES[task]}_predict"
    if fewclue_run is None:
        return f"{stem}.json"
    if fewclue_run not in FEWCLUE_RUNS or isinstance(fewclue_run, bool):
        raise ValueError(f"fewclue_run must be one of {list(FEWCLUE_RUNS)}, got {fewclue_run!r}")
    return f"{stem}_{fewclue_run}.json"


def _target(task, path_or_dir, fewclue, fewclue_run):
    path = Path(path_or_dir)
    name = submission_name(task, fewclue=fewclue, fewclue_run=fewclue_run)
    return path if path.suffix == ".json" else path / name


def _lines(records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _check_id(key, task):
    if not isinstance(key, (int, str)) or isinstance(key, bool):
        raise ValueError(f"{task}: expected prediction ids to be int or str, found "
                         f"{type(key).__name__} {key!r}")


def _class_label(task, key, value):
    labels = CLUE_LABELS[task]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(labels):
        return labels[value]
    if isinstance(value, str) and value in labels:
        return value
    raise ValueError(f"{task}: expected the prediction for id {key!r} to be one of the "
                     f"{len(labels)} labels {_show(labels)} or an index in [0, {len(labels)}), "
                     f"found {value!r}")


def _index(where, key, value, what):
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise ValueError(f"{where}: expected the prediction for {key!r} to be a {what} index "
                         f"(int >= 0), found {value!r}")
    return value


# CLUE's ChID keys its answers by blank, e.g. "#idiom623377#" (run_chid.py above).
_CLUE_BLANK = re.compile(r"#idiom\d+#")


def _blank(key, where):
    if not (isinstance(key, str) and _CLUE_BLANK.fullmatch(key)):
        raise ValueError(f"{where}: expected CLUE ChID predictions keyed by blank "
                         f"('#idiom623377#'), found {key!r}")
    return key


def _ner_label(key, value):
    text, spans = (value.text, value.spans) if isinstance(value, NerExample) else value
    label: dict[str, dict[str, list[list[int]]]] = {}
    for kind, start, end in spans or ():
        if kind not in CLUENER_TYPES or not 0 <= start < end <= len(text):
            raise ValueError(f"cluener: expected spans (type in {list(CLUENER_TYPES)}, start, "
                             f"end exclusive) within the text of id {key!r} ({len(text)} "
                             f"characters), found {(kind, start, end)!r}")
        label.setdefault(kind, {}).setdefault(text[start:end], []).append([start, end - 1])
    return label


def write_submission(task: str, predictions: Mapping[Any, Any], path_or_dir: str | Path, *,
                     fewclue: bool = False, fewclue_run: int | str | None = None) -> Path:
    """Write `predictions` (id -> prediction, in the order to write; see the module docstring
    for each task's values) as `task`'s submission file: `path_or_dir` itself when it ends in
    .json, else the official :func:`submission_name` inside that folder. Returns the path."""
    task = clue_task(task)
    path = _target(task, path_or_dir, fewclue, fewclue_run)
    for key in predictions:
        _check_id(key, task)
    if task == "cmrc2018":
        bad = {k: v for k, v in predictions.items() if not isinstance(v, str)}
        if bad:
            raise ValueError(f"cmrc2018: expected answer strings, found {next(iter(bad.items()))}")
        text = json.dumps({str(k): v for k, v in predictions.items()}, ensure_ascii=False,
                          indent=2) + "\n"
    elif task == "chid" and not fewclue:
        text = json.dumps({_blank(k, task): _index(task, k, v, "candidate") for k, v in
                           predictions.items()}, ensure_ascii=False, indent=2) + "\n"
    elif task == "chid":
        text = _lines({"id": k, "answer": _index(task, k, v, "candidate")}
                      for k, v in predictions.items())
    elif task == "c3":
        text = _lines({"id": k, "label": _index(task, k, v, "choice")}
                      for k, v in predictions.items())
    elif task == "cluener":
        text = _lines({"id": k, "label": _ner_label(k, v)} for k, v in predictions.items())
    else:
        text = _lines({"id": k, "label": _class_label(task, k, v)}
                      for k, v in predictions.items())
    return write_text_atomic(path, text)


def read_submission(task: str, path_or_dir: str | Path, *, fewclue: bool = False,
                    fewclue_run: int | str | None = None) -> dict[Any, Any]:
    """The predictions of a submission file (id -> label string, choice or candidate index,
    answer text, or cluener's sorted ``(type, start, end exclusive)`` spans), checked against
    the task's layout; a bad line raises ValueError naming ``file:line``."""
    task = clue_task(task)
    path = _target(task, path_or_dir, fewclue, fewclue_run)
    if task == "cmrc2018" or (task == "chid" and not fewclue):
        document = _read_json(path)
        want = str if task == "cmrc2018" else int
        if not isinstance(document, dict):
            raise ValueError(f"{path}: expected one JSON object id -> {want.__name__}, found "
                             f"{type(document).__name__}")
        for key, value in document.items():
            if task == "chid":
                _index(f"{path}", _blank(key, f"{path}"), value, "candidate")
            elif not isinstance(value, str):
                raise ValueError(f"{path}: expected the answer of {key!r} to be a string, "
                                 f"found {value!r}")
        return document
    field = "answer" if task == "chid" else "label"
    out: dict[Any, Any] = {}
    for where, record in json_records(path):
        key = _field(record, "id", where, (int, str))
        if key in out:
            raise ValueError(f"{where}: expected each id once, found {key!r} again")
        if task == "cluener":
            out[key] = ner_spans(_field(record, "label", where, dict), None, where)
        elif task in ("c3", "chid"):
            out[key] = _index(where, key, _field(record, field, where, int),
                              "choice" if task == "c3" else "candidate")
        else:
            value = _field(record, "label", where)
            if value not in CLUE_LABELS[task]:
                raise ValueError(f"{where}: expected field 'label' to be one of the "
                                 f"{len(CLUE_LABELS[task])} {task} labels "
                                 f"{_show(CLUE_LABELS[task])}, found {value!r}")
            out[key] = value
    return out

