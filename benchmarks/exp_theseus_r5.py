"""python -m benchmarks.exp_theseus_r5 --data-dir ../shared/data --prepared .devdata/prepared --size L6-H256 --steps 1041

Claim R5 (post 7575, BERT-of-Theseus): compressing a fine-tuned encoder by module replacement
beats fine-tuning its first M blocks directly ("truncation"). Su's IFLYTEK accuracies (BERT-base,
dev): 12 layers 60.11; truncated to 6 58.99, Theseus 6 59.61; truncated to 3 57.96, Theseus 3
59.36.

Here the predecessor is the 6-layer char BERT `benchmarks.pretrain_zh` pretrains
(``--size L6-H256``, cached in ``$JAXFORMER_CACHE``; ``--model DIR`` takes any HF BERT folder
instead), fine-tuned per task; it is compressed to 3 and to 2 blocks, and compared with
fine-tuning the first 3 and first 2 pretrained blocks:

| task | train | select (best dev) | report |
|---|---|---|---|
| FewCLUE IFLYTEK (119 classes) | ``train_few_all`` | ``dev_few_all`` | ``test_public`` |
| THUCNews headlines (10 classes) | 90% of ``dev.txt`` | the other 10% | ``test.txt`` |

Variants per (task, seed): ``predecessor`` (6 blocks), ``theseus-M`` (Su's recipe: p = 0.5 per
batch, embeddings in the draw, successor from the first M pretrained blocks, Adam at a constant
rate, phases of 5/10/5 epochs by default), ``theseus-M-linear`` (the paper's curriculum,
``p_t = min(k t + 0.3, 1)`` with k reaching 1 at 3/4 of the replacement phase), and
``truncated-M`` (fine-tuned for the predecessor's epochs). Seeds drive data order, dropout, the
coins and the classifier's initial weights; every number is test accuracy of the best-dev
checkpoint, mean ± sample std over seeds. The successor's speed-up is measured on the same
machine (jit-compiled forward of a [64, T] batch, median of interleaved repeats).

Runs are stored as they finish (``results/<device>/theseus_r5_runs.json``) and each phase
checkpoints under ``$JAXFORMER_CACHE/runs/theseus_r5``, so a killed command resumes; ``--report-only``
rewrites the tables from the stored runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.harness import environment, format_table, prepare_jax, time_interleaved, \
    write_report
from jaxformer.io import load_tokenizer
from jaxformer.io.cache import cache_root, portable_path, settings_key
from jaxformer.io.zh_tasks import fewclue_classification, thucnews_titles
from jaxformer.models.heads import SequenceClassifier
from jaxformer.models.pretrained import load_pretrained
from jaxformer.models.theseus import truncate_encoder
from jaxformer.tasks.theseus import TheseusConfig
from jaxformer.tasks.theseus_recipe import (TheseusRecipe, compress, fit_predecessor,
                                            new_classifier, truncation_baseline)

NAME = "theseus_r5"
TASKS = ("iflytek", "thucnews")
SU_IFLYTEK = {"12 layers": 60.11, "truncated to 6": 58.99, "Theseus 6": 59.61,
              "truncated to 3": 57.96, "Theseus 3": 59.36}


@dataclasses.dataclass(frozen=True)
class R5Config:
    """The experiment's settings (one runs file per setting; `--report-only` reads them).

    Attributes:
      targets: successor block counts M (each divides the predecessor's).
      epochs: (predecessor, replacement, successor) epochs; truncation gets the first.
      lr, batch_size: Adam's constant rate and the batch, every phase (Su: 2e-5, 32).
      max_len: tokens per example per task ([CLS] and [SEP] included).
      select_fraction: THUCNews: the share of ``dev.txt`` held out to select checkpoints.
      curriculum: also run the linear-schedule variant for every target.
      limit: keep only this many examples of each split (tests; None = all).
    """

    targets: tuple[int, ...] = (3, 2)
    epochs: tuple[int, int, int] = (5, 10, 5)
    lr: float = 1e-4
    batch_size: int = 32
    max_len: tuple[tuple[str, int], ...] = (("iflytek", 128), ("thucnews", 48))
    select_fraction: float = 0.1
    curriculum: bool = True
    limit: int | None = None

    def recipe(self, *, seed: int, layers: int, theseus: TheseusConfig) -> TheseusRecipe:
        pred, repl, succ = self.epochs
        return TheseusRecipe(successor_layers=layers, batch_size=self.batch_size,
                             learning_rate=self.lr, predecessor_epochs=pred,
                             replacement_epochs=repl, successor_epochs=succ, seed=seed,
                             theseus=theseus)


def load_task(data_dir: Path, task: str, tokenizer: Any, max_len: int, limit: int | None
              ) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """``({"train", "select", "test"}: arrays), num_labels`` of `task` (module doc's splits)."""
    if task == "iflytek":
        train, select, test = fewclue_classification(
            data_dir, "iflytek", splits=("train_few_all", "dev_few_all", "test_public"))
    elif task == "thucnews":
        dev, test = thucnews_titles(data_dir)
        # A fixed split (seed 0) for every training seed: the seeds vary the training only.
        order = np.random.default_rng(0).permutation(len(dev.texts))
        n_select = int(round(len(order) * R5Config().select_fraction))
        pick = lambda rows: type(dev)([dev.texts[i] for i in rows],  # noqa: E731
                                      [dev.labels[i] for i in rows], dev.label_names)
        select, train = pick(order[:n_select]), pick(order[n_select:])
    else:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")

    def arrays(split: Any) -> dict[str, np.ndarray]:
        texts, labels = split.texts[:limit], split.labels[:limit]
        enc = tokenizer.encode_batch(list(texts), max_length=max_len)
        return {"input_ids": np.asarray(enc["input_ids"], np.int32),
                "attention_mask": np.asarray(enc["attention_mask"], np.int32),
                "labels": np.asarray(labels, np.int32)}

    return {"train": arrays(train), "select": arrays(select), "test": arrays(test)}, \
        len(train.label_names)


def accuracy(model: SequenceClassifier, data: dict[str, np.ndarray], batch_size: int = 64
             ) -> float:
    """Test accuracy (%) of `model`, batches padded to one compiled shape."""
    forward = jax.jit(lambda ids, mask: jnp.argmax(
        model(ids, attention_mask=mask, deterministic=True), axis=-1))
    n, correct = len(data["labels"]), 0
    for start in range(0, n, batch_size):
        rows = np.arange(start, start + batch_size) % n
        pred = np.asarray(forward(data["input_ids"][rows], data["attention_mask"][rows]))
        real = min(batch_size, n - start)
        correct += int((pred[:real] == data["labels"][rows][:real]).sum())
    return 100.0 * correct / n


def linear_theseus(recipe_steps: int) -> TheseusConfig:
    """The curriculum from p = 0.3 to 1 at 3/4 of the replacement phase (the official code's
    shape; its k = 0.0006 was set for MRPC's step count)."""
    return TheseusConfig(schedule="linear", rate=0.3, slope=0.7 / max(1, int(0.75 * recipe_steps)),
                         embeddings=True)


def run_seed(pretrained: Any, splits: dict[str, dict[str, np.ndarray]], num_labels: int, *,
             cfg: R5Config, seed: int, root: Path, done: dict[str, Any], key_of: Any,
             save: Any) -> None:
    """Every variant of one (task, seed) not already in `done`; `save(done)` after each."""
    train, select, test = splits["train"], splits["select"], splits["test"]
    su = TheseusConfig(rate=0.5, embeddings=True, successor_init="pretrained")

    def record(variant: str, model: Any, summary: dict[str, Any], seconds: float,
               **extra: Any) -> None:
        done[key_of(variant)] = {"test_accuracy": accuracy(model, test),
                                 "dev_best": summary["best"], "seconds": seconds, **extra}
        save(done)
        print(f"{key_of(variant)}: test {done[key_of(variant)]['test_accuracy']:.2f}",
              flush=True)

    t0 = time.perf_counter()
    recipe = cfg.recipe(seed=seed, layers=cfg.targets[0], theseus=su)
    predecessor, summary = fit_predecessor(pretrained, train, select, num_labels=num_labels,
                                           recipe=recipe, directory=root / "predecessor",
                                           progress=False)
    if key_of("predecessor") not in done:
        record("predecessor", predecessor, summary, time.perf_counter() - t0)
    steps = (len(train["labels"]) // cfg.batch_size) * cfg.epochs[1]
    for m in cfg.targets:
        variants = [(f"theseus-{m}", su)]
        if cfg.curriculum:
            variants.append((f"theseus-{m}-linear", linear_theseus(steps)))
        for variant, theseus in variants:
            if key_of(variant) in done:
                continue
            t0 = time.perf_counter()
            result = compress(pretrained, train, select, num_labels=num_labels,
                              recipe=cfg.recipe(seed=seed, layers=m, theseus=theseus),
                              directory=root / variant, predecessor=predecessor, progress=False)
            record(variant, result.successor, result.phases["successor"],
                   time.perf_counter() - t0,
                   replaced_test_accuracy=accuracy(result.replaced, test),
                   replacement_best=result.phases["replacement"]["best"])
        if key_of(f"truncated-{m}") not in done:
            t0 = time.perf_counter()
            model, summary = truncation_baseline(
                pretrained, train, select, num_labels=num_labels, num_layers=m,
                recipe=cfg.recipe(seed=seed, layers=m, theseus=su),
                directory=root / f"truncated-{m}", progress=False)
            record(f"truncated-{m}", model, summary, time.perf_counter() - t0)


def speed(pretrained: Any, layers: Sequence[int], max_len: int, num_labels: int
          ) -> dict[int, float]:
    """Median seconds of a jit-compiled [64, max_len] forward for each block count."""
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 1000, (64, max_len)), jnp.int32)
    calls = {}
    for n in layers:
        graphdef, state = nnx.split(new_classifier(truncate_encoder(pretrained, n), num_labels,
                                                   seed=0))
        calls[str(n)] = prepare_jax(
            lambda s, x, g=graphdef: nnx.merge(g, s)(x, deterministic=True), state, ids)
    timings = time_interleaved(calls, warmup=2, repeats=9)
    return {int(k): v.median_s for k, v in timings.items()}


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def report_rows(done: dict[str, Any], tasks: Sequence[str], seeds: Sequence[int],
                cfg: R5Config, predecessor_layers: int, speeds: dict[str, dict[int, float]]
                ) -> list[dict[str, Any]]:
    rows = []
    variants = ["predecessor"]
    for m in cfg.targets:
        variants += [f"truncated-{m}", f"theseus-{m}"] + ([f"theseus-{m}-linear"]
                                                          if cfg.curriculum else [])
    for task in tasks:
        for variant in variants:
            runs = [done[k] for s in seeds if (k := f"{task}|{s}|{variant}") in done]
            if not runs:
                continue
            acc = mean_std([r["test_accuracy"] for r in runs])
            layers = predecessor_layers if variant == "predecessor" else int(variant.split("-")[1])
            t = speeds.get(task, {})
            row = {"task": task, "variant": variant, "blocks": layers, "seeds": len(runs),
                   "test_acc": f"{acc[0]:.2f} ± {acc[1]:.2f}",
                   "test_acc_mean": acc[0], "test_acc_std": acc[1],
                   "dev_acc": np.mean([100 * r["dev_best"]["accuracy"] for r in runs]),
                   "speedup": (t[predecessor_layers] / t[layers]
                               if predecessor_layers in t and layers in t else None),
                   "run_s": np.mean([r["seconds"] for r in runs])}
            if "replaced_test_accuracy" in runs[0]:
                before = mean_std([r["replaced_test_accuracy"] for r in runs])
                row["after_replacement"] = f"{before[0]:.2f} ± {before[1]:.2f}"
            rows.append(row)
    return rows


def verdicts(rows: list[dict[str, Any]], cfg: R5Config) -> list[str]:
    """One line per (task, M): Theseus - truncation, and curriculum - constant, in points."""
    by = {(r["task"], r["variant"]): r for r in rows}
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for m in cfg.targets:
            t, c = by.get((task, f"theseus-{m}")), by.get((task, f"truncated-{m}"))
            if t and c:
                diff = t["test_acc_mean"] - c["test_acc_mean"]
                se = np.hypot(t["test_acc_std"] / np.sqrt(t["seeds"]),
                              c["test_acc_std"] / np.sqrt(c["seeds"]))
                verdict = "beats" if diff > 2 * se else "trails" if diff < -2 * se else \
                    "is within noise of"
                lines.append(f"{task}, {m} blocks: Theseus {verdict} truncation "
                             f"({diff:+.2f} points, 2 SE = {2 * se:.2f})")
            lin = by.get((task, f"theseus-{m}-linear"))
            if t and lin:
                lines.append(f"{task}, {m} blocks: the linear curriculum minus constant p = "
                             f"{lin['test_acc_mean'] - t['test_acc_mean']:+.2f} points")
    return lines


COLUMNS = [("task", "task"), ("variant", "variant"), ("blocks", "blocks"), ("seeds", "seeds"),
           ("test_acc", "test acc %"), ("after_replacement", "after phase 2 %"),
           ("dev_acc", "best dev %"), ("speedup", "speed-up"), ("run_s", "s/run")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the shared Chinese data folder")
    parser.add_argument("--prepared", help="a benchmarks.zh_prepare folder (keys the cached "
                        "pretraining)")
    parser.add_argument("--model", help="an HF BERT folder to use as the pretrained encoder")
    parser.add_argument("--size", default="L6-H256", help="pretrain_zh size of the cached model")
    parser.add_argument("--steps", type=int, default=1041, help="its pretraining steps")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--targets", nargs="+", type=int, help="successor block counts "
                        "(default 3 2)")
    parser.add_argument("--epochs", nargs=3, type=int, metavar=("PRED", "REPL", "SUCC"))
    parser.add_argument("--lr", type=float)
    parser.add_argument("--no-curriculum", action="store_true")
    parser.add_argument("--limit", type=int, help="examples per split (smoke runs)")
    parser.add_argument("--out", default="results")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    changes = {k: v for k, v in (("epochs", tuple(args.epochs) if args.epochs else None),
                                 ("targets", tuple(args.targets) if args.targets else None),
                                 ("lr", args.lr), ("limit", args.limit)) if v is not None}
    if args.no_curriculum:
        changes["curriculum"] = False
    cfg = dataclasses.replace(R5Config(), **changes)
    data_dir = Path(args.data_dir)
    if args.model:
        model_dir = Path(args.model)
    else:
        if not args.prepared:
            parser.error("give --model, or --prepared to find the cached pretrained encoder")
        from benchmarks.pretrain_zh import PRESETS as PRETRAIN, pretrain_all
        pre = pretrain_all(Path(args.prepared), PRETRAIN["cpu-hour"].replace(
            size=args.size, steps=args.steps), progress=False, char_only=True)
        model_dir = Path(pre["char"]["path"])
    pretrained = load_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    n_layers = pretrained.config.num_layers
    settings = {"config": dataclasses.asdict(cfg), "model": portable_path(model_dir)}
    env = environment()
    runs_path = Path(args.out) / _device_dir(env) / f"{NAME}_runs.json"
    stored = json.loads(runs_path.read_text("utf-8")) if runs_path.exists() else {}
    done: dict[str, Any] = stored.get("runs", {}) if stored.get("settings") == settings else {}
    if done:
        print(f"resuming: {len(done)} runs found in {runs_path}", flush=True)

    def save(d: dict[str, Any]) -> None:
        runs_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = runs_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"settings": settings, "runs": d}, indent=1), "utf-8")
        tmp.replace(runs_path)

    root = cache_root() / "runs" / NAME / settings_key(settings)
    speeds: dict[str, dict[int, float]] = stored.get("speeds", {}) if done else {}
    speeds = {t: {int(k): v for k, v in s.items()} for t, s in speeds.items()}
    for task in args.tasks:
        max_len = dict(cfg.max_len)[task]
        if not args.report_only:
            splits, num_labels = load_task(data_dir, task, tokenizer, max_len, cfg.limit)
            print(f"{task}: " + ", ".join(f"{k} {len(v['labels'])}" for k, v in splits.items()),
                  flush=True)
            for seed in args.seeds:
                run_seed(pretrained, splits, num_labels, cfg=cfg, seed=seed,
                         root=root / task / f"seed{seed}", done=done,
                         key_of=lambda v, t=task, s=seed: f"{t}|{s}|{v}", save=save)
            if task not in speeds:
                speeds[task] = speed(pretrained, [n_layers, *cfg.targets], max_len, num_labels)
        payload = json.loads(runs_path.read_text("utf-8")) if runs_path.exists() else \
            {"settings": settings, "runs": done}
        payload["speeds"] = speeds
        runs_path.parent.mkdir(parents=True, exist_ok=True)
        runs_path.write_text(json.dumps(payload, indent=1), "utf-8")
    rows = report_rows(done, args.tasks, args.seeds, cfg, n_layers, speeds)
    command = "python -m benchmarks.exp_theseus_r5 " + " ".join(
        sys.argv[1:] if argv is None else argv)
    notes = verdicts(rows, cfg) + [
        f"predecessor: {n_layers}-block encoder from {portable_path(model_dir)}; settings "
        f"{json.dumps(dataclasses.asdict(cfg))}",
        "Theseus: p = 0.5 per batch, embeddings in the draw, successor = the first M pretrained "
        "blocks, predecessor and classifier frozen (Su's bert_of_theseus.py); linear: p_t = "
        "min(k t + 0.3, 1), k reaching 1 at 3/4 of the replacement phase",
        "test acc: the best-dev checkpoint of the last phase, mean ± sample std over seeds; "
        "after phase 2: the successor straight after replacement, before its own fine-tuning",
        "speed-up: predecessor / variant median seconds of a jit-compiled forward of a "
        "[64, max_len] batch on this machine",
        f"Su (BERT-base, IFLYTEK dev): {json.dumps(SU_IFLYTEK, ensure_ascii=False)}",
    ]
    for p in write_report(NAME, rows, columns=COLUMNS, title="Claim R5: BERT-of-Theseus vs "
                          "truncation on Chinese classification", command=command, notes=notes,
                          out_dir=args.out, env=env):
        print(p)
    print(format_table(rows, COLUMNS))
    return 0


def _device_dir(env: dict[str, Any]) -> str:
    from benchmarks.harness import device_slug
    return device_slug(env["device_kind"], env["platform"])


if __name__ == "__main__":
    raise SystemExit(main())
