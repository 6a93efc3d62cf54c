"""`jaxformer flops`: one encoder layer's forward FLOPs, counted three ways, and the crossovers.

Per operation from the formulas (`jaxformer.flops`, 2 per multiply-add), the matmul FLOPs of the
same layer's lowered StableHLO (`hlo_flops`, the same on every backend), XLA's compiled count
(`xla_flops`) and post 8610's softmax/linear crossover lengths.
"""

import argparse
import json
from typing import Any

from jaxformer.cli.common import CLIError

NAME = "flops"


def register(sub: Any) -> None:
    p = sub.add_parser(NAME, help="analytic, StableHLO and XLA FLOPs of one encoder layer, and crossovers",
                       description=__doc__)
    p.add_argument("--d-model", type=int, required=True, help="E, the model width")
    p.add_argument("--heads", type=int, required=True, help="H, attention heads")
    p.add_argument("--ffn", type=int, required=True, help="F, the FFN width")
    p.add_argument("--seq-len", type=int, required=True, help="T, tokens")
    p.add_argument("--batch", type=int, default=1, help="B (default 1)")
    p.add_argument("--attention", choices=("softmax", "linear"), default="softmax",
                   help="the layer's attention (default softmax)")
    p.add_argument("--no-xla", action="store_true",
                   help="skip compiling the layer (the StableHLO count only lowers it)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxformer.flops import LayerShape, crossover_lengths, layer_flops

    for name in ("d_model", "heads", "ffn", "seq_len", "batch"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.d_model % args.heads:
        raise CLIError(f"--d-model {args.d_model} must be divisible by --heads {args.heads}")
    shape = LayerShape(args.d_model, args.heads, args.ffn, args.seq_len, batch=args.batch,
                       attention=args.attention, linear_mode="parallel")
    lines = layer_flops(shape)
    head_dim = args.d_model // args.heads
    crossover = crossover_lengths(args.d_model, args.heads, args.ffn,
                                  feature_dim=head_dim if args.attention == "linear" else None)
    hlo, measured = _layer_counts(args)
    report = {
        "shape": {"d_model": args.d_model, "heads": args.heads, "ffn": args.ffn,
                  "seq_len": args.seq_len, "batch": args.batch, "attention": args.attention},
        "analytic_flops": lines["matmul_total"],
        "su_multiplications": layer_flops(shape, convention="su")["matmul_total"],
        "per_op": lines["matmul"],
        "elementwise": lines["elementwise"],
        "analytic_with_elementwise": lines["matmul_total"] + lines["elementwise_total"],
        "hlo_flops": hlo.flops,
        "hlo_ratio": hlo.flops / lines["matmul_total"],
        "hlo_reliable": hlo.reliable,
        "hlo_note": hlo.reason,
        "xla_flops": None if measured is None else measured.flops,
        "xla_reliable": None if measured is None else measured.reliable,
        "xla_note": None if measured is None else measured.reason,
        "crossover": crossover,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"one {args.attention} encoder layer, forward, B={args.batch} T={args.seq_len} "
          f"E={args.d_model} H={args.heads} F={args.ffn} (FLOPs = 2 per multiply-add)")
    for section in ("per_op", "elementwise"):
        for op, value in report[section].items():
            print(f"  {op:<22}{value:>16,.0f}")
    print(f"  {'matmul total':<22}{report['analytic_flops']:>16,.0f}   (Su's count x2)")
    print(f"  {'with elementwise':<22}{report['analytic_with_elementwise']:>16,.0f}")
    print(f"  {'StableHLO matmuls':<22}{hlo.flops:>16,.0f}   ({report['hlo_ratio']:.4f} of "
          "matmul total)" + ("" if hlo.reliable else f"   [{hlo.reason}]"))
    if measured is not None:
        flops = "n/a" if measured.flops is None else f"{measured.flops:,.0f}"
        ratio = ("" if measured.flops is None
                 else f"   ({measured.flops / report['analytic_with_elementwise']:.4f} of analytic)")
        print(f"  {'XLA cost_analysis':<22}{flops:>16}{ratio}"
              + ("" if measured.reliable else f"   [{measured.reason}]"))
    for name, value in crossover.items():
        print(f"crossover {name}: n > {value:g}")
    return 0


def _layer_counts(args: argparse.Namespace):  # noqa: ANN202
    """The layer's StableHLO matmul count (lowered only) and, unless ``--no-xla``, XLA's count of
    the same lowering, compiled."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxformer.flops import hlo_cost, xla_cost
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Block

    cfg = EncoderConfig(hidden_size=args.d_model, num_heads=args.heads, intermediate_size=args.ffn,
                        num_layers=1, attention=args.attention, attention_dropout=0.0,
                        linear_mode="parallel", max_position_embeddings=max(args.seq_len, 1))
    graphdef, params = nnx.split(Block(cfg, rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((args.batch, args.seq_len, args.d_model), jnp.float32)
    lowered = jax.jit(lambda p, h: nnx.merge(graphdef, p)(h, mask=None, deterministic=True)
                      ).lower(params, x)
    return hlo_cost(lowered), None if args.no_xla else xla_cost(lowered.compile())

