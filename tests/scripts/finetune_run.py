"""A tiny, checkpointed fine-tune for the kill-and-resume test (tests/test_finetune_resume.py).

Command (about 10 s on 2 CPU cores; prints nothing on success)::

    OUT=$(mktemp -d); JAX_PLATFORMS=cpu python tests/scripts/finetune_run.py \
        --out "$OUT" --checkpoint-dir "$OUT/ckpt"

It fine-tunes a 1-layer width-32 classifier on "does token 5 occur?" for 40 steps, saving a
checkpoint every 5, through the task-agnostic loop: ``fit(ClassificationTask(...), ...)`` by
default, or ``finetune`` with ``--api finetune`` (the same optimiser, data order and keys, so
the same numbers). It writes to ``--out``:

- ``params.npz``: the final parameters, keyed by dotted path (``encoder.blocks.0.ffn...``);
- ``result.json``: per-step train losses, eval history, and ``resumed_from`` (the checkpoint
  step it restored, or null);
- ``metrics.jsonl``: the loop's metrics lines (one train line per step, eval at 20 and 40).

Run it again with the same arguments and it resumes from the newest finalized checkpoint.
``--sleep-per-step`` slows each step down (through a loop callback) so that a test can
SIGKILL it mid-run.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for synthetic.py

# Mirror the test suite: strict promotion, and no XLA optimisation passes (CPU compile time
# dominates a 40-step toy run; every run of this script compiles the same way).
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_disable_most_optimizations", True)

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxformer.models.config import EncoderConfig  # noqa: E402
from jaxformer.models.encoder import Encoder  # noqa: E402
from jaxformer.models.modules import named_leaves  # noqa: E402
from jaxformer.tasks import ClassificationTask, fit  # noqa: E402
from jaxformer.train.finetune import FinetuneConfig, finetune  # noqa: E402
from jaxformer.train.loop import LoopConfig  # noqa: E402
from jaxformer.train.optim import adamw  # noqa: E402
from synthetic import token_task  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--sleep-per-step", type=float, default=0.0)
    parser.add_argument("--total-steps", type=int, default=40)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api", choices=("fit", "finetune"), default="fit")
    args = parser.parse_args(argv)
    # force=True: absl (imported by orbax) has already installed a root handler.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("jaxformer").setLevel(logging.INFO)

    task = ClassificationTask(EncoderConfig.tiny(num_layers=1), num_labels=2)
    model = task.build_model(rngs=nnx.Rngs(params=1),
                             encoder=Encoder(task.encoder_config, rngs=nnx.Rngs(params=0)))
    config = FinetuneConfig(learning_rate=1e-2, batch_size=16, total_steps=args.total_steps,
                            warmup_steps=4, eval_every=20, checkpoint_every=args.checkpoint_every,
                            seed=args.seed, max_to_keep=3)

    def slow_down(step: int, metrics: dict[str, float]) -> None:
        time.sleep(args.sleep_per_step)

    common = dict(eval_data=token_task(48, seed=1), checkpoint_dir=args.checkpoint_dir,
                  metrics_path=args.out / "metrics.jsonl",
                  callbacks=(slow_down,) if args.sleep_per_step > 0 else (), progress=False)
    if args.api == "finetune":
        result = finetune(model, token_task(128, seed=0), config=config, **common)
    else:
        tx = adamw(config.learning_rate, total_steps=config.total_steps,
                   warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
                   clip_norm=config.clip_norm)
        loop = LoopConfig(total_steps=config.total_steps, batch_size=config.batch_size,
                          eval_every=config.eval_every, checkpoint_every=config.checkpoint_every,
                          max_to_keep=config.max_to_keep, seed=config.seed)
        result = fit(task, model, token_task(128, seed=0), tx=tx, config=loop,
                     run_config=config.to_dict(), **common)

    args.out.mkdir(parents=True, exist_ok=True)
    params = nnx.state(result.model, nnx.Param)
    np.savez(args.out / "params.npz",
             **{name: np.asarray(x) for name, x in named_leaves(params).items()})
    (args.out / "result.json").write_text(json.dumps({
        "history": result.history,
        "eval_history": result.eval_history,
        "resumed_from": result.resumed_from,
        "final_step": int(result.state.step),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
