"""python -m benchmarks.profile_step [--quick] [--out results] [--layers L] [--batch B] [--seq T] [--only I ...]

Where the encoder's train step spends its time: one table of variants (precision policy,
attention implementation, dropout, remat), each compiled once and timed, and for the first
variants a per-kernel breakdown of device time read from a `jax.profiler` trace
(`jax._src.profiler.ProfileData`, no TensorBoard needed). Kernels are grouped into matmul
(cuBLAS / CUTLASS / nvjet / dot fusions), attention (cuDNN fmha, Pallas/Triton), fusion (XLA's
elementwise and reduction fusions), copy/transpose and other.

Defaults: BERT-base widths with L=4 layers (times scale with L; 4 keeps the compile short), B=32,
T=512 on an accelerator; `--quick` (and any CPU run) uses the tiny config. Writes
``<out>/<device>/profile_step.{json,md}``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import temp_bytes, write_report

NAME = "profile_step"
TITLE = "Train-step profile: variants and where the device time goes"

# (label, EncoderConfig overrides, kind, profile?)
VARIANTS: tuple[tuple[str, dict[str, Any], str, bool], ...] = (
    ("bf16 xla drop", dict(dtype="bfloat16", param_dtype="bfloat16", attention_impl="xla"),
     "train", True),
    ("bf16 auto drop", dict(dtype="bfloat16", param_dtype="bfloat16"), "train", True),
    ("bf16 fused attn-drop 0", dict(dtype="bfloat16", param_dtype="bfloat16",
                                    attention_impl="fused", attention_dropout=0.0), "train", False),
    ("bf16 xla no drop", dict(dtype="bfloat16", param_dtype="bfloat16", attention_impl="xla",
                              attention_dropout=0.0, hidden_dropout=0.0), "train", False),
    ("bf16 fused no drop", dict(dtype="bfloat16", param_dtype="bfloat16", attention_impl="fused",
                                attention_dropout=0.0, hidden_dropout=0.0), "train", False),
    ("mixed auto drop", dict(dtype="bfloat16", param_dtype="float32"), "train", False),
    ("bf16 auto drop remat=dots", dict(dtype="bfloat16", param_dtype="bfloat16",
                                       remat="dots_with_no_batch_dims_saveable"), "train", False),
    ("bf16 xla fwd", dict(dtype="bfloat16", param_dtype="bfloat16", attention_impl="xla"),
     "forward", False),
    ("bf16 auto fwd", dict(dtype="bfloat16", param_dtype="bfloat16"), "forward", True),
)
CATEGORIES = (
    ("attention", ("fmha", "flash", "cudnn", "triton", "attention", "pallas")),
    ("matmul", ("gemm", "cutlass", "nvjet", "cublas", "xmma", "sm90_", "dot", "matmul")),
    ("copy", ("copy", "transpose", "memcpy", "memset")),
    ("fusion", ("fusion", "reduce", "loop_", "input_", "convert", "broadcast")),
)


def category(kernel: str) -> str:
    """The group of a kernel name (first matching substring of `CATEGORIES`)."""
    low = kernel.lower()
    for name, needles in CATEGORIES:
        if any(n in low for n in needles):
            return name
    return "other"


def kernel_times(trace_dir: str) -> dict[str, tuple[float, int]]:
    """``{kernel name: (total ns, count)}`` over the device planes of the trace in `trace_dir`
    (CPU runs: the XLA CPU client's thread lines)."""
    from jax._src.profiler import ProfileData

    files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for path in files:
        data = ProfileData.from_file(path)
        for plane in data.planes:
            device = plane.name.startswith("/device:")
            for line in plane.lines:
                # On a GPU the kernels are on the stream lines of the device planes; XLA also
                # writes op and module lines there, which would double count.
                if device and not line.name.lower().startswith("stream"):
                    continue
                if not device and "XLA" not in line.name:
                    continue
                for event in line.events:
                    if (event.duration_ns <= 0 or "ThreadpoolListener" in event.name
                            or "ThunkExecutor" in event.name):
                        continue
                    entry = totals[event.name]
                    entry[0] += event.duration_ns
                    entry[1] += 1
    return {k: (v[0], int(v[1])) for k, v in totals.items()}


def _build(cfg: Any, kind: str, batch: int, seq: int) -> tuple[Any, Any, Any]:
    """(compiled call, args, lowered) for one variant."""
    from flax import nnx

    from jaxformer.models import Encoder, SequenceClassifier
    from jaxformer.train.finetune import classifier_loss
    from jaxformer.train.optim import adamw
    from jaxformer.train.step import init_train_state, make_train_step

    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, cfg.vocab_size, (batch, seq)), jnp.int32)
    mask = jnp.ones((batch, seq), jnp.int32)
    model = SequenceClassifier(Encoder(cfg, rngs=nnx.Rngs(0)), 2, rngs=nnx.Rngs(1))
    if kind == "forward":
        graphdef, state = nnx.split(model.encoder)

        def forward(state: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
            return nnx.merge(graphdef, state)(ids, attention_mask=mask,
                                              deterministic=True).last_hidden_state

        lowered = jax.jit(forward).lower(state, ids, mask)
        compiled = lowered.compile()
        return (lambda: compiled(state, ids, mask)), compiled, lowered
    tx = adamw(1e-5, total_steps=1000, warmup_steps=0)
    graphdef, state = init_train_state(model, tx)
    step = make_train_step(graphdef, tx, classifier_loss)
    batch_data = {"input_ids": ids, "attention_mask": mask,
                  "labels": jnp.asarray(rng.integers(0, 2, (batch,)), jnp.int32)}
    key = jax.random.key(0)
    lowered = step.jitted.lower(state, batch_data, key)
    compiled = lowered.compile()
    box = {"state": state}

    def call() -> Any:
        box["state"], metrics = compiled(box["state"], batch_data, key)
        return metrics["loss"]

    return call, compiled, lowered


def run(quick: bool = False, *, layers: int = 4, batch: int | None = None, seq: int | None = None,
        repeats: int = 10, variants: Sequence[tuple[str, dict[str, Any], str, bool]] = VARIANTS,
        top: int = 12) -> list[dict[str, Any]]:
    """One row per variant; profiled variants carry ``kernels`` (top kernels) and
    ``categories`` (device time per group)."""
    from jaxformer.flops import LayerShape, layer_flops
    from jaxformer.models import EncoderConfig, attention_path

    on_accelerator = jax.default_backend() != "cpu"
    small = quick or not on_accelerator
    base = EncoderConfig.tiny(max_position_embeddings=512) if small else EncoderConfig.bert_base()
    base = base.replace(num_layers=layers if not small else 2)
    batch = batch or (4 if small else 32)
    seq = seq or (64 if small else 512)
    rows = []
    for label, overrides, kind, profile in variants:
        cfg = base.replace(**overrides)
        row: dict[str, Any] = {"variant": label, "kind": kind, "layers": cfg.num_layers,
                               "batch": batch, "seq": seq, "policy": cfg.precision_policy,
                               "attention": attention_path(cfg, deterministic=kind == "forward",
                                                           mask_shape=(batch, 1, 1, seq))}
        try:
            t0 = time.perf_counter()
            call, compiled, _ = _build(cfg, kind, batch, seq)
            jax.block_until_ready(call())
            row["compile_s"] = time.perf_counter() - t0
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                jax.block_until_ready(call())
                times.append(time.perf_counter() - t)
            row["ms"] = 1e3 * float(np.median(times))
            row["temp_mib"] = (temp_bytes(compiled) or 0) / 2**20
            shape = LayerShape(d_model=cfg.hidden_size, heads=cfg.num_heads,
                               ffn=cfg.intermediate_size, seq_len=seq, batch=batch)
            flops = cfg.num_layers * layer_flops(shape, training=kind == "train")["matmul_total"]
            row["tflops"] = flops / (row["ms"] / 1e3) / 1e12
            if profile:
                with tempfile.TemporaryDirectory() as trace_dir:
                    with jax.profiler.trace(trace_dir):
                        for _ in range(3):
                            jax.block_until_ready(call())
                    kernels = kernel_times(trace_dir)
                total = sum(ns for ns, _ in kernels.values()) or 1.0
                groups: dict[str, float] = collections.defaultdict(float)
                for name, (ns, _) in kernels.items():
                    groups[category(name)] += ns
                row["categories"] = {k: v / 3 / 1e6 for k, v in groups.items()}  # ms per call
                row["device_ms"] = total / 3 / 1e6
                row["kernels"] = [
                    {"name": name[:90], "ms": ns / 3 / 1e6, "count": n // 3, "group": category(name)}
                    for name, (ns, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]]
        except Exception as err:  # noqa: BLE001  (one failing variant must not stop the table)
            row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        rows.append(row)
        print(_summary(row), flush=True)
    return rows


def remat_memory(*, layers: int = 12, batch: int = 8, seq: int = 512,
                 policy: str = "bf16") -> list[dict[str, Any]]:
    """Compile (never run) the BERT-base train step under every remat policy and read XLA's
    temp memory: what `EncoderConfig.remat` buys, on this backend."""
    from jaxformer.models import EncoderConfig
    from jaxformer.models.block_stack import REMAT_NAMES

    rows = []
    for scan in (False, True):
        for remat in REMAT_NAMES:
            cfg = EncoderConfig.bert_base(num_layers=layers, remat=remat, scan_layers=scan)
            cfg = cfg.with_precision(policy)
            t0 = time.perf_counter()
            _, compiled, _ = _build(cfg, "train", batch, seq)
            rows.append({"remat": remat, "scan": scan, "policy": policy, "layers": layers,
                         "batch": batch, "seq": seq,
                         "temp_mib": (temp_bytes(compiled) or 0) / 2**20,
                         "compile_s": time.perf_counter() - t0})
            print(f"scan={scan!s:<5} remat={remat:<34} temp {rows[-1]['temp_mib']:9.1f} MiB",
                  flush=True)
    none = rows[0]["temp_mib"] or 1.0  # the unrolled stack without remat
    for row in rows:
        row["vs_none"] = row["temp_mib"] / none
    return rows


REMAT_COLUMNS = (("remat", "remat"), ("scan", "scan_layers"), ("policy", "policy"), ("layers", "L"), ("batch", "B"),
                 ("seq", "T"), ("temp_mib", "temp MiB"), ("vs_none", "÷ unrolled, remat=none"),
                 ("compile_s", "compile s"))


def _summary(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['variant']:<28} ERROR {row['error']}"
    text = (f"{row['variant']:<28} {row['kind']:<7} {row['attention']:<14} {row['ms']:8.2f} ms "
            f"{row['tflops']:7.1f} TFLOP/s temp {row['temp_mib']:8.0f} MiB "
            f"compile {row['compile_s']:5.1f} s")
    if "categories" in row:
        groups = ", ".join(f"{k} {v:.2f}" for k, v in sorted(row["categories"].items(),
                                                             key=lambda kv: -kv[1]))
        text += f"\n    device {row['device_ms']:.2f} ms/call: {groups}"
        for k in row["kernels"]:
            text += f"\n      {k['ms']:7.3f} ms x{k['count']:<4} [{k['group']}] {k['name']}"
    return text


COLUMNS = (("variant", "variant"), ("kind", "kind"), ("attention", "attention path"),
           ("policy", "policy"), ("layers", "L"), ("batch", "B"), ("seq", "T"),
           ("ms", "ms"), ("tflops", "TFLOP/s"), ("temp_mib", "temp MiB"),
           ("device_ms", "profiled device ms"), ("compile_s", "compile s"), ("error", "error"))
NOTES = ("TFLOP/s: analytic matmul FLOPs (`jaxformer.flops.layer_flops`, L layers, x3 for a "
         "train step) / median wall time of the step. Profiled rows: device time per kernel group "
         "is in the JSON (`categories`, `kernels`), from a jax.profiler trace of 3 calls.",)


def kernel_notes(rows: Sequence[dict[str, Any]], top: int = 6) -> list[str]:
    """One note per profiled row: device ms per kernel group and the top kernels."""
    notes = []
    for row in rows:
        if "kernels" not in row:
            continue
        groups = ", ".join(f"{k} {v:.2f}" for k, v in sorted(row["categories"].items(),
                                                             key=lambda kv: -kv[1]))
        kernels = "; ".join(f"{k['name']} [{k['group']}] {k['ms']:.2f} ms x{k['count']}"
                            for k in row["kernels"][:top])
        notes.append(f"{row['variant']}: device {row['device_ms']:.2f} ms per call ({groups}). "
                     f"Top kernels: {kernels}.")
    return notes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="results")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", type=int, nargs="+", default=None,
                        help="indices into VARIANTS (default: all)")
    parser.add_argument("--remat-memory", action="store_true",
                        help="only compile the BERT-base train step under each remat policy and "
                             "report its temp memory (profile_remat.{json,md})")
    parser.add_argument("--from-json", default=None,
                        help="rewrite the Markdown of an earlier run's JSON (no measuring)")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        import json

        old = json.loads(open(args.from_json, encoding="utf-8").read())
        paths = write_report(NAME, old["rows"], columns=COLUMNS, title=TITLE,
                             command=old["command"], notes=[*NOTES, *kernel_notes(old["rows"])],
                             out_dir=args.out, env=old["environment"])
        print("wrote " + ", ".join(map(str, paths)))
        return
    command = "python -m benchmarks.profile_step " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.remat_memory:
        rows = remat_memory(layers=12 if args.layers == 4 else args.layers,
                            batch=args.batch or 8, seq=args.seq or 512)
        paths = write_report("profile_remat", rows, columns=REMAT_COLUMNS,
                             title="Train-step temp memory by remat policy (BERT-base, bf16)",
                             command=command.strip(), out_dir=args.out,
                             notes=("temp MiB = compiled.memory_analysis().temp_size_in_bytes of "
                                    "the jitted train step (AdamW, dropout 0.1); compiled, not "
                                    "run.", "In an unrolled stack XLA's scheduler may hoist the "
                                    "recomputed forward ops back next to their originals, which "
                                    "undoes the saving; inside a scan body it cannot.",))
        print("wrote " + ", ".join(map(str, paths)))
        return
    chosen = VARIANTS if args.only is None else tuple(VARIANTS[i] for i in args.only)
    rows = run(args.quick, layers=args.layers, batch=args.batch, seq=args.seq,
               repeats=args.repeats, variants=chosen)
    paths = write_report(NAME, rows, columns=COLUMNS, title=TITLE, command=command.strip(),
                         notes=[*NOTES, *kernel_notes(rows)], out_dir=args.out)
    print("wrote " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
