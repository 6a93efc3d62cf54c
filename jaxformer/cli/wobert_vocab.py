"""`jaxformer wobert-vocab`: WoBERT's word-level vocabulary (`jaxformer.io.build_wobert_vocab`,
post 7758).

The base ``vocab.txt`` without its redundant tokens, plus jieba's most frequent words; writes a
tokenizer directory (``vocab.txt`` + ``tokenizer_config.json``, segmenter jieba) and prints the
counts.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

from jaxformer.cli.common import CLIError

NAME = "wobert-vocab"


def register(sub: Any) -> None:
    p = sub.add_parser(NAME, help="WoBERT's word-level vocab: a BERT vocab.txt plus jieba words",
                       description=__doc__)
    p.add_argument("--base-vocab", required=True, help="char-level BERT vocab.txt (e.g. bert-base-chinese's)")
    p.add_argument("--num-words", type=int, default=20000,
                   help="jieba dictionary words to add, most frequent first (default 20000, as WoBERT)")
    p.add_argument("--out", required=True, help="output tokenizer directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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

