"""python -m benchmarks.exp_wobert_r6 --data-dir ../shared/data [--preset cpu-hour] [--seeds 0 1 2]

Claim R6 (post 7758, "提速不掉点": faster *and no loss of accuracy*): fine-tune the char BERT
and WoBERT that `benchmarks.pretrain_zh` pretrained at the same compute (the continued char
BERT and WoBERT) on four Chinese classification sets, and compare test accuracy:

| set | train | test |
|---|---|---|
| THUCNews headlines (10 classes) | dev (10,000) | test (10,000) |
| FewCLUE TNEWS (15 classes) | ``train_few_all`` | ``test_public`` |
| FewCLUE IFLYTEK (119 classes) | ``train_few_all`` | ``test_public`` |
| ChnSentiCorp hotel reviews (2 classes) | fixed 80% | fixed 20% |

Every (set, model) pair runs with seeds 0, 1, 2 (data order, dropout and the classifier's
initial weights), reported as mean and sample standard deviation. WoBERT is called *better*
(*worse*) when its mean exceeds (trails) the char BERT's by more than two standard errors of
the difference, otherwise *within noise*. Su's numbers (base-size models, CLUE dev): IFLYTEK
60.31 -> 61.15, TNEWS 56.94 -> 57.05.

Fine-tuning: `jaxformer.train.finetune` (the task-agnostic loop), [CLS] -> Dense, AdamW with
linear warmup (10%) and decay, the same hyperparameters for both models; sequence lengths in
tokens are the same for both (`benchmarks.zh_prepare.PrepareConfig.r6_max_len`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
from flax import nnx

from benchmarks.harness import environment, format_table, write_report
from benchmarks.pretrain_zh import PRESETS as PRETRAIN_PRESETS, pretrain_all
from benchmarks.zh_prepare import R6_SETS, PrepareConfig, load_npz, prepared
from jaxformer.models.heads import SequenceClassifier
from jaxformer.models.pretrained import load_pretrained
from jaxformer.train.finetune import FinetuneConfig, finetune

NAME = "wobert_r6"
SU = {"iflytek": (60.31, 61.15), "tnews": (56.94, 57.05)}


@dataclasses.dataclass(frozen=True)
class R6Config:
    """Fine-tuning hyperparameters (shared by both models).

    Attributes:
      epochs: per set; steps = epochs * train examples // batch_size.
      lr, batch_size, warmup: AdamW peak rate, batch, warmup share of the steps.
      seeds: one run per seed.
      max_steps: cap on the optimiser steps of every run (None: epochs decide).
      max_len: per set, cut the prepared rows to this many tokens (ending them with [SEP]);
        sets not named keep the prepared length.
      limit_train, limit_test: keep only this many examples (tests; None = all).
    """

    epochs: tuple[tuple[str, int], ...] = (("thucnews", 3), ("tnews", 10), ("iflytek", 10),
                                           ("chnsenticorp", 3))
    lr: float = 5e-5
    batch_size: int = 32
    warmup: float = 0.1
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int | None = None
    max_len: tuple[tuple[str, int], ...] = ()
    limit_train: int | None = None
    limit_test: int | None = None

    def __post_init__(self) -> None:
        if {s for s, _ in self.epochs} != set(R6_SETS):
            raise ValueError(f"epochs: expected one entry for each of {R6_SETS}, "
                             f"got {dict(self.epochs)}")
        if not self.seeds:
            raise ValueError("seeds: expected at least one seed, got ()")


PRESETS = {
    "full": R6Config(),
    # A 2-CPU-core session: at most 150 steps of batch 32 per run, and the two long-text sets
    # cut to 128 tokens (about 20 minutes for the 24 runs of an L2-H256 pair).
    "cpu-session": R6Config(epochs=(("thucnews", 1), ("tnews", 5), ("iflytek", 3),
                                    ("chnsenticorp", 1)), max_steps=150, lr=1e-4,
                            max_len=(("iflytek", 128), ("chnsenticorp", 128))),
}


def cut(ids: np.ndarray, length: int, sep_id: int) -> np.ndarray:
    """Rows ``[N, T]`` cut to `length` tokens; a row that was longer ends with [SEP] again."""
    out = ids[:, :length].copy()
    longer = ids[:, length:].any(axis=1) if ids.shape[1] > length else np.zeros(len(ids), bool)
    out[longer, -1] = sep_id
    return out


def _data(arrays: dict[str, np.ndarray], split: str, model: str, limit: int | None,
          length: int | None = None, sep_id: int = 0) -> dict[str, np.ndarray]:
    ids = arrays[f"{split}_{model}"][:limit].astype(np.int32)
    if length is not None:
        ids = cut(ids, length, sep_id)
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int32),
            "labels": arrays[f"{split}_labels"][:limit].astype(np.int32)}


def run_one(model_dir: Path, arrays: dict[str, np.ndarray], model: str, num_labels: int, *,
            epochs: int, seed: int, cfg: R6Config, length: int | None = None) -> dict[str, Any]:
    sep = (model_dir / "vocab.txt").read_text("utf-8").split("\n").index("[SEP]")
    train = _data(arrays, "train", model, cfg.limit_train, length, sep)
    test = _data(arrays, "test", model, cfg.limit_test, length, sep)
    steps = max(1, epochs * len(train["labels"]) // cfg.batch_size)
    if cfg.max_steps is not None:
        steps = min(steps, cfg.max_steps)
    encoder = load_pretrained(model_dir)
    classifier = SequenceClassifier(encoder, num_labels, rngs=nnx.Rngs(1000 + seed))
    ft = FinetuneConfig(learning_rate=cfg.lr, batch_size=cfg.batch_size, total_steps=steps,
                        warmup_steps=int(cfg.warmup * steps), seed=seed)
    t0 = time.perf_counter()
    result = finetune(classifier, train, config=ft, eval_data=test, progress=False)
    return {"accuracy": 100.0 * float(result.eval_metrics["accuracy"]),
            "test_loss": float(result.eval_metrics["loss"]), "steps": steps,
            "seconds": time.perf_counter() - t0}


def verdict(char: list[float], word: list[float]) -> str:
    """"better" / "worse" when the mean difference exceeds two standard errors, else noise."""
    if len(char) < 2 or len(word) < 2:
        return "n/a (one seed)"
    diff = float(np.mean(word) - np.mean(char))
    se = math.sqrt(np.var(char, ddof=1) / len(char) + np.var(word, ddof=1) / len(word))
    if se == 0.0:
        return "better" if diff > 0 else ("worse" if diff < 0 else "within noise")
    return "better" if diff > 2 * se else ("worse" if diff < -2 * se else "within noise")


COLUMNS = [("set", "set"), ("char", "char BERT acc %"), ("wobert", "WoBERT acc %"),
           ("diff", "WoBERT - char"), ("verdict", "verdict"), ("su", "Su (BERT -> WoBERT)"),
           ("char_s", "char s/run"), ("wobert_s", "WoBERT s/run")]


def run(prepared_dir: Path, models: dict[str, Path], cfg: R6Config,
        sets: tuple[str, ...] = R6_SETS,
        on_row: Callable[[list[dict[str, Any]]], Any] | None = None) -> list[dict[str, Any]]:
    """One row per set; ``on_row(rows so far)`` after each (to save partial results)."""
    report = json.loads((prepared_dir / "report.json").read_text("utf-8"))["r6"]
    rows = []
    for name in sets:
        arrays = load_npz(prepared_dir, f"r6_{name}")
        runs: dict[str, list[dict[str, Any]]] = {"char": [], "word": []}
        for seed in cfg.seeds:
            for model in ("char", "word"):
                runs[model].append(run_one(models[model], arrays, model,
                                           report[name]["num_labels"],
                                           epochs=dict(cfg.epochs)[name], seed=seed, cfg=cfg,
                                           length=dict(cfg.max_len).get(name)))
                print(f"{name} {model} seed {seed}: {runs[model][-1]['accuracy']:.2f}%",
                      flush=True)
        acc = {m: [r["accuracy"] for r in runs[m]] for m in runs}

        def fmt(values: list[float]) -> str:
            sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
            return f"{np.mean(values):.2f} ± {sd:.2f}"

        su = SU.get(name)
        rows.append({
            "set": name, "char": fmt(acc["char"]), "wobert": fmt(acc["word"]),
            "diff": float(np.mean(acc["word"]) - np.mean(acc["char"])),
            "verdict": verdict(acc["char"], acc["word"]),
            "su": f"{su[0]} -> {su[1]}" if su else "",
            "char_s": float(np.mean([r["seconds"] for r in runs["char"]])),
            "wobert_s": float(np.mean([r["seconds"] for r in runs["word"]])),
            "runs": runs, "num_labels": report[name]["num_labels"],
            "train_examples": report[name]["train_examples"],
            "test_examples": report[name]["test_examples"],
            "max_len": dict(cfg.max_len).get(name, report[name]["max_len"]),
            "epochs": dict(cfg.epochs)[name], "steps": runs["char"][0]["steps"],
            "tokens_per_text": {"char": report[name]["train_char_tokens"],
                                "word": report[name]["train_word_tokens"]},
        })
        if on_row is not None:
            on_row(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--prepared")
    parser.add_argument("--preset", default="cpu-hour", choices=sorted(PRETRAIN_PRESETS),
                        help="the pretraining recipe whose models are compared")
    parser.add_argument("--char-model", help="a char BERT folder (default: the preset's "
                        "continued char BERT from the cache)")
    parser.add_argument("--word-model", help="a WoBERT folder (default: the preset's, cached)")
    parser.add_argument("--recipe", default="full", choices=sorted(PRESETS),
                        help="fine-tuning preset (cpu-session: fewer epochs, 128 tokens)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", default=list(R6_SETS), choices=R6_SETS)
    parser.add_argument("--quick", action="store_true",
                        help="64 train / 32 test examples per set, one epoch (a smoke test)")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    if (args.data_dir is None) == (args.prepared is None):
        parser.error("give exactly one of --data-dir and --prepared")
    folder = Path(args.prepared) if args.prepared else prepared(args.data_dir, PrepareConfig())[0]
    if (args.char_model is None) != (args.word_model is None):
        parser.error("give both --char-model and --word-model, or neither")
    if args.char_model:
        models = {"char": Path(args.char_model), "word": Path(args.word_model)}
    else:
        pre = pretrain_all(folder, PRETRAIN_PRESETS[args.preset], progress=False)  # cache hits
        models = {"char": Path(pre["char_continued"]["path"]), "word": Path(pre["wobert"]["path"])}
    summaries = {m: json.loads((d / "pretrain_summary.json").read_text("utf-8"))
                 if (d / "pretrain_summary.json").is_file() else None for m, d in models.items()}
    cfg = dataclasses.replace(PRESETS[args.recipe], seeds=tuple(args.seeds))
    if args.quick:
        cfg = dataclasses.replace(cfg, limit_train=64, limit_test=32,
                                  epochs=tuple((s, 1) for s in R6_SETS))
    command = "python -m benchmarks.exp_wobert_r6 " + " ".join(sys.argv[1:] if argv is None
                                                               else argv)
    notes = [f"fine-tuning: {json.dumps(dataclasses.asdict(cfg))}",
             "models: the continued char BERT and WoBERT of benchmarks.pretrain_zh (same "
             "continuation steps); their pretraining summaries: " + json.dumps(
                 {m: None if v is None else {"steps": v["steps"], "heldout": v["heldout"]}
                  for m, v in summaries.items()}),
             "accuracy: mean ± sample std over seeds; verdict: better/worse when the mean "
             "difference exceeds 2 standard errors, else within noise"]

    def save(rows: list[dict[str, Any]]) -> tuple[Path, Path]:
        # Rewritten after every set, so a run stopped early keeps the sets it finished.
        return write_report(NAME, rows, columns=COLUMNS, title="Claim R6: WoBERT vs char BERT "
                            "fine-tuned on Chinese classification", command=command,
                            notes=notes, out_dir=args.out, env=environment())

    rows = run(folder, models, cfg, sets=tuple(args.sets), on_row=save)
    print(format_table(rows, COLUMNS))
    for p in save(rows):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
