"""The encoder options the Chinese experiments share: ``--model DIR``, or the char BERT that
`benchmarks.pretrain_zh` pretrained (cached; found by ``--prepared``, ``--size``, ``--steps``).

Used by ``python -m benchmarks.exp_theseus_r5`` and ``python -m benchmarks.exp_clue_r8``.
"""

import argparse
from pathlib import Path


def add_encoder_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prepared", help="a benchmarks.zh_prepare folder (keys the cached "
                        "pretraining)")
    parser.add_argument("--model", help="an HF BERT folder to use as the pretrained encoder")
    parser.add_argument("--size", default="L6-H256", help="pretrain_zh size of the cached model")
    parser.add_argument("--steps", type=int, default=1041, help="its pretraining steps")


def encoder_dir(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    """``--model``, else the cached char BERT of ``--prepared`` at ``--size`` / ``--steps``
    (pretrained first when the cache lacks it)."""
    if args.model:
        return Path(args.model)
    if not args.prepared:
        parser.error("give --model, or --prepared to find the cached pretrained encoder")
    from benchmarks.pretrain_zh import PRESETS, pretrain_all

    pre = pretrain_all(Path(args.prepared), PRESETS["cpu-hour"].replace(
        size=args.size, steps=args.steps), progress=False, char_only=True)
    return Path(pre["char"]["path"])
