"""`benchmarks/bench_scan_layers.py` runs in small form, agrees with itself across the two forms,
and writes the report it promises (speed is reported there, never asserted)."""

import json

import pytest

from benchmarks import bench_scan_layers as bench


# Toy-sized programs: XLA's optimisation passes dominate; both forms compile under the same
# setting, and the report's timings are the benchmark's business, not this test's.
pytestmark = pytest.mark.usefixtures("fast_compile")

def test_scan_layers_benchmark_rows_and_report(tmp_path):
    rows = bench.run(depths=(1, 3), schemes=("pre_ln",), budget_s=0.2)
    assert [(r["scheme"], r["depth"]) for r in rows] == [("pre_ln", 1), ("pre_ln", 3)]
    for r in rows:
        # The same train step from the same weights: only float rounding may differ.
        assert r["loss_diff"] < 1e-5 and r["grad_norm_rel_diff"] < 1e-5
        assert r["step_ratio"] == pytest.approx(r["step_unrolled_ms"] / r["step_scan_ms"])
        assert r["compile_unrolled_s"] > 0 and r["compile_scan_s"] > 0
        assert len(r["timing_scan"]["times_s"]) >= 3
    paths = bench.write(rows, out_dir=str(tmp_path),
                        command="python -m benchmarks.bench_scan_layers --depths 1 3")
    payload = json.loads(paths[0].read_text())
    assert payload["command"].endswith("--depths 1 3") and len(payload["rows"]) == 2
    assert paths[1].read_text().startswith("Reproduce with: `python -m benchmarks.bench_scan_layers")
    assert paths[2].read_bytes()[:4] == b"\x89PNG"


def test_scan_layers_benchmark_refuses_bad_depths(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--depths", "0"])
    assert "--depths must be positive, got 0" in capsys.readouterr().err
