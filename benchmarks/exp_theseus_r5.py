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
rate; phases of 3/4/2 epochs on IFLYTEK and 1/2/1 on THUCNews by default, where Su's code runs
5/10/5: the budget is two hours of two CPU cores), ``theseus-M-linear`` (the paper's curriculum,
``p_t = min(k t + 0.3, 1)`` with k reaching 1 at 3/4 of the replacement phase; M = 3 by default), and
``truncated-M`` (fine-tuned for the predecessor's epochs) and ``truncated-M-long`` (for the
replacement plus successor epochs: as many updates as Theseus gives its successor). Seeds drive data order, dropout, the
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
import fcntl
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

from benchmarks.encoder_args import add_encoder_args, encoder_dir
from benchmarks.harness import environment, format_table, prepare_jax, save_figure, \
    time_interleaved, write_report
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
VARIANT_KINDS = ("predecessor", "theseus", "theseus-linear", "truncated", "truncated-long")
TASKS = ("iflytek", "thucnews")
SU_IFLYTEK = {"12 layers": 60.11, "truncated to 6": 58.99, "Theseus 6": 59.61,
              "truncated to 3": 57.96, "Theseus 3": 59.36}


@dataclasses.dataclass(frozen=True)
class R5Config:
    """The experiment's settings (one runs file per setting; `--report-only` reads them).

    Attributes:
      targets: successor block counts M (each divides the predecessor's).
      epochs: per task, (predecessor, replacement, successor) epochs; truncation gets the
        first.
      lr, batch_size: Adam's constant rate and the batch, every phase (Su: 2e-5, 32).
      max_len: tokens per example per task ([CLS] and [SEP] included).
      select_fraction: THUCNews: the share of ``dev.txt`` held out to select checkpoints.
      curriculum: the targets that also get the linear-schedule variant.
      limit: keep only this many examples of each split (tests; None = all).
    """

    targets: tuple[int, ...] = (3, 2)
    # Per task, sized so both tasks x 3 seeds fit about two hours on 2 CPU cores: THUCNews has
    # 3x IFLYTEK's training rows, so fewer epochs (Su's code: 5/10/5 on full IFLYTEK).
    epochs: tuple[tuple[str, tuple[int, int, int]], ...] = (("iflytek", (3, 4, 2)),
                                                            ("thucnews", (1, 2, 1)))
    lr: float = 1e-4
    batch_size: int = 32
    # IFLYTEK's median description is 260 characters; 64 tokens keep its opening (the app's
    # purpose) at half the cost of 128. 32 covers 99% of THUCNews headlines.
    max_len: tuple[tuple[str, int], ...] = (("iflytek", 64), ("thucnews", 32))
    select_fraction: float = 0.1
    curriculum: tuple[int, ...] = (3,)
    limit: int | None = None

    def __post_init__(self) -> None:
        bad = [c for c in self.curriculum if c not in self.targets]
        if bad:
            raise ValueError(f"curriculum must be a subset of targets {self.targets}, got "
                             f"{self.curriculum}")

    def task_epochs(self, task: str) -> tuple[int, int, int]:
        return dict(self.epochs)[task]

    def recipe(self, task: str, *, seed: int, layers: int, theseus: TheseusConfig
               ) -> TheseusRecipe:
        pred, repl, succ = self.task_epochs(task)
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
             cfg: R5Config, task: str, seed: int, root: Path, done: dict[str, Any], key_of: Any,
             save: Any, only: Sequence[str] = VARIANT_KINDS) -> None:
    """Every variant of one (task, seed) whose kind is in `only` and that is not already in
    `done`; `save(done)` after each. Distinct kinds write distinct folders, so two commands
    with disjoint `only` may run at once."""
    train, select, test = splits["train"], splits["select"], splits["test"]
    su = TheseusConfig(rate=0.5, embeddings=True, successor_init="pretrained")

    def record(variant: str, model: Any, summary: dict[str, Any], seconds: float,
               **extra: Any) -> None:
        done[key_of(variant)] = {"test_accuracy": accuracy(model, test),
                                 "dev_best": summary["best"], "seconds": seconds, **extra}
        save(done)
        print(f"{key_of(variant)}: test {done[key_of(variant)]['test_accuracy']:.2f}",
              flush=True)

    def todo(kind: str, variant: str) -> bool:
        return kind in only and key_of(variant) not in done

    predecessor = None
    if todo("predecessor", "predecessor") or any(
            todo(k, v) for m in cfg.targets
            for k, v in (("theseus", f"theseus-{m}"), ("theseus-linear", f"theseus-{m}-linear"))):
        t0 = time.perf_counter()
        recipe = cfg.recipe(task, seed=seed, layers=cfg.targets[0], theseus=su)
        predecessor, summary = fit_predecessor(pretrained, train, select, num_labels=num_labels,
                                               recipe=recipe, directory=root / "predecessor",
                                               progress=False)
        if key_of("predecessor") not in done:
            record("predecessor", predecessor, summary, time.perf_counter() - t0)
    steps = (len(train["labels"]) // cfg.batch_size) * cfg.task_epochs(task)[1]
    for m in cfg.targets:
        variants = [(f"theseus-{m}", su)] if "theseus" in only else []
        if m in cfg.curriculum and "theseus-linear" in only:
            variants.append((f"theseus-{m}-linear", linear_theseus(steps)))
        for variant, theseus in variants:
            if key_of(variant) in done:
                continue
            t0 = time.perf_counter()
            result = compress(pretrained, train, select, num_labels=num_labels,
                              recipe=cfg.recipe(task, seed=seed, layers=m, theseus=theseus),
                              directory=root / variant, predecessor=predecessor, progress=False)
            record(variant, result.successor, result.phases["successor"],
                   time.perf_counter() - t0,
                   replaced_test_accuracy=accuracy(result.replaced, test),
                   replacement_best=result.phases["replacement"]["best"])
        if todo("truncated", f"truncated-{m}"):
            t0 = time.perf_counter()
            model, summary = truncation_baseline(
                pretrained, train, select, num_labels=num_labels, num_layers=m,
                recipe=cfg.recipe(task, seed=seed, layers=m, theseus=su),
                directory=root / f"truncated-{m}", progress=False)
            record(f"truncated-{m}", model, summary, time.perf_counter() - t0)
        # Truncation trained as long as Theseus trains its successor (replacement + successor
        # epochs): with few epochs per phase, the plain baseline gets fewer updates.
        if todo("truncated-long", f"truncated-{m}-long"):
            t0 = time.perf_counter()
            _, repl, succ = cfg.task_epochs(task)
            recipe = dataclasses.replace(cfg.recipe(task, seed=seed, layers=m, theseus=su),
                                         predecessor_epochs=repl + succ)
            model, summary = truncation_baseline(
                pretrained, train, select, num_labels=num_labels, num_layers=m, recipe=recipe,
                directory=root / f"truncated-{m}-long", progress=False)
            record(f"truncated-{m}-long", model, summary, time.perf_counter() - t0)


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
        variants += [f"truncated-{m}", f"truncated-{m}-long", f"theseus-{m}"] + (
            [f"theseus-{m}-linear"] if m in cfg.curriculum else [])
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


def _versus(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, float, float]:
    """``(verdict, a - b, 2 SE)`` of two rows' mean test accuracies (standard errors over
    seeds added in quadrature); "beats"/"trails" only beyond 2 SE."""
    diff = a["test_acc_mean"] - b["test_acc_mean"]
    se = float(np.hypot(a["test_acc_std"] / np.sqrt(a["seeds"]),
                        b["test_acc_std"] / np.sqrt(b["seeds"])))
    verdict = "beats" if diff > 2 * se else "trails" if diff < -2 * se else "is within noise of"
    return verdict, diff, 2 * se


def verdicts(rows: list[dict[str, Any]], cfg: R5Config) -> list[str]:
    """One line per (task, M, baseline): Theseus - truncation, and curriculum - constant, in
    points."""
    by = {(r["task"], r["variant"]): r for r in rows}
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for m in cfg.targets:
            t = by.get((task, f"theseus-{m}"))
            for variant, what in ((f"truncated-{m}", "truncation"),
                                  (f"truncated-{m}-long", "truncation trained as long")):
                c = by.get((task, variant))
                if t and c:
                    verdict, diff, two_se = _versus(t, c)
                    lines.append(f"{task}, {m} blocks: Theseus {verdict} {what} "
                                 f"({diff:+.2f} points, 2 SE = {two_se:.2f})")
            lin = by.get((task, f"theseus-{m}-linear"))
            if t and lin:
                verdict, diff, two_se = _versus(lin, t)
                lines.append(f"{task}, {m} blocks: the linear curriculum minus constant p = "
                             f"{diff:+.2f} points (2 SE = {two_se:.2f})")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Test accuracy (mean, sample-std bars) per variant, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [r for r in rows if r["task"] == task]
        colour = {"predecessor": "C7", "truncated": "C3", "theseus": "C0"}
        for i, r in enumerate(mine):
            kind = r["variant"].split("-")[0]
            ax.bar(i, r["test_acc_mean"], yerr=r["test_acc_std"], capsize=3,
                   color="C2" if r["variant"].endswith("linear") else colour[kind])
        pred = [r for r in mine if r["variant"] == "predecessor"]
        if pred:
            ax.axhline(pred[0]["test_acc_mean"], color="C7", lw=0.8, ls="--")
        values = [r["test_acc_mean"] for r in mine]
        ax.set_ylim(max(0.0, min(values) - 8), max(values) + 4)
        ax.set_xticks(range(len(mine)), [r["variant"] for r in mine], rotation=35, ha="right",
                      fontsize=7)
        ax.set_title(task, fontsize=9)
        ax.set_ylabel("test accuracy %, mean ± std over seeds", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, title="R5: BERT-of-Theseus vs truncation")


COLUMNS = [("task", "task"), ("variant", "variant"), ("blocks", "blocks"), ("seeds", "seeds"),
           ("test_acc", "test acc %"), ("after_replacement", "after phase 2 %"),
           ("dev_acc", "best dev %"), ("speedup", "speed-up"), ("run_s", "s/run")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the shared Chinese data folder")
    add_encoder_args(parser)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--targets", nargs="+", type=int, help="successor block counts "
                        "(default 3 2)")
    parser.add_argument("--epochs", nargs=3, type=int, metavar=("PRED", "REPL", "SUCC"),
                        help="the same epochs for every task (default: per task, R5Config)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--curriculum", nargs="*", type=int, help="targets that also get the "
                        "linear curriculum (default 3; none: --curriculum)")
    parser.add_argument("--only", nargs="+", choices=VARIANT_KINDS, default=list(VARIANT_KINDS),
                        help="run only these variant kinds (commands with disjoint kinds may "
                        "run at once)")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed measurement "
                        "(e.g. while another run shares the cores; a later run adds it)")
    parser.add_argument("--limit", type=int, help="examples per split (smoke runs)")
    parser.add_argument("--out", default="results")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    epochs = tuple((t, tuple(args.epochs)) for t in TASKS) if args.epochs else None
    changes = {k: v for k, v in (("epochs", epochs),
                                 ("targets", tuple(args.targets) if args.targets else None),
                                 ("curriculum", None if args.curriculum is None
                                  else tuple(args.curriculum)),
                                 ("lr", args.lr), ("limit", args.limit)) if v is not None}
    cfg = dataclasses.replace(R5Config(), **changes)
    data_dir = Path(args.data_dir)
    model_dir = encoder_dir(args, parser)
    pretrained = load_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    n_layers = pretrained.config.num_layers
    # Through JSON once, so that it compares equal to the stored copy (tuples become lists).
    settings = json.loads(json.dumps({"config": dataclasses.asdict(cfg),
                                      "model": portable_path(model_dir)}))
    env = environment()
    runs_path = Path(args.out) / _device_dir(env) / f"{NAME}_runs.json"
    stored = json.loads(runs_path.read_text("utf-8")) if runs_path.exists() else {}
    done: dict[str, Any] = stored.get("runs", {}) if stored.get("settings") == settings else {}
    if done:
        print(f"resuming: {len(done)} runs found in {runs_path}", flush=True)

    def save(d: dict[str, Any]) -> None:
        # One command per task may run at once (one per core): each merges its runs and
        # speeds into the file under a lock instead of overwriting the other's.
        runs_path.parent.mkdir(parents=True, exist_ok=True)
        with open(runs_path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = json.loads(runs_path.read_text("utf-8")) if runs_path.exists() else {}
            if old.get("settings") == settings:
                d.update({k: v for k, v in old["runs"].items() if k not in d})
                for t, v in old.get("speeds", {}).items():
                    speeds.setdefault(t, {int(k): x for k, x in v.items()})
            tmp = runs_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"settings": settings, "runs": d, "speeds": speeds},
                                      indent=1), "utf-8")
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
                run_seed(pretrained, splits, num_labels, cfg=cfg, task=task, seed=seed,
                         root=root / task / f"seed{seed}", done=done,
                         key_of=lambda v, t=task, s=seed: f"{t}|{s}|{v}", save=save,
                         only=args.only)
            if task not in speeds and not args.no_speed:
                speeds[task] = speed(pretrained, [n_layers, *cfg.targets], max_len, num_labels)
            save(done)
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
        f"plot: {NAME}.png beside this file",
    ]
    paths = write_report(NAME, rows, columns=COLUMNS, title="Claim R5: BERT-of-Theseus vs "
                         "truncation on Chinese classification", command=command, notes=notes,
                         out_dir=args.out, env=env)
    if rows:
        paths = [*paths, plot(rows, Path(paths[0]).with_suffix(".png"))]
    for p in paths:
        print(p)
    print(format_table(rows, COLUMNS))
    return 0


def _device_dir(env: dict[str, Any]) -> str:
    from benchmarks.harness import device_slug
    return device_slug(env["device_kind"], env["platform"])


if __name__ == "__main__":
    raise SystemExit(main())
