"""End-to-end tiny run of the linear-attention benchmark: correctness columns only, never speed.

The linear modes must agree with the kernel's own "quadratic" mode (else the time ratios compare
different functions), and the softmax decode baseline with `jax.nn.dot_product_attention`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

try:
    from benchmarks import bench_linear_attention as bench
except ModuleNotFoundError:  # run as a bare `pytest`, which does not put the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import bench_linear_attention as bench
from benchmarks.harness import format_table


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    # quadratic_max_n=128: n=256 takes the "chunked vs scan" error path of the n=8192 rows.
    return bench.run(quick=True, noncausal_ns=(128, 256), causal_ns=(128, 256),
                     decode_lengths=(256,), budget_s=0.05, decode_budget_s=0.05,
                     quadratic_max_n=128)


def test_tiny_run_covers_every_section_and_mode(rows: list[dict]) -> None:
    one, two, three = bench.SECTIONS
    assert [r["section"] for r in rows] == [one] * 2 + [two] * 5 + [three]
    causal = {(r["n"], r["mode"]): r for r in rows if r["section"] == two}
    assert set(causal) == {(128, "chunked"), (128, "scan"), (128, "quadratic"),
                           (256, "chunked"), (256, "scan")}
    assert causal[128, "chunked"]["err_vs"] == "quadratic"
    assert causal[256, "chunked"]["err_vs"] == "scan" and causal[256, "scan"]["err_vs"] == "chunked"
    for r in rows:  # ratios are reported (any value), and computed from positive times
        assert r["time_ratio"] > 0 and r["ref_compile_s"] > 0 and r["linear_compile_s"] > 0
        assert r["linear_alone"] > 0
        if r["section"] == three:
            assert r["ref_us"] > 0 and r["linear_us"] > 0
        else:
            assert r["ref_ms"] > 0 and r["linear_ms"] > 0
    noncausal = [r for r in rows if r["section"] == one]
    assert [r["flop_ratio"] for r in noncausal] == pytest.approx([128 / 64, 256 / 64])


def test_linear_modes_match_quadratic_and_decode_matches_dpa(rows: list[dict]) -> None:
    for r in rows:
        where = f"{r['section']} n={r['n']} {r['mode']}"
        if r["mode"] == "quadratic":
            assert r["max_err"] is None, where
        else:
            assert r["max_err"] < 1e-4, where
    decode = rows[-1]
    assert decode["ref_max_err"] < 1e-5


def test_decode_memory_is_constant_in_length() -> None:
    assert bench.state_bytes(1, 8, 64, 64) == 8 * 64 * 64 * 4 + 8 * 64 * 4
    assert bench.cache_bytes(1, 1024, 8, 64) == 2 * 1024 * 8 * 64 * 4
    assert bench.flops("chunked", 1024) == 4 * 8 * 1024 * 64 * 64 + 2 * 8 * 1024 * 64 * 128


def test_write_produces_report_and_png(rows: list[dict], tmp_path: Path) -> None:
    paths = bench.write(rows, out_dir=tmp_path,
                        command="python -m benchmarks.bench_linear_attention --quick")
    assert {p.suffix for p in paths} == {".json", ".md", ".png"}
    payload = json.loads(paths[0].read_text())
    assert payload["name"] == bench.NAME and len(payload["rows"]) == len(rows)
    assert [tuple(c) for c in payload["columns"]] == list(bench.COLUMNS)
    md = paths[1].read_text()
    assert md.startswith("Reproduce with: `python -m benchmarks.bench_linear_attention --quick`")
    for _, header in bench.COLUMNS:
        assert header in md
    assert "time ratio softmax/linear" in format_table(rows, bench.COLUMNS)
