"""`jaxformer sts`: unsupervised STS evaluation of an encoder on a sentence-pair file.

Each distinct sentence is embedded once (all requested poolings from one encoder pass),
optionally whitened (BERT-whitening, post 8069), pairs are scored by cosine, and Spearman's rho
against the gold scores is printed (post 8321's protocol; a fraction in [-1, 1]).
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from jaxformer.cli.common import CLIError, read_lines
from jaxformer.cli.embed import DTYPE_CHOICES, POOLING_CHOICES
from jaxformer.cli.st_settings import read_model_settings

NAME = "sts"
FORMAT_CHOICES = ("pairs", "paws", "stsb")
SU_FIT = "the evaluated pairs' own sentences (as Su's BERT-whitening chn/eval.py)"

DESCRIPTION = """\
Spearman correlation between the cosine similarity of sentence-pair embeddings and gold scores.

Data formats (--format): pairs = headerless "s1<TAB>s2<TAB>score-or-label" (CNSD STS-B .data,
LCQMC, AFQMC); paws = PAWS-X TSV with the header "id sentence1 sentence2 label"; stsb =
sentence-transformers' stsbenchmark.tsv(.gz), header with split/score/sentence1/sentence2 (pick
rows with --split). Blank lines are skipped; a malformed line is reported as FILE:LINE.

Poolings: cls (P1), pooler (P2, needs a trained pooler), mean (P3), first-last-avg (P4); "all"
evaluates every pooling the model has from one encoder pass. The default pooling and max length
come from a sentence-transformers directory (as `jaxformer embed`), else mean and the position
table.

Whitening (--whiten K): x -> (x - mu) W with W = U diag(1/sqrt(lambda)) from the covariance's
SVD, keeping K dims (-1: all). The statistics come from --whiten-fit, else from the evaluated
pairs' own sentences (Su's choice; the output says which)."""

EPILOG = ("output: one JSON object per pooling, one per line, with spearman (a fraction in "
          "[-1, 1]), n and the settings (--json); else one readable line per pooling.\n"
          "exit status: 0 on success, 2 on an error (one line on stderr).")


def register(sub: Any) -> None:
    p = sub.add_parser(NAME, help="Spearman of cosine scores on a sentence-pair file (STS)",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="HF model directory")
    p.add_argument("--data", required=True, metavar="FILE", help="the sentence-pair file")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="pairs",
                   help="the data file's format (default pairs)")
    p.add_argument("--split", choices=("train", "dev", "test"), default=None,
                   help="--format stsb only: the rows of one split (default: all rows)")
    p.add_argument("--pooling", choices=POOLING_CHOICES + ("all",), default=None,
                   help="cls (P1), pooler (P2), mean (P3), first-last-avg (P4) or all (every "
                        "pooling the model has, one encoder pass). Default: the directory's "
                        "Pooling module, else mean")
    p.add_argument("--whiten", type=int, default=0, metavar="K",
                   help="BERT-whitening keeping K dims (-1: all dims; 0: none, the default)")
    p.add_argument("--whiten-fit", nargs="+", default=None, metavar="FILE",
                   help="where the whitening statistics come from: sentence files (read as "
                        "--whiten-fit-format), or statistics saved by --save-whitening (a "
                        ".safetensors file, or a model directory holding whitening.safetensors). "
                        "Default: the evaluated pairs' own sentences")
    p.add_argument("--whiten-fit-format", choices=("lines",) + FORMAT_CHOICES, default=None,
                   help="format of the --whiten-fit text files: lines (one sentence per line) "
                        "or a pair format (both sides' sentences). Default: --format")
    p.add_argument("--save-whitening", default=None, metavar="FILE",
                   help="write the fitted statistics (one pooling) to FILE.safetensors (name it "
                        "DIR/whitening.safetensors to keep them with the model in DIR)")
    p.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="truncate to N tokens (default: sentence_bert_config.json's "
                        "max_seq_length, else the position table)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N",
                   help="sentences per forward pass (default 64)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                   help="the encoder's compute dtype (default float32)")
    p.add_argument("--json", action="store_true", help="print JSON objects (one per pooling)")
    p.add_argument("--progress", action="store_true", help="show a progress bar (sentences)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow reading pytorch_model.bin (pickle can run code)")
    p.set_defaults(func=run)


def _check_flags(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_length is not None and args.max_length < 2:
        raise CLIError(f"--max-length must be >= 2, got {args.max_length}")
    if args.whiten < -1:
        raise CLIError(f"--whiten must be -1 (all dims), 0 (none) or a width K >= 1, got "
                       f"{args.whiten}")
    if args.whiten == 0 and (args.whiten_fit or args.save_whitening):
        raise CLIError("--whiten-fit and --save-whitening need --whiten K (K >= 1 or -1), "
                       "got --whiten 0")
    if args.split is not None and args.format != "stsb":
        raise CLIError(f"--split needs --format stsb, got --format {args.format}")
    if args.save_whitening and not args.save_whitening.endswith(".safetensors"):
        raise CLIError(f"--save-whitening {args.save_whitening}: expected a path ending in "
                       ".safetensors")
    if not Path(args.model).is_dir():
        raise CLIError(f"--model {args.model}: not a directory (expected a Hugging Face model "
                       "directory)")
    if not Path(args.data).is_file():
        raise CLIError(f"--data {args.data}: no such file")
    for f in args.whiten_fit or []:
        if Path(f).is_dir() and not (Path(f) / "whitening.safetensors").is_file():
            raise CLIError(f"--whiten-fit {f}: a directory without whitening.safetensors")
        if not Path(f).exists():
            raise CLIError(f"--whiten-fit {f}: no such file")


def _fit_sentences(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """The --whiten-fit text files' sentences, or a saved statistics file's path."""
    from jaxformer.io.sts_pairs import read_sts_pairs

    files = list(args.whiten_fit or [])
    saved = [f for f in files if f.endswith(".safetensors") or Path(f).is_dir()]
    if saved and len(files) > 1:
        raise CLIError("--whiten-fit: give one .safetensors statistics file, or text files, "
                       f"not both; got {files}")
    if saved:
        return [], saved[0]
    fmt = args.whiten_fit_format or args.format
    sentences: dict[str, None] = {}
    for f in files:
        try:
            found = read_lines(f, flag="--whiten-fit") if fmt == "lines" else \
                read_sts_pairs(f, fmt).sentences()
        except ValueError as err:
            raise CLIError(f"--whiten-fit: {err}") from None
        sentences.update(dict.fromkeys(s for s in found if s.strip()))
    return list(sentences), None


def run(args: argparse.Namespace) -> int:
    _check_flags(args)
    from jaxformer.io.sts_pairs import read_sts_pairs

    try:
        pairs = read_sts_pairs(args.data, args.format, split=args.split)
    except ValueError as err:
        raise CLIError(f"--data: {err}") from None
    fit_sentences, saved_stats = _fit_sentences(args)
    settings = read_model_settings(Path(args.model))
    t0 = time.perf_counter()

    import jax.numpy as jnp
    import numpy as np

    from jaxformer.io import CheckpointError, load_tokenizer
    from jaxformer.models.pretrained import load_pretrained
    from jaxformer.models.sentence import available_poolings, embed_poolings
    from jaxformer.models.whitening_store import load_stats, save_stats
    from jaxformer.tasks.sts import encode_pairs, sts_eval
    from jaxformer.whitening import fit_whitening, stats_of

    try:
        model = load_pretrained(Path(args.model), allow_pickle=args.allow_pickle)
        tokenizer = load_tokenizer(Path(args.model))
    except (OSError, CheckpointError, ValueError) as err:
        raise CLIError(f"--model {args.model}: {err}") from None
    cap = model.config.max_position_embeddings
    max_length = args.max_length or min(settings.max_length or cap, cap)
    if not 2 <= max_length <= cap:
        raise CLIError(f"--max-length must be in [2, {cap}] for this model, got {max_length}")
    have = available_poolings(model)
    if args.pooling == "all":
        poolings = have
    else:
        pooling = args.pooling or settings.pooling or "mean"
        if pooling not in have:
            raise CLIError(f"--pooling {pooling}: this model has only {list(have)}")
        poolings = (pooling,)
    if saved_stats and len(poolings) > 1:
        raise CLIError("--whiten-fit with a statistics file holds one pooling's statistics; "
                       "pass one --pooling")
    if args.save_whitening and len(poolings) > 1:
        raise CLIError("--save-whitening writes one pooling's statistics; pass one --pooling")
    vectors = encode_pairs(model, tokenizer, pairs, poolings=poolings, max_length=max_length,
                           batch_size=args.batch_size, progress=args.progress, dtype=args.dtype)
    fit_vectors = {}
    if fit_sentences:
        fit_vectors = embed_poolings(model, tokenizer, fit_sentences, poolings=poolings,
                                     max_length=max_length, batch_size=args.batch_size,
                                     progress=args.progress, dtype=args.dtype)
    seconds = time.perf_counter() - t0
    for pooling in poolings:
        whitening, fit_desc, fit_n = None, None, None
        if args.whiten:
            if saved_stats:
                stats, meta = load_stats(saved_stats)
                if meta.get("pooling") not in (None, pooling):
                    raise CLIError(f"--whiten-fit {saved_stats}: statistics of pooling "
                                   f"{meta['pooling']!r}, evaluating {pooling!r}")
                fit_desc = f"{saved_stats} ({meta.get('source', 'saved statistics')})"
            else:
                source = fit_vectors.get(pooling, vectors[pooling].sentences)
                stats = stats_of(jnp.asarray(source))
                fit_desc = ", ".join(args.whiten_fit) if fit_sentences else SU_FIT
            width = stats.width
            k = width if args.whiten == -1 else args.whiten
            if k > width:
                raise CLIError(f"--whiten {k}: expected at most the width E={width}")
            whitening = fit_whitening(stats, k)
            fit_n = whitening.count
            if args.save_whitening:
                save_stats(stats, args.save_whitening,
                           metadata={"pooling": pooling, "source": fit_desc,
                                     "model": str(args.model), "max_length": max_length})
        rho, _ = sts_eval(vectors[pooling], pairs.scores, whitening=whitening)
        report = {"spearman": rho, "n": len(pairs), "pooling": pooling,
                  "whiten": None if whitening is None else whitening.k,
                  "whiten_fit": fit_desc, "whiten_fit_sentences": fit_n,
                  "model": args.model, "data": args.data, "format": args.format,
                  "split": args.split, "max_length": max_length, "dtype": args.dtype,
                  "sentences_embedded": int(vectors[pooling].sentences.shape[0]),
                  "seconds": round(seconds, 3)}
        if args.json:
            print(json.dumps(report, ensure_ascii=False), flush=True)
        else:
            white = "" if whitening is None else f", whitened to {whitening.k} dims on {fit_desc}"
            print(f"{pooling:<15} spearman {rho:+.4f}  (n={len(pairs)}, max_length={max_length}"
                  f"{white})", flush=True)
        if not np.isfinite(rho):
            print(f"jaxformer {NAME}: note: {pooling}: Spearman is NaN (constant scores or "
                  "embeddings)", file=sys.stderr)
    return 0
