"""jaxformer bench [--suite quick|full] [--out results] [--only SECTION ...] [--dtype DTYPE]

(also ``python -m benchmarks.suite ...``; ``make bench`` runs ``jaxformer bench``.) The kit's main
job: measures the peak, then runs the sections below with a progress bar, prints each table and
the goals table, and writes ``<out>/<device>/bench.json``, ``report.md`` and one PNG per section
(``<device>`` is ``cpu`` or the accelerator's kind, e.g. ``nvidia-h100-80gb-hbm3``).

Sections (module, what it measures):

- ``model`` (`benchmarks.bench_model`): encoder forward and train step, tiny and BERT-base,
  against HF PyTorch in the same process; tokens/s, TFLOP/s, MFU, compile s, temp memory.
- ``layer`` (`benchmarks.bench_layer`): a BERT-base layer, softmax vs linear attention over n:
  time ratio, FLOP ratio, Su's crossovers (post 8610); and attention kernels alone.
- ``flops`` (`benchmarks.bench_flops`): analytic FLOPs vs XLA's count (goal P3).
- ``rope`` (`benchmarks.bench_rope`): RoPE apply, 1D and 2D.
- ``linear_causal`` (`benchmarks.bench_linear_attention`): causal linear attention, modes
  chunked / scan / quadratic vs causal softmax.
- ``logreg`` (`benchmarks.bench_logreg`): the closed-form logistic regression's fit time against
  scikit-learn's LR and LDA and optax gradient descent, and streaming memory (goal P6).

``quick`` (the default) fits in 5 minutes on 2 CPU cores; ``full`` has more shapes and longer
budgets and is meant for a GPU or TPU. On an accelerator the model section uses its larger
accelerator shapes in either suite; ``--dtype bfloat16`` runs it in pure bf16 (goal P2 on GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (Column, jsonable, device_slug, environment,
                                environment_summary, format_table)

SUITES = ("quick", "full")


@dataclasses.dataclass(frozen=True)
class Section:
    """How the suite calls one benchmark module."""

    name: str
    module: str
    run: Callable[..., list[dict[str, Any]]]  # (module, quick, peak, dtype) -> rows
    plot: str | None  # the module's plot function, or None


def _run_model(mod: Any, quick: bool, peak: float | None, dtype: str) -> list[dict[str, Any]]:
    return mod.run(quick=quick, peak=peak, dtype=dtype)


def _run_plain(mod: Any, quick: bool, peak: float | None, dtype: str) -> list[dict[str, Any]]:
    return mod.run(quick=quick)


def _run_linear_causal(mod: Any, quick: bool, peak: float | None, dtype: str
                       ) -> list[dict[str, Any]]:
    # Only the causal section: the non-causal comparison is the `layer` section's attention
    # rows, and decode has its own standalone benchmark run.
    return mod.run(quick=quick, noncausal_ns=(), decode_lengths=(),
                   causal_ns=(512, 2048, 4096) if quick else (512, 2048, 8192))


SECTIONS: tuple[Section, ...] = (
    Section("model", "benchmarks.bench_model", _run_model, "plot_mfu"),
    Section("layer", "benchmarks.bench_layer", _run_plain, "plot"),
    Section("flops", "benchmarks.bench_flops", _run_plain, None),
    Section("rope", "benchmarks.bench_rope", _run_plain, "plot"),
    Section("linear_causal", "benchmarks.bench_linear_attention", _run_linear_causal, "plot"),
    Section("logreg", "benchmarks.bench_logreg", _run_plain, "plot"),
)
SECTION_NAMES = tuple(s.name for s in SECTIONS)

GOAL_COLUMNS: tuple[Column, ...] = (("goal", "goal"), ("case", "case"), ("measured", "measured"),
                                    ("target", "target"), ("met", "met"))


def _command(suite: str, out: str, only: Sequence[str] | None, dtype: str) -> str:
    parts = ["jaxformer bench", f"--suite {suite}"]
    if out != "results":
        parts.append(f"--out {out}")
    if only:
        parts.append("--only " + " ".join(only))
    if dtype != "float32":
        parts.append(f"--dtype {dtype}")
    return " ".join(parts)


def goals(sections: dict[str, list[dict[str, Any]]], *, platform: str) -> list[dict[str, Any]]:
    """The goal rows of issue 5 (P1, P2, P3) and of the analytic logistic regression issue (P6)
    from the section rows; reported, never asserted."""
    out: list[dict[str, Any]] = []
    model = sections.get("model", [])
    base = [r for r in model if r["config"] == "bert_base"]
    if platform == "cpu":
        for r in base:
            if r["dtype"] != "float32" or r.get("ratio_sdpa") is None:
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
            if r["kind"] == "forward" and r["seq"] == 512 and r["mfu"] is not None:
                out.append({"goal": "P2 CPU MFU", "case": f"forward B={r['batch']} T=512 fp32",
                            "measured": f"{100 * r['mfu']:.1f}%", "value": r["mfu"],
                            "target": "≥ 90%", "met": r["mfu"] >= 0.9})
    else:
        for r in base:
            if r["kind"] == "train" and r["seq"] == 512 and r["mfu"] is not None:
                out.append({"goal": "P2 accelerator MFU",
                            "case": f"train B={r['batch']} T=512 {r['dtype']}",
                            "measured": f"{100 * r['mfu']:.1f}%", "value": r["mfu"],
                            "target": "≥ 50% (bf16)", "met": r["mfu"] >= 0.5 and r["dtype"] == "bfloat16"})
    flops = [r for r in sections.get("flops", []) if r.get("ratio") is not None]
    reliable = [r for r in flops if r["xla_reliable"]]
    if reliable:
        worst = max(reliable, key=lambda r: abs(r["ratio"] - 1))
        flagged = len(flops) - len(reliable)
        out.append({"goal": "P3 FLOPs vs XLA", "case": f"worst of {len(reliable)} layer cases "
                    f"({worst['attention']} {worst['pass']} n={worst['seq']})"
                    + (f"; {flagged} flagged (while loop), not judged" if flagged else ""),
                    "measured": f"{worst['ratio']:.4f}", "value": worst["ratio"],
                    "target": "within ±2%",
                    "met": all(abs(r["ratio"] - 1) <= 0.02 for r in reliable)})
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
              dtype: str = "float32", progress: bool = True,
              sections: Sequence[Section] = SECTIONS) -> dict[str, Any]:
    """Run the suite and write its report; returns the payload written to bench.json."""
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
    quick = suite == "quick"
    command = _command(suite, out, only, dtype)
    start = time.perf_counter()

    bar = tqdm(total=len(chosen) + 1, desc="peak", unit="section", disable=not progress)
    peak = device_peak()
    bar.update(1)
    results: dict[str, list[dict[str, Any]]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for section in chosen:
        bar.set_description(section.name)
        module = importlib.import_module(section.module)
        t0 = time.perf_counter()
        rows = section.run(module, quick, peak.flops_per_s, dtype)
        results[section.name] = rows
        meta[section.name] = {"module": section.module, "title": module.TITLE,
                              "columns": module.COLUMNS, "notes": list(module.NOTES),
                              "seconds": time.perf_counter() - t0}
        bar.update(1)
    bar.close()

    env = environment()
    goal_rows = goals(results, platform=jax.devices()[0].platform)
    folder = Path(out) / device_slug(env["device_kind"], env["platform"])
    folder.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, str] = {}
    for section in chosen:
        if section.plot and results[section.name]:
            module = importlib.import_module(section.module)
            path = getattr(module, section.plot)(results[section.name], folder / f"{section.name}.png")
            pngs[section.name] = Path(path).name
    total = time.perf_counter() - start
    payload = {"command": command, "suite": suite, "dtype": dtype, "environment": env,
               "peak": dataclasses.asdict(peak), "total_s": total, "goals": goal_rows,
               "sections": {name: {**{k: v for k, v in meta[name].items() if k != "columns"},
                                   "columns": [list(c) if isinstance(c, tuple) else [c, c]
                                               for c in meta[name]["columns"]],
                                   "png": pngs.get(name), "rows": results[name]}
                            for name in results}}
    (folder / "bench.json").write_text(json.dumps(jsonable(payload), indent=2, allow_nan=False)
                                       + "\n")
    report = render_report(payload, meta)
    (folder / "report.md").write_text(report)
    print(report)
    print(f"wrote {folder / 'bench.json'}, {folder / 'report.md'}"
          + "".join(f", {folder / p}" for p in pngs.values()))
    print(f"total {total:.0f} s; reproduce with: {command}")
    return payload


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
             f"Suite `{payload['suite']}`, total wall time {payload['total_s']:.0f} s.", "",
             "## Goals (reported, not asserted: P1-P3 issue 5, P6 issue 6)", "",
             format_table(payload["goals"], GOAL_COLUMNS) if payload["goals"] else "(no goal rows)"]
    for name, section in payload["sections"].items():
        lines += ["", f"## {name}: {section['title']}", "",
                  f"`python -m {section['module']}` runs this section alone "
                  f"({section['seconds']:.0f} s here).", "",
                  format_table(section["rows"], meta[name]["columns"])]
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
    run_suite(suite=args.suite, out=args.out, only=args.only, dtype=args.dtype)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="quick", choices=SUITES,
                        help="quick (default): < 5 min on 2 CPU cores; full: for GPU/TPU")
    parser.add_argument("--out", default="results", help="results root (default: results)")
    parser.add_argument("--only", nargs="+", choices=SECTION_NAMES, metavar="SECTION",
                        help=f"run only these sections: {', '.join(SECTION_NAMES)}")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="dtype of the model section (bfloat16: pure bf16, for accelerators)")


if __name__ == "__main__":
    main()
