"""Kernels against float64 NumPy references and invariants (hypothesis)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxformer import functional as F
from jaxformer.attention import causal_mask, padding_mask, softmax_attention
from jaxformer.pooling import first_last_avg_pool, l2_normalize, mean_pool

ATOL = 1e-5  # fp32 kernels vs float64 NumPy


def np_attention(q, k, v, mask):
    d = q.shape[-1]
    s = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d)
    s = np.where(mask, s, -np.inf)
    s = np.exp(s - s.max(-1, keepdims=True))
    p = s / s.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", p, v)


@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 9), s=st.integers(1, 9), h=st.integers(1, 3),
       d=st.sampled_from([4, 8]), seed=st.integers(0, 2**16))
def test_softmax_attention_matches_numpy(b, t, s, h, d, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.normal(size=(b, n, h, d)) for n in (t, s, s))
    lengths = rng.integers(1, s + 1, size=b)
    mask = (np.arange(s)[None, :] < lengths[:, None])[:, None, None, :]
    got = softmax_attention(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32),
                            jnp.asarray(v, jnp.float32), mask=jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(got, np.float64), np_attention(q, k, v, mask), atol=ATOL)


def test_causal_mask_blocks_the_future(key):
    q = jax.random.normal(key, (1, 6, 2, 4))
    v = jax.random.normal(jax.random.fold_in(key, 1), (1, 6, 2, 4))
    out = softmax_attention(q, q, v, mask=causal_mask(6))
    # Changing the last value vector must not change any earlier output.
    v2 = v.at[:, -1].set(100.0)
    out2 = softmax_attention(q, q, v2, mask=causal_mask(6))
    np.testing.assert_array_equal(np.asarray(out[:, :-1]), np.asarray(out2[:, :-1]))


def test_padded_keys_get_zero_weight(key):
    q = jax.random.normal(key, (2, 5, 2, 4))
    mask = padding_mask(jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], jnp.int32))
    v = jax.random.normal(jax.random.fold_in(key, 1), (2, 5, 2, 4))
    base = softmax_attention(q, q, v, mask=mask)
    moved = softmax_attention(q, q.at[0, 3:].set(50.0), v.at[0, 3:].set(-7.0), mask=mask)
    np.testing.assert_allclose(np.asarray(base[0]), np.asarray(moved[0]), atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(shape=st.sampled_from([(3, 8), (2, 4, 16)]), seed=st.integers(0, 2**16),
       eps=st.sampled_from([1e-12, 1e-5]))
def test_layer_norm_matches_numpy(shape, seed, eps):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * 3 + 1
    g, b = rng.normal(size=shape[-1:]), rng.normal(size=shape[-1:])
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * g + b
    got = F.layer_norm(jnp.asarray(x, jnp.float32), jnp.asarray(g, jnp.float32),
                       jnp.asarray(b, jnp.float32), eps=eps)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=ATOL, rtol=1e-5)


def test_gelu_variants_closed_form():
    from math import erf

    x = np.linspace(-5, 5, 101)
    exact = np.array([0.5 * v * (1 + erf(v / np.sqrt(2))) for v in x])
    tanh = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    xf = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(np.asarray(F.activation("gelu")(xf)), exact, atol=1e-6)
    np.testing.assert_allclose(np.asarray(F.activation("gelu_new")(xf)), tanh, atol=1e-6)
    with pytest.raises(ValueError, match=r"hidden_act='nope' is not supported"):
        F.activation("nope")


def test_dropout_statistics_and_determinism(key):
    x = jnp.ones((200, 500), jnp.float32)
    y = F.dropout(x, 0.1, key=key, deterministic=False)
    kept = np.asarray(y != 0).mean()
    assert abs(kept - 0.9) < 0.005  # 100k Bernoulli(0.9) draws: std 0.001
    np.testing.assert_allclose(np.asarray(y).mean(), 1.0, atol=0.01)  # inverted dropout keeps E[y]
    np.testing.assert_array_equal(np.asarray(y), np.asarray(F.dropout(x, 0.1, key=key, deterministic=False)))
    assert F.dropout(x, 0.1, key=None, deterministic=True) is x
    with pytest.raises(ValueError, match="needs key="):
        F.dropout(x, 0.1, key=None, deterministic=False)


def test_poolings_match_numpy():
    rng = np.random.default_rng(0)
    h1, h2 = rng.normal(size=(3, 6, 4)), rng.normal(size=(3, 6, 4))
    mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6, [1, 0, 0, 0, 0, 0]])
    m = mask[:, :, None]
    want_mean = (h2 * m).sum(1) / m.sum(1)
    j = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    mask_j = jnp.asarray(mask, jnp.int32)
    np.testing.assert_allclose(np.asarray(mean_pool(j(h2), mask_j)), want_mean, atol=ATOL)
    np.testing.assert_allclose(np.asarray(first_last_avg_pool(j(h1), j(h2), mask_j)),
                               (((h1 + h2) / 2) * m).sum(1) / m.sum(1), atol=ATOL)
    unit = np.asarray(l2_normalize(j(want_mean)))
    np.testing.assert_allclose(np.linalg.norm(unit, axis=-1), 1.0, atol=1e-6)


def test_dense_matches_numpy():
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=(2, 3, 5)), rng.normal(size=(5, 7)), rng.normal(size=(7,))
    got = F.dense(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32))
    np.testing.assert_allclose(np.asarray(got, np.float64), x @ w + b, atol=ATOL)


@pytest.mark.parametrize("tile", [64, 128])
def test_query_tiles_equal_one_pass(tile):
    """Tiled queries (`lax.map` over W-row tiles) give one pass's outputs, gradients and,
    with dropout, the very same masks (each weight is hashed at its index in [B, H, T, S])."""
    from jaxformer.attention import softmax_attention

    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 256, 3, 8))
    lengths = jnp.array([256, 200])
    key_mask = padding_mask((jnp.arange(256)[None, :] < lengths[:, None]).astype(jnp.int32))
    for mask in (key_mask, key_mask & causal_mask(256)):  # without and with a query axis
        kwargs = dict(mask=mask, dropout_rate=0.2, key=jax.random.key(5), deterministic=False)
        one = softmax_attention(q, k, v, query_tile=None, **kwargs)
        tiled = softmax_attention(q, k, v, query_tile=tile, **kwargs)
        np.testing.assert_allclose(np.asarray(tiled), np.asarray(one), atol=1e-6, rtol=1e-6)
        grad = lambda t: jax.grad(  # noqa: E731
            lambda q: jnp.sum(softmax_attention(q, k, v, query_tile=t, **kwargs) ** 2))(q)
        np.testing.assert_allclose(np.asarray(grad(tile)), np.asarray(grad(None)), atol=1e-5)


def test_query_tile_policy_and_errors():
    from jaxformer.attention import AUTO_TILE_FROM, QUERY_TILE, resolve_query_tile

    on_cpu = jax.default_backend() == "cpu"
    assert resolve_query_tile("auto", AUTO_TILE_FROM) == (QUERY_TILE if on_cpu else None)
    assert resolve_query_tile("auto", AUTO_TILE_FROM // 2) is None
    assert resolve_query_tile("auto", AUTO_TILE_FROM + 1) is None  # W must divide T
    assert resolve_query_tile(512, 512) is None and resolve_query_tile(None, 4096) is None
    with pytest.raises(ValueError, match="query_tile=100 must divide the number of queries T=256"):
        resolve_query_tile(100, 256)
    for bad in (0, True, "big"):
        with pytest.raises(ValueError, match="query_tile must be 'auto', None or an int >= 1"):
            resolve_query_tile(bad, 256)


def test_deferred_normalisation_survives_fp16_sums():
    """The unnormalised sum over S keys (here 4096 x 20 = 81920) exceeds fp16's 65504: it is
    accumulated and divided in fp32, so the output is the exact mean, 20."""
    from jaxformer.attention import softmax_attention

    q = jnp.zeros((1, 4, 1, 8), jnp.float16)  # equal scores: uniform weights
    k = jnp.zeros((1, 4096, 1, 8), jnp.float16)
    v = jnp.full((1, 4096, 1, 8), 20.0, jnp.float16)
    out = softmax_attention(q, k, v)
    assert out.dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(out, np.float32), 20.0)
