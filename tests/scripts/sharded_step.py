"""One process of the multi-process train-step test (tests/test_distributed.py), or its
single-process reference.

Commands (a few seconds each on 2 CPU cores)::

    # two processes on localhost, 4 virtual CPU devices each, one global 4 x 2 mesh:
    JAX_COORDINATOR_ADDRESS=localhost:12355 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \
        python tests/scripts/sharded_step.py --devices 4 --out p0.json &
    JAX_COORDINATOR_ADDRESS=localhost:12355 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 \
        python tests/scripts/sharded_step.py --devices 4 --out p1.json
    # the same steps in one process with 8 devices:
    python tests/scripts/sharded_step.py --devices 8 --single --out ref.json
    # a run killed after its step-2 checkpoint (exit code 3), then resumed from it: add
    #   --steps 4 --ckpt DIR --crash-after 2   and then   --steps 4 --ckpt DIR

Each process builds only its own rows of the global batch (row ``i`` of step ``s`` comes from
``default_rng(s * 8 + i)``, so no process reads the others'), makes the state already sharded by
the preset's rules over ``jax.devices()`` (every process's), runs ``--steps`` train steps and
writes the losses and a float64 checksum of every parameter (gathered from all processes) as
JSON. With ``--ckpt`` every process takes part in an orbax checkpoint after each step (each
writes its own shards) and a restart resumes from the newest one; ``--crash-after K`` ends every
process with ``os._exit(3)`` (a kill: no clean-up runs) once step K + 1 is computed but before
its checkpoint, so the restart must redo that step from checkpoint K.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import numpy as np

GLOBAL_BATCH, LENGTH = 8, 16


def rows_of(indices: np.ndarray, vocab: int) -> dict[str, np.ndarray]:
    ids = np.stack([np.random.default_rng(int(i)).integers(5, vocab, LENGTH) for i in indices])
    return {"input_ids": ids.astype(np.int32), "attention_mask": np.ones_like(ids, np.int32),
            "labels": (indices % 3).astype(np.int32)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, required=True, help="virtual CPU devices here")
    parser.add_argument("--single", action="store_true", help="no jax.distributed: reference")
    parser.add_argument("--preset", default="fsdp")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--ckpt", help="checkpoint folder (shared by the processes)")
    parser.add_argument("--crash-after", type=int, help="die (exit 3) after checkpoint K, once step K + 1 is computed")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from jaxformer.train import distributed

    jax.config.update("jax_num_cpu_devices", args.devices)
    jax.config.update("jax_default_matmul_precision", "highest")
    if not args.single:
        distributed.initialize(initialization_timeout=120)  # JAX_* environment variables

    from flax import nnx
    from jax.experimental import multihost_utils

    from jaxformer.models.config import EncoderConfig
    from jaxformer.tasks import ClassificationTask
    from jaxformer.train import sharding as S
    from jaxformer.train.optim import adamw
    from jaxformer.train.step import make_train_step

    cfg = EncoderConfig.tiny(hidden_size=64, num_heads=8, intermediate_size=128)
    task = ClassificationTask(cfg, num_labels=3)
    tx = adamw(1e-2, total_steps=10, warmup_steps=1, eps=1e-6)
    mesh, rules = S.make_mesh((4, 2)), S.ShardingRules.preset(args.preset)
    graphdef, state, shardings = S.create_train_state(
        lambda: task.build_model(rngs=nnx.Rngs(0)), tx, mesh=mesh, rules=rules)
    mine = distributed.process_batch_rows(GLOBAL_BATCH)
    step = make_train_step(graphdef, tx, task.loss_fn, mesh=mesh, data_axis=rules.batch_axis,
                           shardings=shardings, activations=S.activation_constraint(rules, mesh))
    ckpt, start = None, 0
    if args.ckpt:
        from jaxformer.train.checkpoint import Checkpointer

        ckpt = Checkpointer(args.ckpt, max_to_keep=2)
        latest = ckpt.latest_step()
        if latest is not None:  # the shardings of `state` say where each restored shard goes
            state, _ = ckpt.restore(latest, state)
            start = latest
    losses = []
    for s in range(start, args.steps):
        batch = distributed.global_batch(rows_of(mine + s * GLOBAL_BATCH, cfg.vocab_size),
                                         S.batch_sharding(rules, mesh))
        state, metrics = step(state, batch, key=jax.random.fold_in(jax.random.key(3), s))
        if s == args.crash_after:  # killed after computing this step, before its checkpoint
            jax.block_until_ready(state)
            os._exit(3)
        # Replicated: every process holds the whole (scalar) loss.
        losses.append(float(np.asarray(metrics["loss"].addressable_data(0))))
        if ckpt is not None:
            ckpt.save(s + 1, state)
            ckpt.wait()
    params = multihost_utils.process_allgather(state.params, tiled=True)
    sums = [float(np.asarray(x, np.float64).sum()) for x in jax.tree.leaves(params)]
    Path(args.out).write_text(json.dumps({
        "process_index": jax.process_index(), "process_count": jax.process_count(),
        "devices": jax.device_count(), "local_devices": jax.local_device_count(),
        "rows": mine.tolist(), "resumed_from": start, "losses": losses, "param_sums": sums}))
    if ckpt is not None:
        ckpt.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
