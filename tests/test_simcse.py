"""SimCSE: the pure losses against independent float64 NumPy references (the post's equation,
Su's interleaved code, the paper's supervised eq. 5, Wang & Isola's metrics), the all-gather
form on 8 devices against one device (values and gradients), and `SimCSETask` in `fit`, with and
without a mesh.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, PartitionSpec as P

from jaxformer.contrastive import alignment, simcse_loss, supervised_simcse_loss, uniformity
from jaxformer.io.corpora import SPECIAL_TOKENS
from jaxformer.io.tokenizer import WordPieceTokenizer, write_vocab
from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.sentence import pool
from jaxformer.tasks import SimCSETask, fit, simcse_data
from jaxformer.train.loop import LoopConfig
from jaxformer.train.optim import adamw

B, E = 16, 6


# XLA's optimisation passes dominate these tests' CPU compile time (conftest.fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")




def views(seed: int = 0, rows: int = B) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two correlated float32 views and an unrelated third set ``[rows, E]``."""
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=(rows, E)).astype(np.float32)
    z2 = (z1 + 0.5 * rng.normal(size=(rows, E))).astype(np.float32)
    z3 = rng.normal(size=(rows, E)).astype(np.float32)
    return z1, z2, z3


def unit64(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


# ---------------------------------------------------------------- references (float64 NumPy)
def post_equation(z1, z2, tau, weights=None):
    """Su's equation term by term: rows i, views α; padding rows neither anchors nor negatives."""
    h = (unit64(z1), unit64(z2))
    w = np.ones(len(z1)) if weights is None else np.asarray(weights, np.float64)
    total = 0.0
    for i in range(len(z1)):
        if w[i] == 0:
            continue
        for a in (0, 1):
            e = lambda x, y: np.exp(x @ y / tau)  # noqa: E731
            same = sum(e(h[a][i], h[a][j]) for j in range(len(z1)) if j != i and w[j] > 0)
            other = sum(e(h[a][i], h[1 - a][j]) for j in range(len(z1)) if w[j] > 0 or j == i)
            total += w[i] * -np.log(e(h[a][i], h[1 - a][i]) / (same + other))
    return total / (2 * w.sum())


def su_code(z1, z2, tau):
    """bojone/SimCSE's `simcse_loss`: interleaved rows, diagonal masked, CE to the partner."""
    y = unit64(np.stack([z1, z2], axis=1).reshape(-1, z1.shape[1]))  # [x1, x1', x2, x2', ...]
    sim = (y @ y.T - np.eye(len(y)) * 1e12) / tau
    idx = np.arange(len(y))
    target = idx + 1 - idx % 2 * 2
    log_softmax = sim - np.log(np.exp(sim - sim.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - sim.max(1, keepdims=True)
    return -log_softmax[idx, target].mean()


def supervised_equation(anchor, positive, negative, tau, weights=None):
    """The paper's eq. 5, term by term."""
    a, p = unit64(anchor), unit64(positive)
    n = None if negative is None else unit64(negative)
    w = np.ones(len(a)) if weights is None else np.asarray(weights, np.float64)
    total = 0.0
    for i in range(len(a)):
        if w[i] == 0:
            continue
        keep = [j for j in range(len(a)) if w[j] > 0 or j == i]
        den = sum(np.exp(a[i] @ p[j] / tau) for j in keep)
        if n is not None:
            den += sum(np.exp(a[i] @ n[j] / tau) for j in keep)
        total += w[i] * -np.log(np.exp(a[i] @ p[i] / tau) / den)
    return total / w.sum()


# ---------------------------------------------------------------- pure losses
# Jitted once per shape: eager calls would compile every op on its own.
jit_simcse_loss = jax.jit(simcse_loss, static_argnames=("temperature",))
jit_supervised_simcse_loss = jax.jit(supervised_simcse_loss, static_argnames=("temperature",))
jit_alignment = jax.jit(alignment, static_argnums=2)
jit_uniformity = jax.jit(uniformity, static_argnums=1)


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_simcse_loss_matches_post_equation_and_su_code(tau):
    z1, z2, _ = views()
    loss, metrics = jit_simcse_loss(jnp.asarray(z1), jnp.asarray(z2), temperature=tau)
    np.testing.assert_allclose(float(loss), post_equation(z1, z2, tau), rtol=2e-5)
    np.testing.assert_allclose(float(loss), su_code(z1, z2, tau), rtol=2e-5)
    cos = np.sum(unit64(z1) * unit64(z2), axis=1).mean()
    np.testing.assert_allclose(float(metrics["positive_cosine"]), cos, rtol=1e-5)


def test_simcse_loss_weights_drop_padding_rows():
    z1, z2, _ = views()
    w = np.array([1.0] * 11 + [0.0] * 5, np.float32)
    loss, _ = jit_simcse_loss(jnp.asarray(z1), jnp.asarray(z2), weights=jnp.asarray(w))
    np.testing.assert_allclose(float(loss), post_equation(z1, z2, 0.05, w), rtol=2e-5)
    # Weight 0 removes a row entirely: the same as the batch of the real rows alone.
    alone, _ = jit_simcse_loss(jnp.asarray(z1[:11]), jnp.asarray(z2[:11]))
    np.testing.assert_allclose(float(loss), float(alone), rtol=1e-6)
    # Fractional weights weigh the anchors; every weight 0 gives 0, not NaN.
    frac = np.linspace(0.5, 2.0, B).astype(np.float32)
    loss, _ = jit_simcse_loss(jnp.asarray(z1), jnp.asarray(z2), weights=jnp.asarray(frac))
    np.testing.assert_allclose(float(loss), post_equation(z1, z2, 0.05, frac), rtol=2e-5)
    zero, _ = jit_simcse_loss(jnp.asarray(z1), jnp.asarray(z2),
                              weights=jnp.zeros((B,), jnp.float32))
    assert float(zero) == 0.0


@pytest.mark.parametrize("with_negatives", [True, False])
def test_supervised_loss_matches_equation(with_negatives):
    a, p, n = views(1)
    w = np.array([1.0] * 13 + [0.0] * 3, np.float32)
    for weights in (None, w):
        loss, _ = jit_supervised_simcse_loss(
            jnp.asarray(a), jnp.asarray(p), jnp.asarray(n) if with_negatives else None,
            temperature=0.05, weights=None if weights is None else jnp.asarray(weights))
        want = supervised_equation(a, p, n if with_negatives else None, 0.05, weights)
        np.testing.assert_allclose(float(loss), want, rtol=2e-5)


def test_alignment_and_uniformity_match_float64():
    z1, z2, _ = views(2)
    u1, u2 = unit64(z1), unit64(z2)
    for alpha in (2.0, 1.0):
        want = np.mean(np.linalg.norm(u1 - u2, axis=1) ** alpha)
        np.testing.assert_allclose(float(jit_alignment(jnp.asarray(z1), jnp.asarray(z2), alpha)),
                                   want, rtol=1e-5)
    for t in (2.0, 5.0):
        pairs = [np.sum((u1[i] - u1[j]) ** 2) for i in range(B) for j in range(i + 1, B)]
        want = np.log(np.mean(np.exp(-t * np.array(pairs))))
        np.testing.assert_allclose(float(jit_uniformity(jnp.asarray(z1), t)), want, rtol=1e-5)
    # Weights 0/1 select rows: the same as the real rows alone.
    w = jnp.asarray(np.array([1.0] * 9 + [0.0] * 7, np.float32))
    np.testing.assert_allclose(float(jit_uniformity(jnp.asarray(z1), weights=w)),
                               float(jit_uniformity(jnp.asarray(z1[:9]))), rtol=1e-5)
    np.testing.assert_allclose(float(jit_alignment(jnp.asarray(z1), jnp.asarray(z2), weights=w)),
                               float(jit_alignment(jnp.asarray(z1[:9]), jnp.asarray(z2[:9]))),
                               rtol=1e-6)
    assert float(jit_uniformity(jnp.asarray(z1[:1]))) == 0.0  # no pair
    # Identical views: alignment 0 with a finite gradient (no NaN from the norm at 0).
    grad = jax.jit(jax.grad(lambda z: alignment(z, z)))(jnp.asarray(z1))
    assert float(jit_alignment(jnp.asarray(z1), jnp.asarray(z1))) == 0.0
    assert np.isfinite(np.asarray(grad)).all()


# ---------------------------------------------------------------- all-gather on 8 devices
def linear_embed(params, x):
    return jnp.tanh(x @ params["w"] + params["b"][None, :])


@pytest.mark.parametrize("supervised", [False, True])
def test_all_gather_loss_and_gradients_match_one_device(mesh, supervised):
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.normal(size=(5, E)).astype(np.float32)),
              "b": jnp.asarray(rng.normal(size=(E,)).astype(np.float32))}
    xs = [jnp.asarray(rng.normal(size=(B, 5)).astype(np.float32)) for _ in range(3)]
    xs[1] = xs[0] + 0.3 * xs[1]  # a correlated positive view
    w = jnp.asarray(np.array([1.0] * 13 + [0.0] * 3, np.float32))

    def loss_of(z, weights, axis_name=None):
        if supervised:
            return supervised_simcse_loss(z[0], z[1], z[2], axis_name=axis_name,
                                          weights=weights)[0]
        return simcse_loss(z[0], z[1], axis_name=axis_name, weights=weights)[0]

    def single(params, xs, weights):
        return loss_of([linear_embed(params, x) for x in xs], weights)

    def local(params, xs, weights):
        return loss_of([linear_embed(params, x) for x in xs], weights, axis_name="data")

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data"), P("data")),
                            out_specs=P())
    # Jitted: an eager shard_map dispatches every op to 8 devices one by one (slow on CPU).
    # The loss, and its gradients w.r.t. the parameters and the (sharded) inputs.
    value_and_grads = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1)))  # noqa: E731
    got_value, got = value_and_grads(sharded)(params, xs, w)
    want_value, want = value_and_grads(single)(params, xs, w)
    # A psum over 8 devices adds in another order: rtol 5e-6 (measured up to 1.2e-6).
    np.testing.assert_allclose(float(got_value), float(want_value), rtol=5e-6)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(want[1][0][13:])).max() == 0.0  # padding rows get no gradient

    # Per-device gradients taken inside shard_map (the data-parallel pattern): the replicated
    # parameters get the global gradient, as on one device.
    inner = jax.jit(jax.shard_map(lambda p, x, wt: jax.value_and_grad(local)(p, x, wt),
                                  mesh=mesh, in_specs=(P(), P("data"), P("data")),
                                  out_specs=(P(), P())))
    value, grads = inner(params, xs, w)
    np.testing.assert_allclose(float(value), float(want_value), rtol=5e-6)  # the psum, as above
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want[0]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- SimCSETask
def tiny(**overrides) -> EncoderConfig:
    return EncoderConfig.tiny(num_layers=1, **overrides)


def sentences(n: int, seed: int, length: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 128, size=(n, length)).astype(np.int32)
    ids[:, 0] = 2
    mask = np.ones((n, length), np.int32)
    mask[: n // 2, length - 2:] = 0  # some padding, so the poolings' masks matter
    return {"input_ids": ids, "attention_mask": mask}


def jitted_loss(task: SimCSETask, *, deterministic: bool):
    """``task.loss_fn`` under one jit (eager encoder ops would each compile on their own)."""
    return jax.jit(lambda model, batch, key: task.loss_fn(model, batch, key=key,
                                                          deterministic=deterministic))


def test_no_dropout_views_are_identical():
    task = SimCSETask(tiny(), dropout=0.0, pooling="mean")
    model = task.build_model(rngs=nnx.Rngs(params=0))
    batch = {k: jnp.asarray(v) for k, v in sentences(8, 1).items()}

    @jax.jit
    def run(model, batch, key):
        loss, metrics = task.loss_fn(model, batch, key=key, deterministic=False)
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                    deterministic=True)
        return loss, metrics, pool(out, batch["attention_mask"], "mean")

    loss, metrics, z = run(model, batch, jax.random.key(0))
    # Identical views: l_i = log(1 + 2 Σ_{j≠i} e^{(cos_ij - 1)/τ}) for both views.
    cos = unit64(z) @ unit64(z).T
    off = np.exp((cos - 1.0) / 0.05) * (1.0 - np.eye(len(cos)))
    np.testing.assert_allclose(float(loss), np.mean(np.log1p(2.0 * off.sum(1))), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["positive_cosine"]), 1.0, rtol=1e-6)
    assert float(metrics["alignment"]) < 1e-10


def test_dropout_rate_reaches_a_pretrained_encoder():
    encoder = Encoder(tiny(hidden_dropout=0.0, attention_dropout=0.0), rngs=nnx.Rngs(params=0))
    task = SimCSETask(None, dropout=0.3)
    model = task.build_model(rngs=nnx.Rngs(params=1), encoder=encoder)
    assert (model.config.hidden_dropout, model.config.attention_dropout) == (0.3, 0.3)
    assert task.encoder_of(model) is model
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(encoder)),
                    strict=True):
        assert a is b  # the same parameters, not copies
    batch = {k: jnp.asarray(v) for k, v in sentences(8, 2).items()}
    _, metrics = jitted_loss(task, deterministic=False)(model, batch, jax.random.key(0))
    assert float(metrics["positive_cosine"]) < 0.999  # dropout made two different views
    with pytest.raises(ValueError, match=r"expected dropout rates \(hidden, attention\) = "
                                         r"\(0.3, 0.3\), got \(0.0, 0.0\)"):
        task.loss_fn(encoder, batch, key=jax.random.key(0), deterministic=False)
    with pytest.raises(ValueError, match="build_model needs encoder="):
        task.build_model(rngs=nnx.Rngs(params=0))
    # Linear attention has no probabilities to drop: its attention rate stays 0.
    linear = SimCSETask(tiny(attention="linear", attention_dropout=0.0), dropout=0.3)
    assert linear.build_model(rngs=nnx.Rngs(params=0)).config.attention_dropout == 0.0


def test_task_weights_ignore_padding_rows():
    task = SimCSETask(tiny(), pooling="first-last-avg")
    model = task.build_model(rngs=nnx.Rngs(params=0))
    data = sentences(8, 3)
    padded = {k: jnp.asarray(np.concatenate([v, v[:3]])) for k, v in data.items()}
    padded["weights"] = jnp.asarray(np.array([1.0] * 8 + [0.0] * 3, np.float32))
    real = {k: jnp.asarray(v) for k, v in data.items()}
    loss_fn = jitted_loss(task, deterministic=True)
    got, want = loss_fn(model, padded, None), loss_fn(model, real, None)
    for name in ("loss", "positive_cosine", "alignment", "uniformity"):
        a = got[0] if name == "loss" else got[1][name]
        b = want[0] if name == "loss" else want[1][name]
        np.testing.assert_allclose(float(a), float(b), rtol=1e-5, atol=1e-7)


def test_fit_lowers_the_loss_and_a_mesh_matches_one_device(mesh):
    task = SimCSETask(tiny(), dropout=0.3)
    model = task.build_model(rngs=nnx.Rngs(params=0))
    assert (model.config.hidden_dropout, model.config.attention_dropout) == (0.3, 0.3)
    logs = {None: [], "mesh": []}
    for name, m in ((None, None), ("mesh", mesh)):
        fit(task, model, sentences(32, 4), tx=adamw(3e-3, total_steps=4), mesh=m,
            config=LoopConfig(total_steps=4, batch_size=16), progress=False,
            callbacks=[lambda step, metrics, log=logs[name]: log.append(metrics)])
    losses = [m["loss"] for m in logs[None]]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    # fp32 with another summation order over 8 shards; the dropout masks do not depend on the
    # sharding (counter-hash bits of the global index).
    for single, sharded in zip(logs[None], logs["mesh"], strict=True):
        for name in ("loss", "positive_cosine", "alignment", "uniformity"):
            np.testing.assert_allclose(sharded[name], single[name], rtol=1e-5, atol=1e-6)


def test_supervised_task_and_simcse_data(tmp_path):
    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *"abcdefghijklmnopqrstuvwxyz"])}
    write_vocab(tmp_path, vocab)
    tok = WordPieceTokenizer.from_directory(tmp_path, lowercase=True)
    anchors = ["a b c", "d e", "f g h i j", "k"]
    data = simcse_data(tok, anchors, 16, positives=["a b", "d e f g h i", "f", "k l"],
                       negatives=["x", "y z", "q r s", "t u v w"])
    assert sorted(data) == sorted(p + c for p in ("", "pos_", "neg_")
                                  for c in ("input_ids", "attention_mask", "token_type_ids"))
    assert {v.shape for v in data.values()} == {(4, 8)}  # longest: [CLS] d e f g h i [SEP]
    assert data["input_ids"][3].tolist()[:4] == [tok.cls_id, vocab["k"], tok.sep_id, tok.pad_id]
    assert data["attention_mask"][3].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]

    task = SimCSETask(tiny(vocab_size=len(vocab)), supervised=True, pooling="mean")
    model = task.build_model(rngs=nnx.Rngs(params=0))
    batch = {k: jnp.asarray(v) for k, v in data.items()}

    @jax.jit
    def run(model, batch):
        embed = lambda p: pool(model(batch[p + "input_ids"], deterministic=True,  # noqa: E731
                                     attention_mask=batch[p + "attention_mask"]),
                               batch[p + "attention_mask"], "mean")
        want, _ = supervised_simcse_loss(embed(""), embed("pos_"), embed("neg_"))
        params = nnx.state(model, nnx.Param)
        loss_of = lambda p: task.loss_fn(nnx.merge(nnx.graphdef(model), p),  # noqa: E731
                                         batch, key=None, deterministic=True)[0]
        return *jax.value_and_grad(loss_of)(params), want

    loss, grads, want = run(model, batch)
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    unsup = simcse_data(tok, anchors, 16)
    assert sorted(unsup) == ["attention_mask", "input_ids", "token_type_ids"]
    with pytest.raises(ValueError, match="hard negatives need positives"):
        simcse_data(tok, anchors, 16, negatives=anchors)
    with pytest.raises(ValueError, match=r"pos_sentences: expected 4 \(one per sentence\), got 1"):
        simcse_data(tok, anchors, 16, positives=["a"])


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("field, value, match", [
    ("temperature", 0.0, r"temperature: expected a finite float > 0, got 0.0"),
    ("temperature", -0.05, r"temperature: expected a finite float > 0"),
    ("temperature", float("nan"), r"temperature: expected a finite float > 0"),
    ("dropout", 1.0, r"dropout: expected a float in \[0, 1\), got 1.0"),
    ("dropout", -0.1, r"dropout: expected a float in \[0, 1\)"),
    ("attention_dropout", 1.5, r"attention_dropout: expected a float in \[0, 1\)"),
    ("pooling", "max", r"pooling: expected one of \['cls', 'mean', 'first-last-avg', "
                       r"'pooler'\], got 'max'"),
])
def test_bad_task_fields(field, value, match):
    with pytest.raises(ValueError, match=match):
        SimCSETask(tiny(), **{field: value})


def test_bad_task_config_and_data():
    with pytest.raises(ValueError, match=r"pooling='pooler' needs an encoder with a pooler"):
        SimCSETask(tiny(use_pooler=False), pooling="pooler")
    with pytest.raises(TypeError, match="supervised"):
        SimCSETask(tiny(), supervised=1)
    task = SimCSETask(tiny())
    data = sentences(8, 0)
    assert task.num_examples(data) == 8
    with pytest.raises(ValueError, match=r"missing \['attention_mask'\]"):
        task.num_examples({"input_ids": data["input_ids"]})
    with pytest.raises(ValueError, match=r"unknown keys \['pos_input_ids'\] \(pos_\*/neg_\* "
                                         r"columns need supervised=True\)"):
        task.num_examples({**data, "pos_input_ids": data["input_ids"]})
    sup = dataclasses.replace(task, supervised=True)
    with pytest.raises(ValueError, match=r"missing \['pos_input_ids', 'pos_attention_mask'\]"):
        sup.num_examples(data)
    with pytest.raises(ValueError, match="one common T"):
        sup.num_examples({**data, "pos_input_ids": data["input_ids"][:, :5],
                          "pos_attention_mask": data["attention_mask"][:, :5]})
    with pytest.raises(ValueError, match="equal length N"):
        task.num_examples({**data, "attention_mask": data["attention_mask"][:4]})


def test_bad_loss_inputs():
    z1, z2, _ = views()
    a, b = jnp.asarray(z1), jnp.asarray(z2)
    with pytest.raises(ValueError, match=r"z2: expected shape \[B, E\] = \(16, 6\) like the "
                                         r"first embeddings, got \(8, 6\)"):
        simcse_loss(a, b[:8])
    with pytest.raises(ValueError, match=r"z1: expected an array of rank 2 \[B, E\], got shape "
                                         r"\(16, 6, 1\)"):
        simcse_loss(a[..., None], b[..., None])
    with pytest.raises(ValueError, match=r"weights: expected shape \[B\] = \(16,\), got \(8,\)"):
        simcse_loss(a, b, weights=jnp.ones((8,), jnp.float32))
    with pytest.raises(ValueError, match="temperature: expected a finite float > 0, got -1.0"):
        simcse_loss(a, b, temperature=-1.0)
    with pytest.raises(ValueError, match=r"hard_negative: expected shape \[B, E\] = \(16, 6\)"):
        supervised_simcse_loss(a, b, b[:, :3])
    with pytest.raises(TypeError, match="z1: expected a floating array, got dtype int32"):
        simcse_loss(a.astype(jnp.int32), b.astype(jnp.int32))
