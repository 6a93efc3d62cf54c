"""Fast checks of the benchmark harness and a tiny end-to-end encoder benchmark.

Speed is never asserted here (it depends on the machine); only that the statistics are sane,
the reports are well-formed, and the benchmarked models agree numerically.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

try:
    from benchmarks import harness
except ModuleNotFoundError:  # run as a bare `pytest`, which does not put the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import harness
from benchmarks.harness import Timing, device_slug, format_table, time_jax, time_torch, write_report


def test_time_jax_reports_sane_stats() -> None:
    x = jnp.ones((64, 64), dtype=jnp.float32)
    t = time_jax(lambda a: (a @ a).sum(), x, warmup=1, repeats=5)
    assert len(t.times_s) == 5
    assert all(s > 0 for s in t.times_s)
    assert t.min_s <= t.p25_s <= t.median_s <= t.p75_s <= max(t.times_s)
    assert t.iqr_s >= 0
    assert t.lower_s is not None and t.lower_s > 0
    assert t.compile_s is not None and t.compile_s > 0
    # The last call's output is kept for correctness checks.
    assert float(t.output) == pytest.approx(64.0 * 64 * 64)
    d = t.as_dict()
    assert set(d) >= {"median_s", "p25_s", "p75_s", "iqr_s", "min_s", "times_s", "lower_s",
                      "compile_s"}
    assert "output" not in d


def test_time_budget_stops_early_but_keeps_min_repeats() -> None:
    x = jnp.ones((8,), dtype=jnp.float32)
    t = time_jax(lambda a: a * a, x, warmup=0, repeats=50, budget_s=0.0, min_repeats=3)
    assert len(t.times_s) == 3


def test_time_interleaved_times_every_callable_per_round() -> None:
    order: list[str] = []
    calls = {name: harness.Prepared(lambda name=name: order.append(name) or name)
             for name in ("a", "b")}
    timings = harness.time_interleaved(calls, warmup=1, repeats=3)
    assert order == ["a", "b"] * 4  # one warm-up round, then three timed rounds, alternating
    assert {k: (len(t.times_s), t.output) for k, t in timings.items()} == {"a": (3, "a"),
                                                                            "b": (3, "b")}


def test_time_torch_reports_stats() -> None:
    torch = pytest.importorskip("torch")
    a = torch.ones(32, 32)
    t = time_torch(lambda: a @ a, warmup=1, repeats=4)
    assert len(t.times_s) == 4
    assert t.lower_s is None and t.compile_s is None
    assert float(t.output[0, 0]) == 32.0


@pytest.mark.parametrize(
    ("kind", "platform", "want"),
    [
        ("NVIDIA H100 80GB HBM3", None, "nvidia-h100-80gb-hbm3"),
        ("NVIDIA H100 80GB HBM3", "gpu", "nvidia-h100-80gb-hbm3"),
        ("TPU v5 lite", None, "tpu-v5-lite"),
        ("TPU v5 lite", "tpu", "tpu-v5-lite"),
        ("cpu", None, "cpu"),
        ("cpu", "cpu", "cpu"),
        ("AMD EPYC 7B13", "cpu", "cpu"),
    ],
)
def test_device_slug(kind: str, platform: str | None, want: str) -> None:
    assert device_slug(kind, platform) == want


def test_device_slug_of_this_machine_is_a_folder_name() -> None:
    slug = device_slug()
    assert slug and all(c.isalnum() or c == "-" for c in slug) and slug == slug.lower()


def test_environment_has_versions_and_device() -> None:
    env = harness.environment()
    for key in ("device_kind", "platform", "device_count", "cpu_model", "cpu_count", "python",
                "xla_flags", "git_commit", "timestamp_utc"):
        assert key in env
    assert {"jax", "jaxlib", "flax", "numpy"} <= set(env["versions"])
    json.dumps(env)  # must be serialisable as-is


def test_write_report_json_and_markdown(tmp_path) -> None:
    rows = [
        {"config": "tiny", "ms": 1.234, "ratio": 1.5, "ok": True, "dtype": "float32",
         "nan": float("nan"), "timing": Timing(times_s=(0.1, 0.2, 0.3), lower_s=0.01)},
        {"config": "base", "ms": 123.4, "ratio": 0.9, "ok": False, "dtype": "float32",
         "nan": None, "timing": None},
    ]
    columns = [("config", "config"), ("ms", "time ms"), "ratio", ("ok", "goal met")]
    command = "jaxformer bench --suite quick"
    json_path, md_path = write_report("demo", rows, columns=columns, title="Demo",
                                      command=command, notes=["a note"], out_dir=tmp_path)
    assert json_path.parent == tmp_path / device_slug()
    assert md_path.parent == json_path.parent

    payload = json.loads(json_path.read_text())  # strict JSON: NaN was converted to null
    assert payload["command"] == command
    assert payload["rows"][0]["nan"] is None
    assert payload["rows"][0]["timing"]["median_s"] == pytest.approx(0.2)
    assert "versions" in payload["environment"]

    lines = md_path.read_text().splitlines()
    assert command in lines[0]
    assert any(line.startswith("Environment:") and "float32" in line for line in lines[:4])
    table = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["config", "time ms", "ratio", "goal met"]
    assert len(table) == 2 + len(rows)
    assert "yes" in table[2] and "no" in table[3]


def test_format_table_alignment_and_escaping() -> None:
    text = format_table([{"a": 1, "b": 0.5}, {"a": 22, "b": None}, {"a": "x|y", "b": 2e-6}],
                        ["a", ("b", "|b|")])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # every row padded to the same width
    assert "n/a" in lines[-2] and "2.0e-06" in lines[-1]
    # Pipes inside cells are escaped, so every line still has exactly 3 column separators.
    assert all(line.replace("\\|", "").count("|") == 3 for line in lines)


def test_bench_model_tiny_forward_and_train_against_hf() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from benchmarks import bench_model

    peak = 1e11  # an arbitrary peak: MFU must be FLOPs / time / peak, whatever the machine
    rows = bench_model.run(cases=[("forward", "tiny", 2, 16), ("train", "tiny", 2, 16)],
                           budget_s=0.0, peak=peak)
    fwd, train = rows
    # Identical weights must give the same hidden states (correctness, not speed).
    assert fwd["max_abs_diff"] < 1e-4, fwd
    assert fwd["torch_eager_ms"] > 0 and fwd["torch_sdpa_ms"] > 0 and train["torch_sdpa_ms"] > 0
    cfg = bench_model._config("tiny", 16)
    e, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    # Closed form of the kit convention: 2·(4·T·E² + 2·T·E·F + 2·T²·E) per layer and sequence.
    forward_flops = layers * 2 * 2 * (4 * 16 * e * e + 2 * 16 * e * f + 2 * 16 * 16 * e)
    assert fwd["analytic_flops"] == forward_flops
    assert train["analytic_flops"] == 3 * forward_flops
    for row in rows:
        assert len(row["timing"]["jax"].times_s) >= 5  # median of at least 5 runs
        assert row["mfu"] == pytest.approx(row["analytic_flops"] / (row["jax_ms"] / 1e3) / peak)
        assert row["jax_temp_mib"] is not None and row["jax_temp_mib"] >= 0
        assert row["jax_compile_s"] > 0
    # P3 at model level: XLA agrees with analytic matmul + elementwise FLOPs once the tiny
    # config's 128-row embedding gather is counted as XLA:CPU compiles it, a one-hot matmul
    # (2·B·T·V·E; BERT-base's 30522-row table stays a gather, and there the ratio is 1.0006).
    one_hot = 2 * 2 * 16 * cfg.vocab_size * e
    want = fwd["analytic_flops"] + fwd["analytic_elementwise_flops"] + one_hot
    assert fwd["xla_reliable"] and abs(fwd["xla_flops"] / want - 1) < 0.02
    # A fresh 2-class head starts near chance: the loss is ~ln 2 in both libraries.
    assert abs(train["jax_loss"] - 0.693) < 0.1 and abs(train["torch_loss"] - 0.693) < 0.1
    text = format_table(rows, bench_model.COLUMNS)
    assert "MFU" in text and "sdpa/jax" in text
