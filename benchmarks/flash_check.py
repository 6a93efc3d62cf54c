"""PYTHONPATH=. python3 -m benchmarks.flash_check [--out results/flash_check.json] [--cpu-smoke]

Checks and times `jaxformer.flash_attention.flash_attention` (Pallas/Triton) on a GPU at BERT-base
attention shapes, bf16, with a padding mask (each sequence keeps a random length >= T/2):

1. check: flash forward and gradients (q, k, v) with dropout 0.1, and the XLA path
   `softmax_attention` with the same key (so the same dropout mask), both against the XLA path
   run in fp32 at full matmul precision on the same bf16 inputs. Max relative error
   ``max |x - ref| / max |ref|`` per output; flash should be no worse than the bf16 XLA path.
2. time: forward and forward+backward (`jax.vjp` and its pullback), median of `--repeats`
   calls after warm-up, `jax.block_until_ready`, for the XLA path with dropout 0.1, flash with
   dropout 0.1, flash without dropout, and cuDNN (`jax.nn.dot_product_attention(
   implementation="cudnn")`, padding as key lengths) without dropout: cuDNN cannot take a
   per-step dropout key.

A variant that fails prints its error (first 300 characters) and the rest go on. One table at
the end (speedup: fwd+bwd time of the XLA path with dropout / the variant's); `--out` also
writes the report as JSON (the first call's seconds, compile included, too). ``--cpu-smoke``: tiny shapes in Pallas' interpreter,
to check the script itself on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxformer.attention import softmax_attention
from jaxformer.flash_attention import flash_attention

RATE = 0.1
GPU_SHAPES = ((32, 512, 12, 64), (64, 128, 12, 64))  # (B, T, H, D): BERT-base attention
SMOKE_SHAPES = ((2, 64, 2, 32),)


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


def make_inputs(shape: tuple[int, int, int, int], dtype: Any) -> dict[str, Any]:
    batch, t, heads, d = shape
    ks = jax.random.split(jax.random.key(0), 6)
    q, k, v, ct = (jax.random.normal(kk, (batch, t, heads, d), jnp.float32).astype(dtype)
                   for kk in ks[:4])
    lengths = jax.random.randint(ks[4], (batch,), t // 2, t + 1)
    key_mask = jnp.arange(t)[None, :] < lengths[:, None]
    return dict(q=q, k=k, v=v, ct=ct, lengths=lengths.astype(jnp.int32), key_mask=key_mask,
                key=ks[5])


def variants(inp: dict[str, Any], interpret: bool | None) -> dict[str, Callable]:
    """name -> attention(q, k, v), everything else fixed."""
    mask4 = inp["key_mask"][:, None, None, :]
    key, km, lengths = inp["key"], inp["key_mask"], inp["lengths"]
    return {
        "xla_dropout": lambda q, k, v: softmax_attention(q, k, v, mask=mask4, dropout_rate=RATE,
                                                         key=key, deterministic=False),
        "flash_dropout": lambda q, k, v: flash_attention(q, k, v, key_mask=km, dropout_rate=RATE,
                                                         key=key, deterministic=False,
                                                         interpret=interpret),
        "flash_nodrop": lambda q, k, v: flash_attention(q, k, v, key_mask=km, interpret=interpret),
        "cudnn_nodrop": lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, key_value_seq_lengths=lengths, implementation="cudnn"),
    }


def fwd_bwd(fn: Callable) -> Callable:
    def run(q, k, v, ct):
        out, pullback = jax.vjp(fn, q, k, v)
        return out, pullback(ct)

    return run


def time_ms(fn: Callable, args: tuple, repeats: int) -> tuple[float, float]:
    """(median ms over `repeats` calls, seconds of the first call: compile + one run)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, first


def rel_err(x: Any, ref: Any) -> float:
    x, ref = x.astype(jnp.float32), ref.astype(jnp.float32)
    return float(jnp.max(jnp.abs(x - ref)) / jnp.maximum(jnp.max(jnp.abs(ref)), 1e-30))


def check(inp: dict[str, Any], fns: dict[str, Callable], jitted: dict[str, Callable]
          ) -> dict[str, Any]:
    """Max relative errors of flash and of the bf16 XLA path against the fp32 XLA path.
    `jitted`: name -> jitted `fwd_bwd(fns[name])`, shared with the timing (one compile each)."""
    args = (inp["q"], inp["k"], inp["v"], inp["ct"])
    up = tuple(a.astype(jnp.float32) for a in args)
    with jax.default_matmul_precision("highest"):
        ref_out, ref_g = jax.jit(fwd_bwd(fns["xla_dropout"]))(*up)
    result = {}
    for name in ("flash_dropout", "xla_dropout"):
        try:
            out, grads = jitted[name](*args)
            result[name] = {"out": rel_err(out, ref_out),
                            **{f"d{a}": rel_err(g, r) for a, g, r in zip("qkv", grads, ref_g)}}
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"  check {name} failed: {_err(e)}")
            result[name] = {"error": _err(e)}
    return result


def run(shapes: tuple, dtype: Any, repeats: int, interpret: bool | None) -> dict[str, Any]:
    report: dict[str, Any] = {"jax": jax.__version__, "device": jax.devices()[0].device_kind,
                              "dtype": jnp.dtype(dtype).name, "rate": RATE, "shapes": {}}
    for shape in shapes:
        label = "B={} T={} H={} D={}".format(*shape)
        print(f"[{label}]", flush=True)
        started = time.perf_counter()
        inp = make_inputs(shape, dtype)
        fns = variants(inp, interpret)
        both = {name: jax.jit(fwd_bwd(fn)) for name, fn in fns.items()}
        entry: dict[str, Any] = {"check": {}, "time": {}}
        try:
            entry["check"] = check(inp, fns, both)
            for name, errs in entry["check"].items():
                print(f"  check {name}: " + " ".join(f"{k}={v:.2e}" if isinstance(v, float)
                                                     else f"{k}={v}" for k, v in errs.items()))
        except Exception as e:  # noqa: BLE001
            print(f"  check failed: {_err(e)}")
            entry["check"] = {"error": _err(e)}
        args = (inp["q"], inp["k"], inp["v"])
        for name, fn in fns.items():
            row: dict[str, Any] = {}
            for pass_name, f, a in (("fwd", jax.jit(fn), args),
                                    ("fwd_bwd", both[name], (*args, inp["ct"]))):
                try:
                    row[f"{pass_name}_ms"], row[f"{pass_name}_first_s"] = time_ms(f, a, repeats)
                except Exception as e:  # noqa: BLE001
                    print(f"  {name} {pass_name} failed: {_err(e)}")
                    row[f"{pass_name}_error"] = _err(e)
            print(f"  {name}: " + " ".join(f"{k}={v:.3f}" for k, v in row.items()
                                           if isinstance(v, float)), flush=True)
            entry["time"][name] = row
        entry["seconds"] = time.perf_counter() - started
        print(f"  ({entry['seconds']:.1f} s for this shape)", flush=True)
        report["shapes"][label] = entry
    return report


def table(report: dict[str, Any]) -> str:
    head = f"{'shape':<24} {'variant':<14} {'fwd ms':>9} {'fwd+bwd ms':>11} {'speedup':>7}"
    lines = [f"flash_check: {report['device']}, jax {report['jax']}, {report['dtype']}", head,
             "-" * len(head)]
    for label, entry in report["shapes"].items():
        base = entry["time"].get("xla_dropout", {}).get("fwd_bwd_ms")
        for name, row in entry["time"].items():
            fwd, both = row.get("fwd_ms"), row.get("fwd_bwd_ms")
            ratio = f"{base / both:.2f}x" if base and both else "-"
            lines.append(f"{label:<24} {name:<14} "
                         f"{'error' if fwd is None else f'{fwd:.3f}':>9} "
                         f"{'error' if both is None else f'{both:.3f}':>11} {ratio:>7}")
        for name, errs in entry["check"].items():
            if isinstance(errs, dict):
                text = " ".join(f"{k}={v:.1e}" if isinstance(v, float) else f"{k}: {v}"
                                for k, v in errs.items())
                lines.append(f"{label:<24} check {name}: {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny shapes in Pallas' interpreter (no GPU needed)")
    opts = parser.parse_args(argv)
    if opts.cpu_smoke:
        report = run(SMOKE_SHAPES, jnp.bfloat16, min(opts.repeats, 2), interpret=True)
    else:
        if jax.default_backend() != "gpu":
            print(f"warning: default backend is {jax.default_backend()!r}, not a GPU")
        report = run(GPU_SHAPES, jnp.bfloat16, opts.repeats, interpret=None)
    print(table(report))
    if opts.out is not None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {opts.out}")
    return report


if __name__ == "__main__":
    main()
