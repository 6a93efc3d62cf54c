"""python -m benchmarks.exp_unilm_r2 --data-dir ../shared/data

Claim R2-gen (post 7758, WoBERT): as a UniLM seq2seq model, WoBERT generates better than the
char BERT. Su's CSL *title* generation, beam 1, char-split scores: BERT Rouge-L 63.81 / BLEU
45.52, WoBERT 66.38 / 47.76. CSL titles are not available offline, so this runs the two real
generation sets that are:

| task | source → target | train | select (best dev loss) | report |
|---|---|---|---|---|
| csl | abstract → keywords joined by "；" | FewCLUE ``train_few_all`` + the leftover of ``test_public`` | ``dev_few_all`` | ``test_size`` seeded abstracts of ``test_public`` |
| cmrc2018 | answer [SEP] passage window → question | ``cmrc2018_trial`` | half of ``cmrc2018_dev``'s articles | the other half (``test_size`` questions) |

Only CSL records labelled 1 (all keywords the paper's own) are used, one example per distinct
abstract (the files repeat abstracts with different keyword subsets: `csl_keyword_pairs`), and
the report pool is ``test_public``'s abstracts outside ``train_few_all`` and ``dev_few_all``
(FewCLUE's dev abstracts all reappear in ``test_public``; 72 of them with label 1). FewCLUE's 70
label-1 training abstracts are too few to learn generation, so the pool's abstracts not drawn
for the report (319) join the training set; the report set never trains. CMRC2018's dev is
split 50/50 by a fixed seeded permutation of *articles* (each has one passage), so no passage is
seen by both selection and test. The source puts the answer first, then ``[SEP]``, then
``window`` characters of the passage centred on the answer: UniLM's question generation (Dong
et al. 2019, arXiv:1905.03197, §3.4) feeds "the concatenation of the passage and the answer",
and answer-first means truncation to ``max_source`` tokens cuts passage, never the answer.

Models: the pair `benchmarks.pretrain_zh --preset cpu-session` pretrains at one budget
(L2-H256): the char BERT after 900 + 300 steps (``char_continued``) and WoBERT, started from
the 900-step char BERT and trained 300 steps on jieba words. ``--char-model`` /
``--wobert-model`` default to their ``$JAXFORMER_CACHE`` entries. Per (task, model, seed): `Seq2SeqLMTask` fine-tuning with AdamW
(`jaxformer.train.optim.adamw`, 10% warm-up, linear decay) for ``epochs`` epochs, dev token
loss every epoch, best-dev checkpoint; then the test sources are decoded with beams 1, 2, 3
(greedy for 1) and scored with `generation_scores` (char-split Rouge-1/2/L F and BLEU, %).
Speed: target tokens (the best hypothesis', [SEP] included) per second and sources per second of
the jit-compiled cached search, timed after one warm-up call per shape bucket, per model and
beam, on this machine.

Budget (`R2Config` defaults): 5 epochs on csl (389 examples, 125 updates) and 3 on cmrc2018
(1002, 189 updates), batch 16, ``max_source`` 192 tokens, ``max_target`` 32, 200 (csl) and 300
(cmrc2018) test examples: 2 tasks x 2 models x 3 seeds = 12 runs, about an hour on two CPU
cores (measured at 0.9-1.5 s per update and 0.03-0.1 s per decoded source while another job
shared the cores; alone, roughly half). Each run stores
``result.json`` under ``$JAXFORMER_CACHE/runs/unilm_r2/<settings key>/`` and its training
checkpoints beside it, so a killed command resumes; ``--report-only`` writes
``results/<device>/unilm_r2.{json,md}`` from the stored runs; ``--limit N`` is a smoke run (N
records per split, 2 updates). ``--keep-rows-from REPORT.json`` carries over, from an earlier
report, the rows of every (task, model) this command does not run (``--tasks`` / ``--models``),
so a report whose run cache was lost can be completed without rerunning the finished pairs; a
note names the carried rows and the earlier report's commit and date.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import environment, format_table, write_report
from jaxformer.io.cache import cache_root, portable_path, settings_key
from jaxformer.io.generation_sets import (Pairs, article_of, csl_keyword_pairs, question_pair,
                                           split_articles)

NAME = "unilm_r2"
TASKS = ("csl", "cmrc2018")
MODELS = ("char-bert", "wobert")
# The pair `benchmarks.pretrain_zh --preset cpu-session` pretrains (L2-H256, 900 + 300 steps):
# char_continued and WoBERT.
DEFAULT_MODELS = {"char-bert": "char-bert/a5563332666f0934",
                  "wobert": "wobert/5d5530ef5f8c735d"}
SU_CSL_TITLES = {"BERT": {"rouge-l": 63.81, "bleu": 45.52},
                 "WoBERT": {"rouge-l": 66.38, "bleu": 47.76}}
METRICS = ("rouge-1", "rouge-2", "rouge-l", "bleu")


@dataclasses.dataclass(frozen=True)
class R2Config:
    """The experiment's settings (part of every run's cache key).

    Attributes:
      epochs: fine-tuning epochs per task, as ``((task, epochs), ...)``.
      batch_size: rows per update.
      learning_rate: AdamW's peak rate (10% warm-up, linear decay to 0).
      max_source, max_target: tokens of ``[CLS] source [SEP]`` and of ``target [SEP]``; the
        decoder's ``max_length`` is ``max_target``.
      window: CMRC2018 passage characters kept around the answer start.
      test_size: report examples per task, as ``((task, n), ...)`` (seeded draws); CSL's
        leftover test abstracts train (200 of its 518 leave 288 to train).
      dev_size: selection examples per task (the dev loss runs on the first ones).
      beams: beam sizes to decode with.
      length_penalty: α of ``log P / length ** α``.
      decode_batch: sources per compiled search.
    """

    epochs: tuple[tuple[str, int], ...] = (("csl", 5), ("cmrc2018", 3))
    batch_size: int = 16
    learning_rate: float = 5e-4
    max_source: int = 192
    max_target: int = 32
    window: int = 160
    test_size: tuple[tuple[str, int], ...] = (("csl", 200), ("cmrc2018", 300))
    dev_size: int = 200
    beams: tuple[int, ...] = (1, 2, 3)
    length_penalty: float = 1.0
    decode_batch: int = 32

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_target", "window", "dev_size", "decode_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"R2Config.{name}: expected an int >= 1, got {value!r}")
        if not isinstance(self.max_source, int) or self.max_source < 2:
            raise ValueError(f"R2Config.max_source: expected an int >= 2, got "
                             f"{self.max_source!r}")
        if self.max_source + self.max_target > 512:
            raise ValueError(f"R2Config.max_source + max_target: expected <= 512 positions, got "
                             f"{self.max_source} + {self.max_target}")
        for name in ("epochs", "test_size"):
            value = getattr(self, name)
            if dict(value).keys() != set(TASKS) or any(
                    isinstance(e, bool) or not isinstance(e, int) or e < 1 for _, e in value):
                raise ValueError(f"R2Config.{name}: expected an int >= 1 for each of {TASKS}, "
                                 f"got {value!r}")
        if not self.beams or any(not isinstance(k, int) or k < 1 for k in self.beams):
            raise ValueError(f"R2Config.beams: expected ints >= 1, got {self.beams!r}")
        if not (self.learning_rate > 0 and self.length_penalty >= 0):
            raise ValueError(f"R2Config.learning_rate > 0 and length_penalty >= 0 expected, got "
                             f"{self.learning_rate!r} and {self.length_penalty!r}")


# ---- data ---------------------------------------------------------------------------------------

def csl_splits(folder: Path, cfg: R2Config) -> tuple[dict[str, Pairs], dict[str, int]]:
    """FewCLUE csl: train = train_few_all + the leftover test pool; dev = dev_few_all; test = a
    seeded draw of ``test_size`` from the pool: test_public's abstracts that are in neither
    train_few_all nor dev_few_all (every dev abstract is also in test_public)."""
    train = csl_keyword_pairs(folder / "train_few_all.json")
    dev = csl_keyword_pairs(folder / "dev_few_all.json")
    public = csl_keyword_pairs(folder / "test_public.json")
    held = {a for a, _ in train + dev}
    pool = [p for p in public if p[0] not in held]
    order = np.random.default_rng(0).permutation(len(pool))
    test = [pool[i] for i in sorted(order[:dict(cfg.test_size)["csl"]])]
    leftover = [pool[i] for i in sorted(order[dict(cfg.test_size)["csl"]:])]
    return ({"train": train + leftover, "dev": dev[:cfg.dev_size], "test": test},
            {"train_few_all": len(train), "leftover_test": len(leftover),
             "test_public_abstracts": len(public), "test_public_in_dev": len(public) - len(pool)})


def cmrc_splits(folder: Path, cfg: R2Config) -> tuple[dict[str, Pairs], dict[str, int]]:
    """Trial trains; dev's articles split 50/50 into selection and test (module doc)."""
    from jaxformer.io.clue import read_clue

    def pairs(records: Sequence[Any]) -> Pairs:
        return [p for p in (question_pair(r, window=cfg.window) for r in records) if p]

    train = read_clue("cmrc2018", folder / "cmrc2018_trial.json")
    select, test = split_articles(read_clue("cmrc2018", folder / "cmrc2018_dev.json"), seed=0)
    test_pairs = pairs(test)
    order = np.random.default_rng(0).permutation(len(test_pairs))[:dict(cfg.test_size)["cmrc2018"]]
    out = {"train": pairs(train), "dev": pairs(select)[:cfg.dev_size],
           "test": [test_pairs[i] for i in sorted(order)]}
    return out, {"trial_questions": len(train), "dev_questions": len(select) + len(test),
                 "test_half_questions": len(test_pairs)}


def task_splits(task: str, data_dir: Path, cfg: R2Config) -> tuple[dict[str, Pairs],
                                                                   dict[str, int]]:
    if task == "csl":
        return csl_splits(data_dir / "fewclue" / "csl", cfg)
    return cmrc_splits(data_dir / "cmrc2018", cfg)


# ---- one run ------------------------------------------------------------------------------------

def _pad_to(enc: dict[str, np.ndarray], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = enc["input_ids"], enc["attention_mask"]
    extra = width - ids.shape[1]
    return (np.pad(ids, ((0, 0), (0, extra)), constant_values=pad_id).astype(np.int32),
            np.pad(mask, ((0, 0), (0, extra))).astype(np.int32))


def decode_timed(model: Any, tokenizer: Any, sources: Sequence[str], *, config: Any,
                 max_source: int, batch_size: int, bucket: int = 32) -> dict[str, Any]:
    """Decode every source (longest first, each batch padded to a multiple of `bucket` tokens)
    and time it: one untimed warm-up call per shape first, then every batch, synchronised.

    Returns ``{"texts", "seconds", "tokens", "sources"}``: texts in input order, ``tokens`` the
    best hypotheses' generated tokens ([SEP] included).
    """
    import jax

    from jaxformer.models.unilm_decode import decode

    enc = tokenizer.encode_batch(list(sources), max_length=max_source, padding="longest")
    lengths = enc["attention_mask"].sum(axis=1)
    order = np.argsort(-lengths, kind="stable")
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        rows = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
        width = min(max_source, bucket * math.ceil(int(lengths[rows].max()) / bucket))
        sub = {k: v[rows, :width] for k, v in enc.items()}
        batches.append((rows, *_pad_to(sub, width, tokenizer.pad_id)))
    seen = set()
    for _, ids, mask in batches:  # warm-up: compile each shape bucket once
        if ids.shape not in seen:
            seen.add(ids.shape)
            jax.block_until_ready(decode(model, ids, mask, config=config))
    outs = []
    t0 = time.perf_counter()
    for _, ids, mask in batches:
        outs.append(jax.block_until_ready(decode(model, ids, mask, config=config)))
    seconds = time.perf_counter() - t0
    texts: list[str | None] = [None] * len(sources)
    tokens = 0
    for (rows, _, _), out in zip(batches, outs, strict=True):
        toks, lens = np.asarray(out.tokens[:, 0]), np.asarray(out.lengths[:, 0])
        fin = np.asarray(out.finished[:, 0])
        for r, row in enumerate(rows):
            if texts[row] is None:
                tokens += int(lens[r])
                texts[row] = tokenizer.decode(toks[r, :int(lens[r]) - int(fin[r])])
    return {"texts": texts, "seconds": seconds, "tokens": tokens, "sources": len(sources)}


def _token_stats(tokenizer: Any, texts: Sequence[str], cap: int) -> dict[str, float]:
    n = tokenizer.encode_batch(list(texts), max_length=4096, padding="longest")[
        "attention_mask"].sum(axis=1) - 2
    return {"mean": float(n.mean()), "cut": float((n + 2 > cap).mean())}


def run_one(task: str, model_name: str, seed: int, *, model_dir: Path, splits: dict[str, Pairs],
            cfg: R2Config, out: Path, limit: int | None) -> dict[str, Any]:
    """Fine-tune, select by dev loss, decode the test set at every beam; store ``result.json``."""
    from jaxformer.io import load_tokenizer
    from jaxformer.models.pretrained_lm import load_masked_lm, save_masked_lm
    from jaxformer.tasks.base import fit
    from jaxformer.tasks.generation_metrics import generation_scores
    from jaxformer.tasks.seq2seq import Seq2SeqLMTask, decode_config, encode_pairs
    from jaxformer.train.loop import LoopConfig
    from jaxformer.train.optim import adamw

    tokenizer = load_tokenizer(model_dir)
    model = load_masked_lm(model_dir)
    data = {k: encode_pairs(tokenizer, [s for s, _ in v], [t for _, t in v],
                            max_source=cfg.max_source, max_target=cfg.max_target)
            for k, v in splits.items() if k != "test"}
    n = len(splits["train"])
    batch = min(cfg.batch_size, n)
    per_epoch = math.ceil(n / batch)
    total = 2 if limit is not None else dict(cfg.epochs)[task] * per_epoch
    every = total if limit is not None else per_epoch
    task_def = Seq2SeqLMTask(encoder_config=model.encoder.config, max_target=cfg.max_target)
    loop = LoopConfig(total_steps=total, batch_size=batch, eval_every=every,
                      checkpoint_every=every, log_every=max(1, per_epoch // 4), seed=seed,
                      best_metric="loss", best_mode="min", max_to_keep=1)
    tx = adamw(cfg.learning_rate, total_steps=total, warmup_steps=total // 10)
    t0 = time.perf_counter()
    result = fit(task_def, model, data["train"], tx=tx, config=loop, eval_data=data["dev"],
                 checkpoint_dir=out / "ckpt", metrics_path=out / "metrics.jsonl",
                 progress=False)
    train_seconds = time.perf_counter() - t0
    best = result.best_model if result.best_model is not None else result.model
    sources, references = [s for s, _ in splits["test"]], [t for _, t in splits["test"]]
    beams = {}
    for k in cfg.beams:
        dec = decode_timed(best, tokenizer, sources, max_source=cfg.max_source,
                           batch_size=min(cfg.decode_batch, len(sources)),
                           config=decode_config(tokenizer, max_length=cfg.max_target,
                                                beam_size=k,
                                                length_penalty=cfg.length_penalty))
        beams[str(k)] = {**generation_scores(dec["texts"], references),
                         "tokens_per_s": dec["tokens"] / dec["seconds"],
                         "sources_per_s": dec["sources"] / dec["seconds"],
                         "decode_seconds": dec["seconds"], "examples": dec["texts"][:5]}
    report = {
        "task": task, "model": model_name, "seed": seed, "steps": total,
        "steps_per_epoch": per_epoch, "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / total, "best": result.best_metrics,
        "eval_history": result.eval_history, "beams": beams,
        "sizes": {k: len(v) for k, v in splits.items()},
        "source_tokens": _token_stats(tokenizer, sources, cfg.max_source),
        "target_tokens": _token_stats(tokenizer, references, cfg.max_target + 1),
        "references": references[:5],
    }
    if seed == 0 and limit is None:  # one fine-tuned model per (task, model) for `generate`
        save_masked_lm(best, out / "model", tokenizer=tokenizer)
    (out / "result.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), "utf-8")
    shutil.rmtree(out / "ckpt", ignore_errors=True)  # the result is the cache from here on
    return report


# ---- report -------------------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _pm(values: Sequence[float]) -> str:
    m, s = mean_std(values)
    return f"{m:.2f} ± {s:.2f}"


def report_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, model, beam): scores mean ± sample std over seeds, median speed."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        for k, b in r["beams"].items():
            groups[(r["task"], r["model"], k)].append({**b, "seed": r["seed"],
                                                       "steps": r["steps"],
                                                       "sps": r["seconds_per_step"]})
    rows = []
    for (task, model, k), runs in groups.items():
        row = {"task": task, "model": model, "beam": int(k), "seeds": len(runs)}
        for m in METRICS:
            row[m] = _pm([r[m] for r in runs])
            row[f"{m}_values"] = [round(r[m], 2) for r in runs]
        row["tokens_per_s"] = float(np.median([r["tokens_per_s"] for r in runs]))
        row["sources_per_s"] = float(np.median([r["sources_per_s"] for r in runs]))
        row["steps"] = runs[0]["steps"]
        row["s_per_step"] = float(np.median([r["sps"] for r in runs]))
        rows.append(row)
    return order_rows(rows)


COLUMNS = [("task", "task"), ("model", "model"), ("beam", "beam"), ("seeds", "seeds"),
           ("rouge-1", "Rouge-1"), ("rouge-2", "Rouge-2"), ("rouge-l", "Rouge-L"),
           ("bleu", "BLEU"), ("tokens_per_s", "target tok/s"), ("sources_per_s", "sources/s"),
           ("steps", "updates"), ("s_per_step", "train s/update (eval incl.)")]


def carried_rows(path: Path, produced: set[tuple[str, str]],
                 same_notes: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of an earlier report whose (task, model) is not in ``produced``, and notes.

    The earlier report must carry ``same_notes`` (this run's settings and models lines)
    verbatim, so rows of other settings are never mixed in. Each carried row keeps where it
    was measured (``measured``: commit and date), across repeated carrying.
    """
    try:
        earlier = json.loads(path.read_text("utf-8"))
        rows, env, notes = earlier["rows"], earlier["environment"], earlier["notes"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"--keep-rows-from: expected an earlier {NAME} report JSON with 'rows', "
                         f"'environment' and 'notes', got {path} ({e!r})") from None
    if earlier.get("name") != NAME:
        raise ValueError(f"--keep-rows-from: expected a report named {NAME!r}, got "
                         f"{earlier.get('name')!r} in {path}")
    for line in same_notes:
        if line not in notes:
            head = line.split(":")[0]
            theirs = next((n for n in notes if n.startswith(head + ":")), "none")
            raise ValueError(f"--keep-rows-from: expected the earlier report's {head} to be "
                             f"this run's ({line!r}), got {theirs!r} in {path}")
    origin = (f"commit {env.get('git_commit', '?')}{'+dirty' if env.get('git_dirty') else ''}, "
              f"{env.get('timestamp_utc', '?')}")
    kept = [{**r, "measured": r.get("measured", origin)} for r in rows
            if (r["task"], r["model"]) not in produced]
    by_origin: dict[str, set[str]] = defaultdict(set)
    for r in kept:
        by_origin[r["measured"]].add(f"{r['task']}/{r['model']}")
    out = [f"rows carried over from an earlier report of the same settings and models "
           f"({path}): " + "; ".join(f"{', '.join(sorted(v))} (measured at {k})"
                                     for k, v in sorted(by_origin.items()))
           + "; their speed columns reflect that run's machine load"] if kept else []
    return kept, out


def order_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (TASKS.index(r["task"]), MODELS.index(r["model"]),
                                       r["beam"]))


def verdicts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Post 2's direction per task at beam 1: WoBERT minus char BERT, against the seed spread."""
    notes = []
    for task in TASKS:
        pair = {r["model"]: r for r in rows if r["task"] == task and r["beam"] == 1}
        if set(pair) != set(MODELS):
            continue
        parts, better = [], 0
        for m in ("rouge-l", "bleu"):
            w, c = (mean_std(pair[x][f"{m}_values"]) for x in ("wobert", "char-bert"))
            diff = w[0] - c[0]
            spread = math.hypot(w[1], c[1])
            better += diff > 0
            seeds = len(pair["wobert"][f"{m}_values"])
            parts.append(f"{m} {diff:+.2f} ({seeds} seed(s), combined std {spread:.2f}"
                         f"{', within noise' if abs(diff) <= spread else ''})")
        verdict = ("holds" if better == 2 else "does not hold" if better == 0 else "is mixed")
        notes.append(f"{task}, beam 1: WoBERT − char BERT = {'; '.join(parts)}: post 2's "
                     f"direction (WoBERT better) {verdict} here")
    return notes


def model_paths(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Path]:
    out = {}
    for name, given in (("char-bert", args.char_model), ("wobert", args.wobert_model)):
        path = Path(given) if given else cache_root() / DEFAULT_MODELS[name]
        if not (path / "config.json").is_file():
            flag = "--char-model" if name == "char-bert" else "--wobert-model"
            parser.error(f"{flag}: no model folder at {path} (pretrain the pair with "
                         "`python -m benchmarks.pretrain_zh --preset cpu-session`, or pass a "
                         "BertForMaskedLM folder)")
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--data-dir", required=True, help="the shared data folder (holds "
                        "fewclue/csl and cmrc2018)")
    parser.add_argument("--char-model", help="char BERT MLM folder (default: the cached one)")
    parser.add_argument("--wobert-model", help="WoBERT MLM folder (default: the cached one)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--beams", nargs="+", type=int, help="beam sizes (default 1 2 3)")
    parser.add_argument("--epochs", type=int, help="epochs for every task (default: 3)")
    parser.add_argument("--out", default="results")
    parser.add_argument("--limit", type=int, help="smoke run: N records per split, 2 updates")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--keep-rows-from", type=Path, metavar="REPORT_JSON",
                        help="carry over an earlier report's rows for the (task, model) pairs "
                        "this command does not run")
    args = parser.parse_args(argv)
    changes: dict[str, Any] = {}
    if args.beams:
        changes["beams"] = tuple(args.beams)
    if args.epochs:
        changes["epochs"] = tuple((t, args.epochs) for t in TASKS)
    if args.limit is not None:
        changes.update(test_size=tuple((t, args.limit) for t in TASKS), dev_size=args.limit)
    cfg = R2Config(**changes)
    paths = model_paths(args, parser)
    settings = json.loads(json.dumps({"config": dataclasses.asdict(cfg), "limit": args.limit,
                                      "models": {k: portable_path(v) for k, v in paths.items()}}))
    root = cache_root() / "runs" / NAME / settings_key(settings)
    results, sizes = [], {}
    for task in args.tasks:
        splits = None
        for model_name in args.models:
            for seed in args.seeds:
                out = root / task / model_name / f"seed{seed}"
                done = out / "result.json"
                if not done.exists() and not args.report_only:
                    if splits is None:
                        splits, counts = task_splits(task, Path(args.data_dir), cfg)
                        if args.limit is not None:
                            splits = {k: v[:args.limit] for k, v in splits.items()}
                        sizes[task] = {**{k: len(v) for k, v in splits.items()}, **counts}
                    print(f"{task} {model_name} seed {seed}: training "
                          f"({ {k: len(v) for k, v in splits.items()} })", flush=True)
                    out.mkdir(parents=True, exist_ok=True)
                    run_one(task, model_name, seed, model_dir=paths[model_name], splits=splits,
                            cfg=cfg, out=out, limit=args.limit)
                if done.exists():
                    r = json.loads(done.read_text("utf-8"))
                    results.append(r)
                    print(f"{task} {model_name} seed {seed}: beam 1 "
                          f"{ {m: round(r['beams']['1'][m], 2) for m in METRICS} }"
                          if "1" in r["beams"] else f"{task} {model_name} seed {seed}: done",
                          flush=True)
    rows = report_rows(results)
    same_notes = [
        f"models: char BERT {portable_path(paths['char-bert'])}, WoBERT "
        f"{portable_path(paths['wobert'])} (L2-H256, pretrained for the same steps)",
        f"settings: {json.dumps(dataclasses.asdict(cfg))}; AdamW (10% warm-up, linear decay), "
        "best checkpoint by dev token loss (evaluated every epoch)"]
    carried_notes: list[str] = []
    if args.keep_rows_from is not None:
        try:
            kept, carried_notes = carried_rows(
                args.keep_rows_from, {(r["task"], r["model"]) for r in rows}, same_notes)
        except ValueError as e:
            parser.error(str(e))
        rows = order_rows(rows + kept)
        carried_notes.append("the whole table from scratch: python -m benchmarks.exp_unilm_r2 "
                             "--data-dir ../shared/data")
    command = "python -m benchmarks.exp_unilm_r2 " + " ".join(
        a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only")
    notes = verdicts(rows) + carried_notes + same_notes + [
        "data: csl = FewCLUE label-1 abstracts (each once), abstract → its label-1 keywords joined "
        "by '；', trained on train_few_all + the test_public abstracts (outside train and dev) "
        "not drawn for the report; cmrc2018 = "
        "trial trains, dev articles split 50/50 (seeded) into selection and report, source = "
        "answer [SEP] passage window", f"split sizes: {json.dumps(sizes)}" if sizes else
        "split sizes: in each run's result.json",
        "scores: char-split Rouge-1/2/L F and BLEU (`generation_scores`, %), mean ± sample std "
        "over seeds; speed: best-hypothesis target tokens ([SEP] included) and sources per "
        "second of the jit-compiled cached search after warm-up (median over seeds); WoBERT's "
        "tokens are words, so its sources/s is the fair speed figure",
        "Su (post 2, CSL *titles*, beam 1, BERT-base scale): BERT Rouge-L 63.81 / BLEU 45.52, "
        "WoBERT 66.38 / 47.76; ours are keywords and questions from 2-layer models pretrained "
        "for minutes, so only the direction is comparable",
    ]
    env = environment()
    written = write_report(NAME, rows, columns=COLUMNS, title="Claim R2-gen: WoBERT vs char "
                           "BERT as UniLM seq2seq generators", command=command, notes=notes,
                           out_dir=args.out, env=env)
    for p in written:
        print(p)
    print(format_table(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
