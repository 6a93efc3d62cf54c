"""BERT-of-Theseus: the replacement kernels against closed forms, the model's invariants (p = 0
is the predecessor, p = 1 the successor, one compilation whatever the coins, the predecessor
untouched by training), the three-phase recipe's resume, and bad input.

Exactness: "exactly" means bit for bit where the two computations are the same operations
(eager dispatch, `compute="select"`). Two *different* jitted programs (the Theseus step and the
predecessor alone) are fused differently by XLA and agree to float32 rounding, so those
comparisons carry ``rtol=1e-6``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.heads import SequenceClassifier
from jaxformer.models.theseus import (SUCCESSOR_KEY_STREAM, TheseusClassifier,
                                      successor_classifier, successor_filter, truncate_encoder)
from jaxformer.replacement import blend, module_groups, replacement_rate, successor_weights
from jaxformer.tasks.theseus import THESEUS_PRESETS, TheseusConfig, TheseusTask, with_step
from jaxformer.tasks.theseus_recipe import (TheseusRecipe, compress, fit_predecessor,
                                            truncation_baseline)
from jaxformer.train.checkpoint import finalized_steps
from jaxformer.train.optim import adamw
from jaxformer.train.step import init_train_state, make_train_step
from synthetic import token_task

pytestmark = pytest.mark.usefixtures("fast_compile")

CFG = EncoderConfig.tiny(num_layers=4, hidden_dropout=0.1, attention_dropout=0.1)
SMALL = CFG.replace(num_layers=2)  # the recipe tests: compile time is most of their cost


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def assert_trees_equal(a, b):
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def make_pair(embeddings: bool, layers: int = 2, seed: int = 0):
    pred = SequenceClassifier(Encoder(CFG, rngs=nnx.Rngs(seed)), 3, rngs=nnx.Rngs(seed + 1))
    # A successor that differs from the predecessor's first blocks, so the tests can tell them
    # apart: drawn fresh.
    succ = Encoder(CFG.replace(num_layers=layers), rngs=nnx.Rngs(seed + 7))
    return TheseusClassifier(pred, succ, embeddings=embeddings)


def batch(n=4, t=7, seed=0):
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(5, 100, (n, t)), jnp.int32)
    mask = np.ones((n, t), np.int32)
    mask[0, -2:] = 0
    return ids, jnp.asarray(mask)


# --- kernels -------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1e-2), st.integers(0, 10_000))
def test_linear_schedule_is_the_closed_form(b, k, t):
    got = float(replacement_rate(t, schedule="linear", rate=b, slope=k))
    assert got == pytest.approx(min(k * t + b, 1.0), rel=1e-6, abs=1e-7)


def test_constant_schedule_switches_to_one():
    steps = jnp.arange(6)
    got = replacement_rate(steps, schedule="constant", rate=0.3, replace_until=4)
    np.testing.assert_allclose(np.asarray(got), [0.3, 0.3, 0.3, 0.3, 1, 1], rtol=1e-7)
    assert float(replacement_rate(10**6, schedule="constant", rate=0.3)) == pytest.approx(0.3)


def test_draws_are_keyed_by_step_key_and_slot():
    key = jax.random.key(0)
    a = successor_weights(key, 0.5, num_slots=64)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(successor_weights(key, 0.5,
                                                                             num_slots=64)))
    assert set(np.unique(np.asarray(a))) <= {0.0, 1.0}
    # Slot j depends only on (key, j): more slots extend the draw, never reshuffle it.
    np.testing.assert_array_equal(np.asarray(successor_weights(key, 0.5, num_slots=8)),
                                  np.asarray(a)[:8])
    other = successor_weights(jax.random.fold_in(key, 1), 0.5, num_slots=64)
    assert not np.array_equal(np.asarray(a), np.asarray(other))
    assert not successor_weights(key, 0.0, num_slots=64).any()
    assert successor_weights(key, 1.0, num_slots=64).all()
    per_example = successor_weights(key, 0.5, num_slots=3, batch_size=5)
    assert per_example.shape == (3, 5)
    uniform = np.asarray(successor_weights(key, 0.5, num_slots=200, mix="uniform"))
    assert ((uniform >= 0) & (uniform < 1)).all() and len(np.unique(uniform)) == 200
    np.testing.assert_array_equal(
        np.asarray(successor_weights(key, 0.25, num_slots=3, mix="anneal")), [0.25] * 3)


def test_bernoulli_draw_frequency_matches_p():
    """2000 slots at p = 0.3: the share is within 4 standard errors of p."""
    w = np.asarray(successor_weights(jax.random.key(5), 0.3, num_slots=2000))
    assert abs(w.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 2000)


def test_blend_select_and_weighted():
    rng = np.random.default_rng(0)
    xp, xs = (jnp.asarray(rng.normal(size=(3, 2, 4)), jnp.float32) for _ in range(2))
    w = jnp.asarray([0.0, 1.0, 0.0], jnp.float32)
    got = np.asarray(blend(xp, xs, w, binary=True))
    np.testing.assert_array_equal(got[0], np.asarray(xp)[0])
    np.testing.assert_array_equal(got[1], np.asarray(xs)[1])
    s = jnp.float32(0.25)
    np.testing.assert_allclose(np.asarray(blend(xp, xs, s, binary=False)),
                               0.75 * np.asarray(xp, np.float64) + 0.25 * np.asarray(xs, np.float64),
                               rtol=1e-6)
    # A select never lets the other branch's inf in.
    inf = jnp.full_like(xp, jnp.inf)
    assert np.isfinite(np.asarray(blend(inf, xs, jnp.float32(1), binary=True))).all()


# --- the model's invariants ----------------------------------------------------------------

@pytest.mark.parametrize("embeddings", [False, True])
def test_p0_is_the_predecessor_exactly(embeddings):
    model = make_pair(embeddings)
    ids, mask = batch()
    key = jax.random.key(3)
    zeros = jnp.zeros(model.num_slots, jnp.float32)
    want = model.predecessor(ids, attention_mask=mask, deterministic=False, key=key)
    got = model(ids, attention_mask=mask, deterministic=False, key=key, weights=zeros,
                compute="select")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    jitted = jax.jit(lambda w: model(ids, attention_mask=mask, deterministic=False, key=key,
                                     weights=w))(zeros)
    want_jit = jax.jit(lambda: model.predecessor(ids, attention_mask=mask, deterministic=False,
                                                 key=key))()
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(want_jit), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("embeddings", [False, True])
def test_p1_is_the_successor_exactly(embeddings):
    model = make_pair(embeddings)
    ids, mask = batch()
    ones = jnp.ones(model.num_slots, jnp.float32)
    alone = successor_classifier(model)
    want = alone(ids, attention_mask=mask, deterministic=True)
    for weights in (ones, None):  # all coins on the successor, and inference
        got = model(ids, attention_mask=mask, deterministic=True, weights=weights,
                    compute="select")
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # With dropout: the successor's encoder draws from fold_in(key, 2), the head from
    # fold_in(key, 1) (the module doc's streams).
    key = jax.random.key(4)
    got = model(ids, attention_mask=mask, deterministic=False, key=key, weights=ones,
                compute="select")
    enc_key, head_key = jax.random.fold_in(key, SUCCESSOR_KEY_STREAM), jax.random.fold_in(key, 1)
    if embeddings:
        h = model.successor(ids, attention_mask=mask, deterministic=False, key=enc_key)
        hidden = h.last_hidden_state
    else:
        from jaxformer.attention import padding_mask
        hidden = model.predecessor.encoder.embed(ids, deterministic=False,
                                                 key=jax.random.fold_in(jax.random.fold_in(key, 0), 0))
        hidden, _ = model.successor.blocks(hidden, mask=padding_mask(mask), deterministic=False,
                                           key=enc_key)
    pooled = model.predecessor.encoder.pooler(hidden)
    from jaxformer import functional as F
    pooled = F.dropout(pooled, model.predecessor.dropout_rate, key=head_key, deterministic=False)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(model.predecessor.classifier(pooled)))


def test_mixed_modules_feed_each_other():
    """Weights (0, 1) on a 4 -> 2 pair: predecessor blocks 0-1, then successor block 1."""
    model = make_pair(embeddings=False)
    ids, mask = batch()
    from jaxformer.attention import padding_mask
    m = padding_mask(mask)
    h = model.predecessor.encoder.embed(ids, deterministic=True)
    h, _ = model.predecessor.encoder.blocks.run(h, start=0, stop=2, mask=m, deterministic=True)
    h, _ = model.successor.blocks.run(h, start=1, stop=2, mask=m, deterministic=True)
    want = model.predecessor.classifier(model.predecessor.encoder.pooler(h))
    got = model(ids, attention_mask=mask, deterministic=True,
                weights=jnp.asarray([0.0, 1.0], jnp.float32), compute="select")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    per_example = jnp.asarray([[0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]], jnp.float32)
    got = model(ids, attention_mask=mask, deterministic=True, weights=per_example,
                compute="select")
    for row, coins in enumerate(np.asarray(per_example).T):
        one = model(ids, attention_mask=mask, deterministic=True,
                    weights=jnp.asarray(coins), compute="select")
        np.testing.assert_allclose(np.asarray(got)[row], np.asarray(one)[row], rtol=1e-6,
                                   atol=1e-7)


def test_truncate_encoder_is_the_first_blocks():
    enc = Encoder(CFG, rngs=nnx.Rngs(0))
    ids, mask = batch()
    full = enc(ids, attention_mask=mask, deterministic=True)
    cut = truncate_encoder(enc, 2)
    assert cut.config.num_layers == 2 and len(cut.blocks) == 2
    np.testing.assert_array_equal(
        np.asarray(cut(ids, attention_mask=mask, deterministic=True).last_hidden_state),
        np.asarray(full.hidden_states[2]))
    # A copy: training the cut leaves the source alone.
    cut.blocks[0].ffn.output.bias[...] = cut.blocks[0].ffn.output.bias[...] + 1
    assert not np.array_equal(np.asarray(cut.blocks[0].ffn.output.bias[...]),
                              np.asarray(enc.blocks[0].ffn.output.bias[...]))


def test_successor_classifier_is_a_copy_with_the_predecessors_head():
    model = make_pair(embeddings=False)
    alone = successor_classifier(model)
    assert alone.encoder.config.num_layers == 2 and alone.num_labels == 3
    np.testing.assert_array_equal(np.asarray(alone.classifier.kernel[...]),
                                  np.asarray(model.predecessor.classifier.kernel[...]))
    np.testing.assert_array_equal(np.asarray(alone.encoder.embed.word.embedding[...]),
                                  np.asarray(model.predecessor.encoder.embed.word.embedding[...]))
    alone.classifier.bias[...] = alone.classifier.bias[...] + 1
    assert not np.array_equal(np.asarray(alone.classifier.bias[...]),
                              np.asarray(model.predecessor.classifier.bias[...]))


# --- training ------------------------------------------------------------------------------

def train_steps(model, task, data, steps, *, compute="cond"):
    tx = adamw(1e-2, total_steps=steps)
    trainable = successor_filter(model)
    graphdef, state = init_train_state(model, tx, trainable=trainable)
    traces = []

    def loss_fn(*args, **kwargs):  # runs once per trace of the jitted step, not per call
        traces.append(1)
        return task.loss_fn(*args, **kwargs)

    step = make_train_step(graphdef, tx, loss_fn, trainable=trainable)
    step.traces = traces
    key = jax.random.key(0)
    shares = []
    for s in range(steps):
        b = with_step({k: v[(s * 8) % 32:(s * 8) % 32 + 8] for k, v in data.items()}, s)
        state, metrics = step(state, b, key=key)
        shares.append(float(metrics["successor_share"]))
    return graphdef, state, step, shares


@pytest.mark.parametrize("embeddings", [False, True])
def test_training_freezes_the_predecessor_and_compiles_once(embeddings):
    model = make_pair(embeddings)
    before = jax.tree.map(np.array, nnx.state(model.predecessor))
    succ_before = jax.tree.map(np.array, nnx.state(model.successor))
    task = TheseusTask(TheseusConfig(embeddings=embeddings), num_labels=3)
    data = {k: v for k, v in token_task(32, seed=0).items()}
    data["labels"] = data["labels"] % 3
    graphdef, state, step, shares = train_steps(model, task, data, 6)
    trained = nnx.merge(graphdef, state.params, state.rest)
    # Bit-identical predecessor (head included) after six updates.
    assert_trees_equal(nnx.state(trained.predecessor), before)
    # The successor's blocks moved; its unused pooler did not; embeddings only when drawn.
    after = nnx.state(trained.successor)
    moved = lambda part: not all(np.array_equal(a, b) for a, b in  # noqa: E731
                                 zip(leaves(after[part]), leaves(succ_before[part]), strict=True))
    assert moved("blocks")
    assert moved("embed") == embeddings
    assert not moved("pooler")
    # Different coins across steps (so the next assertion means something) ...
    assert len(set(shares)) > 1, shares
    # ... and one trace (so one compilation) for all of them. Counted in Python, not with
    # `jitted._cache_size()`: that C++ cache can read 0 after other tests in one process.
    assert len(step.traces) == 1


def test_cond_runs_only_the_chosen_branch_and_select_runs_both():
    """What the compiled step computes, read from the optimised HLO: `compute="cond"` keeps an
    XLA conditional per slot; `"select"` has none (both branches, then a select)."""
    model = make_pair(embeddings=True)
    ids, mask = batch()

    def hlo(compute):
        fn = jax.jit(lambda w, key: model(ids, attention_mask=mask, deterministic=False,
                                          key=key, weights=w, compute=compute))
        return fn.lower(jnp.zeros(3, jnp.float32), jax.random.key(0)).compile().as_text()

    assert hlo("cond").count("conditional(") >= 3
    assert "conditional(" not in hlo("select")


def test_same_key_same_draws_in_training():
    task = TheseusTask(TheseusConfig(rate=0.5, per_example=True, compute="select"), num_labels=3)
    model = make_pair(embeddings=False)
    key = jax.random.fold_in(jax.random.key(0), 7)
    a = task.weights_at(model, key, 7, 8)
    b = task.weights_at(model, key, 7, 8)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.shape == (2, 8)


def test_presets_and_rate_metric():
    assert THESEUS_PRESETS["su2020"].embeddings and THESEUS_PRESETS["su2020"].rate == 0.5
    linear = THESEUS_PRESETS["xu2020-linear"]
    assert float(linear.rate_at(1000)) == pytest.approx(0.9)
    assert float(linear.rate_at(2000)) == 1.0


# --- the recipe ----------------------------------------------------------------------------

class Stop(Exception):
    pass


def small_recipe(**changes):
    base = TheseusRecipe(successor_layers=1, batch_size=8, learning_rate=3e-3,
                         predecessor_epochs=1, replacement_epochs=2, successor_epochs=1,
                         evals_per_epoch=1, theseus=TheseusConfig(embeddings=True))
    return dataclasses.replace(base, **changes)


def test_compress_resumes_after_a_kill_in_the_replacement_phase(tmp_path, monkeypatch):
    data = token_task(32, seed=1, length=6)
    dev = token_task(16, seed=2, length=6)
    enc = Encoder(SMALL, rngs=nnx.Rngs(0))
    recipe = small_recipe()
    ref = compress(enc, data, dev, num_labels=2, recipe=recipe, directory=tmp_path / "ref",
                   progress=False)
    assert set(ref.phases) == {"predecessor", "replacement", "successor"}
    for name, phase in ref.phases.items():
        best = max(e["accuracy"] for e in phase["eval_history"])
        assert phase["best"]["accuracy"] == best, name
        assert finalized_steps(tmp_path / "ref" / name / "ckpt" / "best")

    import jaxformer.tasks.theseus_recipe as recipe_module
    real_loop = recipe_module.train_loop

    def killing_loop(*args, desc, **kwargs):
        if desc == "replacement":
            def stop(step, metrics):
                if step == 5:
                    raise Stop
            kwargs["callbacks"] = (stop,)
        return real_loop(*args, desc=desc, **kwargs)

    monkeypatch.setattr(recipe_module, "train_loop", killing_loop)
    with pytest.raises(Stop):
        compress(enc, data, dev, num_labels=2, recipe=recipe, directory=tmp_path / "run",
                 progress=False)
    monkeypatch.setattr(recipe_module, "train_loop", real_loop)
    resumed = compress(enc, data, dev, num_labels=2, recipe=recipe, directory=tmp_path / "run",
                       progress=False)
    assert resumed.phases["predecessor"]["resumed_from"] == 4  # finished: read back
    assert resumed.phases["replacement"]["resumed_from"] == 4  # the last checkpoint before 5
    for name in ref.phases:
        assert resumed.phases[name]["eval_history"] == ref.phases[name]["eval_history"]
    assert_trees_equal(nnx.state(resumed.successor), nnx.state(ref.successor))
    assert_trees_equal(nnx.state(resumed.predecessor), nnx.state(ref.predecessor))


def test_truncation_baseline_trains_the_first_blocks():
    data = token_task(32, seed=1, length=6)
    enc = Encoder(SMALL, rngs=nnx.Rngs(0))
    model, summary = truncation_baseline(enc, data, data, num_labels=2, num_layers=1,
                                         recipe=small_recipe(), progress=False)
    assert model.encoder.config.num_layers == 1
    assert summary["best"]["accuracy"] == max(e["accuracy"] for e in summary["eval_history"])


# --- bad input -----------------------------------------------------------------------------

def test_block_counts_that_do_not_divide():
    with pytest.raises(ValueError, match=r"predecessor_layers=4 is not a multiple of "
                                         r"successor_layers=3; expected one of \[1, 2, 4\]"):
        module_groups(4, 3)
    pred = SequenceClassifier(Encoder(CFG, rngs=nnx.Rngs(0)), 3, rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="is not a multiple of successor_layers=3"):
        TheseusClassifier(pred, Encoder(CFG.replace(num_layers=3), rngs=nnx.Rngs(2)))


def test_mismatched_widths():
    pred = SequenceClassifier(Encoder(CFG, rngs=nnx.Rngs(0)), 3, rngs=nnx.Rngs(1))
    narrow = Encoder(CFG.replace(num_layers=2, hidden_size=16, intermediate_size=32),
                     rngs=nnx.Rngs(2))
    with pytest.raises(ValueError, match="widths must match .* predecessor hidden_size=32, "
                                         "successor hidden_size=16"):
        TheseusClassifier(pred, narrow)
    other_vocab = Encoder(CFG.replace(num_layers=2, vocab_size=64), rngs=nnx.Rngs(2))
    TheseusClassifier(pred, other_vocab, embeddings=False)  # its embeddings are unused
    with pytest.raises(ValueError, match="must agree on vocab_size: predecessor 128, "
                                         "successor 64"):
        TheseusClassifier(pred, other_vocab, embeddings=True)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_rate_outside_unit_interval(rate):
    with pytest.raises(ValueError, match=r"TheseusConfig.rate must be a probability in "
                                         r"\[0, 1\], got"):
        TheseusConfig(rate=rate)
    with pytest.raises(ValueError, match=r"rate must be a probability in \[0, 1\]"):
        replacement_rate(0, schedule="constant", rate=rate)


def test_config_and_weights_errors_name_the_argument():
    with pytest.raises(ValueError, match="TheseusConfig.compute must be 'select' when "
                                         "per_example=True"):
        TheseusConfig(per_example=True)
    with pytest.raises(ValueError, match="TheseusConfig.replace_until must be None with "
                                         "schedule='linear'"):
        TheseusConfig(schedule="linear", replace_until=3)
    with pytest.raises(ValueError, match="TheseusRecipe.successor_layers must be an int >= 1"):
        TheseusRecipe(successor_layers=0)
    model = make_pair(embeddings=True)
    ids, mask = batch()
    with pytest.raises(ValueError, match=r"weights must have shape \[J\] = \(3,\) or \[J, B\] "
                                         r"= \(3, 4\) .* got \(2,\)"):
        model(ids, attention_mask=mask, deterministic=True, weights=jnp.zeros(2, jnp.float32))
    with pytest.raises(ValueError, match="compute='cond' needs one binary weight per slot"):
        model(ids, attention_mask=mask, deterministic=True,
              weights=jnp.zeros((3, 4), jnp.float32))
    task = TheseusTask(TheseusConfig(), num_labels=3)
    with pytest.raises(ValueError, match="needs a 'step' column"):
        task.loss_fn(model, {"input_ids": ids, "labels": jnp.zeros(4, jnp.int32)},
                     key=jax.random.key(0), deterministic=False)


def test_a_predecessor_with_the_wrong_head_size_is_refused(tmp_path):
    data = token_task(16, seed=1, length=6)
    enc = Encoder(SMALL, rngs=nnx.Rngs(0))
    five = SequenceClassifier(Encoder(SMALL, rngs=nnx.Rngs(0)), 5, rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="predecessor has a head of 5 classes; expected "
                                         "num_labels=2"):
        compress(enc, data, data, num_labels=2, recipe=small_recipe(), predecessor=five,
                 progress=False)
    # A predecessor checkpoint of another head size is refused whole, before any array loads.
    recipe = small_recipe()
    three = {**data, "labels": data["labels"] + np.int32(1)}  # labels in [1, 3): 3 classes
    fit_predecessor(enc, three, three, num_labels=3, recipe=recipe,
                    directory=tmp_path / "predecessor", progress=False)
    assert finalized_steps(tmp_path / "predecessor" / "ckpt")
    with pytest.raises(ValueError, match=r"does not match the target state (.|\n)* nothing was "
                                         r"restored(.|\n)*classifier"):
        compress(enc, data, data, num_labels=2, recipe=recipe, directory=tmp_path,
                 progress=False)
