"""Train step, optimiser and classification head: each checked against an independent reference.

- one train step == a hand-written `value_and_grad` + optax step on the merged model (bitwise);
- the warmup/linear schedule == its closed form; the decay mask == an explicit name list;
- dropout keys are ``fold_in(key, step)``: same step -> identical state, other step -> not;
- the state is donated; the loss falls on a learnable task; both NNX modes work.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.heads import SequenceClassifier, classification_loss
from jaxformer.train.finetune import batch_at, classifier_loss, evaluate
from jaxformer.train.optim import adamw, decay_mask, warmup_linear_schedule
from jaxformer.train.step import init_train_state, make_eval_step, make_train_step
from jaxformer.models.modules import named_leaves
from synthetic import token_task


# XLA's optimisation passes dominate these tests' CPU compile time (conftest.fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")


def make_model(seed: int = 0) -> SequenceClassifier:
    """A 1-layer width-32 classifier with BERT's dropout 0.1 everywhere."""
    encoder = Encoder(EncoderConfig.tiny(num_layers=1), rngs=nnx.Rngs(params=seed))
    return SequenceClassifier(encoder, 2, rngs=nnx.Rngs(params=seed + 1))


# Same program, same inputs: bitwise equal on CPU. On GPU the embedding gradient is a
# scatter-add with atomics, whose summation order (and so the last ulp) may vary run to run.
SAME = {"rtol": 0, "atol": 0} if jax.default_backend() == "cpu" else {"rtol": 1e-6, "atol": 1e-7}


def assert_trees_equal(a, b) -> None:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **SAME)


# --- head loss -------------------------------------------------------------------------------


def test_classification_loss_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype(np.float32) * 3
    labels = np.array([0, 2, 1, 1, 0, 2], np.int32)
    weights = np.array([1, 1, 0, 1, 0.5, 1], np.float32)
    x = logits.astype(np.float64)
    logz = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
    nll = logz - x[np.arange(6), labels]
    correct = (x.argmax(1) == labels).astype(np.float64)
    loss, acc = classification_loss(jnp.asarray(logits), jnp.asarray(labels))
    # fp32 log-softmax vs float64 reference: a few ulp of values of size ~1.
    np.testing.assert_allclose(float(loss), nll.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(acc), correct.mean(), rtol=1e-7)  # k/6 in fp32
    loss_w, acc_w = classification_loss(jnp.asarray(logits), jnp.asarray(labels),
                                        weights=jnp.asarray(weights))
    np.testing.assert_allclose(float(loss_w), (weights * nll).sum() / weights.sum(), rtol=1e-6)
    np.testing.assert_allclose(float(acc_w), (weights * correct).sum() / weights.sum(), rtol=1e-6)


def test_classification_loss_rejects_bad_labels():
    logits = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"labels must have shape \[B\] = \(4,\).*got \(4, 1\)"):
        classification_loss(logits, jnp.zeros((4, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, C=3\), got values in \[0, 3\]"):
        classification_loss(logits, jnp.array([0, 1, 2, 3], jnp.int32))


# --- optimiser -------------------------------------------------------------------------------


def test_warmup_linear_schedule_closed_form():
    peak, total, warm = 1e-3, 10, 4
    lr = warmup_linear_schedule(peak, total_steps=total, warmup_steps=warm)
    # HF get_linear_schedule_with_warmup: s/W before W, then (N - s)/(N - W), floored at 0.
    expected = {0: 0.0, 1: 0.25e-3, 2: 0.5e-3, 4: 1e-3, 7: 0.5e-3, 9: peak / 6, 10: 0.0, 13: 0.0}
    for step, want in expected.items():
        np.testing.assert_allclose(float(lr(jnp.int32(step))), want, rtol=1e-6, atol=0)
    no_warmup = warmup_linear_schedule(peak, total_steps=total, warmup_steps=0)
    assert float(no_warmup(0)) == np.float32(peak)
    np.testing.assert_allclose(float(no_warmup(5)), peak / 2, rtol=1e-6)
    with pytest.raises(ValueError,
                       match=r"warmup_steps must be an int in \[0, total_steps=10\], got 11"):
        warmup_linear_schedule(peak, total_steps=total, warmup_steps=11)
    with pytest.raises(ValueError, match="total_steps must be an int >= 1, got 0"):
        adamw(peak, total_steps=0)


def test_decay_mask_excludes_biases_and_layernorm():
    model = make_model()
    params = nnx.state(model, nnx.Param)
    mask = {name: bool(m) for name, m in named_leaves(decay_mask(params)).items()}
    decayed = sorted(name for name, m in mask.items() if m)
    assert decayed == sorted([
        "classifier.kernel",
        "encoder.embed.position.embedding",
        "encoder.embed.token_type.embedding",
        "encoder.embed.word.embedding",
        "encoder.blocks.0.attention.key.kernel",
        "encoder.blocks.0.attention.output.kernel",
        "encoder.blocks.0.attention.query.kernel",
        "encoder.blocks.0.attention.value.kernel",
        "encoder.blocks.0.ffn.intermediate.kernel",
        "encoder.blocks.0.ffn.output.kernel",
        "encoder.pooler.dense.kernel",
    ])
    assert all(n.endswith(("bias", "scale")) for n, m in mask.items() if not m)
    # The optimiser really uses the mask: with zero gradients AdamW's update is -lr * wd * p on
    # decayed leaves and exactly 0 elsewhere (Adam's moments are 0).
    lr, wd = 1e-2, 0.1
    tx = adamw(lr, total_steps=10, weight_decay=wd)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    params_by_name = named_leaves(params)
    for name, u in named_leaves(updates).items():
        p = params_by_name[name]
        want = -lr * wd * np.asarray(p) if mask[name] else np.zeros_like(p)
        np.testing.assert_allclose(np.asarray(u), want, rtol=1e-6, atol=0)


# --- train step ------------------------------------------------------------------------------


def test_train_step_matches_hand_written_reference(nnx_mode):
    model = make_model()
    tx = adamw(1e-2, total_steps=20, warmup_steps=0)
    batch = batch_at(token_task(32, seed=0), 0, batch_size=8, seed=0)
    key = jax.random.key(7)

    # The reference: value_and_grad on the merged model and optax, written out here.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def reference_step(params, opt_state, step, batch, key):
        def loss_of(p):
            m = nnx.merge(graphdef, p, rest)
            logits = m(batch["input_ids"], attention_mask=batch["attention_mask"],
                       deterministic=False, key=jax.random.fold_in(key, step))
            return classification_loss(logits, batch["labels"])[0]

        loss, grads = jax.value_and_grad(loss_of)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    ref_params, ref_opt, ref_losses = params, tx.init(params), []
    for step in range(2):
        ref_params, ref_opt, loss = reference_step(ref_params, ref_opt, jnp.int32(step), batch, key)
        ref_losses.append(loss)

    graphdef2, state = init_train_state(model, tx)
    train_step = make_train_step(graphdef2, tx, classifier_loss)
    first_input = state
    for step in range(2):
        state, metrics = train_step(state, batch, key=key)
        # The same computation on the same inputs: bitwise equal on CPU (see SAME).
        np.testing.assert_allclose(np.asarray(metrics["loss"]), np.asarray(ref_losses[step]),
                                   **SAME)
    assert int(state.step) == 2
    assert_trees_equal(state.params, ref_params)
    assert_trees_equal(state.opt_state, ref_opt)
    # Donation: the input state's buffers are gone (XLA may keep a donated scalar it cannot
    # alias, here the injected learning rate, so the check covers params, moments and step);
    # the model's own buffers are untouched because init_train_state copies them.
    donated = [first_input.params, first_input.step,
               [x for x in jax.tree.leaves(first_input.opt_state) if x.ndim >= 1]]
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(donated))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(nnx.state(model)))
    assert set(metrics) == {"loss", "accuracy", "grad_norm", "learning_rate"}
    np.testing.assert_allclose(float(metrics["learning_rate"]), 1e-2 * 19 / 20, rtol=1e-6)


def test_dropout_keys_are_fold_in_of_step():
    model = make_model()
    tx = adamw(1e-2, total_steps=20)
    graphdef, state = init_train_state(model, tx)
    train_step = make_train_step(graphdef, tx, classifier_loss, donate=False)
    batch = batch_at(token_task(32, seed=0), 0, batch_size=8, seed=0)
    key = jax.random.key(3)

    a, metrics_a = train_step(state, batch, key=key)
    b, metrics_b = train_step(state, batch, key=key)
    assert_trees_equal(a, b)  # same key, same step: the same dropout masks
    moved, _ = train_step(state._replace(step=jnp.int32(5)), batch, key=key)
    other, _ = train_step(state, batch, key=jax.random.key(4))
    for changed in (moved, other):
        diffs = [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.params),
                                                            jax.tree.leaves(changed.params))]
        assert any(diffs)
    # ... and it is exactly the dropout: a deterministic model ignores the step.
    det_loss = lambda m, b, *, key, deterministic: classifier_loss(m, b, key=None,  # noqa: E731
                                                                   deterministic=True)
    det_step = make_train_step(graphdef, tx, det_loss, donate=False)
    c, _ = det_step(state, batch, key=key)
    d, _ = det_step(state._replace(step=jnp.int32(5)), batch, key=key)
    assert_trees_equal(c.params, d.params)


def test_loss_decreases_on_learnable_task():
    train, held_out = token_task(256, seed=0), token_task(128, seed=1)
    model = make_model()
    tx = adamw(1e-2, total_steps=40, warmup_steps=4)
    graphdef, state = init_train_state(model, tx)
    train_step = make_train_step(graphdef, tx, classifier_loss)
    losses = []
    for step in range(40):
        state, metrics = train_step(state, batch_at(train, step, batch_size=16, seed=0),
                                    key=jax.random.key(0))
        losses.append(float(metrics["loss"]))
        assert math.isfinite(losses[-1])
    assert np.mean(losses[:5]) > 0.6  # chance level is ln 2 = 0.69
    assert np.mean(losses[-5:]) < 0.2
    result = evaluate(make_eval_step(graphdef, classifier_loss), state, held_out, batch_size=16)
    assert result["accuracy"] > 0.9


# --- gradient accumulation -------------------------------------------------------------------


def _deterministic(m, b, *, key, deterministic):
    return classifier_loss(m, b, key=None, deterministic=True)


@pytest.mark.parametrize("with_weights", [False, True])
def test_accumulation_equals_one_big_batch(with_weights):
    """accumulate=4 over 16 rows makes the same update as one 16-row batch (no dropout): the
    loss, metrics and gradient are weight-summed means, so uneven weights per micro-batch
    (padding rows) combine exactly as one batch's weighted mean."""
    tx = optax.sgd(0.5)  # plain SGD: the update is the gradient itself, scaled
    batch = batch_at(token_task(32, seed=0), 0, batch_size=16, seed=0)
    if with_weights:
        batch["weights"] = np.array([1, 0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1],
                                    np.float32)
    graphdef, state = init_train_state(make_model(), tx)
    one = make_train_step(graphdef, tx, _deterministic, donate=False)
    four = make_train_step(graphdef, tx, _deterministic, donate=False, accumulate=4)
    a, ma = one(state, batch, key=jax.random.key(0))
    b, mb = four(state, batch, key=jax.random.key(0))
    # Summation order differs (per micro-batch, then across): fp32 round-off only.
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)
    for name in ("loss", "accuracy", "grad_norm"):
        np.testing.assert_allclose(float(mb[name]), float(ma[name]), rtol=1e-5, atol=1e-6)
    assert int(b.step) == 1


def test_accumulation_draws_dropout_per_micro_batch():
    tx = optax.sgd(0.5)
    batch = batch_at(token_task(32, seed=0), 0, batch_size=8, seed=0)
    graphdef, state = init_train_state(make_model(), tx)
    step = make_train_step(graphdef, tx, classifier_loss, donate=False, accumulate=2)
    a, _ = step(state, batch, key=jax.random.key(1))
    b, _ = step(state, batch, key=jax.random.key(1))
    assert_trees_equal(a.params, b.params)  # same key and step: same micro-batch masks
    # Micro-batch i uses fold_in(fold_in(key, step), i): a hand-built two-step reference.
    graphdef2, params, rest = nnx.split(make_model(), nnx.Param, ...)
    step_key = jax.random.fold_in(jax.random.key(1), 0)

    def grads_of(rows, i):
        def loss_of(p):
            sub = {k: jnp.asarray(v[rows]) for k, v in batch.items()}
            return classifier_loss(nnx.merge(graphdef2, p, rest), sub,
                                   key=jax.random.fold_in(step_key, i), deterministic=False)[0]
        return jax.grad(loss_of)(params)

    g = jax.tree.map(lambda x, y: (x + y) / 2, grads_of(slice(0, 4), 0), grads_of(slice(4, 8), 1))
    expected = jax.tree.map(lambda p, d: p - 0.5 * d, params, g)
    for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(a.params), strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)


def test_accumulation_rejects_bad_settings():
    tx = optax.sgd(0.1)
    graphdef, state = init_train_state(make_model(), tx)
    with pytest.raises(ValueError, match="accumulate must be an int >= 1, got 0"):
        make_train_step(graphdef, tx, classifier_loss, accumulate=0)
    step = make_train_step(graphdef, tx, classifier_loss, accumulate=3)
    batch = batch_at(token_task(32, seed=0), 0, batch_size=8, seed=0)
    with pytest.raises(ValueError, match="B=8 rows, not a multiple of accumulate=3"):
        step(state, batch, key=jax.random.key(0))
    from jaxformer.train.loop import LoopConfig
    with pytest.raises(ValueError, match="batch_size must be a multiple of accumulate=4, got 6"):
        LoopConfig(total_steps=1, batch_size=6, accumulate=4)
