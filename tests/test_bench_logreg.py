"""Tiny run of the logistic-regression benchmark (goal P6): row contents, accuracies, the closed
form of the streamed statistics' size, the per-contender repeat rule and the report files.
Never asserts anything about speed."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

try:
    from benchmarks import bench_logreg as bench
except ModuleNotFoundError:  # run as a bare `pytest`, which does not put the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import bench_logreg as bench
from benchmarks.harness import Prepared, Timing, format_table

C, D = 10, 8
CASES = ((300, D), (600, D))
MEMORY_NS = (2_500,)  # 2.5 batches of 1,000: the ragged, weighted path (one subprocess: ~5 s)
MEMORY_BATCH = 1_000


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    # Adam descent only at n=300: its compile per shape is the slowest part of a tiny run.
    return bench.run(cases=CASES, classes=C, n_test=500, budget_s=0.05, gd_max_n=300,
                     memory_ns=MEMORY_NS, memory_dim=D, memory_batch=MEMORY_BATCH)


def test_rows_cover_both_sections_with_expected_keys(rows: list[dict]) -> None:
    assert [(r["section"], r["n"], r["d"]) for r in rows] == [
        ("fit", 300, D), ("fit", 600, D), ("memory", 2_500, D)]
    fit_keys = {"classes", "dtype", "n_test", "blas_threads", "speedup_lr", "speedup_lda",
                "xtx_ratio", "fit_analytic_xtx_ratio", "gap_lr_pts", "gap_lda_pts", "p6_met",
                "lr_iters", "lr_converged", "spread_pct", "acc_bayes", "acc_analytic_lw"}
    memory_keys = {"classes", "dtype", "batch", "stats_bytes", "update_temp_bytes", "x_mib",
                   "rss_before_mib", "rss_after_mib", "rss_growth_mib", "stream_s", "gen_s",
                   "us_per_row", "count", "acc_analytic"}
    for r in rows:
        assert r["dtype"] == "float32" and r["classes"] == C
        want = fit_keys if r["section"] == "fit" else memory_keys
        assert want <= set(r), (r["section"], r["n"], want - set(r))
    # Every column of the table is a key of some row.
    keys = set().union(*rows)
    assert {k for k, _ in bench.COLUMNS} <= keys


def test_fit_rows_times_and_accuracies(rows: list[dict]) -> None:
    fits = [r for r in rows if r["section"] == "fit"]
    assert fits[1]["gd_ms"] is None and fits[1]["acc_gd"] is None and fits[1]["gd_timing"] is None
    for r in fits:
        for name in bench.CONTENDERS:
            if name == "gd" and r["n"] > 300:
                continue
            ms = r[f"{name}_ms"]
            assert ms > 0 and math.isfinite(ms), (r["n"], name)
            # MIN_REPEATS, or SLOW_REPEATS when the warm-up call took > SLOW_S (a loaded machine).
            assert r[f"{name}_repeats"] >= bench.SLOW_REPEATS, (r["n"], name)
            assert r[f"{name}_timing"]["p25_s"] <= r[f"{name}_timing"]["p75_s"]
        for name in ("bayes", "analytic", "fit_analytic", "lr", "lda", "analytic_lw",
                     *(("gd",) if r["n"] == 300 else ())):
            assert 0.0 <= r[f"acc_{name}"] <= 100.0, (r["n"], name)
        # LDA(lsqr) without shrinkage is the same model: the same predictions up to rounding.
        assert r["acc_analytic"] >= r["acc_lda"] - 1.0
        assert r["acc_fit_analytic"] == pytest.approx(r["acc_analytic"], abs=0.5)
        assert r["gap_lda_pts"] == pytest.approx(r["acc_analytic"] - r["acc_lda"], abs=1e-3)
        lr, an, xtx = (np.asarray(r[f"{k}_timing"]["times_s"]) for k in ("lr", "analytic", "xtx"))
        k = min(len(lr), len(an))
        assert r["speedup_lr"] == pytest.approx(np.median(lr[:k] / an[:k]))
        assert r["speedup_lr_min"] == pytest.approx(lr.min() / an.min())
        assert r["xtx_ratio"] == pytest.approx(np.median(an / xtx[:len(an)]))
        assert r["p6_met"] is bench.p6_met(r)
        assert r["blas_threads"] >= 1 and r["lr_iters"] >= 1


def test_memory_rows_hold_closed_form_statistics(rows: list[dict]) -> None:
    for r in (r for r in rows if r["section"] == "memory"):
        # count [C] + sums [C, d] + scatter [d, d] + norm4 [] + norm2_x [d], float32.
        assert r["stats_bytes"] == 4 * (C + C * D + D * D + 1 + D)
        assert r["stats_kib"] == pytest.approx(r["stats_bytes"] / 1024)
        assert r["count"] == r["n"]  # padded rows of the ragged last batch weigh 0
        assert r["batch"] == MEMORY_BATCH and r["batches"] == math.ceil(r["n"] / MEMORY_BATCH)
        assert r["x_mib"] == pytest.approx(r["n"] * D * 4 / 2**20)
        assert r["update_temp_bytes"] is None or r["update_temp_bytes"] >= 0
        assert r["rss_before_mib"] > 0 and math.isfinite(r["rss_growth_mib"])
        assert r["us_per_row"] > 0 and 0.0 <= r["acc_analytic"] <= 100.0


def test_slow_contenders_run_fewer_times() -> None:
    calls = {"fast": Prepared(lambda: None), "slow": Prepared(lambda: time.sleep(0.03))}
    timings, first = bench._time_rounds(calls, budget_s=0.0, slow_s=0.02, min_repeats=5,
                                        slow_repeats=3)
    assert len(timings["fast"].times_s) == 5 and len(timings["slow"].times_s) == 3
    assert first["slow"] > 0.02 and timings["slow"].median_s > 0.02
    timings, _ = bench._time_rounds(calls, budget_s=0.5, slow_s=0.02, max_repeats=9)
    assert len(timings["fast"].times_s) == 9 and len(timings["slow"].times_s) == 3


def test_paired_ratio_compares_the_same_rounds() -> None:
    slow = Timing(times_s=(4.0, 6.0, 8.0))  # ran only in rounds 0-2
    fast = Timing(times_s=(2.0, 2.0, 2.0, 1.0, 1.0))  # the load dropped from round 3
    assert bench.paired_ratio(slow, fast) == pytest.approx(3.0)  # not 6.0 / 2.0 by medians
    assert bench.paired_ratio(fast, slow) == pytest.approx(1 / 3)


def test_problem_is_seeded_and_has_the_requested_shape() -> None:
    problem = bench.make_problem(D, C, seed=3)
    x, y, pred = problem.sample(200, np.random.default_rng(0), bayes=True)
    assert x.shape == (200, D) and x.dtype == np.float32 and y.dtype == np.int32
    assert set(np.unique(y)) <= set(range(C)) and pred.shape == (200,)
    again = bench.make_problem(D, C, seed=3).sample(200, np.random.default_rng(0))
    np.testing.assert_array_equal(again[0], x)
    diag = bench.make_problem(D, C, seed=3, rotate=False)
    assert diag.mixing.shape == (D,)


def test_p6_met_needs_every_condition() -> None:
    row = {"speedup_lr": 6.0, "speedup_lda": 3.5, "gap_lr_pts": 2.0, "gap_lda_pts": -0.5,
           "xtx_ratio": 1.2}
    assert bench.p6_met(row) is True
    for key, bad in (("speedup_lr", 4.9), ("speedup_lda", 2.9), ("gap_lr_pts", -1.1),
                     ("gap_lda_pts", -1.5), ("xtx_ratio", 1.6)):
        assert bench.p6_met({**row, key: bad}) is False, key


def test_write_produces_json_markdown_and_png(rows: list[dict], tmp_path: Path) -> None:
    paths = bench.write(rows, out_dir=tmp_path, command="python -m benchmarks.bench_logreg")
    json_path, md_path, png_path = paths
    assert json_path.suffix == ".json" and md_path.suffix == ".md" and png_path.suffix == ".png"
    assert png_path.stat().st_size > 0
    data = json.loads(json_path.read_text())
    assert data["name"] == bench.NAME and len(data["rows"]) == len(rows)
    md = md_path.read_text()
    assert md.startswith("Reproduce with: `python -m benchmarks.bench_logreg`")
    assert "P6 at n=600, d=8" in md and "Streaming: n 2,500 → 2,500" in md
    assert format_table(rows, bench.COLUMNS) in md
