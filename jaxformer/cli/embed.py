"""`jaxformer embed`: sentence embeddings of a text file with an HF model directory."""

import argparse
import sys
from pathlib import Path
from typing import Any

from jaxformer.cli.common import CLIError, read_lines
from jaxformer.cli.output import FORMATS, AtomicOutput, embeddings_writer
from jaxformer.cli.st_settings import read_model_settings

NAME = "embed"
# `jaxformer.pooling.POOLINGS`, spelled out so `jaxformer --help` needs no jax import (a test
# keeps the two equal).
POOLING_CHOICES = ("cls", "mean", "first-last-avg", "pooler")
DTYPE_CHOICES = ("float32", "bfloat16")

DESCRIPTION = """\
Embed sentences, one per line, with a BERT-family Hugging Face model directory.

Input is UTF-8 text (--input FILE, or standard input), split on "\\n" only (a trailing "\\r" is
dropped; other Unicode line breaks stay inside their sentence). Empty lines are kept as empty
sentences, so row i of the output is line i of the input. Sentences run longest first (less
padding, faster); the output is in input order.

Defaults come from the model directory when it is a sentence-transformers model: the pooling
from its Pooling module (1_Pooling/config.json), normalisation when modules.json lists a
Normalize module, and the max length from sentence_bert_config.json (max_seq_length). Otherwise:
mean pooling, no normalisation, the model's position table. Flags always win; the settings taken
from the directory are printed to stderr."""

EPILOG = "output formats, chosen by the --out suffix:\n" + "\n".join(
    f"  {suffix:<7}{what}" for suffix, what in FORMATS.items()
) + "\n\nexit status: 0 on success, 2 on an error (one line on stderr)."


def register(sub: Any) -> None:
    p = sub.add_parser(NAME, help="embed sentences (one per line) with an HF BERT-family model directory",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR",
                   help="HF model directory (config.json, model.safetensors, tokenizer files)")
    p.add_argument("--input", default=None, metavar="FILE",
                   help="UTF-8 text file, one sentence per line ('-' or omitted: standard input)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output file ending in .npy, .npz or .jsonl (see below); written to a "
                        "temporary file and renamed, so a failed run leaves an earlier file intact")
    p.add_argument("--pooling", choices=POOLING_CHOICES, default=None,
                   help="cls (post 8321's P1: the [CLS] vector), mean (P3: masked mean of the last "
                        "layer), first-last-avg (P4: mean of block 0's and the last layer's "
                        "average), pooler (P2: BERT's tanh pooler; needs one). Default: the "
                        "directory's Pooling module, else mean")
    norm = p.add_mutually_exclusive_group()
    norm.add_argument("--normalize", dest="normalize", action="store_true", default=None,
                      help="L2-normalise each embedding (default: on when the directory's "
                           "modules.json lists Normalize, else off)")
    norm.add_argument("--no-normalize", dest="normalize", action="store_false",
                      help="do not normalise, even when the directory lists Normalize")
    p.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="truncate each sentence to N tokens, [CLS] and [SEP] included; 2 <= N <= "
                        "the model's position table (default: sentence_bert_config.json's "
                        "max_seq_length, else the position table)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="sentences per forward pass (default 32)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                   help="compute dtype of the encoder (default float32; bfloat16 is faster on "
                        "GPUs/TPUs, and its rows differ by about 1e-2). The output is always float32")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar counting sentences (default: only when stderr is "
                          "a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false",
                     help="never show the progress bar")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow reading pytorch_model.bin (pickle can run code; prefer safetensors)")
    p.set_defaults(func=run)


def _say(message: str) -> None:
    print(f"jaxformer {NAME}: {message}", file=sys.stderr)


def _check_flags(args: argparse.Namespace) -> None:
    """Everything that needs no file read: fail in milliseconds, not after loading a model."""
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_length is not None and args.max_length < 2:
        raise CLIError(f"--max-length must be >= 2 ([CLS] and [SEP] alone take 2 tokens), "
                       f"got {args.max_length}")
    if not Path(args.model).is_dir():
        raise CLIError(f"--model {args.model}: not a directory (expected a Hugging Face model directory)")


def _choose_max_length(args: argparse.Namespace, recorded: int | None, cap: int,
                       used: dict[str, str], source: str | None) -> int:
    if args.max_length is not None:
        if args.max_length > cap:
            raise CLIError(f"--max-length must be in [2, {cap}] for this model "
                           f"(its position table has {cap} rows), got {args.max_length}")
        return args.max_length
    if recorded is None:
        return cap
    if recorded < 2:
        raise CLIError(f"--model {args.model}: {source} has max_seq_length {recorded} (< 2); "
                       "pass --max-length")
    used["max_length"] = f"{min(recorded, cap)} ({source}" + (
        f", capped from {recorded} at the position table)" if recorded > cap else ")")
    return min(recorded, cap)


def run(args: argparse.Namespace) -> int:
    _check_flags(args)
    out = AtomicOutput(args.out)
    model_dir = Path(args.model)
    settings = read_model_settings(model_dir)
    used: dict[str, str] = {}  # setting -> "value (file)", for the settings taken from the directory
    pooling = args.pooling
    if pooling is None and settings.pooling_problem is not None:
        raise CLIError(f"--model {args.model}: {settings.pooling_problem}; pass --pooling "
                       f"{'|'.join(POOLING_CHOICES)}")
    if pooling is None and settings.pooling is not None:
        pooling = settings.pooling
        used["pooling"] = f"{pooling} ({settings.sources['pooling']})"
    pooling = pooling or "mean"
    normalize = args.normalize
    if normalize is None and settings.normalize is not None:
        normalize = settings.normalize
        used["normalize"] = f"{'on' if normalize else 'off'} ({settings.sources['normalize']})"
    normalize = bool(normalize)
    sentences = read_lines(args.input)
    with out:  # creates the temporary file: --out can be written, checked before the model loads
        from jaxformer.io import CheckpointError, load_tokenizer
        from jaxformer.models.pretrained import load_pretrained
        from jaxformer.models.sentence import embed_sentences

        try:
            model = load_pretrained(model_dir, allow_pickle=args.allow_pickle)
            tokenizer = load_tokenizer(model_dir)
        except (OSError, CheckpointError, ValueError) as err:
            raise CLIError(f"--model {args.model}: {err}") from None
        max_length = _choose_max_length(args, settings.max_length, model.config.max_position_embeddings,
                                        used, settings.sources.get("max_length"))
        if pooling == "pooler" and model.pooler is None:
            raise CLIError("--pooling pooler: this model has no pooler; use cls, mean or first-last-avg")
        if used:
            _say("from the model directory: " + ", ".join(f"{k}={v}" for k, v in used.items()))
        for note in settings.notes:
            _say(f"note: {note}")
        show = sys.stderr.isatty() if args.progress is None else args.progress
        vectors = embed_sentences(model, tokenizer, sentences, pooling=pooling, normalize=normalize,
                                  max_length=max_length, batch_size=args.batch_size, progress=show,
                                  dtype=args.dtype)
        out.commit(embeddings_writer(out.format, vectors, sentences))
    _say(f"wrote {args.out} [{vectors.shape[0]}, {vectors.shape[1]}] float32 (pooling={pooling}, "
         f"normalize={normalize}, max_length={max_length}, dtype={args.dtype})")
    return 0
