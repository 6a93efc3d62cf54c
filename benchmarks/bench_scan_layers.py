"""python -m benchmarks.bench_scan_layers [--quick] [--depths 6 12 24] [--out results]

Unrolled blocks against `EncoderConfig(scan_layers=True)`, for one MLM train step of the post-8
depth experiment's model (width 64, 4 heads, FFN 256, vocab 3,005, B = 32, T = 32, AdamW), under
Post-LN, Pre-LN and norm-free ReZero. Prints one row per (scheme, depth) and writes
results/<device>/scan_layers.{json,md,png}: lowering + compile seconds and the median step time of
each form, their ratios (unrolled / scanned, measured interleaved in the same run), and the
difference of the two forms' losses and gradient norms (the same maths, so only float rounding).

Why it exists: in an unrolled Pre-LN stack the residual stream's cotangent is a chain, through
every block, of adds of the norms' backward terms. XLA on CPU fuses that chain into the consumers
of each block and duplicates it, so compile time and step time grow much faster than L (Pre-LN at L = 24:
several times Post-LN's step). Post-LN's norms end the chain after every sub-layer. A scan's body
is a fusion boundary and compiles once (the per-parameter work of a train step, stacking and the
optimiser update, still grows with L). ``--quick``: depths 2 and 6 (about a minute).
"""

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks import exp_depth_norm
from benchmarks.harness import (Column, bench_main, device_slug, environment, prepare_jax,
                                save_figure, time_interleaved, write_report)
from jaxformer.models import Encoder, EncoderConfig
from jaxformer.models.lm import MaskedLM
from jaxformer.train import adamw, init_train_state, make_train_step
from jaxformer.train.lm import make_mlm_loss

NAME = "scan_layers"
TITLE = "Unrolled blocks vs scan_layers=True: MLM train step, compile and step time by depth"
# The depth experiment's schemes, less the two whose stack equals one of these for XLA.
SCHEMES = {name: exp_depth_norm.SCHEMES[name] for name in ("post_ln", "pre_ln", "rezero")}
VOCAB = 3005
BATCH, LENGTH = exp_depth_norm.Config.batch, exp_depth_norm.Config.length
COLUMNS: list[Column] = [
    ("scheme", "scheme"), ("depth", "L"),
    ("compile_unrolled_s", "compile s unrolled"), ("compile_scan_s", "compile s scan"),
    ("compile_ratio", "compile ×"),
    ("step_unrolled_ms", "step ms unrolled"), ("step_scan_ms", "step ms scan"),
    ("step_ratio", "step ×"),
    ("loss_diff", "|Δ loss|"), ("grad_norm_rel_diff", "|Δ‖g‖|/‖g‖"),
]


def model_config(scheme: str, depth: int, *, scan: bool) -> EncoderConfig:
    """`exp_depth_norm.model_config`, unrolled or scanned."""
    cfg = dataclasses.replace(exp_depth_norm.Config(), scan_layers=scan)
    return exp_depth_norm.model_config(cfg, scheme, depth, VOCAB)


def _prepared_step(scheme: str, depth: int, *, scan: bool) -> tuple[Any, Any]:
    """(Prepared train step, its arguments): the same initial weights for both forms."""
    model = MaskedLM(Encoder(model_config(scheme, depth, scan=scan), rngs=nnx.Rngs(0)),
                     rngs=nnx.Rngs(1))
    tx = adamw(1e-3, total_steps=100, warmup_steps=10)
    graphdef, state = init_train_state(model, tx)
    step = make_train_step(graphdef, tx, make_mlm_loss(mask_id=4, vocab_size=VOCAB,
                                                       special_ids=(2, 3)), donate=False)
    ids = (jnp.arange(BATCH * LENGTH, dtype=jnp.int32).reshape(BATCH, LENGTH) * 7919) % (VOCAB - 5) + 5
    batch = {"input_ids": ids, "attention_mask": jnp.ones((BATCH, LENGTH), jnp.int32)}
    args = (state, batch, jax.random.key(0))
    return prepare_jax(step.jitted, *args), args


def run(quick: bool = False, depths: Sequence[int] | None = None,
        schemes: Sequence[str] | None = None, budget_s: float = 6.0) -> list[dict[str, Any]]:
    depths = tuple(depths) if depths else ((2, 6) if quick else (6, 12, 24))
    rows = []
    for depth in depths:
        for scheme in schemes or SCHEMES:
            unrolled, _ = _prepared_step(scheme, depth, scan=False)
            scanned, _ = _prepared_step(scheme, depth, scan=True)
            t = time_interleaved({"unrolled": unrolled, "scan": scanned}, warmup=1, repeats=20,
                                 budget_s=budget_s, min_repeats=3)
            (_, m_u), (_, m_s) = t["unrolled"].output, t["scan"].output
            compile_u = unrolled.lower_s + unrolled.compile_s
            compile_s = scanned.lower_s + scanned.compile_s
            g_u, g_s = float(m_u["grad_norm"]), float(m_s["grad_norm"])
            row = dict(scheme=scheme, depth=depth, dtype="float32",
                       compile_unrolled_s=compile_u, compile_scan_s=compile_s,
                       compile_ratio=compile_u / compile_s,
                       step_unrolled_ms=1e3 * t["unrolled"].median_s,
                       step_scan_ms=1e3 * t["scan"].median_s,
                       step_ratio=t["unrolled"].median_s / t["scan"].median_s,
                       loss_diff=abs(float(m_u["loss"]) - float(m_s["loss"])),
                       grad_norm_rel_diff=abs(g_u - g_s) / g_u,
                       timing_unrolled=t["unrolled"].as_dict(), timing_scan=t["scan"].as_dict())
            rows.append(row)
            print(f"L={depth:3d} {scheme:8s} compile {compile_u:6.1f} / {compile_s:5.1f} s, step "
                  f"{row['step_unrolled_ms']:8.1f} / {row['step_scan_ms']:7.1f} ms "
                  f"(×{row['step_ratio']:.2f}), |Δloss| {row['loss_diff']:.1e}", flush=True)
    return rows


def plot(rows: Sequence[dict[str, Any]]) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.3))
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        sub = [r for r in rows if r["scheme"] == scheme]
        depths = [r["depth"] for r in sub]
        for ax, key in zip(axes, ("compile_{}_s", "step_{}_ms"), strict=True):
            line, = ax.plot(depths, [r[key.format("unrolled")] for r in sub], "o-", label=f"{scheme} unrolled")
            ax.plot(depths, [r[key.format("scan")] for r in sub], "s--", color=line.get_color(),
                    label=f"{scheme} scan")
    for ax, label in zip(axes, ("lower + compile (s)", "train step (ms, median)"), strict=True):
        ax.set_xlabel("blocks L")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def write(rows: Sequence[dict[str, Any]], *, out_dir: str, command: str) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")

    env = environment()
    notes = ["compile = jax lowering + XLA compilation of the whole train step (fresh jit per form);"
             " step = median of interleaved calls on the same state (not donated), float32.",
             "× = unrolled / scan: above 1 means the scan is faster.",
             "|Δ loss| and |Δ‖g‖|/‖g‖ compare the two forms' first step from the same weights: "
             "the same maths, so only float rounding (the summation order differs)."]
    json_path, md_path = write_report(NAME, list(rows), columns=COLUMNS, title=TITLE,
                                      command=command, notes=notes, out_dir=out_dir, env=env)
    png = Path(out_dir) / device_slug(env["device_kind"], env["platform"]) / f"{NAME}.png"
    save_figure(plot(rows), png, title=TITLE)
    return [json_path, md_path, png]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    def depth(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"--depths must be positive, got {value}")
        return value

    parser.add_argument("--depths", type=depth, nargs="+", default=None,
                        help="encoder depths (default 6 12 24; --quick: 2 6)")
    parser.add_argument("--schemes", nargs="+", default=None, choices=list(SCHEMES),
                        help=f"schemes (default all: {' '.join(SCHEMES)})")


def main(argv: Sequence[str] | None = None) -> None:
    bench_main("benchmarks.bench_scan_layers",
               doc=__doc__, run=run, write=write, columns=COLUMNS,
               quick_help="depths 2 and 6 (about a minute)", argv=argv,
               add_arguments=_add_arguments)


if __name__ == "__main__":
    main()
