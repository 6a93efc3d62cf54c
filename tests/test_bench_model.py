"""The model benchmark's plumbing: precision policies on both sides, the torch.compile gate,
memory figures, device-aware torch timing, and conftest's `require`.

Fast and CPU-only: tiny configs, one timed call, and no real torch.compile (its gate is driven
by a fake clock). Speed is never asserted.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DEVICE_CHECK_ENV, require

from benchmarks import bench_model, harness

ONE_CALL = {"warmup": 0, "forward": 1, "train": 1}


# --------------------------------------------------------------------------- policies


def test_resolve_precisions_defaults_alias_and_errors():
    assert bench_model.resolve_precisions(accelerator=False) == ("fp32",)
    assert bench_model.resolve_precisions(accelerator=True) == ("bf16", "mixed_bf16")
    assert bench_model.resolve_precisions("tf32", accelerator=True) == ("tf32",)
    assert bench_model.resolve_precisions(["bf16", "bf16", "fp32"], accelerator=False) == (
        "bf16", "fp32")
    for dtype, policy in (("float32", "fp32"), ("bfloat16", "bf16")):
        with pytest.warns(FutureWarning, match=f"use --precision {policy}"):
            assert bench_model.resolve_precisions(dtype=dtype, accelerator=True) == (policy,)
    with pytest.raises(ValueError, match=r"give only one, got --precision 'bf16' and --dtype "
                                         r"'bfloat16'"):
        bench_model.resolve_precisions("bf16", "bfloat16", accelerator=False)
    with pytest.raises(ValueError, match=r"--precision must be one or more of \['fp32', 'tf32', "
                                         r"'bf16', 'mixed_bf16'\], got \['fp16'\]"):
        bench_model.resolve_precisions("fp16", accelerator=False)
    with pytest.raises(ValueError, match=r"--dtype must be one of .*got 'float16'"):
        bench_model.resolve_precisions(dtype="float16", accelerator=False)


def test_cli_precision_arguments():
    parser = argparse.ArgumentParser()
    bench_model.add_precision_arguments(parser)
    args = parser.parse_args(["--precision", "fp32", "tf32", "--no-torch-compile"])
    assert (args.precision, args.dtype, args.torch_compile) == (["fp32", "tf32"], None, False)
    assert parser.parse_args(["--dtype", "bfloat16"]).dtype == "bfloat16"
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtype", "bf16"])


@pytest.mark.parametrize(("precision", "accelerator", "want"), [
    ("fp32", False, ("float32", "float32", "default")),
    ("fp32", True, ("float32", "float32", "highest")),  # no TF32: torch's allow_tf32=False
    ("tf32", True, ("float32", "float32", "default")),
    ("bf16", True, ("bfloat16", "bfloat16", "default")),
    ("mixed_bf16", True, ("bfloat16", "float32", "default")),
])
def test_jax_config_per_policy(precision, accelerator, want):
    cfg = bench_model.jax_config(bench_model._config("tiny", 16), precision,
                                 accelerator=accelerator)
    assert (cfg.dtype, cfg.param_dtype, cfg.matmul_precision) == want


@pytest.mark.parametrize(("precision", "weight", "matmul"), [
    ("fp32", "float32", "float32"),
    ("bf16", "bfloat16", "bfloat16"),
    ("mixed_bf16", "float32", "bfloat16"),  # autocast: fp32 weights, bf16 products
])
def test_torch_runs_the_same_policy(precision, weight, matmul):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    models = bench_model._Models("tiny", 16, precision, accelerator=False, device="cpu")
    x = bench_model._inputs(models.cfg, 2, 16, seed=0)
    prepared = bench_model._torch_forward(models, x, "sdpa")
    hf = models.hf("forward", "sdpa")
    seen = []
    layer = hf.encoder.layer[0].attention.self.query
    handle = layer.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    try:
        out = prepared.call()
    finally:
        handle.remove()
    assert str(layer.weight.dtype) == f"torch.{weight}"
    assert seen == [getattr(torch, matmul)]
    # The torch model holds the kit's weights (a bf16 copy is exact through fp32).
    ours = np.asarray(models.classifier.encoder.embed.word.embedding[...], np.float32)
    theirs = hf.embeddings.word_embeddings.weight.detach().float().numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert out.shape == (2, 16, models.cfg.hidden_size)


def test_run_rows_per_policy_on_cpu():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    rows = bench_model.run(cases=[("forward", "tiny", 2, 16)], precision=("bf16", "mixed_bf16"),
                           budget_s=0.0, min_repeats=1, timing=ONE_CALL, peak=1e11)
    assert [(r["precision"], r["dtype"], r["param_dtype"]) for r in rows] == [
        ("bf16", "bfloat16", "bfloat16"), ("mixed_bf16", "bfloat16", "float32")]
    for r in rows:
        assert r["torch_device"] == "cpu" and r["torch_sdpa_ms"] > 0
        # bf16 on both sides: the same weights agree to bf16 rounding, not to fp32's 1e-4.
        assert 0 < r["max_abs_diff"] < 0.25, r["max_abs_diff"]
        assert r["attention"] and isinstance(r["attention"], str)
        assert r["torch_peak_mib"] is None  # no CUDA allocator on CPU
        assert r["torch_compile_ms"] is None and r["torch_compile_note"] is None  # CPU: off
        assert r["jax_args_out_mib"] > 0
    assert rows[0]["torch_policy"] == "model.to(bfloat16)"
    assert rows[1]["torch_policy"] == "autocast bf16, fp32 weights"


# --------------------------------------------------------------------------- torch.compile


class _Clock:
    """A fake clock: each first call "takes" the next of `durations` seconds."""

    def __init__(self, durations):
        self.durations, self.now, self.calls = list(durations), 0.0, 0

    def __call__(self):
        self.calls += 1
        if self.calls % 2 == 0:  # the reading after the call
            self.now += self.durations.pop(0)
        return self.now


def test_compile_gate_drops_after_a_slow_first_call():
    gate = bench_model.CompileGate(limit_s=60.0, total_s=None, clock=_Clock([59.0, 61.0]))
    assert gate.first_call("a", lambda: None) == 59.0 and gate.active
    assert gate.first_call("b", lambda: None) == 61.0 and not gate.active
    assert gate.dropped == ("torch.compile's first call took 61 s at b (limit 60 s): torch "
                            "compile dropped for the remaining cases")
    with pytest.raises(RuntimeError, match="dropped already"):
        gate.first_call("c", lambda: None)


def test_compile_gate_total_limit():
    gate = bench_model.CompileGate(limit_s=60.0, total_s=100.0, clock=_Clock([50.0, 40.0, 20.0]))
    gate.first_call("a", lambda: None)
    gate.first_call("b", lambda: None)
    assert gate.active and gate.spent_s == 90.0
    gate.first_call("c", lambda: None)
    assert not gate.active and "took 110 s in all by c (limit 100 s)" in gate.dropped


def test_run_drops_torch_compile_after_a_slow_first_call(monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    compiled = []
    # The real torch.compile takes minutes on 2 CPU cores; the gate only needs a callable.
    monkeypatch.setattr(bench_model, "_torch_compile",
                        lambda model: compiled.append(model) or model)
    gate = bench_model.CompileGate(clock=_Clock([75.0]))
    cases = [("forward", "tiny", 2, 16), ("forward", "tiny", 2, 8)]
    rows = bench_model.run(cases=cases, budget_s=0.0, min_repeats=1, timing=ONE_CALL,
                           torch_compile=True, compile_gate=gate)
    first, second = rows
    assert len(compiled) == 1  # the second case never built a compiled model
    assert first["torch_compile_first_s"] == 75.0 and first["torch_compile_ms"] > 0
    assert first["ratio_compile"] > 0 and "compile" in first["timing"]
    assert second["torch_compile_ms"] is None and second["torch_compile_first_s"] is None
    note = ("torch.compile's first call took 75 s at forward tiny B=2 T=16 fp32 (limit 60 s): "
            "torch compile dropped for the remaining cases")
    assert first["torch_compile_note"] == second["torch_compile_note"] == note
    assert note in bench_model.run_notes(rows)
    # torch compile is its own contender: never mixed into torch MFU or the parity column.
    assert first["torch_eager_ms"] > 0 and first["torch_sdpa_ms"] > 0


def test_run_keeps_torch_compile_under_the_limit(monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    monkeypatch.setattr(bench_model, "_torch_compile", lambda model: model)
    # Only the torch side matters here; a stand-in keeps two jax train-step compiles out.
    monkeypatch.setattr(bench_model, "_jax_train",
                        lambda models, x: harness.Prepared(lambda: np.float32(0.5)))
    rows = bench_model.run(cases=[("train", "tiny", 2, 16), ("train", "tiny", 2, 8)],
                           budget_s=0.0, min_repeats=1, timing=ONE_CALL, torch_compile=True,
                           compile_gate=bench_model.CompileGate(clock=_Clock([5.0, 6.0])))
    assert [r["torch_compile_first_s"] for r in rows] == [5.0, 6.0]
    assert all(r["torch_compile_ms"] > 0 and r["torch_compile_note"] is None for r in rows)
    assert all(r["jax_loss"] == 0.5 and r["torch_loss"] > 0 for r in rows)
    assert all(r["torch_peak_mib"] is None and r["jax_args_out_mib"] is None for r in rows)
    assert not bench_model.run_notes(rows)


# --------------------------------------------------------------------------- harness


def test_memory_bytes_of_a_compiled_function():
    x = jnp.ones((64, 32), jnp.float32)
    compiled = jax.jit(lambda a: a @ a.T).lower(x).compile()
    memory = harness.memory_bytes(compiled)
    assert memory["argument"] == 64 * 32 * 4 and memory["output"] == 64 * 64 * 4
    assert harness.temp_bytes(compiled) == memory["temp"]
    prepared = harness.prepare_jax(lambda a: a @ a.T, x)
    assert prepared.memory == memory


def test_torch_timing_is_device_aware_on_cpu():
    pytest.importorskip("torch")
    with harness.torch_peak_memory("cpu") as peak:
        pass
    assert peak == {"bytes": None}
    order = []
    prepared = harness.prepare_torch(lambda: order.append("call"), device="cpu", inference=False)
    assert prepared.sync is not None
    calls = {"torch": harness.Prepared(prepared.call, sync=lambda: order.append("sync"))}
    harness.time_interleaved(calls, warmup=1, repeats=2)
    # The device is synchronised before every timed call (not before warm-ups).
    assert order == ["call", "sync", "call", "sync", "call"]


# --------------------------------------------------------------------------- conftest


def test_require_errors_outside_the_device_check(monkeypatch):
    monkeypatch.delenv(DEVICE_CHECK_ENV, raising=False)
    assert require("json").__name__ == "json"
    with pytest.raises(ModuleNotFoundError, match="jaxformer_no_such_package"):
        require("jaxformer_no_such_package")
    monkeypatch.setenv(DEVICE_CHECK_ENV, "0")
    with pytest.raises(ModuleNotFoundError):
        require("jaxformer_no_such_package")


def test_require_skips_on_the_device_check(monkeypatch, require):
    monkeypatch.setenv(DEVICE_CHECK_ENV, "1")
    with pytest.raises(pytest.skip.Exception,
                       match="jaxformer_no_such_package is not installed on this device-check "
                             "machine"):
        require("jaxformer_no_such_package")
    assert require("json").__name__ == "json"  # present modules still import
