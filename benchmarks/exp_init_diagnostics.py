"""python -m benchmarks.exp_init_diagnostics [--quick] [--out results]

Post 8's diagnostics at init, measured: per-layer forward and gradient second moments of a
24-block encoder under Post-LN, Pre-LN, DeepNorm, ReZero and ramped ReZero (`moment_report`);
the attention-logit variance and softmax peakedness with 1/√d, T5's fold and no scale, over the
head dim d; and μP's coordinate check, standard vs μP, over widths 32..256 (`coord_check`).
Prints the tables and writes results/<device>/init_diagnostics.{json,md} with
init_moments.png and coord_check.png. About 2 minutes on 2 CPU cores; ``--quick``: 4 blocks,
widths 32 and 64, 2 steps (a smoke test).
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.exp_depth_norm import SCHEMES  # the same five residual schemes
from benchmarks.harness import device_slug, environment, format_table, write_report
from jaxformer.models import Encoder, EncoderConfig
from jaxformer.models.lm import MaskedLM
from jaxformer.train.diagnostics import coord_check, moment_report, plot_coord_check, plot_moments
from jaxformer.train.lm import make_mlm_loss
from jaxformer.train.optim import mup_lr_multipliers, scale_updates, standard_promotion

NAME = "init_diagnostics"
TITLE = "Second moments at init by residual scheme ({depth} blocks, width 64, Xavier-normal)"
MOMENT_COLUMNS = [("scheme", "scheme"), ("fwd_0", "E[h²] l=0"), ("fwd_mid", "l=L/2"),
                  ("fwd_top", "l=L"), ("output", "output"), ("grad_0", "E[g²] l=0"),
                  ("grad_mid", "l=L/2"), ("grad_top", "l=L"), ("grad_ratio", "g² top/bottom")]
LOGIT_COLUMNS = [("scale", "logit scale"), ("d", "d"), ("logit_var", "Var(logit)"),
                 ("mean_max_p", "mean max p"), ("median_max_p", "median max p"),
                 ("entropy", "entropy (nats)")]
COORD_COLUMNS = [("parametrization", "parametrization"), ("layer", "coordinate"),
                 ("slope_init", "slope @ init"), ("slope_end", "slope @ last step")]


@dataclasses.dataclass(frozen=True)
class Config:
    depth: int = 24
    widths: tuple[int, ...] = (32, 64, 128, 256)
    steps: int = 4
    head_dims: tuple[int, ...] = (16, 64, 256)


def moments(cfg: Config) -> dict[str, Any]:
    ids = jax.random.randint(jax.random.key(7), (8, 32), 5, 211, dtype=jnp.int32)
    reports = {}
    for name, kw in SCHEMES.items():
        model_cfg = EncoderConfig(vocab_size=211, hidden_size=64, num_heads=4,
                                  intermediate_size=256, num_layers=cfg.depth,
                                  max_position_embeddings=64, hidden_dropout=0.0,
                                  attention_dropout=0.0, weight_init="xavier_normal",
                                  use_pooler=False, **kw)
        reports[name] = moment_report(Encoder(model_cfg, rngs=nnx.Rngs(0)), {"input_ids": ids})
    mid = cfg.depth // 2
    rows = [dict(scheme=n, fwd_0=r.forward[0], fwd_mid=r.forward[mid], fwd_top=r.forward[-1],
                 output=r.output, grad_0=r.grad[0], grad_mid=r.grad[mid], grad_top=r.grad[-1],
                 grad_ratio=r.grad[-1] / r.grad[0]) for n, r in reports.items()]
    return dict(rows=rows, reports=reports)


def logits(cfg: Config, t: int = 64, heads: int = 4) -> list[dict[str, Any]]:
    rows = []
    for d in cfg.head_dims:
        for scale in ("sqrt", "t5", "none"):
            mcfg = EncoderConfig.tiny(hidden_size=heads * d, num_heads=heads,
                                      intermediate_size=64, num_layers=1, attention_scale=scale,
                                      weight_init="lecun_normal", hidden_dropout=0.0,
                                      attention_dropout=0.0)
            attn = Encoder(mcfg, rngs=nnx.Rngs(0)).blocks[0].attention
            x = jax.random.normal(jax.random.key(1), (8, t, heads * d), jnp.float32)
            q = attn.query(x).reshape(8, t, heads, d)
            k = attn.key(x).reshape(8, t, heads, d)
            s = np.asarray(jnp.einsum("bthd,bshd->bhts", q, k), np.float64) * mcfg.logit_scale
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            top = p.max(-1)
            rows.append(dict(scale=scale, d=d, logit_var=float(s.var()),
                             mean_max_p=float(top.mean()), median_max_p=float(np.median(top)),
                             entropy=float(np.mean(-(p * np.log(np.maximum(p, 1e-300))).sum(-1)))))
    return rows


def coordinates(cfg: Config) -> dict[str, Any]:
    vocab = 200
    data = {"input_ids": jax.random.randint(jax.random.key(1), (16, 32), 5, vocab),
            "attention_mask": jnp.ones((16, 32), jnp.int32)}
    loss = make_mlm_loss(mask_id=4, vocab_size=vocab, special_ids=(2, 3))
    results = {}
    for name in ("standard", "mup"):
        mup = name == "mup"

        def make(width: int, mup: bool = mup) -> MaskedLM:
            mcfg = EncoderConfig(vocab_size=vocab, hidden_size=width, num_layers=2, num_heads=4,
                                 intermediate_size=4 * width, max_position_embeddings=32,
                                 type_vocab_size=0, hidden_dropout=0.0, attention_dropout=0.0,
                                 use_pooler=False, norm="pre", weight_init="lecun_normal",
                                 **(dict(parametrization="mup", mup_base_width=32) if mup else {}))
            return MaskedLM(Encoder(mcfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))

        def tx(model: MaskedLM, mup: bool = mup) -> optax.GradientTransformation:
            parts = [optax.adam(1e-2)]
            if mup:
                parts.append(scale_updates(mup_lr_multipliers(
                    nnx.state(model, nnx.Param), model.encoder.config.width_mult)))
            return standard_promotion(optax.chain(*parts))

        results[name] = coord_check(make, cfg.widths, batch=data, loss_fn=loss, make_tx=tx,
                                    steps=cfg.steps, key=jax.random.key(0))
    rows = []
    for name, res in results.items():
        logw = np.log(np.asarray(res.widths, np.float64))
        for c, layer in enumerate(res.layers):
            slope = lambda s: float(np.polyfit(logw, np.log(res.l1[:, s, c]), 1)[0])  # noqa: E731
            rows.append(dict(parametrization=name, layer=layer, slope_init=slope(0),
                             slope_end=slope(-1)))
    return dict(rows=rows, results=results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 blocks, widths 32 and 64, 2 steps")
    parser.add_argument("--out", default="results", help="output folder (default results)")
    args = parser.parse_args(argv)
    cfg = Config(depth=4, widths=(32, 64), steps=2, head_dims=(16, 64)) if args.quick else Config()
    command = "python -m benchmarks.exp_init_diagnostics" + (" --quick" if args.quick else "")
    t0 = time.perf_counter()
    mom, logit_rows, coords = moments(cfg), logits(cfg), coordinates(cfg)
    env = environment()
    folder = Path(args.out) / device_slug(env["device_kind"], env["platform"])
    notes = [
        "Moments: `jaxformer.train.diagnostics.moment_report`, batch 8×32 random tokens, probe "
        "loss ℓ = Σ r·out with r ~ N(0, 1), so E[g²] = 1 at the output.",
        "Logits: one SelfAttention with LeCun init on x ~ N(0, 1), 8×64 tokens, 4 heads; "
        "'t5' has no logit scale and q's init divided by √d; 'none' is post 8's bug.",
        "Coordinate check: 2-block Pre-LN MaskedLM, Adam lr 1e-2, one fixed batch; slope = "
        "d log mean|x| / d log width over the widths (0 = flat, μP's promise).",
    ]
    title = TITLE.format(depth=cfg.depth)
    json_path, md_path = write_report(NAME, mom["rows"], columns=MOMENT_COLUMNS, title=title,
                                      command=command, notes=notes, out_dir=args.out, env=env)
    payload = json.loads(json_path.read_text())
    payload["logits"] = logit_rows
    payload["coord_check"] = coords["rows"]
    payload["moments"] = {n: {k: np.asarray(v).tolist() for k, v in r._asdict().items()}
                          for n, r in mom["reports"].items()}
    payload["coordinates"] = {n: dict(widths=list(r.widths), layers=list(r.layers),
                                      l1=r.l1.tolist()) for n, r in coords["results"].items()}
    json_path.write_text(json.dumps(payload, indent=1) + "\n")
    with md_path.open("a") as fh:
        fh.write("\n## Attention logits at init: Var(q·k·scale) and softmax peakedness, T = 64 "
                 "keys\n\n" + format_table(logit_rows, LOGIT_COLUMNS) + "\n")
        fh.write(f"\n## Coordinate check, widths {list(cfg.widths)}, {cfg.steps} Adam steps\n\n"
                 + format_table(coords["rows"], COORD_COLUMNS) + "\n")
    plot_moments(mom["reports"], folder / "init_moments.png", title=title)
    plot_coord_check(coords["results"], folder / "coord_check.png",
                     title="μP coordinate check: mean |x| vs width (flat = width-stable)")
    print(format_table(mom["rows"], MOMENT_COLUMNS))
    print(format_table(logit_rows, LOGIT_COLUMNS))
    print(format_table(coords["rows"], COORD_COLUMNS))
    print(f"wrote {json_path}, {md_path}, {folder / 'init_moments.png'}, "
          f"{folder / 'coord_check.png'} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
