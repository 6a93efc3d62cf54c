"""python -m benchmarks.bench_sharding [--quick] [--out results]

The MLM train step under each sharding preset (`jaxformer.train.sharding`: dp, fsdp, tp, dp_tp)
and mesh shape ((8, 1), (4, 2), (2, 4), (1, 8)), against the same step on one device measured
in the same run. Per row: compile seconds, median step time and its ratio to one device, and
per-device memory: the state by the formula (`state_memory`: parameters, their fp32 gradients,
AdamW's moments) next to XLA's ``memory_analysis()`` of the compiled step (arguments,
temporaries). Writes results/<device>/sharding.{json,md}.

On CPU the 8 devices are virtual (``jax_num_cpu_devices``) and share the machine's cores, so
the step times are a correctness-scale figure (what the collectives and the partitioning cost
when nothing runs in parallel), not a scaling measurement. On an accelerator machine the mesh
spans the chips present (shapes that need more devices are skipped), which gives the scaling of
one chip against all of them. ``--quick``: a width-64 model, two presets, two shapes (about a
minute on 2 CPU cores).
"""

from __future__ import annotations

import jax

if jax.config.jax_num_cpu_devices in (None, -1, 0, 1):  # before any backend starts
    jax.config.update("jax_num_cpu_devices", 8)

from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.harness import (Column, Prepared, bench_main, memory_bytes,  # noqa: E402
                                time_interleaved, write_report)
from jaxformer.models.config import EncoderConfig  # noqa: E402
from jaxformer.tasks.mlm import MaskedLMTask  # noqa: E402
from jaxformer.train import sharding as S  # noqa: E402
from jaxformer.train.optim import adamw  # noqa: E402
from jaxformer.train.step import init_train_state, make_train_step  # noqa: E402

NAME = "sharding"
TITLE = "MLM train step by sharding preset and mesh shape: time and per-device memory"
SHAPES = ((8, 1), (4, 2), (2, 4), (1, 8))
PRESETS = ("dp", "fsdp", "tp", "dp_tp")
COLUMNS: list[Column] = [
    ("preset", "preset"), ("mesh", "mesh (data, model)"), ("compile_s", "compile s"),
    ("step_ms", "step ms"), ("vs_one_device", "× one device"),
    ("params_mib", "params MiB/dev"), ("grads_mib", "grads MiB/dev"),
    ("opt_mib", "AdamW MiB/dev"), ("state_mib", "state MiB/dev (formula)"),
    ("xla_argument_mib", "XLA args MiB/dev"), ("xla_temp_mib", "XLA temp MiB/dev"),
]
MIB = 2.0**20


def model_config(quick: bool) -> EncoderConfig:
    if quick:
        return EncoderConfig.tiny(hidden_size=64, num_heads=8, intermediate_size=128)
    # BERT-small-like: every split dimension divides 8.
    return EncoderConfig(vocab_size=8192, hidden_size=256, num_layers=4, num_heads=8,
                         intermediate_size=1024, max_position_embeddings=128)


def _batch(cfg: EncoderConfig, rows: int, length: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(5, cfg.vocab_size, (rows, length)).astype(np.int32)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _prepared(step: Any, state: Any, batch: Any) -> Prepared:
    import time

    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = step.jitted.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0

    def call() -> Any:
        return jax.block_until_ready(compiled(state, batch, key))

    return Prepared(call, lower_s=0.0, compile_s=compile_s, temp_bytes=None, xla=None,
                    memory=memory_bytes(compiled))


def run(quick: bool = False, presets: Sequence[str] = PRESETS) -> list[dict[str, Any]]:
    cfg = model_config(quick)
    task = MaskedLMTask(cfg, mask_id=4, special_ids=(0, 1, 2, 3, 4))
    tx = adamw(1e-3, total_steps=100, warmup_steps=1)
    build = lambda: task.build_model(rngs=nnx.Rngs(0))  # noqa: E731
    rows_, length = (8, 16) if quick else (32, 128)
    batch = _batch(cfg, rows_, length)
    shapes = SHAPES[1::2] if quick else SHAPES
    presets = presets[:2] if quick else presets
    n = len(jax.devices())

    graphdef, state = init_train_state(build(), tx)
    one = make_train_step(graphdef, tx, task.loss_fn, donate=False)
    calls = {"one": _prepared(one, state, batch)}
    layout = {}
    for preset in presets:
        for shape in shapes:
            if shape[0] * shape[1] > n:
                continue
            mesh, rules = S.make_mesh(shape), S.ShardingRules.preset(preset)
            graphdef, sharded, shardings = S.create_train_state(build, tx, mesh=mesh, rules=rules)
            step = make_train_step(graphdef, tx, task.loss_fn, mesh=mesh,
                                   data_axis=rules.batch_axis, shardings=shardings, donate=False,
                                   activations=S.activation_constraint(rules, mesh))
            placed = jax.device_put(batch, S.batch_sharding(rules, mesh))
            name = f"{preset} {shape}"
            calls[name] = _prepared(step, sharded, placed)
            layout[name] = (preset, shape, S.state_memory(sharded, shardings))
    timings = time_interleaved(calls, warmup=1, repeats=5 if quick else 7,
                               budget_s=20 if quick else 120)
    base = float(np.median(timings["one"].times_s))
    out = [{"preset": "one device", "mesh": "(1, 1)", "compile_s": calls["one"].compile_s,
            "step_ms": 1e3 * base, "vs_one_device": 1.0,
            **_memory_columns(S.state_memory(state, jax.tree.map(
                lambda x: x.sharding, state)), calls["one"].memory)}]
    for name, (preset, shape, memory) in layout.items():
        median = float(np.median(timings[name].times_s))
        out.append({"preset": preset, "mesh": str(shape), "compile_s": calls[name].compile_s,
                    "step_ms": 1e3 * median, "vs_one_device": median / base,
                    **_memory_columns(memory, calls[name].memory)})
    return out


def _memory_columns(memory: dict[str, int], xla: dict[str, int] | None) -> dict[str, Any]:
    xla = xla or {}
    return {"params_mib": memory["params"] / MIB, "grads_mib": memory["grads"] / MIB,
            "opt_mib": memory["opt_state"] / MIB,
            "state_mib": (memory["params"] + memory["opt_state"] + memory["rest"]) / MIB,
            "xla_argument_mib": xla["argument"] / MIB if "argument" in xla else None,
            "xla_temp_mib": xla["temp"] / MIB if "temp" in xla else None}


def write(rows: list[dict[str, Any]], *, out_dir: str, command: str) -> list[Any]:
    notes = [
        "formula per device: parameters P bytes split by the mesh axes of their dimensions "
        "(dp: none; fsdp: embed over data; tp, dp_tp: heads, mlp, vocab over model), fp32 "
        "gradients the same, AdamW's two moments twice that; XLA args = state + batch shard + key",
        "CPU: the devices are virtual and share the cores, so step times measure partitioning "
        "and collective overhead, not parallel speed-up",
    ]
    return list(write_report(NAME, rows, columns=COLUMNS, title=TITLE, command=command,
                             notes=notes, out_dir=out_dir))


def main(argv: list[str] | None = None) -> None:
    bench_main("benchmarks.bench_sharding", doc=__doc__, run=run, write=write, columns=COLUMNS,
               quick_help="width-64 model, 2 presets, 2 shapes (about a minute)", argv=argv)


if __name__ == "__main__":
    main()
