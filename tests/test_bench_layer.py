"""Tiny run of the layer benchmark (softmax vs linear encoder layer): correctness, analytic FLOP
ratios against closed forms written here, the crossover interpolation, and the report files.
Never asserts anything about speed."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

try:
    from benchmarks import bench_layer as bench
except ModuleNotFoundError:  # run as a bare `pytest`, which does not put the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import bench_layer as bench
from benchmarks.harness import format_table

E, H, F = 64, 4, 128  # a small layer: D = 16
D = E // H
NS = (64, 128)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return bench.run(ns=NS, attention_ns=NS, budget_s=0.05, d_model=E, heads=H, ffn=F)


def layer_flops_softmax(n: int) -> int:
    # kit: 2 FLOPs per multiply-add, B=1. q, k, v and output projections: 4 · 2·n·E·E;
    # FFN: 2·n·E·F twice; QKᵀ and AV: 2·n·n·D per head each.
    return 4 * 2 * n * E * E + 2 * 2 * n * E * F + 2 * 2 * H * n * n * D


def layer_flops_linear(n: int) -> int:
    # Same projections and FFN; φ(K)ᵀV and φ(Q)S: 2·n·M·K per head each (M = K = D), and the
    # denominator φ(Q)·z plus z = Σφ(k): 2·n·M per head each.
    return 4 * 2 * n * E * E + 2 * 2 * n * E * F + 2 * 2 * H * n * D * D + 2 * 2 * H * n * D


def test_rows_cover_both_sections_with_expected_keys(rows: list[dict]) -> None:
    assert [(r["section"], r["n"]) for r in rows] == [("layer", 64), ("layer", 128),
                                                        ("attention", 64), ("attention", 128)]
    common = {"section", "n", "batch", "dtype", "softmax_ms", "linear_ms", "time_ratio",
              "time_ratio_min", "flop_ratio", "softmax_gflops", "linear_gflops",
              "softmax_temp_mib", "linear_temp_mib", "softmax_compile_s", "linear_compile_s",
              "spread_pct"}
    layer_keys = common | {"linear_check", "softmax_elementwise_flops", "linear_elementwise_flops",
                           "su_attention_exceeds_ffn", "su_quadratic_dominates",
                           "measured_time_crossover", "measured_flop_crossover"}
    for r in rows:
        want = layer_keys if r["section"] == "layer" else common | {"dpa_ms", "dpa_ratio",
                                                                    "dpa_check"}
        assert want <= set(r), (r["section"], want - set(r))
        assert r["dtype"] == "float32" and r["batch"] == 1
        for key in ("softmax_ms", "linear_ms", "time_ratio", "time_ratio_min", "softmax_gflops",
                    "linear_gflops", "softmax_compile_s", "linear_compile_s"):
            assert r[key] > 0 and math.isfinite(r[key]), (r["section"], r["n"], key)
        assert len(r["timing"]["softmax"].times_s) >= bench.MIN_REPEATS
    assert "time ratio softmax/linear" in format_table(rows, bench.COLUMNS)


def test_flop_ratios_match_closed_forms(rows: list[dict]) -> None:
    for r in rows:
        n = r["n"]
        if r["section"] == "layer":
            assert r["softmax_flops"] == layer_flops_softmax(n)
            assert r["linear_flops"] == layer_flops_linear(n)
            want = layer_flops_softmax(n) / layer_flops_linear(n)
        else:  # 4·H·n²·D vs 4·H·n·D·D
            want = n / D
        assert r["flop_ratio"] == pytest.approx(want, rel=1e-12), (r["section"], n)
        assert r["softmax_gflops"] == pytest.approx(r["softmax_flops"] / r["softmax_ms"] / 1e6)


def test_correctness_columns(rows: list[dict]) -> None:
    for r in rows:
        if r["section"] == "layer":
            assert r["linear_check"] is not None and r["linear_check"] < 1e-4, r["n"]
        else:
            assert r["dpa_check"] < 1e-5, r["n"]


def test_analytic_crossovers() -> None:
    c = bench.crossovers()
    assert c["su_attention_exceeds_ffn"] == 1536 and c["su_quadratic_dominates"] == 4608
    assert c["su_linear_cheaper_than_softmax"] == 64
    # 4·n²·E = 4·n·E·(D + 1) at n = D + 1 with M = K = D.
    assert c["kit_flop_crossover"] == pytest.approx(65.0)
    assert c["measured_time_crossover"] is None and c["measured_flop_crossover"] is None
    # At n = 4608 the n² term equals all terms linear in n, so the FLOP ratio is about 2.
    n = 4608
    soft = 8 * n * 768**2 + 4 * n * 768 * 3072 + 4 * n * n * 768
    assert soft == 2 * (8 * n * 768**2 + 4 * n * 768 * 3072)


def test_rows_carry_crossovers_of_their_own_widths(rows: list[dict]) -> None:
    for r in rows:
        if r["section"] == "layer":
            # E·(F − 2E)/E = 0 and 2E + F = 256 for E = 64, F = 128 (P = H·D = E).
            assert r["su_attention_exceeds_ffn"] == 0
            assert r["su_quadratic_dominates"] == 2 * E + F
        else:
            assert "su_attention_exceeds_ffn" not in r


def _synthetic(points: list[tuple[int, float]]) -> list[dict]:
    return [{"section": "layer", "n": n, "time_ratio": r, "time_ratio_min": r, "flop_ratio": 2.0}
            for n, r in points]


def test_summary_interpolates_log_ratio_linearly_in_log_n() -> None:
    # log-log: log2 r goes -1 -> +1 while log2 n goes 8 -> 10, so it crosses 0 at log2 n = 9.
    # (Linear-in-ratio interpolation over log n would give 2**(8 + 2/3) ≈ 406 instead.)
    s = bench.summary(_synthetic([(256, 0.5), (1024, 2.0)]))
    assert s["measured_time_crossover"] == pytest.approx(512.0, rel=1e-12)
    assert s["measured_flop_crossover"] is None  # 2.0 everywhere
    # Asymmetric: log2 r from -1 to +3 over log2 n 7 -> 11 crosses at 1/4 of the way: 2**8.
    s = bench.summary(_synthetic([(64, 0.25), (128, 0.5), (2048, 8.0), (4096, 9.0)]))
    assert s["measured_time_crossover"] == pytest.approx(256.0, rel=1e-12)
    # Order of rows does not matter; an exact 1 is its own crossing; no crossing -> None.
    s = bench.summary(_synthetic([(1024, 2.0), (256, 0.5)]))
    assert s["measured_time_crossover"] == pytest.approx(512.0, rel=1e-12)
    assert bench.crossing([256, 512, 1024], [0.5, 1.0, 3.0]) == pytest.approx(512.0)
    assert bench.crossing([256, 512], [1.5, 3.0]) is None
    assert bench.crossing([256, 512], [0.5, 0.9]) is None
    assert bench.crossovers(_synthetic([(256, 0.5), (1024, 2.0)]))[
        "measured_time_crossover"] == pytest.approx(512.0)


def test_write_produces_report_and_png(rows: list[dict], tmp_path: Path) -> None:
    paths = bench.write(rows, out_dir=tmp_path, command="python -m benchmarks.bench_layer --quick")
    assert [p.suffix for p in paths] == [".json", ".md", ".png"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    payload = json.loads(paths[0].read_text())
    assert payload["name"] == bench.NAME == "layer_softmax_vs_linear"
    assert len(payload["rows"]) == len(rows)
    assert [tuple(c) for c in payload["columns"]] == list(bench.COLUMNS)
    md = paths[1].read_text()
    assert md.startswith("Reproduce with: `python -m benchmarks.bench_layer --quick`")
    assert "8610" in md and "Crossovers:" in md
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
