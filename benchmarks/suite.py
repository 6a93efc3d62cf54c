"""jaxformer bench [--suite quick|full] [--out results] [--only SECTION ...] [--precision POLICY ...] [--torch-compile]

(also ``python -m benchmarks.suite ...``; ``make bench`` runs ``jaxformer bench``.) The kit's main
job: measures the peak, then runs the sections below with a progress bar, prints each table and
the goals table, and writes ``<out>/<device>/bench.json``, ``report.md`` and one PNG per section
(``<device>`` is ``cpu`` or the accelerator's kind, e.g. ``nvidia-h100-80gb-hbm3``).

Sections (module, what it measures):

- ``model`` (`benchmarks.bench_model`): encoder forward and train step, tiny and BERT-base,
  against HF PyTorch (eager, sdpa and, on accelerators, torch.compile) in the same process and at
  the same precision policy; tokens/s, TFLOP/s, MFU, compile s, jax and torch memory.
- ``layer`` (`benchmarks.bench_layer`): a BERT-base layer, softmax vs linear attention over n:
  time ratio, FLOP ratio, Su's crossovers (post 8610); and attention kernels alone.
- ``flops`` (`benchmarks.bench_flops`): analytic FLOPs vs XLA's count (goal P3).
- ``rope`` (`benchmarks.bench_rope`): RoPE apply, 1D and 2D.
- ``linear_causal`` (`benchmarks.bench_linear_attention`): causal linear attention, modes
  chunked / scan / quadratic vs causal softmax.
- ``logreg`` (`benchmarks.bench_logreg`): the closed-form logistic regression's fit time against
  scikit-learn's LR and LDA and optax gradient descent, and streaming memory (goal P6).

``quick`` (the default) fits in 5 minutes on 2 CPU cores; ``full`` has more shapes and longer
budgets on CPU. ``--precision`` picks the model section's policies (``fp32``, ``tf32``, ``bf16``,
``mixed_bf16``; default ``fp32`` on CPU, ``bf16 mixed_bf16`` on an accelerator); ``--dtype
float32|bfloat16`` is its deprecated alias. ``--torch-compile`` adds the torch.compile contender
on CPU (on accelerators it runs unless ``--no-torch-compile``).

Accelerator budget: either suite must finish in 5 minutes on one H100/H200, so on an
accelerator the suite ignores the CPU shapes and budgets:

- ``model``: BERT-base only, B=64 T=128 and B=32 T=512, forward then train, per policy; 3
  warm-ups and at most 20 forward / 10 train timed calls (`bench_model.ACCELERATOR_TIMING`);
  torch.compile is dropped once one first call (its compilation) takes over 60 s or the first
  calls over 90 s in all (`bench_model.CompileGate`). Compilation, not timing, is what costs.
- every other section runs its quick shapes (``rope``: its GPU cases) with
  `ACCELERATOR_BUDGET_S` timed seconds per case; ``logreg``'s scikit-learn contenders run on the
  host CPU, so it keeps the quick sizes in either suite.

``bench.json`` and ``report.md`` are rewritten after every section and every model case
(``"complete": false`` until the end), so a run stopped by a time limit still leaves what it
finished. A section that raises is recorded (``"errors"``, and in the report) and the others
still run; the command then exits with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_model import (DTYPE_ALIASES, add_precision_arguments, precision_from_dtype,
                                    resolve_precisions)
from benchmarks.harness import (Column, jsonable, device_slug, environment,
                                environment_summary, format_table)

SUITES = ("quick", "full")
# Timed seconds per case of the sections other than model on an accelerator, where one call
# takes micro- to milliseconds and compilation dominates their run time anyway.
ACCELERATOR_BUDGET_S = 0.3
# P1-GPU and P2-GPU judge these BERT-base shapes (B, T); P2-GPU only the T=512 one.
GPU_GOAL_SHAPES = ((64, 128), (32, 512))


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What the suite tells every section."""

    quick: bool
    peak: float | None = None
    precision: tuple[str, ...] | None = None  # the model section's policies; None: default
    accelerator: bool = False
    torch_compile: bool | None = None  # None: the model section's default (accelerators only)
    # Called with each model row as soon as its case is done (the suite saves partial results).
    on_row: Callable[[dict[str, Any]], None] | None = dataclasses.field(default=None,
                                                                        compare=False)


@dataclasses.dataclass(frozen=True)
class Section:
    """How the suite calls one benchmark module."""

    name: str
    module: str
    run: Callable[[Any, RunOptions], list[dict[str, Any]]]  # (module, options) -> rows
    plot: str | None  # the module's plot function, or None


def _run_model(mod: Any, o: RunOptions) -> list[dict[str, Any]]:
    return mod.run(quick=o.quick, peak=o.peak, precision=o.precision,
                   torch_compile=o.torch_compile, on_row=o.on_row)


def _run_plain(mod: Any, o: RunOptions) -> list[dict[str, Any]]:
    if o.accelerator:
        return mod.run(quick=True, budget_s=ACCELERATOR_BUDGET_S)
    return mod.run(quick=o.quick)


def _run_flops(mod: Any, o: RunOptions) -> list[dict[str, Any]]:
    # Compiles only (XLA's cost analysis), nothing is timed; the quick lengths on accelerators.
    return mod.run(quick=o.quick or o.accelerator)


def _run_linear_causal(mod: Any, o: RunOptions) -> list[dict[str, Any]]:
    # Only the causal section: the non-causal comparison is the `layer` section's attention
    # rows, and decode has its own standalone benchmark run.
    if o.accelerator:
        return mod.run(quick=True, noncausal_ns=(), decode_lengths=(),
                       causal_ns=(512, 2048, 8192), budget_s=ACCELERATOR_BUDGET_S)
    return mod.run(quick=o.quick, noncausal_ns=(), decode_lengths=(),
                   causal_ns=(512, 2048, 4096) if o.quick else (512, 2048, 8192))


SECTIONS: tuple[Section, ...] = (
    Section("model", "benchmarks.bench_model", _run_model, "plot_mfu"),
    Section("layer", "benchmarks.bench_layer", _run_plain, "plot"),
    Section("flops", "benchmarks.bench_flops", _run_flops, None),
    Section("rope", "benchmarks.bench_rope", _run_plain, "plot"),
    Section("linear_causal", "benchmarks.bench_linear_attention", _run_linear_causal, "plot"),
    Section("logreg", "benchmarks.bench_logreg", _run_plain, "plot"),
)
SECTION_NAMES = tuple(s.name for s in SECTIONS)

GOAL_COLUMNS: tuple[Column, ...] = (("goal", "goal"), ("case", "case"), ("measured", "measured"),
                                    ("target", "target"), ("met", "met"))


def _command(suite: str, out: str, only: Sequence[str] | None,
             precision: str | Sequence[str] | None = None, *, dtype: str | None = None,
             torch_compile: bool | None = None) -> str:
    """The command line that reproduces a run; a deprecated ``--dtype`` is written as the
    ``--precision`` it stands for."""
    precision = precision_from_dtype(precision, dtype)
    parts = ["jaxformer bench", f"--suite {suite}"]
    if out != "results":
        parts.append(f"--out {out}")
    if only:
        parts.append("--only " + " ".join(only))
    if precision is not None:
        parts.append("--precision " + (precision if isinstance(precision, str)
                                       else " ".join(precision)))
    if torch_compile is not None:
        parts.append("--torch-compile" if torch_compile else "--no-torch-compile")
    return " ".join(parts)


def _policy(row: dict[str, Any]) -> str:
    """A model row's precision policy (rows written before policies existed name a dtype)."""
    return row.get("precision") or DTYPE_ALIASES.get(row["dtype"], row["dtype"])


def _gpu_goals(base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """P1-GPU (jaxformer ÷ HF torch sdpa, same policy, ≥ 1.3×) and P2-GPU (bf16 MFU ≥ 50%
    forward, ≥ 40% train at B=32 T=512) from BERT-base model rows of an accelerator."""
    from benchmarks.bench_model import GOAL_GPU, GOAL_GPU_MFU_FORWARD, GOAL_GPU_MFU_TRAIN

    out: list[dict[str, Any]] = []
    for r in base:
        ratio = r.get("ratio_sdpa")
        if (r["batch"], r["seq"]) not in GPU_GOAL_SHAPES or ratio is None:
            continue
        out.append({"goal": "P1-GPU jaxformer ÷ torch sdpa",
                    "case": f"{r['kind']} B={r['batch']} T={r['seq']} {_policy(r)}",
                    "measured": f"{ratio:.2f}×", "value": ratio, "target": f"≥ {GOAL_GPU}×",
                    "met": ratio >= GOAL_GPU})
    for r in base:
        if (r["batch"], r["seq"]) != GPU_GOAL_SHAPES[-1] or r["mfu"] is None:
            continue
        target = GOAL_GPU_MFU_FORWARD if r["kind"] == "forward" else GOAL_GPU_MFU_TRAIN
        # The peak is the bf16 tensor-core figure: only a bf16-compute run can meet it.
        out.append({"goal": "P2-GPU bf16 MFU",
                    "case": f"{r['kind']} B={r['batch']} T={r['seq']} {_policy(r)}",
                    "measured": f"{100 * r['mfu']:.1f}%", "value": r["mfu"],
                    "target": f"≥ {target:.0%} (bf16 compute)",
                    "met": r["mfu"] >= target and r["dtype"] == "bfloat16"})
    return out


def _memory_goals(model: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The train step's XLA temp memory against torch's peak allocated bytes, same shape and
    policy (rows where torch reported a peak, i.e. on CUDA). torch's peak also holds weights,
    gradients and AdamW moments; jaxformer's are its arguments, shown next to the temp."""
    out: list[dict[str, Any]] = []
    for r in model:
        temp, peak = r.get("jax_temp_mib"), r.get("torch_peak_mib")
        if r["kind"] != "train" or temp is None or peak is None:
            continue
        args_out = r.get("jax_args_out_mib")
        extra = "" if args_out is None else f" (+ {args_out:,.0f} args+out)"
        out.append({"goal": "memory: train temp ≤ torch peak",
                    "case": f"train {r['config']} B={r['batch']} T={r['seq']} {_policy(r)}",
                    "measured": f"{temp:,.0f} MiB temp{extra} vs torch {peak:,.0f} MiB",
                    "value": temp / peak if peak else None,
                    "target": "temp ≤ torch peak allocated", "met": temp <= peak})
    return out


def _band_goal(goal: str, rows: Sequence[dict[str, Any]], key: str, suffix: str
               ) -> list[dict[str, Any]]:
    """One goal row "within ±2%" for the layer cases `rows`, shown by the worst `key` ratio;
    none when there are no rows."""
    if not rows:
        return []
    worst = max(rows, key=lambda r: abs(r[key] - 1))
    return [{"goal": goal, "case": f"worst of {len(rows)} layer cases ({worst['attention']} "
             f"{worst['pass']} n={worst['seq']}){suffix}", "measured": f"{worst[key]:.4f}",
             "value": worst[key], "target": "within ±2%",
             "met": all(abs(r[key] - 1) <= 0.02 for r in rows)}]


def goals(sections: dict[str, list[dict[str, Any]]], *, platform: str) -> list[dict[str, Any]]:
    """The goal rows (P1, P2, P3 of the model and FLOPs benchmarks, P6 of the analytic logistic regression)
    from the section rows; reported, never asserted."""
    out: list[dict[str, Any]] = []
    model = sections.get("model", [])
    base = [r for r in model if r["config"] == "bert_base"]
    if platform == "cpu":
        for r in base:
            if _policy(r) != "fp32" or r.get("ratio_sdpa") is None:
                continue
            target = 1.2 if r["kind"] == "forward" else 1.1
            case = f"{r['kind']} B={r['batch']} T={r['seq']}"
            for impl in ("eager", "sdpa"):
                ratio = r.get(f"ratio_{impl}")
                if ratio is not None:
                    out.append({"goal": "P1 jaxformer ÷ torch", "case": f"{case} vs {impl}",
                                "measured": f"{ratio:.2f}×", "value": ratio,
                                "target": f"≥ {target}×", "met": ratio >= target})
        for r in base:
            if (r["kind"] == "forward" and r["seq"] == 512 and r["mfu"] is not None
                    and _policy(r) == "fp32"):
                out.append({"goal": "P2 CPU MFU", "case": f"forward B={r['batch']} T=512 fp32",
                            "measured": f"{100 * r['mfu']:.1f}%", "value": r["mfu"],
                            "target": "≥ 90%", "met": r["mfu"] >= 0.9})
    else:
        out += _gpu_goals(base)
    out += _memory_goals(model)
    # P3 is judged on the StableHLO matmul count (the same on every backend: XLA's cost_analysis
    # leaves out the library calls dots become on a GPU); the XLA comparison follows where XLA's
    # figure is reliable (no while loop).
    layer_rows = sections.get("flops", [])
    hlo = [r for r in layer_rows if r.get("hlo_ratio") is not None]
    unsure = sum(1 for r in hlo if not r.get("hlo_reliable", True))
    out += _band_goal("P3 FLOPs (StableHLO)", hlo, "hlo_ratio", " vs analytic matmuls"
                      + (f"; {unsure} flagged (see hlo_reason)" if unsure else ""))
    xla = [r for r in layer_rows if r.get("ratio") is not None]
    reliable = [r for r in xla if r["xla_reliable"]]
    flagged = len(xla) - len(reliable)
    out += _band_goal("P3 FLOPs vs XLA", reliable, "ratio",
                      f"; {flagged} flagged (while loop), not judged" if flagged else "")
    for r in base:  # tiny's 128-row embedding gather compiles to a one-hot matmul on CPU
        if r.get("xla_ratio") is not None and r["kind"] == "forward" and r.get("xla_reliable"):
            out.append({"goal": "P3 (whole model)", "case": f"forward {r['config']} B={r['batch']} "
                        f"T={r['seq']}", "measured": f"{r['xla_ratio']:.4f}",
                        "value": r["xla_ratio"], "target": "within ±2%",
                        "met": abs(r["xla_ratio"] - 1) <= 0.02})
    # P6, per d at the largest n run (quick: 1e4 at d=64, 2e4 at d=768): the jitted analytic fit
    # against scikit-learn, accuracy within 1 point (better is fine), and against XᵀX alone.
    fits = [r for r in sections.get("logreg", [])
            if r.get("section") == "fit" and r.get("speedup_lr") is not None]
    for d in sorted({r["d"] for r in fits}):
        r = max((r for r in fits if r["d"] == d), key=lambda r: r["n"])
        case = f"n={r['n']:,} d={d} C={r['classes']}"
        for key, label, target in (("lr", "LR(lbfgs)", 5.0), ("lda", "LDA(lsqr)", 3.0)):
            speedup, gap = r[f"speedup_{key}"], r[f"gap_{key}_pts"]
            out.append({"goal": f"P6 analytic vs sklearn {label}", "case": case,
                        "measured": f"{speedup:.1f}× faster, accuracy {gap:+.1f} pt",
                        "value": speedup, "target": f"≥ {target:g}×, accuracy ≥ −1 pt",
                        "met": speedup >= target and gap >= -1.0})
        out.append({"goal": "P6 analytic ÷ XᵀX", "case": case,
                    "measured": f"{r['xtx_ratio']:.2f}×", "value": r["xtx_ratio"],
                    "target": "≤ 1.5×", "met": r["xtx_ratio"] <= 1.5})
    return out


def run_suite(*, suite: str = "quick", out: str = "results", only: Sequence[str] | None = None,
              precision: str | Sequence[str] | None = None, dtype: str | None = None,
              torch_compile: bool | None = None, progress: bool = True,
              sections: Sequence[Section] = SECTIONS) -> dict[str, Any]:
    """Run the suite and write its report; returns the payload written to bench.json.

    `precision`: the model section's policies (None: the platform's default); `dtype` is its
    deprecated alias. `torch_compile`: the model section's torch.compile contender (None: on
    accelerators only).
    """
    import importlib

    import jax
    from tqdm.auto import tqdm

    from jaxformer.peaks import device_peak

    if suite not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
    names = [s.name for s in sections]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"--only {' '.join(unknown)}: unknown section; expected some of {names}")
    chosen = [s for s in sections if not only or s.name in only]
    command = _command(suite, out, only, precision, dtype=dtype, torch_compile=torch_compile)
    accelerator = jax.devices()[0].platform != "cpu"
    policies = resolve_precisions(precision, dtype, accelerator=accelerator)
    options = RunOptions(quick=suite == "quick", precision=policies, accelerator=accelerator,
                         torch_compile=torch_compile)
    start = time.perf_counter()

    bar = tqdm(total=len(chosen) + 1, desc="peak", unit="section", disable=not progress)
    peak = device_peak()
    options = dataclasses.replace(options, peak=peak.flops_per_s)
    bar.update(1)
    env = environment()
    folder = Path(out) / device_slug(env["device_kind"], env["platform"])
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {}
    meta: dict[str, dict[str, Any]] = {}
    pngs: dict[str, str] = {}
    errors: dict[str, str] = {}

    def payload(complete: bool) -> dict[str, Any]:
        return {"command": command, "suite": suite, "precision": list(policies),
                "complete": complete, "errors": dict(errors), "environment": env,
                "peak": dataclasses.asdict(peak),
                "total_s": time.perf_counter() - start,
                "goals": goals(results, platform=env["platform"]),
                "sections": {name: {**{k: v for k, v in meta[name].items() if k != "columns"},
                                    "columns": [list(c) if isinstance(c, tuple) else [c, c]
                                                for c in meta[name]["columns"]],
                                    "png": pngs.get(name), "rows": results[name]}
                             for name in results}}

    def save(data: dict[str, Any]) -> str:
        (folder / "bench.json").write_text(json.dumps(jsonable(data), indent=2,
                                                      allow_nan=False) + "\n")
        report = render_report(data, meta)
        (folder / "report.md").write_text(report)
        return report

    for section in chosen:
        bar.set_description(section.name)
        module = importlib.import_module(section.module)
        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = []
        results[section.name] = rows
        meta[section.name] = {"module": section.module, "title": module.TITLE,
                              "columns": module.COLUMNS, "notes": list(module.NOTES),
                              "seconds": 0.0}

        def on_row(row: dict[str, Any], rows: list[dict[str, Any]] = rows, t0: float = t0,
                   name: str = section.name) -> None:
            rows.append(row)
            meta[name]["seconds"] = time.perf_counter() - t0
            save(payload(complete=False))

        try:
            results[section.name] = section.run(module, dataclasses.replace(options,
                                                                            on_row=on_row))
        except Exception as err:  # noqa: BLE001 -- recorded, and the command fails at the end
            errors[section.name] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        extra = getattr(module, "run_notes", lambda rows: [])(results[section.name])
        meta[section.name].update(notes=[*module.NOTES, *extra],
                                  seconds=time.perf_counter() - t0)
        # Written after every section: a run stopped by a time limit keeps what it finished.
        save(payload(complete=False))
        bar.update(1)
    bar.close()
    # Again at the end, as write_report does: e.g. the torch threads the model section set.
    env.update(environment())

    for section in chosen:
        if section.plot and results[section.name] and section.name not in errors:
            module = importlib.import_module(section.module)
            path = getattr(module, section.plot)(results[section.name], folder / f"{section.name}.png")
            pngs[section.name] = Path(path).name
    final = payload(complete=not errors)
    report = save(final)
    print(report)
    print(f"wrote {folder / 'bench.json'}, {folder / 'report.md'}"
          + "".join(f", {folder / p}" for p in pngs.values()))
    print(f"total {final['total_s']:.0f} s; reproduce with: {command}")
    if errors:
        raise SuiteError("; ".join(f"section {name} failed: {e}" for name, e in errors.items()))
    return final


class SuiteError(RuntimeError):
    """Some sections raised; the report holds the others and names the errors."""


def _peak_line(peak: dict[str, Any]) -> str:
    value = peak["flops_per_s"]
    figure = "none (MFU not computed)" if value is None else (
        f"{value / 1e9:,.1f} GFLOP/s" if value < 1e12 else f"{value / 1e12:,.1f} TFLOP/s")
    line = f"Peak for MFU: {figure}, {peak['dtype']}; {peak['source']}."
    measured = peak.get("measured")
    if measured:
        shapes = "; ".join(f"{m}x{k}x{n}: {f / 1e9:.1f}" for (m, k, n), f in measured["per_shape"])
        line += f" Per shape (M x K x N: GFLOP/s): {shapes}."
    return line


def render_report(payload: dict[str, Any], meta: dict[str, dict[str, Any]]) -> str:
    """report.md: command, environment, peak, goals, then one table (and PNG) per section."""
    dtypes = sorted({str(r["dtype"]) for rows in payload["sections"].values() for r in rows["rows"]
                     if r.get("dtype") is not None})
    lines = [f"Reproduce with: `{payload['command']}`", "",
             environment_summary(payload["environment"], dtypes), "",
             _peak_line(payload["peak"]), "",
             f"Suite `{payload['suite']}`, total wall time {payload['total_s']:.0f} s; model "
             f"section precision policies: {', '.join(payload.get('precision') or ['n/a'])}."
             + ("" if payload.get("complete", True) else
                " INCOMPLETE: written after the last finished section or case ("
                + (", ".join(payload["sections"]) or "none") + ")."), "",
             "## Goals (reported, not asserted)", "",
             format_table(payload["goals"], GOAL_COLUMNS) if payload["goals"] else "(no goal rows)"]
    for name, section in payload["sections"].items():
        lines += ["", f"## {name}: {section['title']}", "",
                  f"`python -m {section['module']}` runs this section alone "
                  f"({section['seconds']:.0f} s here).", ""]
        if name in payload.get("errors", {}):
            lines += [f"FAILED: {payload['errors'][name]} (rows before the error are below).", ""]
        lines.append(format_table(section["rows"], meta[name]["columns"]))
        if section.get("png"):
            lines += ["", f"![{name}]({section['png']})"]
        if section["notes"]:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in section["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="jaxformer bench",
                                     description="Run the jaxformer benchmark suite.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_suite(suite=args.suite, out=args.out, only=args.only, precision=args.precision,
                  dtype=args.dtype, torch_compile=args.torch_compile)
    except SuiteError as err:
        print(f"jaxformer bench: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="quick", choices=SUITES,
                        help="quick (default): < 5 min on 2 CPU cores; full: more CPU shapes "
                             "(on an accelerator both run its own shapes, < 5 min on an H100)")
    parser.add_argument("--out", default="results", help="results root (default: results)")
    parser.add_argument("--only", nargs="+", choices=SECTION_NAMES, metavar="SECTION",
                        help=f"run only these sections: {', '.join(SECTION_NAMES)}")
    add_precision_arguments(parser)


if __name__ == "__main__":
    main()
