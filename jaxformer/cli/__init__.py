"""The `jaxformer` command line: one module per subcommand.

    jaxformer embed --model DIR [--input FILE] --out FILE.npy|.npz|.jsonl [options]
    jaxformer sts --model DIR --data FILE [--format pairs|paws|stsb] [--pooling P|all] [--whiten K]
    jaxformer flops --d-model 768 --heads 12 --ffn 3072 --seq-len 512 [--attention linear] [--json]
    jaxformer bench [--suite quick|full] [--out results] [--only SECTION ...]
    jaxformer wobert-vocab --base-vocab FILE --num-words 20000 --out DIR
    jaxformer clue TASK --model DIR --data-dir DIR --out DIR [--epochs N] [--max-steps N]
    jaxformer generate --model DIR --input FILE [--beam N] [--max-length N] [--output FILE]

``jaxformer <command> --help`` describes each. Errors the user can fix (a bad model directory,
empty input, a bad shape, ...) print one line, ``jaxformer <command>: error: ...``, to stderr and
exit with status 2.

A subcommand is a module here with ``NAME``, ``register(subparsers)`` (which adds its parser and
``set_defaults(func=run)``) and ``run(args) -> int``, raising `CLIError` for user errors; a module
with ``RAW_ARGS = True`` gets the unparsed rest of the command line in ``main(argv)`` instead.
Registering one is one line in `SUBCOMMANDS`. Modules import jax, numpy and the models inside
``run`` only, so ``jaxformer --help`` answers at once.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from jaxformer.cli.common import CLIError

__all__ = ["CLIError", "SUBCOMMANDS", "build_parser", "main", "version"]

# Modules of jaxformer.cli, in `jaxformer --help` order.
SUBCOMMANDS = ("embed", "sts", "flops", "bench", "wobert_vocab", "clue", "generate")


def _subcommands() -> list[ModuleType]:
    return [importlib.import_module(f"jaxformer.cli.{name}") for name in SUBCOMMANDS]


def version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    from importlib import metadata

    try:
        return metadata.version("jaxformer")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        # The parent package is imported before any of its submodules, so it is here already.
        return getattr(sys.modules["jaxformer"], "__version__", "unknown")


class _VersionAction(argparse.Action):
    """argparse's ``action="version"``, but the version is looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any,
                 option_string: str | None = None) -> None:
        print(f"jaxformer {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxformer", description="jaxformer: BERT-family encoders in JAX/Flax NNX.",
        epilog="`jaxformer <command> --help` describes a command. Errors print one line to "
               "stderr and exit with status 2.")
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for module in _subcommands():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for module in _subcommands():
        if getattr(module, "RAW_ARGS", False) and argv[:1] == [module.NAME]:
            return module.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as err:
        print(f"jaxformer {args.command}: error: {err}", file=sys.stderr)
        return 2
