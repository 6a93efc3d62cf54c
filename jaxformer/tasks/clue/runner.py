"""`run_clue`: train one CLUE task end to end, as post 8739's scripts do, resumably.

For a task folder (CLUE's ``train/dev/test.json`` or FewCLUE's ``train_few_all/dev_few_all/
test_public.json``, found by `jaxformer.io.clue_splits`) and a pretrained encoder directory:

1. read and encode train, dev and (when present) test with the task's layout;
2. fine-tune with AdaFactor at the post's rate (`bert4keras_adafactor`), the post's batch,
   epochs and gradient accumulation (`ClueConfig.preset`), evaluating on dev every epoch and
   keeping the best dev checkpoint (``out/ckpt``, ``out/ckpt/best``; a killed run resumes);
3. with the best model: dev metrics (and test metrics when the test file has labels) to
   ``out/metrics.json``, and the CLUE submission file of the test (or, without one, dev)
   predictions to ``out/``.

Adapters per layout family supply encode / build / task / predict / score / submission:
`SentenceAdapter` (single, pair, wsc, csl), `ChoiceAdapter` (c3, chid), `SpanAdapter`
(cmrc2018) and `NerAdapter` (cluener), each in its own module under `jaxformer.tasks.clue`.
"""

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxformer.io import load_tokenizer
from jaxformer.io.clue import read_clue
from jaxformer.io.clue_submit import write_submission
from jaxformer.io.clue_tasks import clue_splits
from jaxformer.io.zh_corpus import write_text_atomic
from jaxformer.models.pretrained import load_pretrained
from jaxformer.tasks.base import fit
from jaxformer.tasks.clue.config import ClueConfig
from jaxformer.tasks.clue.sentence import SentenceAdapter
from jaxformer.train.adafactor import bert4keras_adafactor
from jaxformer.train.loop import LoopConfig

SENTENCE_KINDS = ("single", "pair", "wsc", "csl")


def adapter_for(config: ClueConfig, tokenizer: Any) -> Any:
    """The adapter of `config`'s layout family; a clear error for those not built yet."""
    if config.kind in SENTENCE_KINDS:
        return SentenceAdapter(config, tokenizer)
    if config.kind == "choice":
        from jaxformer.tasks.clue.choice import ChoiceAdapter
        return ChoiceAdapter(config, tokenizer)
    if config.kind == "span":
        from jaxformer.tasks.clue.span import SpanAdapter
        return SpanAdapter(config, tokenizer)
    if config.kind == "ner":
        from jaxformer.tasks.clue.ner import NerAdapter
        return NerAdapter(config, tokenizer)
    raise ValueError(f"config.kind must be one of {(*SENTENCE_KINDS, 'choice', 'span', 'ner')}, "
                     f"got {config.kind!r} (task {config.task!r})")


def run_clue(config: ClueConfig, *, model_dir: str | os.PathLike, data_dir: str | os.PathLike,
             out_dir: str | os.PathLike, max_steps: int | None = None,
             limit: int | None = None, progress: bool = True,
             after: Callable[[Any, Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train `config.task` on `data_dir` from the encoder in `model_dir`; write `out_dir`.

    Args:
      config: the task's settings (`ClueConfig.preset(task)` for the post's).
      model_dir: an HF BERT/RoFormer folder (safetensors) with its tokenizer.
      data_dir: the task's folder (CLUE or FewCLUE layout).
      out_dir: checkpoints, ``metrics.jsonl`` (training), ``metrics.json`` (final) and the
        submission file.
      max_steps: stop after this many updates (a smoke run); None trains ``config.epochs``.
      limit: read only the first `limit` records of every split (smoke runs); None: all.
      after: see `run_records`.

    Returns:
      The ``metrics.json`` payload: ``{"task", "config", "dev", "test" (when labelled),
      "steps", "best_step", "submission", "holdout", "resumed_from", "seconds"}``.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")
    splits = clue_splits(config.task, data_dir)
    records = {name: read_clue(config.task, splits[name])[:limit]
               for name in ("train", "dev", "test") if name in splits}
    holdout = None
    if "train" not in records:
        # C3's and CMNLI's public folders have dev only: train on a fixed 80% of it, select on
        # the rest, and report (and submit) nothing on a test split (the report says so).
        records["train"], records["dev"] = split_holdout(records["dev"], fraction=0.2)
        holdout = {"from": "dev", "train": len(records["train"]), "dev": len(records["dev"])}
    # FewCLUE's folders name their files train_few_all.json, ...: their submissions differ.
    fewclue = any(p.name.startswith("train_few") for p in splits.get("train", ()))
    return run_records(config, records, model_dir=model_dir, out_dir=out_dir,
                       max_steps=max_steps, progress=progress, extra={"holdout": holdout},
                       submit={"fewclue": fewclue}, after=after)


def run_records(config: ClueConfig, records: dict[str, Sequence[Any]], *,
                model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                adapter: Any = None, max_steps: int | None = None, progress: bool = True,
                extra: dict[str, Any] | None = None, submit: dict[str, Any] | None = None,
                after: Callable[[Any, Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """`run_clue` from records already read: ``{"train", "dev"[, "test"]}`` of one task's
    record type (e.g. MSRA / People's Daily NER through `ner.bio_records`).

    Args:
      adapter: the layout's adapter; None: `adapter_for(config, tokenizer)` (pass a
        `NerAdapter` with other entity types for non-CLUENER sets).
      extra: merged into the report (e.g. where the splits came from).
      submit: None writes no submission file; a dict (``{"fewclue": bool}``) writes the CLUE
        one for test (or, without test, dev) predictions.
      after: ``after(best model, adapter)`` -> a dict merged into the report: an extra
        evaluation of the kept model (rerunning a finished run restores it without training).
    """
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                  or max_steps < 1):
        raise ValueError(f"max_steps must be None or an int >= 1, got {max_steps!r}")
    for name in ("train", "dev"):
        if name not in records:
            raise ValueError(f"records must hold 'train' and 'dev', got {sorted(records)}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    tokenizer = load_tokenizer(model_dir)
    adapter = adapter_for(config, tokenizer) if adapter is None else adapter
    data = {name: adapter.encode(recs) for name, recs in records.items()}

    # Steps count encoded rows, not records: CMRC2018 windows, CHID blanks and the like.
    n_train = len(data["train"]["input_ids"])
    if n_train < config.batch_size:
        raise ValueError(f"the train split encodes to {n_train} examples, fewer than "
                         f"batch_size={config.batch_size}")
    per_epoch = n_train // config.batch_size
    total = per_epoch * config.epochs if max_steps is None else min(max_steps,
                                                                  per_epoch * config.epochs)
    every = min(per_epoch, total)
    loop = LoopConfig(total_steps=total, batch_size=config.batch_size, eval_every=every,
                      checkpoint_every=every, seed=config.seed, best_metric=adapter.best_metric,
                      accumulate=config.accumulate, max_to_keep=1)
    model = adapter.build(load_pretrained(model_dir))
    result = fit(adapter.task(), model, data["train"], tx=bert4keras_adafactor(
        config.learning_rate), config=loop, eval_data=data["dev"], checkpoint_dir=out / "ckpt",
        metrics_path=out / "metrics.jsonl", progress=progress,
        run_config={"clue": dataclasses.asdict(config), "model": str(model_dir)})
    best = result.best_model if result.best_model is not None else result.model

    report: dict[str, Any] = {"task": config.task, "config": dataclasses.asdict(config),
                              "examples": {k: len(v) for k, v in records.items()},
                              "steps": total, "resumed_from": result.resumed_from,
                              **(extra or {}),
                              "best_step": (result.best_metrics or {}).get("step")}
    for name in ("dev", "test"):
        recs = records.get(name)
        if recs is None:
            continue
        predictions = adapter.predict(best, data[name], recs)
        if all(_labelled(r) for r in recs):
            report[name] = adapter.score(predictions, recs)
        # The test predictions are what the CLUE site takes; a folder without a test file
        # still gets the format, from dev.
        if submit is not None and (name == "test" or "test" not in records):
            path = write_submission(config.task, adapter.submission(predictions, recs), out,
                                    **submit)
            report["submission"] = {"file": path.name, "from": name,
                                    "examples": len(predictions)}
    if after is not None:
        report.update(after(best, adapter))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_text_atomic(out / "metrics.json", json.dumps(report, indent=1, ensure_ascii=False,
                                                        default=_jsonable) + "\n")
    return report


def split_holdout(records: Sequence[Any], *, fraction: float, seed: int = 0
                  ) -> tuple[list[Any], list[Any]]:
    """``(train, held out)``: a fixed seeded shuffle of `records`, the last `fraction` held out."""
    order = np.random.default_rng(seed).permutation(len(records))
    cut = len(records) - max(1, int(round(fraction * len(records))))
    return [records[i] for i in order[:cut]], [records[i] for i in order[cut:]]


def _labelled(record: Any) -> bool:
    # CMRC2018's test questions carry an empty answer tuple; the others None.
    for name in ("label", "answers", "spans"):
        if hasattr(record, name):
            value = getattr(record, name)
            return value is not None and (name != "answers" or len(value) > 0)
    return False


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
