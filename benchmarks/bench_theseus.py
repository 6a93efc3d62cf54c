"""python -m benchmarks.bench_theseus [--quick] [--out results]

What a BERT-of-Theseus replacement step computes: the gradient step of the successor (the only
trained part) through a 6-block predecessor mixed with a 3-block successor (width 256, 4 heads,
FFN 1024, vocab 8,000, B = 32, T = 128), with fixed successor weights (all predecessor, half,
all successor) under ``compute="cond"`` (a `lax.cond` per module: XLA runs the chosen branch)
and ``compute="select"`` (both branches run, one is kept: Su's equation (1)). The predecessor
alone and the successor alone (a full fine-tuning step) are timed in the same interleaved run,
so every ratio compares like with like. ``--quick``: B = 8, T = 32.

Writes results/<device>/theseus_step.{json,md}.
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.harness import environment, format_table, prepare_jax, time_interleaved, \
    write_report
from jaxformer.models import Encoder, EncoderConfig, SequenceClassifier
from jaxformer.models.heads import classification_loss
from jaxformer.models.theseus import TheseusClassifier, successor_classifier, successor_filter

NAME = "theseus_step"


def build(quick: bool) -> tuple[TheseusClassifier, dict[str, jax.Array]]:
    cfg = EncoderConfig(vocab_size=8000, hidden_size=256, num_layers=6, num_heads=4,
                        intermediate_size=1024, max_position_embeddings=128,
                        hidden_dropout=0.1, attention_dropout=0.1, use_pooler=False)
    pred = SequenceClassifier(Encoder(cfg, rngs=nnx.Rngs(0)), 119, rngs=nnx.Rngs(1))
    succ = Encoder(cfg.replace(num_layers=3), rngs=nnx.Rngs(2))
    b, t = (8, 32) if quick else (32, 128)
    rng = np.random.default_rng(0)
    batch = {"input_ids": jnp.asarray(rng.integers(5, 8000, (b, t)), jnp.int32),
             "labels": jnp.asarray(rng.integers(0, 119, b), jnp.int32)}
    return TheseusClassifier(pred, succ, embeddings=True), batch


def step_fn(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, forward):  # noqa: ANN001, ANN201
    """A jit-able ``(params, rest, opt, batch, weights, key) -> (params, opt)`` update."""

    def step(params, rest, opt, batch, weights, key):  # noqa: ANN001, ANN202
        def loss(p):  # noqa: ANN001, ANN202
            model = nnx.merge(graphdef, p, rest)
            return classification_loss(forward(model, batch, weights, key), batch["labels"])[0]

        grads = jax.grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    model, batch = build(args.quick)
    tx = optax.adam(1e-4)
    key = jax.random.key(0)
    calls, meta = {}, {}
    j = model.num_slots
    patterns = {"p=0 (all predecessor)": np.zeros(j), "p=0.5 (alternate)":
                np.arange(j) % 2 == 1, "p=1 (all successor)": np.ones(j)}
    graphdef, params, rest = nnx.split(model, successor_filter(model), ...)
    opt = tx.init(params)
    for compute in ("cond", "select"):
        def forward(m, b, w, k, compute=compute):  # noqa: ANN001, ANN202
            return m(b["input_ids"], deterministic=False, key=k, weights=w, compute=compute)

        fn = step_fn(graphdef, tx, forward)
        for name, w in patterns.items():
            label = f"theseus {compute}, {name}"
            calls[label] = prepare_jax(fn, params, rest, opt, batch,
                                       jnp.asarray(w, jnp.float32), key)
            meta[label] = {"compute": compute, "weights": name}
    # The two models alone, every parameter trained (a fine-tuning step).
    for label, alone in (("predecessor alone (6 blocks)", model.predecessor),
                         ("successor alone (3 blocks)", successor_classifier(model))):
        g, p = nnx.split(alone)
        fn = step_fn(g, tx, lambda m, b, w, k: m(b["input_ids"], deterministic=False, key=k))
        calls[label] = prepare_jax(fn, p, nnx.State({}), tx.init(p), batch, jnp.zeros(()),
                                   key)
        meta[label] = {"compute": "", "weights": ""}
    timings = time_interleaved(calls, warmup=2, repeats=5 if args.quick else 9)
    base = timings["predecessor alone (6 blocks)"].median_s
    rows = [{"step": k, **meta[k], "ms": 1e3 * v.median_s, "iqr_ms": 1e3 * v.iqr_s,
             "vs_predecessor": v.median_s / base, "compile_s": calls[k].compile_s}
            for k, v in timings.items()]
    columns = [("step", "step"), ("ms", "median ms"), ("iqr_ms", "IQR ms"),
               ("vs_predecessor", "/ predecessor step"), ("compile_s", "compile s")]
    b, t = batch["input_ids"].shape
    command = "python -m benchmarks.bench_theseus " + " ".join(sys.argv[1:] if argv is None
                                                              else argv)
    notes = [f"float32, B = {b}, T = {t}; Adam update of the trained parameters included",
             "theseus rows: gradients of the successor only (the trained part); the fixed "
             "weights are an array argument (one compiled program per compute mode)",
             "cond: XLA runs one branch per module, so the step costs what the chosen blocks "
             "cost; select: both branches run forward (and backward through the kept one's "
             "inputs), whatever the weights"]
    for p in write_report(NAME, rows, columns=columns, title="BERT-of-Theseus replacement step: "
                          "lax.cond vs select", command=command, notes=notes, out_dir=args.out,
                          env=environment()):
        print(p)
    print(format_table(rows, columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
