"""End-to-end quick run of the RoPE benchmark (B1): correctness columns only, never speed.

The baselines must compute the same function as `jaxformer.rope.apply_rope` (otherwise the
speed ratios compare different things), and the kit must match a float64 NumPy reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    from benchmarks import bench_rope
except ModuleNotFoundError:  # run as a bare `pytest`, which does not put the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import bench_rope
from benchmarks.harness import format_table


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return bench_rope.run(quick=True)


def test_quick_run_covers_layouts_dtypes_and_2d(rows: list[dict]) -> None:
    assert {r["layout"] for r in rows} == set(bench_rope.LAYOUTS)
    assert {r["dtype"] for r in rows} == set(bench_rope.DTYPES)
    two_d = [r for r in rows if r["axes"] == 2]
    assert two_d and all(r["ratio_2d_1d"] is not None for r in two_d)
    for r in rows:  # ratios are reported (any value), and computed from positive times
        assert r["kit_ms"] > 0 and r["dense_ms"] > 0 and r["elementwise_ms"] > 0
        assert r["flop_ratio"] == pytest.approx(2 * r["head_dim"] / 3)


def test_kit_matches_float64_reference(rows: list[dict]) -> None:
    for r in rows:
        where = f"{r['case']} {r['layout']} {r['dtype']}"
        # Never worse than what fp32 angle rounding (or bf16 output rounding) allows.
        assert r["max_err"] <= r["max_err_bound"], where
        if r["dtype"] == "float32":
            # The rotation itself, at the angles the kit documents: fp32(p) * fp32(theta).
            assert r["max_err_fp32_angles"] < 1e-5, where
            if max(r["grid"]) <= 64:  # small positions: fp32 angles are nearly exact too
                assert r["max_err"] < 1e-5, where


def test_baselines_compute_the_same_function_as_the_kit(rows: list[dict]) -> None:
    for r in rows:
        where = f"{r['case']} {r['layout']} {r['dtype']}"
        if r["dtype"] == "float32":
            assert r["max_diff_elementwise"] < 1e-5, where
            assert r["max_diff_dense"] < 1e-5, where
            assert r["max_err_elementwise"] <= r["max_err_bound"], where
            assert r["max_err_dense"] <= r["max_err_bound"], where
        else:  # bf16 out: at most about one bf16 rounding apart
            assert r["max_diff_elementwise"] <= r["max_err_bound"], where
            assert r["max_diff_dense"] <= r["max_err_bound"], where


def test_reference_is_a_rotation_with_the_post_8397_frequencies() -> None:
    # The reference itself, on one vector: 2D, D = 8, half layout -> two sections of width 4.
    case = bench_rope.Case(1, (1, 1), 1, head_dim=8)
    p, q, axis, theta = bench_rope.rotation_pairs(case, "half")
    assert p.tolist() == [0, 1, 4, 5] and q.tolist() == [2, 3, 6, 7]
    assert axis.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(theta, [1.0, 10000.0 ** -0.5] * 2)
    x = np.random.default_rng(0).standard_normal((1, 1, 1, 8))
    out = bench_rope.reference(x, np.array([[[3, 5]]]), case, "half")
    np.testing.assert_allclose(np.linalg.norm(out), np.linalg.norm(x))
    np.testing.assert_allclose(out[..., 0], x[..., 0] * np.cos(3) - x[..., 2] * np.sin(3))


def test_write_produces_report_and_png(rows: list[dict], tmp_path: Path) -> None:
    paths = bench_rope.write(rows, out_dir=tmp_path,
                             command="python -m benchmarks.bench_rope --quick")
    assert {p.suffix for p in paths} == {".json", ".md", ".png"}
    payload = json.loads(paths[0].read_text())
    assert payload["name"] == bench_rope.NAME and len(payload["rows"]) == len(rows)
    assert "dense/kit" in format_table(rows, bench_rope.COLUMNS)
