"""python -m benchmarks.bench_layer [--quick] [--out results]   (Su, kexue.fm post 8610)

A full Transformer encoder layer with softmax attention vs the same layer with linear attention
(elu+1, non-causal, mode="auto" = "parallel"), over the sequence length n, in two sections:

1. layer: the kit's BERT-base `Block` (post-norm, E=768, H=12, D=64, F=3072, exact GELU; B=1,
   fp32, x ~ N(0, 1) ``[B, n, E]``), built once per attention kind from the same seed (identical
   weights), split with `nnx.split` and jitted as the pure ``fwd(state, x)``; softmax and linear
   timed round-robin. Each row sets the measured time ratio next to the analytic FLOP ratio
   (`jaxformer.flops.layer_flops`, convention "kit") and Su's analytic crossovers;
2. attention: the kernels alone, B=1, H=12, D=M=K=64: `softmax_attention` vs
   `linear_attention(mode="parallel")` vs `jax.nn.dot_product_attention`.

n = 256 ... 8192 in both sections; --quick stops the layer at 4096 and the attention at 2048
(about a minute on 2 CPU cores).

`crossovers()` gives post 8610's crossover lengths (attention > FFN at n=1536, the n² term
dominates at n=4608) and, from rows, the n where the measured time ratio and the FLOP ratio
cross 1 (`summary`: log-log interpolation between the bracketing rows). Correctness columns: the
linear layer against the same block in the kernel's own "quadratic" mode, and
`softmax_attention` against `jax.nn.dot_product_attention`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import (Column, Timing, bench_main, prepare_jax, save_figure,
                                time_interleaved, write_report)
from jaxformer.attention import softmax_attention
from jaxformer.flops import LayerShape, crossover_lengths, layer_flops
from jaxformer.linear_attention import linear_attention

NAME = "layer_softmax_vs_linear"
TITLE = ("Encoder layer (BERT-base block, B=1, fp32): softmax vs linear (elu+1) attention over n, "
         "measured time ratio vs analytic FLOP ratio")
BATCH = 1
LAYER_NS = (256, 512, 1024, 2048, 4096, 8192)
QUICK_LAYER_NS = (256, 512, 1024, 2048, 4096)
ATTENTION_NS = LAYER_NS
# Quick stops at 2048: at 4096 softmax_attention and dot_product_attention take ~1.7 and ~2.9 s
# per call on 2 cores, which alone would be ~30 s of the quick run's ~60 s.
QUICK_ATTENTION_NS = (256, 512, 1024, 2048)
CHECK_MAX_N = 2048  # the linear layer is checked against its "quadratic" mode up to here
# Timed seconds per n (all contenders together); never fewer than MIN_REPEATS rounds. The softmax
# layer at n=4096 takes ~2.2 s per call on 2 cores, so that group always stops at MIN_REPEATS.
BUDGET_S = 6.0
QUICK_BUDGET_S = 1.0
MIN_REPEATS = 5
REPEATS = 25
SECTIONS = ("layer", "attention")

COLUMNS: tuple[Column, ...] = (
    ("section", "section"),
    ("n", "n"),
    ("softmax_ms", "softmax ms"),
    ("linear_ms", "linear ms"),
    ("dpa_ms", "dpa ms"),
    ("time_ratio", "time ratio softmax/linear"),
    ("time_ratio_min", "ratio (min times)"),
    ("flop_ratio", "FLOP ratio softmax/linear"),
    ("dpa_ratio", "dpa/softmax"),
    ("softmax_gflops", "softmax GFLOP/s"),
    ("linear_gflops", "linear GFLOP/s"),
    ("softmax_temp_mib", "softmax temp MiB"),
    ("linear_temp_mib", "linear temp MiB"),
    ("softmax_compile_s", "softmax compile s"),
    ("linear_compile_s", "linear compile s"),
    ("spread_pct", "max IQR %"),
    ("linear_check", "linear vs quadratic mode err"),
    ("dpa_check", "softmax vs dpa err"),
    ("su_attention_exceeds_ffn", "Su: attn > FFN at n"),
    ("su_quadratic_dominates", "Su: n² dominates at n"),
    ("measured_time_crossover", "measured time crossover n"),
)

NOTES = (
    "FLOP convention 'kit' (jaxformer/flops.py): 2 FLOPs per multiply-add, matmuls only, forward. "
    "Layer, softmax: qkv 6·n·E² + out_proj 2·n·E² + FFN 4·n·E·F + QKᵀ and AV 4·n²·H·D; linear: "
    "the same projections and FFN + state φ(K)ᵀV and read-out φ(Q)S 4·n·H·M·K + denominator "
    "4·n·H·M (B=1, M=K=D). LayerNorm, GELU, softmax, φ=elu+1, bias and residual adds are "
    "elementwise, not in the ratio: their totals are in the JSON (*_elementwise_flops). GFLOP/s = "
    "analytic matmul FLOPs / median time. Attention section: 4·H·n²·D vs 4·H·n·M·K (QKᵀ+AV vs "
    "state+read-out; denominator excluded, as in the linear_attention benchmark), i.e. n/D.",
    "Crossovers (Su, https://kexue.fm/archives/8610; he counts multiplications, half the kit's "
    "FLOPs, which leaves every crossover unchanged): with P=H·D, attention (its projections "
    "4·n·E·P plus 2·n²·P) outweighs the FFN (2·n·E·F) for n > E·(F−2P)/P = 1536, and the n² term "
    "outweighs every term linear in n for n > 2E + E·F/P = 4608 (there the layer FLOP ratio "
    "softmax/linear is ≈ 2). The attention cores alone cross at n = M·K/D = 64 (65 with the kit's "
    "denominator term), far below the shortest n here, so the FLOP ratio is > 1 at every row.",
    "Measured crossovers: the first n where the ratio (medians) passes 1, interpolating log(ratio) "
    "linearly in log(n) between the two bracketing rows (log-log); n/a when it stays on one side "
    "of 1 over the measured n. The time crossover depends on the machine; the FLOP one does not.",
    f"linear vs quadratic mode err: max |linear layer output − the same block (same weights) with "
    f"linear_mode='quadratic'|, the kernel's own reference form (φQφKᵀ)V, n ≤ {CHECK_MAX_N}. "
    "softmax vs dpa err: max |softmax_attention − jax.nn.dot_product_attention| on the same q, k, "
    "v. The softmax and linear layers are different models, so their outputs are not compared.",
    "Times are medians of interleaved rounds (softmax, linear[, dpa], at least "
    f"{MIN_REPEATS} timed rounds, then until the time budget; samples, IQR and min-time ratios in "
    "the JSON); compile time is excluded but reported. temp MiB = XLA's memory_analysis() "
    "temp_size_in_bytes of the compiled call.",
)


# --------------------------------------------------------------------------- configuration


def layer_config(config: str = "bert_base", *, d_model: int | None = None,
                 heads: int | None = None, ffn: int | None = None,
                 attention: str = "softmax", **changes: Any) -> Any:
    """An `EncoderConfig` preset (``"bert_base"``, ``"tiny"``, ...) without attention dropout
    (linear attention requires it), with optional width overrides (tests use small ones)."""
    from jaxformer.models.config import EncoderConfig

    widths = {"hidden_size": d_model, "num_heads": heads, "intermediate_size": ffn}
    overrides = {k: v for k, v in widths.items() if v is not None}
    return getattr(EncoderConfig, config)(attention=attention, attention_dropout=0.0,
                                          **overrides, **changes)


def layer_shape(cfg: Any, n: int, attention: str, batch: int = BATCH) -> LayerShape:
    return LayerShape(d_model=cfg.hidden_size, heads=cfg.num_heads, ffn=cfg.intermediate_size,
                      seq_len=n, batch=batch, attention=attention, linear_mode="parallel",
                      activation=cfg.hidden_act)


def attention_flops(n: int, *, heads: int, head_dim: int, batch: int = BATCH
                    ) -> tuple[float, float]:
    """(softmax QKᵀ + AV, linear state + read-out) FLOPs from `layer_flops`' matmul entries."""
    shape = dict(d_model=heads * head_dim, heads=heads, ffn=1, seq_len=n, batch=batch)
    soft = layer_flops(LayerShape(**shape, attention="softmax"))["matmul"]
    lin = layer_flops(LayerShape(**shape, attention="linear", linear_mode="parallel"))["matmul"]
    return soft["scores"] + soft["attention_v"], lin["linear_state"] + lin["linear_readout"]


# --------------------------------------------------------------------------- crossovers


def crossing(ns: Sequence[float], ratios: Sequence[float | None]) -> float | None:
    """First n (ascending) where the ratio passes 1: log(ratio) interpolated linearly in log(n)
    between the bracketing points (log-log). None if it never reaches 1 over ``ns``."""
    pts = sorted((float(n), float(r)) for n, r in zip(ns, ratios, strict=True)
                 if r is not None and math.isfinite(r) and r > 0)
    for (n0, r0), (n1, r1) in zip(pts, pts[1:]):
        if r0 == 1.0:
            return n0
        if (r0 < 1.0) != (r1 < 1.0):
            a0, a1 = math.log(r0), math.log(r1)
            frac = a0 / (a0 - a1)
            return math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))
    return pts[-1][0] if pts and pts[-1][1] == 1.0 else None


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Measured crossovers from the "layer" rows (and the attention rows' time crossover)."""
    out: dict[str, float | None] = {}
    for section, prefix in ((SECTIONS[0], "measured"), (SECTIONS[1], "attention")):
        sub = [r for r in rows if r.get("section") == section]
        ns = [r["n"] for r in sub]
        out[f"{prefix}_time_crossover"] = crossing(ns, [r.get("time_ratio") for r in sub])
        out[f"{prefix}_time_crossover_min"] = crossing(ns, [r.get("time_ratio_min") for r in sub])
        out[f"{prefix}_flop_crossover"] = crossing(ns, [r.get("flop_ratio") for r in sub])
    return out


def crossovers(rows: Sequence[dict[str, Any]] | None = None, *, d_model: int = 768,
               heads: int = 12, ffn: int = 3072, feature_dim: int | None = None
               ) -> dict[str, float | None]:
    """Post 8610's analytic crossovers (default BERT-base: 1536, 4608 and M·K/D = 64), the kit's
    exact layer FLOP crossover, and the measured ones from ``rows`` (None without rows)."""
    head_dim = d_model // heads
    m = head_dim if feature_dim is None else feature_dim
    su = crossover_lengths(d_model, heads, ffn, feature_dim=m)
    out: dict[str, float | None] = {f"su_{k}": v for k, v in su.items()}
    # Only the attention terms differ: softmax a·n², linear b·n, so they cross at n = b / a.
    one = [layer_flops(LayerShape(d_model=d_model, heads=heads, ffn=ffn, seq_len=1,
                                  attention=kind, feature_dim=m if kind == "linear" else None,
                                  linear_mode="parallel"))["matmul"]
           for kind in ("softmax", "linear")]
    soft = one[0]["scores"] + one[0]["attention_v"]
    lin = sum(v for k, v in one[1].items() if k.startswith("linear_"))
    out["kit_flop_crossover"] = lin / soft
    measured = summary(rows) if rows else {}
    for key in ("measured_time_crossover", "measured_time_crossover_min",
                "measured_flop_crossover"):
        out[key] = measured.get(key)
    return out


def crossover_summary(rows: Sequence[dict[str, Any]]) -> str:
    """One line for the report: analytic and measured crossovers."""
    layer = [r for r in rows if r.get("section") == SECTIONS[0]]
    if not layer:
        return "Crossovers: no layer rows."
    c = {k: layer[0].get(k) for k in ("su_attention_exceeds_ffn", "su_quadratic_dominates",
                                       "su_linear_cheaper_than_softmax", "kit_flop_crossover")}
    m = summary(rows)
    fmt = lambda v: "n/a" if v is None else f"{v:.0f}"  # noqa: E731
    lo, hi = min(r["n"] for r in layer), max(r["n"] for r in layer)
    return (f"Crossovers: Su (post 8610) attention > FFN at "
            f"n={fmt(c['su_attention_exceeds_ffn'])}, "
            f"n² term dominates at n={fmt(c['su_quadratic_dominates'])}, linear attention core "
            f"cheaper at n > {fmt(c['su_linear_cheaper_than_softmax'])} (kit count: "
            f"{fmt(c['kit_flop_crossover'])}); measured over n={lo}..{hi}: layer time ratio "
            f"crosses 1 at n={fmt(m['measured_time_crossover'])} (min times: "
            f"{fmt(m['measured_time_crossover_min'])}), FLOP ratio at "
            f"n={fmt(m['measured_flop_crossover'])}, attention-only time ratio at "
            f"n={fmt(m['attention_time_crossover'])} (n/a: never crosses in range).")


# --------------------------------------------------------------------------- running


def _randn(shape: tuple[int, ...], seed: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _max_abs(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def _mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / 2.0 ** 20


def _forward(graphdef: Any) -> Callable[[Any, jax.Array], jax.Array]:
    from flax import nnx

    def fwd(state: Any, x: jax.Array) -> jax.Array:
        # Pure in the parameters: jit sees them as inputs, not as baked-in constants.
        return nnx.merge(graphdef, state)(x, mask=None, deterministic=True)

    return fwd


def _pair(t: dict[str, Timing], flops_: dict[str, float]) -> dict[str, Any]:
    """Columns shared by both sections, from the "softmax" and "linear" timings."""
    s, lin = t["softmax"], t["linear"]
    return {
        "softmax_ms": 1e3 * s.median_s, "linear_ms": 1e3 * lin.median_s,
        "time_ratio": s.median_s / lin.median_s, "time_ratio_min": s.min_s / lin.min_s,
        "softmax_flops": flops_["softmax"], "linear_flops": flops_["linear"],
        "flop_ratio": flops_["softmax"] / flops_["linear"],
        "softmax_gflops": flops_["softmax"] / s.median_s / 1e9,
        "linear_gflops": flops_["linear"] / lin.median_s / 1e9,
        "softmax_temp_mib": _mib(s.temp_bytes), "linear_temp_mib": _mib(lin.temp_bytes),
        "softmax_compile_s": s.compile_s, "linear_compile_s": lin.compile_s,
        "spread_pct": 100 * max(x.iqr_s / x.median_s for x in t.values()),
        "rounds": len(s.times_s), "timing": dict(t),
    }


def _run_layer(cfg: Any, ns: Sequence[int], *, budget_s: float, warmup: int, seed: int,
               check_max_n: int) -> list[dict[str, Any]]:
    from flax import nnx

    from jaxformer.models.encoder import Block

    # Same seed, same parameter tree: the two layers hold identical weights.
    graphdefs, states = {}, {}
    for kind in ("softmax", "linear"):
        graphdefs[kind], states[kind] = nnx.split(Block(cfg.replace(attention=kind),
                                                        rngs=nnx.Rngs(params=seed)))
    shapes = jax.tree.map(jnp.shape, states["softmax"])
    if jax.tree.map(jnp.shape, states["linear"]) != shapes:
        raise RuntimeError("softmax and linear blocks have different parameter shapes")
    reference, _ = nnx.split(Block(cfg.replace(attention="linear", linear_mode="quadratic"),
                                   rngs=nnx.Rngs(params=seed)))
    rows = []
    for i, n in enumerate(ns):
        x = _randn((BATCH, n, cfg.hidden_size), seed + 1 + i)
        calls = {kind: prepare_jax(_forward(graphdefs[kind]), states[kind], x)
                 for kind in ("softmax", "linear")}
        t = time_interleaved(calls, warmup=warmup, repeats=REPEATS, budget_s=budget_s,
                             min_repeats=MIN_REPEATS)
        counts = {kind: layer_flops(layer_shape(cfg, n, kind), convention="kit")
                  for kind in ("softmax", "linear")}
        check = None
        if n <= check_max_n:
            want = jax.jit(_forward(reference))(states["linear"], x)
            check = _max_abs(t["linear"].output, want)
        rows.append({
            "section": SECTIONS[0], "n": n, "batch": BATCH, "dtype": "float32",
            "d_model": cfg.hidden_size, "heads": cfg.num_heads, "ffn": cfg.intermediate_size,
            **_pair(t, {k: c["matmul_total"] for k, c in counts.items()}),
            "softmax_elementwise_flops": counts["softmax"]["elementwise_total"],
            "linear_elementwise_flops": counts["linear"]["elementwise_total"],
            "softmax_matmul": counts["softmax"]["matmul"],
            "linear_matmul": counts["linear"]["matmul"],
            "linear_check": check,
        })
    return rows


def _run_attention(ns: Sequence[int], *, heads: int, head_dim: int, budget_s: float,
                   warmup: int, seed: int) -> list[dict[str, Any]]:
    kernels = {
        "softmax": lambda q, k, v: softmax_attention(q, k, v),
        "linear": lambda q, k, v: linear_attention(q, k, v, causal=False, mode="parallel"),
        "dpa": lambda q, k, v: jax.nn.dot_product_attention(q, k, v),
    }
    rows = []
    for i, n in enumerate(ns):
        q, k, v = (_randn((BATCH, n, heads, head_dim), seed + 10 * i + j) for j in range(3))
        calls = {name: prepare_jax(fn, q, k, v) for name, fn in kernels.items()}
        t = time_interleaved(calls, warmup=warmup, repeats=REPEATS, budget_s=budget_s,
                             min_repeats=MIN_REPEATS)
        soft, lin = attention_flops(n, heads=heads, head_dim=head_dim)
        rows.append({
            "section": SECTIONS[1], "n": n, "batch": BATCH, "dtype": "float32",
            "heads": heads, "head_dim": head_dim,
            **_pair(t, {"softmax": soft, "linear": lin}),
            "dpa_ms": 1e3 * t["dpa"].median_s,
            "dpa_ratio": t["dpa"].median_s / t["softmax"].median_s,
            "dpa_check": _max_abs(t["softmax"].output, t["dpa"].output),
        })
    return rows


def run(quick: bool = False, *, ns: Sequence[int] | None = None,
        attention_ns: Sequence[int] | None = None, budget_s: float | None = None,
        config: str = "bert_base", d_model: int | None = None, heads: int | None = None,
        ffn: int | None = None, check_max_n: int = CHECK_MAX_N) -> list[dict[str, Any]]:
    """Both sections; ``config`` (an `EncoderConfig` preset) and the width overrides shrink the
    layer for tests. The attention section uses the layer's H and D."""
    if ns is None:
        ns = QUICK_LAYER_NS if quick else LAYER_NS
    if attention_ns is None:
        attention_ns = QUICK_ATTENTION_NS if quick else ATTENTION_NS
    if budget_s is None:
        budget_s = QUICK_BUDGET_S if quick else BUDGET_S
    warmup = 1 if quick else 2
    cfg = layer_config(config, d_model=d_model, heads=heads, ffn=ffn)
    layer = _run_layer(cfg, ns, budget_s=budget_s, warmup=warmup, seed=0,
                       check_max_n=check_max_n)
    attention = _run_attention(attention_ns, heads=cfg.num_heads, head_dim=cfg.head_dim,
                               budget_s=budget_s, warmup=warmup, seed=1000)
    rows = [*layer, *attention]
    cross = crossovers(rows, d_model=cfg.hidden_size, heads=cfg.num_heads,
                       ffn=cfg.intermediate_size)
    for row in layer:
        row.update(cross)
    return rows


def write(rows: Sequence[dict[str, Any]], *, out_dir: str | os.PathLike[str], command: str
          ) -> tuple[Path, ...]:
    json_path, md_path = write_report(NAME, rows, columns=COLUMNS, title=TITLE, command=command,
                                      notes=(*NOTES, crossover_summary(rows)), out_dir=out_dir)
    return json_path, md_path, plot(rows, json_path.with_suffix(".png"))


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Left: layer time and FLOP ratios vs n with Su's and the measured crossovers; right: the
    attention-only time ratios."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.6))
    layer = sorted((r for r in rows if r["section"] == SECTIONS[0]), key=lambda r: r["n"])
    attn = sorted((r for r in rows if r["section"] == SECTIONS[1]), key=lambda r: r["n"])
    ax = axes[0]
    if layer:
        ns = [r["n"] for r in layer]
        ax.plot(ns, [r["time_ratio"] for r in layer], "o-", label="time ratio (medians)")
        ax.plot(ns, [r["time_ratio_min"] for r in layer], "^", color="C0", alpha=0.4,
                label="time ratio (min times)")
        ax.plot(ns, [r["flop_ratio"] for r in layer], "s--", color="C1",
                label="FLOP ratio (kit, matmuls)")
        lines = [("su_attention_exceeds_ffn", "Su: attention > FFN", "tab:green", "--"),
                 ("su_quadratic_dominates", "Su: n² term dominates", "tab:purple", "--"),
                 ("measured_time_crossover", "measured time crossover", "tab:red", ":")]
        for key, label, color, style in lines:
            value = layer[0].get(key)
            if value is not None and value > 0:
                ax.axvline(value, color=color, linestyle=style, linewidth=1.0,
                           label=f"{label} (n={value:.0f})")
    ax.set_title("encoder layer: softmax / linear", fontsize=9)
    ax = axes[1]
    if attn:
        ns = [r["n"] for r in attn]
        ax.plot(ns, [r["time_ratio"] for r in attn], "o-", label="time softmax / linear")
        ax.plot(ns, [r["flop_ratio"] for r in attn], "s--", color="C1", label="FLOP ratio (n/D)")
        ax.plot(ns, [r["dpa_ratio"] for r in attn], "d-", color="C2",
                label="time dot_product_attention / softmax")
    ax.set_title("attention kernels only", fontsize=9)
    for ax in axes:
        ax.axhline(1.0, color="black", linewidth=0.6)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("n (tokens)")
        ax.set_ylabel("ratio A / B (>1: B is cheaper)")
        ax.legend(fontsize=7)
    return save_figure(fig, path, title=TITLE)


def main(argv: Sequence[str] | None = None) -> None:
    bench_main("benchmarks.bench_layer", doc=__doc__, run=run, write=write, columns=COLUMNS,
               quick_help="layer n ≤ 4096, attention n ≤ 2048, small time budget", argv=argv)


if __name__ == "__main__":
    main()
