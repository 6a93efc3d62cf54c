"""`benchmarks.bench_sharding` on the quick configuration: one row per mesh, a report that
reruns, and per-device memory that follows each preset's formula."""

import json

import pytest

from benchmarks import bench_sharding


# Toy-sized programs: XLA's optimisation passes dominate; the argument sizes checked here do not
# depend on them (the fully optimised temp sizes are test_sharding_hlo.py's).
pytestmark = pytest.mark.usefixtures("fast_compile")

def test_quick_rows_follow_the_formula_and_write_the_report(tmp_path):
    rows = bench_sharding.run(quick=True, presets=("fsdp",))
    assert [(r["preset"], r["mesh"]) for r in rows] == [
        ("one device", "(1, 1)"), ("fsdp", "(4, 2)"), ("fsdp", "(1, 8)")]
    one, fsdp4, fsdp1 = rows
    # A size-1 data axis splits nothing; a 4-way one leaves a quarter of every parameter with an
    # embed dimension. fsdp names only "embed", so the vectors without one stay whole: per layer
    # the q/k/v biases [heads*D] = 3 x 64 and the FFN-in bias [mlp] = 128, and the MLM output
    # bias [vocab] = 128 (2 layers, fp32).
    assert fsdp1["params_mib"] == pytest.approx(one["params_mib"])
    whole = (2 * (3 * 64 + 128) + 128) * 4 / bench_sharding.MIB
    assert fsdp4["params_mib"] == pytest.approx((one["params_mib"] - whole) / 4 + whole)
    for r in rows:
        assert r["grads_mib"] == pytest.approx(r["params_mib"])
        assert r["step_ms"] > 0 and r["compile_s"] > 0
        # XLA's arguments are the state plus the batch shard and the key (a few KiB).
        assert 0 <= r["xla_argument_mib"] - r["state_mib"] < 0.01
    paths = bench_sharding.write(rows, out_dir=str(tmp_path), command="python -m x --quick")
    report = json.loads(paths[0].read_text())
    assert report["command"] == "python -m x --quick" and len(report["rows"]) == 3
