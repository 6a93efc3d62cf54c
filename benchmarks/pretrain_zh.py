"""python -m benchmarks.pretrain_zh --data-dir ../shared/data [--preset cpu-hour] [--out results]

Pretrains the kit's own Chinese encoders by masked LM (post 7758's recipe, scaled down):

1. **char BERT** from scratch on the bert-base-chinese vocabulary (21,128 tokens);
2. **char BERT, continued** for ``continue_steps`` more steps on the same corpus;
3. **WoBERT**: the char BERT with the WoBERT vocabulary (new word embeddings and output biases
   start as the mean of their characters', post 7758), continued for the same ``continue_steps``
   on the same corpus packed 1.3x longer in characters (Su's WoBERT packing), so 2 and 3 cost
   the same compute and are the pair claim R6 compares.

Each model is an HF ``BertForMaskedLM`` directory (safetensors + tokenizer) in the cache
(``$JAXFORMER_CACHE``, default ``~/.cache/jaxformer``), keyed by every setting it depends on: a
rerun with the same settings is a cache hit; a corrupt entry is rebuilt. Training checkpoints
(orbax) sit beside the cache entries, so a killed run resumes where it stopped. Weights never go
into the repository; the report (held-out MLM loss and accuracy, settings, curves) goes to
``results/<device>/pretrain_zh.{json,md}`` (``pretrain_zh_<preset>`` for presets other than
``cpu-hour``).

``--sweep SIZE=SECONDS,...`` first trains each candidate size for the number of steps it runs
in ``--sweep-hours`` (default 1) on 2 CPU cores, given its seconds per step there (measured with
``--measure-cpu``), and picks the size with the lowest held-out loss: "the size that trains best
in about an hour on 2 CPU cores", measured on whatever machine runs the sweep. The step budgets,
not the wall time here, define each run, so a sweep is the same on a busy or a faster machine.
A shorter ``--sweep-hours`` is a cheaper proxy that favours the smaller sizes (they are further
along their curves early), which the report says. ``--char-only`` stops after stage 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from benchmarks.harness import Column, environment, write_report
from benchmarks.zh_prepare import PrepareConfig, load_npz, prepared
from jaxformer.io.cache import cache_root, cached_build, portable_path, settings_key
from jaxformer.models.config import EncoderConfig
from jaxformer.models.pretrained_lm import load_masked_lm, save_masked_lm
from jaxformer.models.vocab_transfer import resize_vocabulary
from jaxformer.tasks.mlm import MaskedLMTask
from jaxformer.tasks.base import fit
from jaxformer.train.loop import LoopConfig
from jaxformer.train.optim import adamw

NAME = "pretrain_zh"
# bert-base-chinese / WoBERT ids of the specials ([PAD] 0 in both).
SIZES = {  # (layers, hidden, heads, ffn)
    "tiny": (1, 32, 2, 64),
    "L2-H256": (2, 256, 4, 1024),
    "L4-H256": (4, 256, 4, 1024),
    "L6-H256": (6, 256, 4, 1024),
    "L4-H384": (4, 384, 6, 1536),
}


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """One pretraining recipe (its fields are part of every cache key).

    Attributes:
      size: a key of `SIZES`.
      batch_size, steps, lr, warmup: the char BERT run (warmup as a share of steps).
      continue_steps, continue_lr: each continuation run (char and WoBERT alike).
      weight_decay: AdamW decay, never on norms and biases (WoBERT train.py).
      whole_word: whole-word masking (needs word boundaries; off by default).
      eval_every: held-out evaluation cadence (0: only at the end).
      seed: data order, masking and dropout.
    """

    size: str = "L4-H256"
    batch_size: int = 64
    steps: int = 1500
    lr: float = 5e-4
    warmup: float = 0.06
    continue_steps: int = 500
    continue_lr: float = 2e-4
    weight_decay: float = 0.01
    whole_word: bool = False
    eval_every: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size: expected one of {sorted(SIZES)}, got {self.size!r}")
        for name in ("batch_size", "steps", "continue_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup: expected a share in [0, 1), got {self.warmup!r}")

    def replace(self, **changes: Any) -> "PretrainConfig":
        return dataclasses.replace(self, **changes)


PRESETS = {
    # About an hour of 2 CPU cores for the whole recipe (see --measure-cpu in the report).
    "cpu-hour": PretrainConfig(),
    # About 40 minutes of 2 CPU cores: a smaller model and fewer steps, for a session without
    # an accelerator (the recipe that exercises the whole pipeline at a fraction of the cost).
    "cpu-session": PretrainConfig(size="L2-H256", steps=900, lr=7e-4, continue_steps=300,
                                  continue_lr=3e-4, eval_every=300),
    # Seconds; the tests' configuration.
    "tiny": PretrainConfig(size="tiny", batch_size=8, steps=6, continue_steps=4, eval_every=3,
                           lr=1e-3, continue_lr=1e-3),
}


def encoder_config(size: str, vocab_size: int, seq_len: int) -> EncoderConfig:
    layers, hidden, heads, ffn = SIZES[size]
    return EncoderConfig(vocab_size=vocab_size, hidden_size=hidden, num_layers=layers,
                         num_heads=heads, intermediate_size=ffn, max_position_embeddings=512,
                         use_pooler=False, hidden_dropout=0.1, attention_dropout=0.1,
                         initializer_range=0.02)


def char_settings(cfg: PretrainConfig, prep_report: dict[str, Any]) -> dict[str, Any]:
    """The char BERT's cache key: the recipe without the continuation fields, which do not
    change it (so a recipe that only changes the continuation reuses the char BERT)."""
    recipe = {k: v for k, v in dataclasses.asdict(cfg).items() if not k.startswith("continue_")}
    return {"recipe": recipe, "prepared": prepared_identity(prep_report), "stage": "char"}


def prepared_identity(report: dict[str, Any]) -> dict[str, Any]:
    """What a prepared folder holds, for the model cache keys (not its path, so a copy of it
    and the cache entry it came from give the same keys)."""
    return {k: report[k] for k in ("config", "wobert_vocab", "corpus_char", "corpus_word")}


def vocab_of(tokenizer_dir: Path) -> list[str]:
    return (tokenizer_dir / "vocab.txt").read_text("utf-8").split("\n")[:-1]


def mlm_task(cfg: EncoderConfig, vocab: list[str], whole_word: bool = False) -> MaskedLMTask:
    ids = {t: i for i, t in enumerate(vocab)}
    specials = tuple(ids[t] for t in ("[PAD]", "[CLS]", "[SEP]", "[UNK]") if t in ids)
    return MaskedLMTask(encoder_config=cfg, mask_id=ids["[MASK]"], special_ids=specials,
                        whole_word=whole_word)


def as_data(corpus: dict[str, np.ndarray], split: str, *, whole_word: bool = False
            ) -> dict[str, np.ndarray]:
    """A split of a prepared corpus as MLM data (with ``word_starts`` for whole-word masking)."""
    ids = corpus[split]
    data = {"input_ids": ids.astype(np.int32), "attention_mask": (ids != 0).astype(np.int32)}
    if whole_word:
        if f"{split}_word_starts" not in corpus:
            raise ValueError("whole_word: expected word boundaries in the prepared corpus, found "
                             "none; prepare it with `benchmarks.zh_prepare --word-starts`")
        data["word_starts"] = corpus[f"{split}_word_starts"].astype(np.int32)
    return data


def train_mlm(task: MaskedLMTask, model: nnx.Module, corpus: dict[str, np.ndarray], *,
              steps: int, lr: float, warmup: float, cfg: PretrainConfig, run_dir: Path,
              progress: bool = True, whole_word: bool = False
              ) -> tuple[nnx.Module, dict[str, Any]]:
    """MLM-train `model`; checkpoints and metrics in `run_dir` (a killed run resumes there)."""
    tx = adamw(lr, total_steps=steps, warmup_steps=int(warmup * steps),
               weight_decay=cfg.weight_decay)
    loop = LoopConfig(total_steps=steps, batch_size=cfg.batch_size, eval_every=cfg.eval_every,
                      checkpoint_every=max(1, min(500, steps // 4)), log_every=10,
                      seed=cfg.seed)
    t0 = time.perf_counter()
    result = fit(task, model, as_data(corpus, "train", whole_word=whole_word), tx=tx,
                 config=loop, eval_data=as_data(corpus, "heldout", whole_word=whole_word),
                 checkpoint_dir=run_dir / "ckpt",
                 metrics_path=run_dir / "metrics.jsonl", progress=progress,
                 run_config=dataclasses.asdict(cfg))
    seconds = time.perf_counter() - t0
    curve = [{"step": e["step"], "loss": e["loss"], "accuracy": e["accuracy"]}
             for e in result.eval_history]
    summary = {"steps": steps, "train_seconds": seconds, "resumed_from": result.resumed_from,
               "heldout": curve[-1], "curve": curve,
               "final_train_loss": float(np.mean(result.history[-20:]))}
    return result.model, summary


def _export(model: nnx.Module, tokenizer_dir: Path, summary: dict[str, Any], out: Path) -> None:
    save_masked_lm(model, out)
    for name in ("vocab.txt", "tokenizer_config.json", "tokenizer.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out / name)
    (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")


def _stage(kind: str, settings: dict[str, Any], train: Any, tokenizer_dir: Path,
           root: Path | None) -> tuple[Path, dict[str, Any], bool]:
    """A cached model entry: trained (resumably) and exported on a miss."""
    base = Path(root) if root is not None else cache_root()
    run_dir = base / "runs" / f"{kind}-{settings_key(settings)}"
    box: dict[str, Any] = {}

    def build(out: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        model, summary = train(run_dir)
        _export(model, tokenizer_dir, summary, out)
        box.update(summary)

    path, hit = cached_build(kind, settings, build, root=root)
    if hit:
        box.update(json.loads((path / "pretrain_summary.json").read_text("utf-8")))
    return path, box, hit


def pretrain_all(prepared_dir: Path, cfg: PretrainConfig, *, root: Path | None = None,
                 progress: bool = True, char_only: bool = False) -> dict[str, Any]:
    """Stages 1-3 (1 only with ``char_only``); returns ``{stage: {"path", "hit", summary...}}``."""
    prep_report = json.loads((prepared_dir / "report.json").read_text("utf-8"))
    seq_len = int(prep_report["config"]["seq_len"])
    char_dir, word_dir = prepared_dir / "char_tokenizer", prepared_dir / "wobert_tokenizer"
    char_vocab, word_vocab = vocab_of(char_dir), vocab_of(word_dir)
    corpus_char, corpus_word = load_npz(prepared_dir, "corpus_char"), load_npz(prepared_dir,
                                                                              "corpus_word")
    char_cfg = encoder_config(cfg.size, len(char_vocab), seq_len)
    # Whole-word masking for the char model (its word boundaries come from jieba); WoBERT's
    # tokens are mostly whole words already, so it masks tokens.
    char_task = mlm_task(char_cfg, char_vocab, whole_word=cfg.whole_word)
    base = {"recipe": dataclasses.asdict(cfg), "prepared": prepared_identity(prep_report)}
    out: dict[str, Any] = {}

    def char_train(run_dir: Path) -> tuple[nnx.Module, dict[str, Any]]:
        model = char_task.build_model(rngs=nnx.Rngs(cfg.seed))
        return train_mlm(char_task, model, corpus_char, steps=cfg.steps, lr=cfg.lr,
                         warmup=cfg.warmup, cfg=cfg, run_dir=run_dir, progress=progress,
                         whole_word=cfg.whole_word)

    char_path, summary, hit = _stage("char-bert", char_settings(cfg, prep_report), char_train,
                                     char_dir, root)
    out["char"] = {"path": str(char_path), "hit": hit, **summary}
    if char_only:
        return out

    # WoBERT before the continued char BERT: a session that needs only WoBERT (e.g. the CLUE
    # runs) can stop after it; the cache keys do not depend on the order.
    pieces = json.loads((prepared_dir / "wobert_pieces.json").read_text("utf-8"))
    word_cfg = char_cfg.replace(vocab_size=len(word_vocab))
    word_task = mlm_task(word_cfg, word_vocab)

    def wobert_train(run_dir: Path) -> tuple[nnx.Module, dict[str, Any]]:
        model, transfer = resize_vocabulary(load_masked_lm(char_path), char_vocab, word_vocab,
                                            split=lambda t: pieces.get(t, [t]))
        model, summary = train_mlm(word_task, model, corpus_word, steps=cfg.continue_steps,
                                   lr=cfg.continue_lr, warmup=cfg.warmup, cfg=cfg,
                                   run_dir=run_dir, progress=progress)
        return model, {**summary, "vocab_transfer": transfer}

    path, summary, hit = _stage("wobert", {**base, "stage": "wobert"}, wobert_train, word_dir,
                                root)
    out_wobert = {"path": str(path), "hit": hit, **summary}

    def char_continue(run_dir: Path) -> tuple[nnx.Module, dict[str, Any]]:
        model = load_masked_lm(char_path)
        return train_mlm(char_task, model, corpus_char, steps=cfg.continue_steps,
                         lr=cfg.continue_lr, warmup=cfg.warmup, cfg=cfg, run_dir=run_dir,
                         progress=progress, whole_word=cfg.whole_word)

    path, summary, hit = _stage("char-bert", {**base, "stage": "char-continued"}, char_continue,
                                char_dir, root)
    out["char_continued"] = {"path": str(path), "hit": hit, **summary}

    out["wobert"] = out_wobert
    return out


def measure_step_seconds(sizes: list[str], cfg: PretrainConfig, *, vocab_size: int,
                         seq_len: int, steps: int = 4) -> dict[str, float]:
    """Median seconds per MLM train step of each size on this machine (compile excluded)."""
    from jaxformer.train.step import init_train_state, make_train_step

    out = {}
    rng = np.random.default_rng(0)
    for size in sizes:
        task = mlm_task(encoder_config(size, vocab_size, seq_len),
                        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                        [f"t{i}" for i in range(vocab_size - 5)])
        tx = adamw(cfg.lr, total_steps=100, warmup_steps=1, weight_decay=cfg.weight_decay)
        graphdef, state = init_train_state(task.build_model(rngs=nnx.Rngs(0)), tx)
        step = make_train_step(graphdef, tx, task.loss_fn)
        ids = rng.integers(5, vocab_size, (cfg.batch_size, seq_len)).astype(np.int32)
        batch = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        key = jax.random.key(0)
        state, m = step(state, batch, key=key)
        jax.block_until_ready(m)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            state, m = step(state, batch, key=key)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t0)
        out[size] = float(np.median(times))
    return out


def sweep_budgets(spec: str, hours: float) -> dict[str, int]:
    """``"L2-H256=1.52,L4-H256=2.51"`` (seconds per step) -> steps in ``hours`` per size."""
    if not hours > 0:
        raise ValueError(f"--sweep-hours: expected a number > 0, got {hours!r}")
    budgets = {}
    for item in spec.split(","):
        size, _, sec = item.partition("=")
        try:
            seconds = float(sec)
        except ValueError:
            seconds = -1.0
        if size not in SIZES or not seconds > 0:
            raise ValueError(f"--sweep: expected SIZE=SECONDS with SIZE in {sorted(SIZES)} and "
                             f"SECONDS > 0, got {item!r}")
        budgets[size] = max(1, int(hours * 3600 / seconds))
    return budgets


def sweep(prepared_dir: Path, cfg: PretrainConfig, budgets: dict[str, int], *,
          root: Path | None = None, progress: bool = True,
          on_row: Any = None) -> list[dict[str, Any]]:
    """Char BERT from scratch at each size for its step budget; held-out loss per size
    (``on_row(rows so far)`` after each size, to save partial results)."""
    prep_report = json.loads((prepared_dir / "report.json").read_text("utf-8"))
    seq_len = int(prep_report["config"]["seq_len"])
    char_dir = prepared_dir / "char_tokenizer"
    char_vocab = vocab_of(char_dir)
    corpus = load_npz(prepared_dir, "corpus_char")
    rows = []
    for size, steps in budgets.items():
        # The recipe's own settings, so the best size's run is the recipe's cache entry.
        run_cfg = cfg.replace(size=size, steps=steps)
        task = mlm_task(encoder_config(size, len(char_vocab), seq_len), char_vocab,
                        whole_word=cfg.whole_word)
        settings = char_settings(run_cfg, prep_report)

        def train(run_dir: Path, task: MaskedLMTask = task, run_cfg: PretrainConfig = run_cfg
                  ) -> tuple[nnx.Module, dict[str, Any]]:
            model = task.build_model(rngs=nnx.Rngs(run_cfg.seed))
            return train_mlm(task, model, corpus, steps=run_cfg.steps, lr=run_cfg.lr,
                             warmup=run_cfg.warmup, cfg=run_cfg, run_dir=run_dir,
                             progress=progress, whole_word=run_cfg.whole_word)

        path, summary, hit = _stage("char-bert", settings, train, char_dir, root)
        rows.append({"size": size, "layers_hidden_heads_ffn": SIZES[size], "steps": steps,
                     "heldout_loss": summary["heldout"]["loss"],
                     "heldout_accuracy": summary["heldout"]["accuracy"],
                     "seconds": summary["train_seconds"], "path": portable_path(path, root),
                     "hit": hit})
        print(f"sweep {size}: {steps} steps, held-out loss {rows[-1]['heldout_loss']:.3f}",
              flush=True)
        if on_row is not None:
            on_row(rows)
    return rows


SWEEP_COLUMNS = [("size", "size"), ("steps", "steps"),
                 ("heldout_loss", "held-out loss"), ("heldout_accuracy", "held-out acc"),
                 ("seconds", "train s here")]


def sweep_notes(hours: float) -> list[str]:
    notes = [f"each size trains the char BERT from scratch with the recipe's settings for the "
             f"steps it runs in {hours * 3600:.0f} s on 2 CPU cores (s/step from --measure-cpu, "
             f"in results/cpu/pretrain_zh_step_seconds.md); held-out MLM loss over the masked "
             f"tokens of the held-out chunks"]
    if hours < 1:
        notes.append(f"a {hours:g}-hour budget is a proxy for the one-hour question: at equal "
                     f"wall time the smaller sizes are further along their curves early, so it "
                     f"favours them")
    return notes


COLUMNS = [
    ("stage", "stage"), ("size", "size"), ("vocab", "vocab"),
    ("steps", "steps"), ("batch", "batch"), ("lr", "lr"),
    ("heldout_loss", "held-out MLM loss"), ("heldout_accuracy", "held-out MLM acc"),
    ("train_loss", "train loss (last 20)"), ("seconds", "train s"),
    ("cache", "cache"),
]


def report_rows(results: dict[str, Any], cfg: PretrainConfig, vocab: dict[str, int]
                ) -> list[dict[str, Any]]:
    rows = []
    for stage, r in results.items():
        rows.append({
            "stage": stage, "size": cfg.size, "vocab": vocab["word" if stage == "wobert" else "char"],
            "steps": r["steps"], "batch": cfg.batch_size,
            "lr": cfg.lr if stage == "char" else cfg.continue_lr,
            "heldout_loss": r["heldout"]["loss"], "heldout_accuracy": r["heldout"]["accuracy"],
            "train_loss": r["final_train_loss"], "seconds": r["train_seconds"],
            "cache": "hit" if r["hit"] else "built", "curve": r["curve"],
            "path": portable_path(r["path"]),
            "vocab_transfer": r.get("vocab_transfer"),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="the shared Chinese data folder (to prepare the ids)")
    parser.add_argument("--prepared", help="a folder written by benchmarks.zh_prepare "
                        "(instead of --data-dir)")
    parser.add_argument("--preset", default="cpu-hour", choices=sorted(PRESETS))
    parser.add_argument("--size", choices=sorted(SIZES), help="override the preset's size")
    parser.add_argument("--steps", type=int, help="override the preset's char steps")
    parser.add_argument("--continue-steps", type=int, help="override the continuation steps")
    parser.add_argument("--whole-word", action="store_true",
                        help="whole-word masking for the char BERT (jieba word boundaries)")
    parser.add_argument("--out", default="results", help="results root")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--measure-cpu", action="store_true",
                        help="time a few train steps of every size here, write "
                        "pretrain_zh_step_seconds.json and exit")
    parser.add_argument("--sweep", default=None, metavar="SIZE=SECONDS,...",
                        help="before the recipe, train each SIZE for HOURS * 3600 / SECONDS "
                        "steps (SECONDS: its per-step seconds on 2 CPU cores) and use the best")
    parser.add_argument("--sweep-hours", type=float, default=1.0, metavar="HOURS",
                        help="the sweep's budget per size, in hours of 2 CPU cores")
    parser.add_argument("--char-only", action="store_true",
                        help="stop after the char BERT (stage 1): no continuation or WoBERT")
    parser.add_argument("--sweep-only", action="store_true",
                        help="run the --sweep and write its report, without the recipe")
    args = parser.parse_args(argv)
    if (args.data_dir is None) == (args.prepared is None):
        parser.error("give exactly one of --data-dir and --prepared")
    cfg = PRESETS[args.preset]
    overrides = {k: v for k, v in (("size", args.size), ("steps", args.steps),
                                   ("continue_steps", args.continue_steps)) if v is not None}
    if args.whole_word:
        overrides["whole_word"] = True
    cfg = cfg.replace(**overrides)
    if args.prepared:
        prepared_dir = Path(args.prepared)
    else:
        prepared_dir, _ = prepared(args.data_dir, PrepareConfig(word_starts=args.whole_word))
    command = "python -m benchmarks.pretrain_zh " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.measure_cpu:
        seconds = measure_step_seconds([s for s in SIZES if s != "tiny"], cfg,
                                       vocab_size=len(vocab_of(prepared_dir / "char_tokenizer")),
                                       seq_len=128)
        rows = [{"size": k, "seconds_per_step": v, "steps_per_hour": int(3600 / v),
                 "batch": cfg.batch_size} for k, v in seconds.items()]
        for p in write_report(f"{NAME}_step_seconds", rows, columns=[
                ("size", "size"), ("batch", "batch"), ("seconds_per_step", "s/step"),
                ("steps_per_hour", "steps in 1 h")], title="MLM train-step seconds per size "
                "(seq 128)", command=command, out_dir=args.out, env=environment()):
            print(p)
        return 0
    sweep_rows = []
    if args.sweep:
        try:
            budgets = sweep_budgets(args.sweep, args.sweep_hours)
        except ValueError as e:
            parser.error(str(e))

        def save_sweep(rows: list[dict[str, Any]]) -> Any:
            return write_report(f"{NAME}_sweep", rows, columns=SWEEP_COLUMNS,
                                title=f"Char BERT sizes at {args.sweep_hours:g} hour(s) of 2 CPU "
                                "cores each", command=command, out_dir=args.out,
                                env=environment(), notes=sweep_notes(args.sweep_hours))

        sweep_rows = sweep(prepared_dir, cfg, budgets, progress=not args.no_progress,
                           on_row=save_sweep)
        for p in save_sweep(sweep_rows):
            print(p)
        if args.sweep_only:
            return 0
        best = min(sweep_rows, key=lambda r: r["heldout_loss"])
        # The best size at the one-hour budget (its sweep steps scaled up, as the committed
        # results/cpu/pretrain_zh.md ran): a shorter sweep only picks the size.
        steps = max(1, int(best["steps"] / args.sweep_hours))
        cfg = cfg.replace(size=best["size"], steps=steps)
        print(f"sweep: best size {best['size']} ({steps} steps)", flush=True)
    results = pretrain_all(prepared_dir, cfg, progress=not args.no_progress,
                           char_only=args.char_only)
    prep = json.loads((prepared_dir / "report.json").read_text("utf-8"))
    vocab = {"char": len(vocab_of(prepared_dir / "char_tokenizer")),
             "word": len(vocab_of(prepared_dir / "wobert_tokenizer"))}
    rows = report_rows(results, cfg, vocab)
    notes = [f"recipe: {json.dumps(dataclasses.asdict(cfg))}",
             f"model: {SIZES[cfg.size]} (layers, hidden, heads, ffn), seq_len "
             f"{prep['config']['seq_len']}, MLM 15% (80/10/10), AdamW without decay on norms "
             f"and biases, linear warmup then linear decay",
             f"corpus: {prep['corpus_char']['train_rows']} char rows "
             f"({prep['corpus_char']['train_chars']} chars), {prep['corpus_word']['train_rows']} "
             f"WoBERT rows; held-out {prep['corpus_char']['heldout_rows']} rows",
             "held-out loss and accuracy are over the masked tokens of the held-out chunks "
             "(fixed masking keys); char and WoBERT losses are over different vocabularies and "
             "are not comparable with each other",
             "models: HF BertForMaskedLM folders in $JAXFORMER_CACHE (default "
             "~/.cache/jaxformer), never in the repository"]
    env = environment()
    # One report per preset, so a cpu-session run does not overwrite the cpu-hour one.
    name = NAME if args.preset == "cpu-hour" else f"{NAME}_{args.preset}"
    title = "Chinese MLM pretraining: " + ("char BERT" if args.char_only else
                                           "char BERT, its continuation, and WoBERT")
    paths = write_report(name, rows, columns=COLUMNS, title=title, command=command, notes=notes,
                         out_dir=args.out, env=env)
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
