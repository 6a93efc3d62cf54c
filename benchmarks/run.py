"""python -m benchmarks.run [--quick] [--out results]   (what `make bench` runs)

Runs every benchmark module in `BENCHMARKS`, prints each one's results as a Markdown table on
stdout, writes `<out>/<device_slug>/<name>.json` and `<name>.md` per benchmark (device_slug is
"cpu" or e.g. "nvidia-h100-80gb-hbm3"), prints those paths and the total wall time.

A benchmark module provides `NAME`, `COLUMNS`, `run(quick: bool) -> list[dict]` and
`write(rows, *, out_dir, command) -> paths`.

The full run takes about 3.5 minutes on an idle 2-core CPU, 1.5 of them in the linear-attention
benchmark (5-6 minutes when other processes share the cores). Torch's OpenMP threads slow down
badly when the cores are oversubscribed, which inflates the ratios in jaxformer's favour: check
the load average and the `max IQR %` column in the report, and on a shared machine prefer
`nice -n -10 python -m benchmarks.run`.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Sequence

from benchmarks.harness import format_table

# Module names, in run order. Add new benchmarks here.
BENCHMARKS: tuple[str, ...] = ("benchmarks.bench_encoder", "benchmarks.bench_rope",
                               "benchmarks.bench_linear_attention")


def _command(quick: bool, out: str) -> str:
    # The exact command that reproduces the report, as written at the top of each .md file.
    parts = ["python -m benchmarks.run"]
    if quick:
        parts.append("--quick")
    if out != "results":
        parts.append(f"--out {out}")
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run every jaxformer benchmark.")
    parser.add_argument("--quick", action="store_true", help="smallest shapes only (smoke run)")
    parser.add_argument("--out", default="results", help="results root (default: results)")
    args = parser.parse_args(argv)

    command = _command(args.quick, args.out)
    start = time.perf_counter()
    written = []
    for module_name in BENCHMARKS:
        module = importlib.import_module(module_name)
        t0 = time.perf_counter()
        rows = module.run(quick=args.quick)
        print(f"\n## {module.NAME} ({time.perf_counter() - t0:.0f} s)\n", flush=True)
        print(format_table(rows, module.COLUMNS), flush=True)
        written.extend(module.write(rows, out_dir=args.out, command=command))

    print("\nwrote:")
    for path in written:
        print(f"  {path}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
