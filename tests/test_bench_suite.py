"""The suite behind `jaxformer bench` / `make bench`: goal rows, the written report, the CLI.

The full quick suite takes minutes, so here it runs one real section (analytic vs XLA FLOPs) on
a small layer; the sections themselves have their own tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

try:
    from benchmarks import suite
except ModuleNotFoundError:  # a bare `pytest` does not put the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import suite
from benchmarks import bench_flops
from jaxformer.cli import main as cli_main


def _model_row(kind, seq, eager, sdpa, mfu, batch=1, dtype="float32"):
    return {"kind": kind, "config": "bert_base", "batch": batch, "seq": seq, "dtype": dtype,
            "ratio_eager": eager, "ratio_sdpa": sdpa, "mfu": mfu, "xla_ratio": None}


def test_goals_from_rows():
    sections = {
        "model": [_model_row("forward", 128, 1.25, 1.15, 0.91, batch=4),
                  _model_row("forward", 512, 1.18, 1.11, 0.93),
                  _model_row("train", 512, None, 1.12, 0.6)],
        "flops": [{"attention": "softmax", "pass": "forward", "seq": 128, "ratio": 1.004,
                   "xla_reliable": True},
                  {"attention": "linear", "pass": "forward+backward", "seq": 512, "ratio": 0.985,
                   "xla_reliable": True}],
    }
    rows = suite.goals(sections, platform="cpu")
    by_case = {(r["goal"], r["case"]): r for r in rows}
    assert by_case[("P1 jaxformer ÷ torch", "forward B=4 T=128 vs eager")]["met"] is True
    assert by_case[("P1 jaxformer ÷ torch", "forward B=4 T=128 vs sdpa")]["met"] is False
    assert by_case[("P1 jaxformer ÷ torch", "train B=1 T=512 vs sdpa")]["met"] is True  # ≥ 1.1
    assert by_case[("P2 CPU MFU", "forward B=1 T=512 fp32")]["measured"] == "93.0%"
    p3 = [r for r in rows if r["goal"] == "P3 FLOPs vs XLA"]
    assert len(p3) == 1 and p3[0]["value"] == 0.985 and p3[0]["met"] is True
    # A figure XLA flagged (a while loop counted once) is reported, not judged.
    sections["flops"].append({"attention": "softmax", "pass": "forward", "seq": 2048,
                              "ratio": 0.2, "xla_reliable": False})
    p3 = [r for r in suite.goals(sections, platform="cpu") if r["goal"] == "P3 FLOPs vs XLA"][0]
    assert p3["met"] is True and "1 flagged (while loop)" in p3["case"]
    sections["flops"][1]["ratio"] = 0.97
    assert [r for r in suite.goals(sections, platform="cpu")
            if r["goal"] == "P3 FLOPs vs XLA"][0]["met"] is False
    # On an accelerator P2 is the bf16 train step's MFU ≥ 50%; a fp32 run cannot meet it.
    gpu = suite.goals(sections, platform="gpu")
    assert [r["goal"] for r in gpu if r["goal"].startswith("P2")] == ["P2 accelerator MFU"]
    assert not [r for r in gpu if r["goal"].startswith("P2")][0]["met"]


def _logreg_row(n, d, speedup_lr, speedup_lda, gap_lr, gap_lda, xtx_ratio):
    return {"section": "fit", "n": n, "d": d, "classes": 10, "dtype": "float32",
            "speedup_lr": speedup_lr, "speedup_lda": speedup_lda, "gap_lr_pts": gap_lr,
            "gap_lda_pts": gap_lda, "xtx_ratio": xtx_ratio}


def test_p6_goals_from_logreg_rows():
    sections = {"logreg": [
        # d=64: judged at its largest n (10,000); the n=1,000 row would fail everything.
        _logreg_row(1_000, 64, 1.0, 1.0, -20.0, -20.0, 9.0),
        _logreg_row(10_000, 64, 40.0, 5.8, 0.8, 0.0, 1.02),
        # d=768: judged at n=20,000: LR met (better accuracy is fine), LDA too slow, XᵀX over.
        _logreg_row(10_000, 768, 9.0, 9.0, 0.0, 0.0, 1.0),
        _logreg_row(20_000, 768, 5.8, 2.0, 6.1, 0.0, 1.6),
        # Memory rows carry no goal.
        {"section": "memory", "n": 100_000, "d": 768, "classes": 10, "dtype": "float32"},
    ]}
    rows = [r for r in suite.goals(sections, platform="cpu") if r["goal"].startswith("P6")]
    assert [(r["goal"], r["case"]) for r in rows] == [
        ("P6 analytic vs sklearn LR(lbfgs)", "n=10,000 d=64 C=10"),
        ("P6 analytic vs sklearn LDA(lsqr)", "n=10,000 d=64 C=10"),
        ("P6 analytic ÷ XᵀX", "n=10,000 d=64 C=10"),
        ("P6 analytic vs sklearn LR(lbfgs)", "n=20,000 d=768 C=10"),
        ("P6 analytic vs sklearn LDA(lsqr)", "n=20,000 d=768 C=10"),
        ("P6 analytic ÷ XᵀX", "n=20,000 d=768 C=10"),
    ]
    assert [r["met"] for r in rows] == [True, True, True, True, False, False]
    assert rows[3]["measured"] == "5.8× faster, accuracy +6.1 pt" and rows[3]["value"] == 5.8
    assert rows[5]["measured"] == "1.60×" and rows[5]["target"] == "≤ 1.5×"
    # Fast enough but more than 1 point less accurate: not met; the platform does not matter.
    sections["logreg"][3]["gap_lr_pts"] = -1.5
    gpu = [r for r in suite.goals(sections, platform="gpu") if r["goal"].startswith("P6")]
    assert gpu[3]["met"] is False and gpu[3]["measured"] == "5.8× faster, accuracy -1.5 pt"
    assert not [r for r in suite.goals({}, platform="cpu") if r["goal"].startswith("P6")]


def test_run_suite_writes_json_markdown_and_goals(tmp_path, capsys):
    section = suite.Section(
        "flops", "benchmarks.bench_flops",
        lambda mod, quick, peak, dtype: mod.run(ns=(16,), attentions=("softmax",), d_model=64,
                                                heads=4, ffn=128),
        None)
    payload = suite.run_suite(out=str(tmp_path), progress=False, sections=(section,))
    folder = next(tmp_path.iterdir())
    data = json.loads((folder / "bench.json").read_text())
    assert data["command"] == f"jaxformer bench --suite quick --out {tmp_path}"
    assert data["peak"]["flops_per_s"] > 0 and "measured" in data["peak"]["source"]
    assert {"device_kind", "versions", "xla_flags"} <= set(data["environment"])
    rows = data["sections"]["flops"]["rows"]
    assert [(r["pass"], r["seq"]) for r in rows] == [("forward", 16), ("forward+backward", 16)]
    assert data["goals"][0]["goal"] == "P3 FLOPs vs XLA"
    report = (folder / "report.md").read_text()
    assert report.startswith(f"Reproduce with: `{data['command']}`")
    assert "## Goals" in report and "P3 FLOPs vs XLA" in report
    assert bench_flops.TITLE in report and "Peak for MFU" in report
    assert payload["total_s"] > 0
    assert "reproduce with: jaxformer bench" in capsys.readouterr().out


def test_cli_bench_errors_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--only", "nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "model" in err
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jaxformer bench") and "--suite {quick,full}" in out
    with pytest.raises(ValueError, match="suite must be one of"):
        suite.run_suite(suite="huge", progress=False)
