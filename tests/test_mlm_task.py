"""`MaskedLMTask`: the loss is BERT's (cross-entropy on the selected positions only, checked in
float64 against full-sequence logits), evaluation is the exact token-level mean, and bad
configurations name the field."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.models.config import EncoderConfig
from jaxformer.tasks import MaskedLMTask, Task
from jaxformer.train.step import init_train_state, make_eval_step
from jaxformer.train.optim import adamw

# Eager loss calls against a jitted eval step, compiled per op: XLA's passes dominate.
pytestmark = pytest.mark.usefixtures("fast_compile")

V, T = 50, 12


def _task(**kw):
    cfg = EncoderConfig.tiny(vocab_size=V, use_pooler=False, hidden_dropout=0.0,
                             attention_dropout=0.0)
    return MaskedLMTask(encoder_config=cfg, mask_id=4, special_ids=(0, 2, 3), **kw)


def _data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, V, (n, T)).astype(np.int32)
    lengths = rng.integers(4, T + 1, n)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = 2
    ids[np.arange(n), lengths - 1] = 3
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_is_ce_on_selected_positions():
    task = _task()
    assert isinstance(task, Task)
    model = task.build_model(rngs=nnx.Rngs(0))
    batch = {k: jnp.asarray(v) for k, v in _data().items()}
    key = jax.random.key(7)
    loss, metrics = task.loss_fn(model, batch, key=key, deterministic=True)
    corrupted, positions, labels, weights = task.corrupt(batch, key=key)
    full = np.asarray(model(corrupted, attention_mask=batch["attention_mask"],
                            deterministic=True), np.float64)
    logp = _log_softmax(np.take_along_axis(full, np.asarray(positions)[..., None], axis=1))
    nll = -np.take_along_axis(logp, np.asarray(labels)[..., None], axis=-1)[..., 0]
    w = np.asarray(weights, np.float64)
    np.testing.assert_allclose(float(loss), (nll * w).sum() / w.sum(), rtol=1e-5)
    assert float(metrics["predicted_tokens"]) == w.sum()
    # Labels are the original ids, and no special token or padding is ever a target.
    ids = np.asarray(batch["input_ids"])
    picked = np.take_along_axis(ids, np.asarray(positions), axis=1)[w > 0]
    np.testing.assert_array_equal(np.asarray(labels)[w > 0], picked)
    assert not np.isin(picked, [0, 2, 3]).any()


def test_evaluate_is_the_token_level_mean():
    task = _task()
    model = task.build_model(rngs=nnx.Rngs(1))
    graphdef, state = init_train_state(model, adamw(1e-3, total_steps=10))
    eval_step = make_eval_step(graphdef, task.loss_fn)
    data = _data(n=7, seed=3)
    got = task.evaluate(eval_step, state, data, batch_size=3, seed=5)
    # Direct: the same fixed keys per batch, summed over every scored token.
    total = count = 0.0
    for i, start in enumerate(range(0, 7, 3)):
        rows = slice(start, start + 3)
        batch = {k: jnp.asarray(v[rows]) for k, v in data.items()}
        loss, m = task.loss_fn(model, batch, key=jax.random.fold_in(jax.random.key(5), i),
                               deterministic=True)
        total += float(loss) * float(m["predicted_tokens"])
        count += float(m["predicted_tokens"])
    assert got["predicted_tokens"] == count
    np.testing.assert_allclose(got["loss"], total / count, rtol=1e-5)
    assert task.evaluate(eval_step, state, data, batch_size=3, seed=5) == got


def test_whole_word_needs_word_starts_and_bad_fields():
    task = _task(whole_word=True)
    model = task.build_model(rngs=nnx.Rngs(0))
    batch = {k: jnp.asarray(v) for k, v in _data().items()}
    with pytest.raises(ValueError, match=r"whole_word=True needs batch\['word_starts'\]"):
        task.loss_fn(model, batch, key=jax.random.key(0), deterministic=True)
    batch["word_starts"] = jnp.ones((6, T), jnp.int32)
    loss, _ = task.loss_fn(model, batch, key=jax.random.key(0), deterministic=True)
    assert np.isfinite(float(loss))
    with pytest.raises(ValueError, match=r"mask_id: expected an int in \[0, vocab_size=50\), got 50"):
        _task().__class__(encoder_config=_task().encoder_config, mask_id=50)
    with pytest.raises(ValueError, match=r"rate: expected a float in \(0, 1\), got 0.0"):
        _task(rate=0.0)
    with pytest.raises(ValueError, match="mask_prob \\+ random_prob"):
        _task(mask_prob=0.9, random_prob=0.2)
    with pytest.raises(ValueError, match="key: the masked-LM loss draws its masking"):
        _task().loss_fn(model, batch, key=None, deterministic=True)
