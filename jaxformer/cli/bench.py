"""`jaxformer bench`: the benchmark suite (`benchmarks/suite.py`), what `make bench` runs.

Writes ``results/<device>/bench.json``, ``report.md`` and PNGs, and prints the tables and the
goals. Its options belong to the suite, so `jaxformer bench --help` is the suite's own.
"""

import sys
from typing import Any

NAME = "bench"
RAW_ARGS = True  # main() hands it the rest of the command line unparsed


def register(sub: Any) -> None:
    sub.add_parser(NAME, add_help=False,
                   help="the benchmark suite, what `make bench` runs (see `jaxformer bench --help`)")


def main(argv: list[str]) -> int:
    # The suite lives in the repository's top-level `benchmarks/` package (it imports torch for
    # its baselines, which nothing under jaxformer/ may); `pip install -e .` installs both.
    try:
        from benchmarks import suite
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("benchmarks"):
            raise
        print("jaxformer bench: error: the benchmark suite (package `benchmarks`, in the "
              "repository next to jaxformer/) is not importable; install jaxformer from a clone "
              "with `pip install -e .` or run `python -m benchmarks.suite` from its root",
              file=sys.stderr)
        return 2
    try:
        suite.main(argv)
    except ValueError as err:
        print(f"jaxformer bench: error: {err}", file=sys.stderr)
        return 2
    return 0

