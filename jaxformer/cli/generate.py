"""`jaxformer generate`: UniLM seq2seq generation with a BERT/RoFormer masked-LM folder.

    jaxformer generate --model DIR --input FILE [--beam N] [--max-length N] [--output FILE]
                       [--max-source N] [--length-penalty A] [--batch-size N]

Reads sources one per line (UTF-8) and writes one generated target per line, line i for source
i, to ``--output`` or standard output. The model is a ``BertForMaskedLM`` /
``RoFormerForMaskedLM`` folder with its tokenizer, fine-tuned as a UniLM seq2seq model
(`jaxformer.tasks.seq2seq.Seq2SeqLMTask`, e.g. by ``python -m benchmarks.exp_unilm_r2``); each
row is ``[CLS] source [SEP]`` and the target is generated until [SEP] by the cached search of
`jaxformer.models.unilm_decode` (greedy for ``--beam 1``). Sources longer than
``--max-source`` tokens are cut at the end.
"""

import argparse
import re
from pathlib import Path
from typing import Any

from jaxformer.cli.common import CLIError, read_lines

NAME = "generate"

# Spaces the WordPiece decoder puts between CJK characters and full-width punctuation
# (`tokenizer.decode` joins every token with one), dropped so the output reads as Chinese.
_CJK = r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
_CJK_SPACE = re.compile(rf"(?<={_CJK})\s+(?={_CJK})")


def register(sub: Any) -> None:
    p = sub.add_parser(NAME, help="generate targets (one per line) with a UniLM seq2seq "
                       "BERT/RoFormer masked-LM folder", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR",
                   help="HF BertForMaskedLM / RoFormerForMaskedLM folder with its tokenizer")
    p.add_argument("--input", required=True, metavar="FILE",
                   help="UTF-8 sources, one per line ('-': standard input)")
    p.add_argument("--output", metavar="FILE", help="targets, one per line (default: stdout)")
    p.add_argument("--beam", type=int, default=1, metavar="N",
                   help="beam size K (1: greedy; default 1)")
    p.add_argument("--max-length", type=int, default=32, metavar="N",
                   help="target tokens at most, the closing [SEP] included (default 32)")
    p.add_argument("--max-source", type=int, default=256, metavar="N",
                   help="source tokens at most, [CLS] and [SEP] included (default 256)")
    p.add_argument("--length-penalty", type=float, default=1.0, metavar="A",
                   help="alpha of score = log P / length ** alpha (default 1: mean log-prob)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="sources per compiled search (default 32)")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    for flag, value, low in (("--beam", args.beam, 1), ("--max-length", args.max_length, 1),
                             ("--max-source", args.max_source, 2),
                             ("--batch-size", args.batch_size, 1)):
        if value < low:
            raise CLIError(f"{flag}: expected an int >= {low}, got {value}")
    alpha = args.length_penalty
    if not alpha == alpha or alpha < 0 or alpha == float("inf"):
        raise CLIError(f"--length-penalty: expected a finite number >= 0, got {alpha}")
    model = Path(args.model)
    if not (model / "config.json").is_file():
        raise CLIError(f"--model {args.model}: no config.json (expected an HF masked-LM folder)")


def one_line(text: str) -> str:
    """A generated text as one output line: CJK characters joined, line breaks made spaces."""
    return _CJK_SPACE.sub("", " ".join(text.split()))


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    sources = read_lines(args.input)
    for number, line in enumerate(sources, 1):
        if not line.strip():
            where = "standard input" if args.input in (None, "-") else args.input
            raise CLIError(f"{where}:{number}: blank line (expected one source per line)")

    from jaxformer.io import CheckpointError, load_tokenizer
    from jaxformer.models.pretrained_lm import load_masked_lm
    from jaxformer.models.unilm_decode import check_decodable
    from jaxformer.tasks.seq2seq import decode_config, generate_texts

    try:
        tokenizer = load_tokenizer(args.model)
        model = load_masked_lm(args.model)
        cfg = model.encoder.config
        check_decodable(cfg)
    except (CheckpointError, FileNotFoundError, ValueError, KeyError) as err:
        raise CLIError(f"--model {args.model}: {' '.join(str(err).split())}") from None
    if cfg.position == "absolute" and args.max_source + args.max_length > (
            cfg.max_position_embeddings):
        raise CLIError(f"--max-source + --max-length: expected at most the model's "
                       f"max_position_embeddings={cfg.max_position_embeddings}, got "
                       f"{args.max_source} + {args.max_length}")
    config = decode_config(tokenizer, max_length=args.max_length, beam_size=args.beam,
                           length_penalty=args.length_penalty)
    texts = generate_texts(model, tokenizer, sources, config=config,
                           max_source=args.max_source,
                           batch_size=min(args.batch_size, len(sources)))
    out = "".join(one_line(t) + "\n" for t in texts)
    if args.output is None:
        print(out, end="")
    else:
        try:
            Path(args.output).write_text(out, encoding="utf-8")
        except OSError as err:
            raise CLIError(f"--output {args.output}: cannot write ({err.strerror})") from None
    return 0
