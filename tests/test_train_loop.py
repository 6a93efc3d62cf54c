"""The task-agnostic loop (`jaxformer.train.loop`) and the `Task` protocol (`jaxformer.tasks`).

Most tests train a 4 -> 1 `nnx.Linear` on a least-squares task (compiles in well under a
second); one compares `finetune` with ``fit(ClassificationTask(...))`` on the tiny encoder. The
kill-and-resume test in a subprocess is in tests/test_finetune_resume.py; here a run is
"killed" in-process by a callback that raises.
"""

import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.tasks import ClassificationTask, Task, TaskBase, fit
from jaxformer.train.checkpoint import finalized_steps
from jaxformer.train.finetune import FinetuneConfig, finetune
from jaxformer.train.loop import LoopConfig, MetricsLog, evaluate_in_batches, shuffled_rows
from jaxformer.train.optim import adamw
from jaxformer.train.step import init_train_state, make_eval_step
from synthetic import token_task


# XLA's optimisation passes dominate these tests' CPU compile time (conftest.fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")


class LinearTask(TaskBase):
    """Least squares ``y ~ x @ w + b``: weighted mean squared error, mean |error| as a metric.

    With ``noise > 0`` the loss adds ``noise * normal(key)``, a stand-in for a loss that draws
    from its key even in evaluation (a masked-LM's masking pattern)."""

    def __init__(self, noise: float = 0.0):
        self.noise = noise

    def build_model(self, *, rngs):
        return nnx.Linear(4, 1, rngs=rngs)

    def loss_fn(self, model, batch, *, key, deterministic):
        err = model(batch["x"])[:, 0] - batch["y"]
        w = batch.get("weights", jnp.ones_like(err))
        total = jnp.maximum(jnp.sum(w), jnp.float32(1))
        loss = jnp.sum(w * err**2) / total
        if self.noise:
            loss = loss + jnp.float32(self.noise) * jax.random.normal(key, (), jnp.float32)
        return loss, {"abs_error": jnp.sum(w * jnp.abs(err)) / total}


def linear_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return {"x": x, "y": y}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loop_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"LoopConfig.total_steps must be an int >= 1, got 0"):
        LoopConfig(total_steps=0, batch_size=4)
    with pytest.raises(ValueError, match=r"LoopConfig.log_every must be an int >= 1, got 0"):
        LoopConfig(total_steps=5, batch_size=4, log_every=0)
    with pytest.raises(ValueError, match=r"LoopConfig.seed must be an int >= 0, got -1"):
        LoopConfig(total_steps=5, batch_size=4, seed=-1)
    with pytest.raises(ValueError, match=r"LoopConfig.eval_every must be an int >= 0, got True"):
        LoopConfig(total_steps=5, batch_size=4, eval_every=True)
    assert LoopConfig(total_steps=5, batch_size=4).to_dict() == {
        "total_steps": 5, "batch_size": 4, "eval_every": 0, "checkpoint_every": 0,
        "log_every": 1, "max_to_keep": 3, "seed": 0, "best_metric": None, "best_mode": "max",
        "accumulate": 1}


def test_shuffled_rows_is_pure_and_covers_each_epoch():
    n, bs = 10, 3  # 3 batches per epoch; one row per epoch is dropped
    first = [shuffled_rows(n, s, batch_size=bs, seed=7) for s in range(6)]
    again = [shuffled_rows(n, s, batch_size=bs, seed=7) for s in reversed(range(6))][::-1]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    for epoch in (first[:3], first[3:]):
        rows = np.concatenate(epoch)
        assert len(set(rows.tolist())) == 9 and rows.min() >= 0 and rows.max() < n
    assert not np.array_equal(np.concatenate(first[:3]), np.concatenate(first[3:]))
    assert not np.array_equal(first[0], shuffled_rows(n, 0, batch_size=bs, seed=8))
    with pytest.raises(ValueError, match=r"n=2 rows, fewer than batch_size=3"):
        shuffled_rows(2, 0, batch_size=3, seed=0)


def test_task_protocol():
    assert isinstance(LinearTask(), Task)
    assert isinstance(ClassificationTask(EncoderConfig.tiny(), num_labels=3), Task)
    assert not isinstance(object(), Task)
    # fit's own check, or the jaxtyping/beartype hook of the test run that checks it first.
    with pytest.raises(TypeError, match=r"task must implement the Task protocol|parameter 'task'"):
        fit(object(), nnx.Linear(4, 1, rngs=nnx.Rngs(0)), linear_data(8),
            tx=adamw(1e-2, total_steps=2), config=LoopConfig(total_steps=2, batch_size=4),
            progress=False)
    with pytest.raises(ValueError, match=r"ClassificationTask.num_labels must be an int >= 1"):
        ClassificationTask(EncoderConfig.tiny(), num_labels=0)
    with pytest.raises(ValueError, match=r"build_model needs encoder="):
        ClassificationTask(None, num_labels=2).build_model(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"data needs key 'labels'"):
        ClassificationTask(None, num_labels=2).num_examples({"input_ids": np.zeros((4, 3))})
    with pytest.raises(ValueError, match=r"data arrays must have equal length N"):
        LinearTask().num_examples({"x": np.zeros((4, 4)), "y": np.zeros(3)})
    batch = LinearTask().collate({"x": np.zeros((4, 4)), "i": np.arange(4)}, np.array([2, 0]))
    assert batch["i"].dtype == np.int32 and batch["x"].shape == (2, 4)


def test_task_evaluate_is_exact_over_padded_batches():
    task, data = LinearTask(), linear_data(23, seed=1)  # 3 batches of 8, the last with 7 real
    model = task.build_model(rngs=nnx.Rngs(0))
    graphdef, state = init_train_state(model, adamw(1e-2, total_steps=1))
    got = task.evaluate(make_eval_step(graphdef, task.loss_fn), state, data, batch_size=8, seed=0)
    w = np.asarray(model.kernel[...], np.float64)[:, 0]
    err = data["x"].astype(np.float64) @ w + float(model.bias[...][0]) - data["y"]
    # fp32 per-batch sums against a float64 full-data reference: rtol 1e-5.
    np.testing.assert_allclose(got["loss"], np.mean(err**2), rtol=1e-5)
    np.testing.assert_allclose(got["abs_error"], np.mean(np.abs(err)), rtol=1e-5)
    assert set(got) == {"loss", "abs_error"} and all(type(v) is float for v in got.values())


def test_evaluate_weight_by_a_count_is_the_mean_over_counted_items():
    # A step whose batch "mean" is over a varying number of items (MLM's predicted tokens,
    # seq2seq's target tokens): the data-set mean weights each batch by that count, not by rows.
    tokens = np.array([3.0, 0.0, 5.0, 1.0, 2.0, 4.0, 0.0])  # scored items per row
    values = np.array([1.0, 9.0, 2.0, 4.0, -1.0, 0.5, 7.0])  # each row's per-item value

    _, state = init_train_state(LinearTask().build_model(rngs=nnx.Rngs(0)),
                                adamw(1e-2, total_steps=1))  # unused by `step`, but typed

    def step(state, batch, *, key):
        w = batch["weights"] * tokens[batch["rows"]]
        return {"loss": (w * values[batch["rows"]]).sum() / max(w.sum(), 1.0), "tokens": w.sum()}

    got = evaluate_in_batches(step, state, num_examples=7, batch_of_rows=lambda r: {"rows": r},
                              batch_size=3, seed=0, weight_by="tokens")
    assert got["tokens"] == tokens.sum()
    np.testing.assert_allclose(got["loss"], (tokens * values).sum() / tokens.sum(), rtol=1e-12)
    rows_mean = evaluate_in_batches(step, state, num_examples=7, batch_size=3, seed=0,
                                    batch_of_rows=lambda r: {"rows": r})
    assert abs(rows_mean["loss"] - got["loss"]) > 0.1  # the weighting really differs
    with pytest.raises(KeyError, match=r"weight_by: expected one of .*'loss', 'tokens'.*'count'"):
        evaluate_in_batches(step, state, num_examples=7, batch_of_rows=lambda r: {"rows": r},
                            batch_size=3, seed=0, weight_by="count")
    zero = np.zeros_like(tokens)
    with pytest.raises(ValueError, match=r"weight_by: every batch of the 2 rows has 'tokens' = 0"):
        evaluate_in_batches(lambda st, b, *, key: {"loss": 0.0, "tokens": zero[b["rows"]].sum()},
                            state, num_examples=2, batch_of_rows=lambda r: {"rows": r},
                            batch_size=3, seed=0, weight_by="tokens")


def test_eval_key_is_passed_through_and_fixed():
    task, data = LinearTask(noise=1.0), linear_data(20, seed=2)
    graphdef, state = init_train_state(task.build_model(rngs=nnx.Rngs(0)),
                                       adamw(1e-2, total_steps=1))
    eval_step = make_eval_step(graphdef, task.loss_fn)
    a = task.evaluate(eval_step, state, data, batch_size=8, seed=0)
    b = task.evaluate(eval_step, state, data, batch_size=8, seed=0)
    c = task.evaluate(eval_step, state, data, batch_size=8, seed=1)
    clean = LinearTask().evaluate(make_eval_step(graphdef, LinearTask().loss_fn), state, data,
                                  batch_size=8, seed=0)
    assert a == b  # same seed, same keys: bitwise the same
    assert a["loss"] != c["loss"] and a["loss"] != clean["loss"]  # the key is really used
    assert a["abs_error"] == clean["abs_error"]


class Stop(Exception):
    pass


def test_loop_cadence_metrics_and_resume(tmp_path, caplog):
    task, data, held_out = LinearTask(), linear_data(32), linear_data(12, seed=3)
    config = LoopConfig(total_steps=7, batch_size=8, eval_every=3, checkpoint_every=2,
                        log_every=3, max_to_keep=10, seed=1)

    def run(name: str, *, callbacks=(), run_config=None):
        model = task.build_model(rngs=nnx.Rngs(0))
        return fit(task, model, data, tx=adamw(5e-2, total_steps=7), config=config,
                   eval_data=held_out, checkpoint_dir=tmp_path / name / "ckpt",
                   metrics_path=tmp_path / name / "metrics.jsonl", callbacks=callbacks,
                   progress=False, run_config=run_config or {"lr": 5e-2})

    ref = run("ref")
    assert ref.resumed_from is None and len(ref.history) == 7 and int(ref.state.step) == 7
    assert [e["step"] for e in ref.eval_history] == [3, 6, 7]  # every 3, and at the end
    assert ref.eval_metrics == ref.eval_history[-1]
    assert set(ref.eval_metrics) == {"step", "loss", "abs_error"}
    assert finalized_steps(tmp_path / "ref" / "ckpt") == [2, 4, 6, 7]  # every 2, and at the end
    lines = read_jsonl(tmp_path / "ref" / "metrics.jsonl")
    assert [(r["step"], r["split"]) for r in lines] == [
        (3, "train"), (3, "eval"), (6, "train"), (6, "eval"), (7, "train"), (7, "eval")]
    assert list(lines[0]) == ["step", "split", "loss", "abs_error", "grad_norm", "learning_rate"]
    assert lines[0]["loss"] == ref.history[2] and all(
        type(v) is float for r in lines for k, v in r.items() if k not in ("step", "split"))
    assert lines[1] == {"step": 3, "split": "eval", **{k: v for k, v in
                                                       ref.eval_history[0].items() if k != "step"}}

    # "Kill" a run at step 6, after its train line but before checkpoint 6: the rerun restores
    # step 4, cuts the metrics file back to step 4 and ends exactly like the reference.
    def stop_at_6(step, metrics):
        if step == 6:
            raise Stop

    with pytest.raises(Stop):
        run("run", callbacks=(stop_at_6,))
    assert finalized_steps(tmp_path / "run" / "ckpt") == [2, 4]
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [3, 3, 6]
    resumed = run("run")
    assert resumed.resumed_from == 4
    assert resumed.history == ref.history and resumed.eval_history == ref.eval_history
    assert read_jsonl(tmp_path / "run" / "metrics.jsonl") == lines
    for a, b in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(ref.state.params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # A finished run resumes at its end (nothing repeated); other settings are warned about.
    with caplog.at_level(logging.WARNING, logger="jaxformer"):
        again = run("run", run_config={"lr": 1e-3})
    assert again.resumed_from == 7 and again.history == ref.history
    assert "differ from the checkpoint's in ['run.lr']" in caplog.text
    assert read_jsonl(tmp_path / "run" / "metrics.jsonl") == lines


def test_metrics_log_drops_later_and_torn_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "split": "train"}\n{"step": 5, "split": "train"}\n{"step": 2')
    MetricsLog(path, keep_through=4).close()
    assert read_jsonl(path) == [{"step": 1, "split": "train"}]


def test_fit_on_a_two_device_mesh_matches_one_device():
    if jax.device_count() < 2:
        pytest.skip(f"needs 2 devices (conftest sets jax_num_cpu_devices=8), "
                    f"got {jax.device_count()}")
    mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
    task, data = LinearTask(), linear_data(16)
    config = LoopConfig(total_steps=3, batch_size=4)
    results = [fit(task, task.build_model(rngs=nnx.Rngs(0)), data, tx=adamw(5e-2, total_steps=3),
                   config=config, eval_data=linear_data(6, seed=4), mesh=m, progress=False)
               for m in (None, mesh)]
    # fp32 sums in another order over 2 shards.
    np.testing.assert_allclose(results[1].history, results[0].history, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(results[1].eval_metrics["loss"], results[0].eval_metrics["loss"],
                               rtol=1e-6)


def test_finetune_is_fit_of_a_classification_task(tmp_path):
    train, held_out = token_task(32, seed=0), token_task(12, seed=1)
    task = ClassificationTask(EncoderConfig.tiny(num_layers=1), num_labels=2)
    config = FinetuneConfig(learning_rate=1e-2, batch_size=8, total_steps=3, warmup_steps=1,
                            seed=2)

    def model():
        return task.build_model(rngs=nnx.Rngs(params=1),
                                encoder=Encoder(task.encoder_config, rngs=nnx.Rngs(params=0)))

    tuned = finetune(model(), train, config=config, eval_data=held_out, progress=False,
                     metrics_path=tmp_path / "metrics.jsonl")
    tx = adamw(1e-2, total_steps=3, warmup_steps=1, weight_decay=config.weight_decay,
               clip_norm=config.clip_norm)
    fitted = fit(task, model(), train, tx=tx, eval_data=held_out, progress=False,
                 config=LoopConfig(total_steps=3, batch_size=8, seed=2))
    assert tuned.history == fitted.history and len(tuned.history) == 3
    assert tuned.eval_history == fitted.eval_history
    assert set(tuned.eval_metrics) == {"step", "loss", "accuracy"}
    assert [r["split"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == ["train"] * 3 + ["eval"]


def test_best_metric_keeps_the_best_evaluation_and_survives_a_kill(tmp_path):
    """``best_metric``: the returned best model scores what the eval history says its step
    scored (re-evaluated here), its folder holds that step, and a run killed after the best
    evaluation but before the next checkpoint ends with the same best state as an uninterrupted
    run (the resume drops the best saved past the restored step and redoes it)."""
    task, data, held_out = LinearTask(), linear_data(32), linear_data(12, seed=3)
    # At lr 2 the error first rises, so "max" has an interior best (step 3 here).
    config = LoopConfig(total_steps=8, batch_size=8, eval_every=1, checkpoint_every=2,
                        max_to_keep=10, seed=1, best_metric="abs_error", best_mode="max")

    def run(name: str, *, callbacks=()):
        return fit(task, task.build_model(rngs=nnx.Rngs(0)), data, tx=adamw(2.0, total_steps=8),
                   config=config, eval_data=held_out, checkpoint_dir=tmp_path / name,
                   callbacks=callbacks, progress=False)

    ref = run("ref")
    errors = [e["abs_error"] for e in ref.eval_history]
    best_step = ref.eval_history[int(np.argmax(errors))]["step"]
    assert ref.best_metrics["step"] == best_step and ref.best_metrics["abs_error"] == max(errors)
    assert finalized_steps(tmp_path / "ref" / "best") == [best_step]
    graphdef, state = init_train_state(ref.best_model, adamw(2.0, total_steps=8))
    again = task.evaluate(make_eval_step(graphdef, task.loss_fn), state, held_out, batch_size=8,
                          seed=1)
    assert again["abs_error"] == pytest.approx(max(errors), rel=1e-6)
    # The kill below must fall after the best's save and before the next checkpoint.
    assert best_step % 2 == 1 and best_step < 7, errors

    def stop_after(step, metrics):  # callbacks run before that step's eval: kill after it
        if step == best_step + 1:
            raise Stop

    with pytest.raises(Stop):
        run("run", callbacks=(stop_after,))
    resumed = run("run")
    assert resumed.best_metrics == ref.best_metrics
    for a, b in zip(jax.tree.leaves(nnx.state(resumed.best_model)),
                    jax.tree.leaves(nnx.state(ref.best_model)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert finalized_steps(tmp_path / "run" / "best") == [best_step]


def test_best_metric_validation_names_the_field():
    with pytest.raises(ValueError, match=r"LoopConfig.best_mode must be 'max' or 'min', got 'up'"):
        LoopConfig(total_steps=1, batch_size=1, best_metric="accuracy", best_mode="up")
    with pytest.raises(ValueError, match="LoopConfig.best_metric must be None or a metric name"):
        LoopConfig(total_steps=1, batch_size=1, best_metric="")
    task, data = LinearTask(), linear_data(16)
    config = LoopConfig(total_steps=1, batch_size=8, best_metric="accuracy")
    with pytest.raises(KeyError, match=r"best_metric='accuracy' is not among the evaluation's "
                                       r"metrics \['abs_error', 'loss'\]"):
        fit(task, task.build_model(rngs=nnx.Rngs(0)), data, tx=adamw(0.1, total_steps=1),
            config=config, eval_data=data, progress=False)
