"""The `jaxformer` command line.

    jaxformer embed --model DIR [--pooling mean] [--normalize] [--max-length N] \
        [--batch-size N] [--input FILE] --out FILE.npy

reads UTF-8 sentences, one per line (standard input, or --input FILE), and writes a float32
``[N, E]`` array. Empty lines are kept as empty sentences, so row i is line i.

    jaxformer flops --d-model 768 --heads 12 --ffn 3072 --seq-len 512 [--attention linear] \
        [--batch N] [--no-xla] [--json]

prints one layer's forward FLOPs per operation (`jaxformer.flops`, 2 per multiply-add), the
matmul FLOPs of the same layer's lowered StableHLO (`hlo_flops`, the same on every backend), XLA's
compiled count (`xla_flops`) and post 8610's crossover lengths.

    jaxformer bench [--suite quick|full] [--out results] [--only SECTION ...] [--precision POLICY ...]

runs the benchmark suite (`benchmarks/suite.py`; `make bench`): writes
``results/<device>/bench.json``, ``report.md`` and PNGs, and prints the tables and the goals.

    jaxformer wobert-vocab --base-vocab FILE --num-words 20000 --out DIR

builds WoBERT's word-level vocabulary (`jaxformer.io.build_wobert_vocab`, post 7758): the base
``vocab.txt`` without its redundant tokens, plus jieba's most frequent words; writes a tokenizer
directory (``vocab.txt`` + ``tokenizer_config.json``, segmenter jieba) and prints the counts.

Errors (a bad model directory, empty input, a bad shape, ...) print one clear line to stderr and
exit with status 2.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxformer.pooling import POOLINGS

PROGRESS_THRESHOLD = 256  # lines; below this a progress bar is just noise


class CLIError(Exception):
    """An error the user can fix; printed without a traceback."""


def _read_lines(path: str | None) -> list[str]:
    if path is None or path == "-":
        raw = sys.stdin.buffer.read()
        where = "standard input"
    else:
        p = Path(path)
        if not p.is_file():
            raise CLIError(f"--input {path}: no such file")
        raw = p.read_bytes()
        where = path
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CLIError(f"{where}:{line}: not valid UTF-8 ({err.reason})") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise CLIError(f"{where} has no sentences (expected UTF-8 text, one sentence per line)")
    return lines


def _default_max_length(model_dir: Path, cap: int) -> int:
    """sentence-transformers directories say how long their inputs were in training."""
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        try:
            return min(cap, int(json.loads(st_config.read_text(encoding="utf-8"))["max_seq_length"]))
        except (KeyError, ValueError, TypeError):
            pass
    return cap


def _embed(args: argparse.Namespace) -> int:
    import numpy as np

    from jaxformer.io import CheckpointError, load_tokenizer
    from jaxformer.models.pretrained import load_pretrained
    from jaxformer.models.sentence import embed_sentences

    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise CLIError(f"--model {args.model}: not a directory (expected a Hugging Face model directory)")
    if not args.out.endswith(".npy"):
        raise CLIError(f"--out {args.out}: expected a path ending in .npy")
    sentences = _read_lines(args.input)
    try:
        model = load_pretrained(model_dir, allow_pickle=args.allow_pickle)
        tokenizer = load_tokenizer(model_dir)
    except (FileNotFoundError, CheckpointError, ValueError) as err:
        raise CLIError(f"--model {args.model}: {err}") from None
    cap = model.config.max_position_embeddings
    max_length = args.max_length or _default_max_length(model_dir, cap)
    if not 2 <= max_length <= cap:
        raise CLIError(f"--max-length must be in [2, {cap}] for this model, got {max_length}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.pooling == "pooler" and model.pooler is None:
        raise CLIError("--pooling pooler: this model has no pooler; use cls, mean or first-last-avg")
    show = args.progress if args.progress is not None else len(sentences) >= PROGRESS_THRESHOLD
    vectors = embed_sentences(model, tokenizer, sentences, pooling=args.pooling,
                              normalize=args.normalize, max_length=max_length,
                              batch_size=args.batch_size, progress=show)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors.astype(np.float32))
    print(f"wrote {out} [{vectors.shape[0]}, {vectors.shape[1]}] float32 "
          f"(pooling={args.pooling}, normalize={args.normalize}, max_length={max_length})",
          file=sys.stderr)
    return 0


def _flops(args: argparse.Namespace) -> int:
    from jaxformer.flops import LayerShape, crossover_lengths, layer_flops

    for name in ("d_model", "heads", "ffn", "seq_len", "batch"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.d_model % args.heads:
        raise CLIError(f"--d-model {args.d_model} must be divisible by --heads {args.heads}")
    shape = LayerShape(args.d_model, args.heads, args.ffn, args.seq_len, batch=args.batch,
                       attention=args.attention, linear_mode="parallel")
    lines = layer_flops(shape)
    head_dim = args.d_model // args.heads
    crossover = crossover_lengths(args.d_model, args.heads, args.ffn,
                                  feature_dim=head_dim if args.attention == "linear" else None)
    hlo, measured = _layer_counts(args)
    report = {
        "shape": {"d_model": args.d_model, "heads": args.heads, "ffn": args.ffn,
                  "seq_len": args.seq_len, "batch": args.batch, "attention": args.attention},
        "analytic_flops": lines["matmul_total"],
        "su_multiplications": layer_flops(shape, convention="su")["matmul_total"],
        "per_op": lines["matmul"],
        "elementwise": lines["elementwise"],
        "analytic_with_elementwise": lines["matmul_total"] + lines["elementwise_total"],
        "hlo_flops": hlo.flops,
        "hlo_ratio": hlo.flops / lines["matmul_total"],
        "hlo_reliable": hlo.reliable,
        "hlo_note": hlo.reason,
        "xla_flops": None if measured is None else measured.flops,
        "xla_reliable": None if measured is None else measured.reliable,
        "xla_note": None if measured is None else measured.reason,
        "crossover": crossover,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"one {args.attention} encoder layer, forward, B={args.batch} T={args.seq_len} "
          f"E={args.d_model} H={args.heads} F={args.ffn} (FLOPs = 2 per multiply-add)")
    for section in ("per_op", "elementwise"):
        for op, value in report[section].items():
            print(f"  {op:<22}{value:>16,.0f}")
    print(f"  {'matmul total':<22}{report['analytic_flops']:>16,.0f}   (Su's count x2)")
    print(f"  {'with elementwise':<22}{report['analytic_with_elementwise']:>16,.0f}")
    print(f"  {'StableHLO matmuls':<22}{hlo.flops:>16,.0f}   ({report['hlo_ratio']:.4f} of "
          "matmul total)" + ("" if hlo.reliable else f"   [{hlo.reason}]"))
    if measured is not None:
        flops = "n/a" if measured.flops is None else f"{measured.flops:,.0f}"
        ratio = ("" if measured.flops is None
                 else f"   ({measured.flops / report['analytic_with_elementwise']:.4f} of analytic)")
        print(f"  {'XLA cost_analysis':<22}{flops:>16}{ratio}"
              + ("" if measured.reliable else f"   [{measured.reason}]"))
    for name, value in crossover.items():
        print(f"crossover {name}: n > {value:g}")
    return 0


def _layer_counts(args: argparse.Namespace):  # noqa: ANN202
    """The layer's StableHLO matmul count (lowered only) and, unless ``--no-xla``, XLA's count of
    the same lowering, compiled."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxformer.flops import hlo_cost, xla_cost
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Block

    cfg = EncoderConfig(hidden_size=args.d_model, num_heads=args.heads, intermediate_size=args.ffn,
                        num_layers=1, attention=args.attention, attention_dropout=0.0,
                        linear_mode="parallel", max_position_embeddings=max(args.seq_len, 1))
    graphdef, params = nnx.split(Block(cfg, rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((args.batch, args.seq_len, args.d_model), jnp.float32)
    lowered = jax.jit(lambda p, h: nnx.merge(graphdef, p)(h, mask=None, deterministic=True)
                      ).lower(params, x)
    return hlo_cost(lowered), None if args.no_xla else xla_cost(lowered.compile())


def _wobert_vocab(args: argparse.Namespace) -> int:
    from jaxformer.io import build_wobert_vocab, save_wobert_vocab

    if args.num_words < 1:
        raise CLIError(f"--num-words: expected an int >= 1, got {args.num_words}")
    if not Path(args.base_vocab).is_file():
        raise CLIError(f"--base-vocab {args.base_vocab}: expected an existing vocab.txt file, got no such file")
    flags = {"base_vocab_path": "--base-vocab", "num_words": "--num-words"}
    try:
        tokens, stats = build_wobert_vocab(args.base_vocab, num_words=args.num_words)
    except (OSError, ValueError) as err:
        message = str(err)
        for name, flag in flags.items():  # the io function names its parameters; name the flags
            if message.startswith(name):
                message = flag + message[len(name):]
        raise CLIError(message) from None
    save_wobert_vocab(tokens, args.out)
    print(f"base {stats['base']}  dropped {stats['dropped']}  kept {stats['kept']}  "
          f"added {stats['added']}  final {stats['final']}")
    print(f"wrote {Path(args.out) / 'vocab.txt'} and tokenizer_config.json (segmenter jieba)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxformer", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    embed = sub.add_parser("embed", help="embed sentences with an HF BERT-family model directory")
    embed.add_argument("--model", required=True, help="HF model directory (config.json, model.safetensors, vocab)")
    embed.add_argument("--pooling", choices=POOLINGS, default="mean",
                       help="cls (P1), pooler (P2), mean (P3) or first-last-avg (P4); default mean")
    embed.add_argument("--normalize", action="store_true", help="L2-normalise each embedding")
    embed.add_argument("--max-length", type=int, default=None,
                       help="truncate to N tokens (default: sentence_bert_config.json, else the position table)")
    embed.add_argument("--batch-size", type=int, default=32)
    embed.add_argument("--input", default=None, help="UTF-8 file, one sentence per line (default: stdin)")
    embed.add_argument("--out", required=True, help="output .npy file, float32 [N, E]")
    embed.add_argument("--allow-pickle", action="store_true",
                       help="allow reading pytorch_model.bin (pickle can run code; prefer safetensors)")
    embed.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help=f"force a progress bar (default: on for >= {PROGRESS_THRESHOLD} lines)")
    embed.add_argument("--no-progress", dest="progress", action="store_false")
    embed.set_defaults(func=_embed)
    flops = sub.add_parser("flops", help="analytic, StableHLO and XLA FLOPs of one encoder layer, "
                           "and crossovers")
    flops.add_argument("--d-model", type=int, required=True, help="E, the model width")
    flops.add_argument("--heads", type=int, required=True, help="H, attention heads")
    flops.add_argument("--ffn", type=int, required=True, help="F, the FFN width")
    flops.add_argument("--seq-len", type=int, required=True, help="T, tokens")
    flops.add_argument("--batch", type=int, default=1, help="B (default 1)")
    flops.add_argument("--attention", choices=("softmax", "linear"), default="softmax")
    flops.add_argument("--no-xla", action="store_true",
                       help="skip compiling the layer (the StableHLO count only lowers it)")
    flops.add_argument("--json", action="store_true", help="print one JSON object")
    flops.set_defaults(func=_flops)
    wobert = sub.add_parser("wobert-vocab", help="WoBERT's word-level vocab: a BERT vocab.txt plus jieba words")
    wobert.add_argument("--base-vocab", required=True, help="char-level BERT vocab.txt (e.g. bert-base-chinese's)")
    wobert.add_argument("--num-words", type=int, default=20000,
                        help="jieba dictionary words to add, most frequent first (default 20000, as WoBERT)")
    wobert.add_argument("--out", required=True, help="output tokenizer directory")
    wobert.set_defaults(func=_wobert_vocab)
    sub.add_parser("bench", add_help=False,
                   help="the benchmark suite, what `make bench` runs (see `jaxformer bench --help`)")
    return parser


def _bench(argv: list[str]) -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Its options belong to benchmarks.suite (so `jaxformer bench --help` is the suite's).
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as err:
        print(f"jaxformer {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
