"""The R8 experiment script: CHID passage grouping, the MSRA / People's Daily de-duplication on
the real files, and one end-to-end smoke run (``--limit``) with a tiny encoder writing
``clue.md`` (``JAXFORMER_DATA``)."""

import json

import pytest

from benchmarks.exp_clue_r8 import (SU, chid_grouped, main, msra_pd_records, report_rows)
from jaxformer.io.clue import ChidExample
from jaxformer.io.zh_corpus import clause_keys

pytestmark = pytest.mark.usefixtures("fast_compile")

IDIOMS = [f"成语{c}{d}" for c in "甲乙丙丁戊己庚辛" for d in "一二三四"]


def fewclue_chid(n):
    out = []
    for r in range(n):
        cands = tuple(IDIOMS[(7 * r + j) % len(IDIOMS)] for j in range(7))
        out.append(ChidExample(r, f"第{r}段，前文#idiom#后文。", cands, ("#idiom#",), (r % 7,)))
    return out


def test_chid_grouped_builds_clue_style_passages():
    records = fewclue_chid(10)
    groups = chid_grouped(records, size=3)
    assert len(groups) == 3  # 10 // 3; the tenth record is left over
    for g, group in enumerate(groups):
        members = records[3 * g:3 * g + 3]
        assert len(group.candidates) == 10 and len(set(group.candidates)) == 10
        assert group.blanks == tuple(f"#idiom{3 * g + k + 1:06d}#" for k in range(3))
        assert all(group.content.count(b) == 1 for b in group.blanks)
        assert "#idiom#" not in group.content
        golds = [m.candidates[m.answers[0]] for m in members]
        assert [group.candidates[a] for a in group.answers] == golds
        # Each member's text survives, its blank renumbered.
        for k, m in enumerate(members):
            assert m.content.replace("#idiom#", group.blanks[k]) in group.content
    # The grouping is a fixed function of the records.
    assert chid_grouped(records, size=3) == groups


def test_chid_grouped_skips_groups_with_a_repeated_gold():
    records = fewclue_chid(3)
    twin = records[1]
    records[1] = ChidExample(twin.id, twin.content, records[0].candidates, twin.blanks,
                             records[0].answers)
    assert chid_grouped(records, size=3) == []


def test_report_rows_read_the_runs():
    reports = {
        "chid": {"config": {"max_len": 64}, "steps": 40, "seconds": 12.0,
                 "dev": {"accuracy": 20.0, "accuracy_argmax": 20.0},
                 "test": {"accuracy": 21.0, "accuracy_argmax": 21.0},
                 "grouped": {"passages": 5, "blanks": 15, "accuracy": 30.0,
                             "accuracy_argmax": 26.0},
                 "submission": {"file": "chidf_predict.json"}},
        "cmrc2018": {"config": {"max_len": 256}, "steps": 9, "seconds": 3.0,
                     "dev": {"em": 10.0, "f1": 30.0, "average": 20.0}},
    }
    rows = {r["task"]: r for r in report_rows(reports)}
    assert rows["cmrc2018"]["dev"] == 20.0 and rows["cmrc2018"]["test"] is None
    assert rows["cmrc2018"]["su_bert"] == SU["cmrc2018"][0]
    assert "EM 10.00, F1 30.00" in rows["cmrc2018"]["detail"]
    assert rows["chid"]["grouped"]["accuracy"] == 30.0
    assert "Hungarian 30.00, argmax 26.00" in rows["chid"]["detail"]


def test_msra_training_sentences_share_no_clause_with_peoples_daily(data_dir):
    records, counts = msra_pd_records(data_dir)
    assert counts["msra"] == 55289 and counts["removed"] > 5000
    assert len(records["train"]) == counts["msra"] - counts["removed"]
    held = set().union(*(clause_keys(r.text) for r in (*records["dev"], *records["test"])))
    assert not any(clause_keys(r.text) & held for r in records["train"])
    assert {k for r in records["test"] for k, _, _ in r.spans} == {"PER", "LOC", "ORG"}


def test_smoke_run_writes_the_table(data_dir, tmp_path, monkeypatch):
    from test_clue_run import tiny_model

    monkeypatch.setenv("JAXFORMER_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_model(tmp_path, data_dir / "vocab" / "bert-base-chinese-vocab.txt")
    out = tmp_path / "results"
    assert main(["--data-dir", str(data_dir), "--model", str(model_dir), "--limit", "16",
                 "--tasks", "wsc", "chid", "--out", str(out)]) == 0
    report = json.loads(next(out.glob("*/clue_r8.json")).read_text("utf-8"))
    rows = {r["task"]: r for r in report["rows"]}
    assert set(rows) == {"wsc", "chid"} and rows["chid"]["steps"] == 2
    assert rows["chid"]["grouped"]["passages"] == 5
    assert 0 <= rows["wsc"]["dev"] <= 100 and rows["wsc"]["submission"] == "cluewscf_predict.json"
    table = (out / "clue.md").read_text("utf-8")
    assert "Claim R8" in table and "| chid" in table
