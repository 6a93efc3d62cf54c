"""python -m benchmarks.bench_flops [--quick] [--out results]

Goal P3: the analytic FLOP model (`jaxformer.flops.layer_flops`) against the matmul
count of the lowered StableHLO (`hlo_cost`, the same on every backend) and against XLA's count of
the compiled program (`xla_cost`), for one BERT-base encoder layer (E=768, H=12, F=3072) with
softmax and with linear attention, forward and forward+backward, over n. Nothing is timed: each
case is lowered and compiled once (abstract inputs, `jax.ShapeDtypeStruct`).

Per row: the analytic matmul FLOPs (kit convention, 2 per multiply-add), the analytic
elementwise FLOPs (norms, softmax/feature map, activation, bias and residual adds, with the
per-element costs measured once from XLA and stated in `jaxformer.flops`), the StableHLO matmul
count and hlo / matmul, XLA's figure and xla / (matmul + elementwise). The goal is
|hlo / matmul − 1| ≤ 2% on every backend; the XLA comparison (same band) holds where
cost_analysis counts every dot (CPU) and the program has no loop; xla / matmul shows how much of
that agreement the elementwise estimate carries.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.harness import Column, bench_main, write_report
from jaxformer.flops import LayerShape, hlo_cost, layer_flops, xla_cost

NAME = "flops_vs_xla"
TITLE = "Analytic FLOPs vs the StableHLO count and XLA's cost_analysis: one BERT-base encoder layer"
BAND = 0.02  # P3
QUICK_NS = (128, 512, 1024)
# From T = 2048 softmax attention runs query tiles under lax.map on CPU (a while loop), which
# XLA's cost analysis counts once: those rows are flagged and left out of the P3 verdict.
FULL_NS = (128, 512, 1024, 2048)
D_MODEL, HEADS, FFN = 768, 12, 3072

COLUMNS: tuple[Column, ...] = (
    ("attention", "attention"),
    ("pass", "pass"),
    ("seq", "n"),
    ("analytic_matmul", "analytic matmul FLOPs"),
    ("analytic_elementwise", "analytic elementwise FLOPs"),
    ("hlo_flops", "StableHLO matmul FLOPs"),
    ("hlo_ratio", "hlo / matmul"),
    ("hlo_within_band", f"hlo within ±{BAND:.0%}"),
    ("xla_flops", "XLA FLOPs"),
    ("ratio", "xla / analytic"),
    ("ratio_matmul", "xla / matmul only"),
    ("xla_reliable", "XLA figure reliable"),
    ("within_band", f"xla within ±{BAND:.0%}"),
)

NOTES = (
    "StableHLO count: the dot_general/convolution FLOPs of `jit(f).lower(...)` before XLA "
    "rewrites the program (`jaxformer.hlo_flops`), loop bodies times their trip counts; it is "
    "what P3 is judged on, on every backend. Elementwise work is not in it, so it is compared "
    "with the analytic matmul FLOPs alone.",
    "The layer is the kit's `Block` (post-LN, GELU erf, no dropout), jitted as a pure function "
    "of (params, x) with B=1; forward+backward is `jax.grad` of 0.5·Σy², whose backward needs y "
    "itself (a loss linear in y lets XLA drop the last forward matmul as dead code).",
    "Analytic: `layer_flops(LayerShape(768, 12, 3072, n, attention=...), training=...)`; "
    "training multiplies matmuls by 3 and elementwise work by 2 (the usual convention).",
    "Linear attention: elu+1 features (M = D = 64), non-causal, mode 'parallel'.",
    "XLA figure reliable = cost_analysis() gave a number and the HLO has no while loop (a loop "
    "body is counted once; `xla_cost` flags it). From n = 2048 the kit's softmax attention "
    "runs 128-query tiles under lax.map on CPU (`jaxformer.attention.resolve_query_tile`), so "
    "those rows are flagged and not judged against XLA; the StableHLO count multiplies the "
    "tile loop by its trip count. On a GPU cost_analysis() may leave out the library calls "
    "(cuBLAS, cuDNN, Triton GEMMs) XLA turns dots into, depending on the shapes, so xla / "
    "analytic can fall far below 1 there; the StableHLO count does not depend on it.",
)


def _loss(y: jax.Array) -> jax.Array:
    return 0.5 * jnp.sum(y * y)


def layer_case(attention: str, n: int, *, training: bool, d_model: int = D_MODEL,
               heads: int = HEADS, ffn: int = FFN) -> dict[str, Any]:
    """One row: analytic vs StableHLO vs XLA FLOPs of one encoder layer."""
    from flax import nnx

    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Block

    cfg = EncoderConfig(hidden_size=d_model, num_heads=heads, intermediate_size=ffn,
                        num_layers=1, attention=attention, attention_dropout=0.0,
                        linear_mode="parallel")
    graphdef, params = nnx.split(Block(cfg, rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((1, n, d_model), jnp.float32)

    def forward(params: Any, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params)(x, mask=None, deterministic=True)

    fn = jax.grad(lambda p, x: _loss(forward(p, x)), argnums=(0, 1)) if training else forward
    lowered = jax.jit(fn).lower(params, x)
    hlo, cost = hlo_cost(lowered), xla_cost(lowered.compile())
    lines = layer_flops(LayerShape(d_model, heads, ffn, n, attention=attention,
                                   linear_mode="parallel"), training=training)
    analytic = lines["matmul_total"] + lines["elementwise_total"]
    ratio = None if cost.flops is None else cost.flops / analytic
    hlo_ratio = hlo.flops / lines["matmul_total"]
    return {
        "attention": attention, "pass": "forward+backward" if training else "forward", "seq": n,
        "batch": 1, "dtype": "float32",
        "analytic_matmul": lines["matmul_total"], "analytic_elementwise": lines["elementwise_total"],
        "analytic_per_op": lines, "hlo_flops": hlo.flops, "hlo_ratio": hlo_ratio,
        "hlo_reliable": hlo.reliable, "hlo_reason": hlo.reason, "hlo_loops": hlo.loops,
        "hlo_within_band": abs(hlo_ratio - 1) <= BAND, "xla_flops": cost.flops, "ratio": ratio,
        "ratio_matmul": None if cost.flops is None else cost.flops / lines["matmul_total"],
        "xla_reliable": cost.reliable, "xla_reason": cost.reason,
        "within_band": None if ratio is None else abs(ratio - 1) <= BAND,
    }


def run(quick: bool = False, *, ns: Sequence[int] | None = None,
        attentions: Sequence[str] = ("softmax", "linear"), **shape: int) -> list[dict[str, Any]]:
    ns = (QUICK_NS if quick else FULL_NS) if ns is None else ns
    return [layer_case(a, n, training=t, **shape)
            for a in attentions for t in (False, True) for n in ns]


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Worst |hlo / matmul − 1| over every row, and worst |xla / analytic − 1| over the rows XLA
    counts reliably (no while loop; flagged rows are counted, not judged); ``met`` is P3 on the
    StableHLO count."""
    hlo = [r["hlo_ratio"] for r in rows if r.get("hlo_ratio") is not None]
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None and r["xla_reliable"]]
    worst = max(ratios, key=lambda v: abs(v - 1), default=None)
    return {"worst_hlo_ratio": max(hlo, key=lambda v: abs(v - 1), default=None),
            "worst_ratio": worst, "rows": len(rows), "reliable_rows": len(ratios),
            "met": bool(hlo) and all(abs(v - 1) <= BAND for v in hlo),
            "xla_met": bool(ratios) and all(abs(v - 1) <= BAND for v in ratios)}


def write(rows: Sequence[dict[str, Any]], *, out_dir: str | os.PathLike[str], command: str
          ) -> tuple[Path, ...]:
    return write_report(NAME, rows, columns=COLUMNS, title=TITLE, command=command, notes=NOTES,
                        out_dir=out_dir)


def main(argv: Sequence[str] | None = None) -> None:
    bench_main("benchmarks.bench_flops", doc=__doc__, run=run, write=write, columns=COLUMNS,
               quick_help="n in (128, 512, 1024)", argv=argv)


if __name__ == "__main__":
    main()
