"""GlobalPointer: span scores against a float64 NumPy reference (RoPE written out here), the
masking (padding and j < i never win, finite in every float dtype), Su's multi-label loss
against its closed form, RoPE's relativity, decoding, and the NNX head.

Tolerances: float32 scores vs the float64 reference agree to ``atol = rtol = 1e-5`` (unit-scale
q, k; D <= 16); float32 losses to ``rtol = 1e-6``; RoPE invariances to ``1e-4`` (fp32 angles at
positions up to ~1000 carry ~1000 * 2^-24 rad of error).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxformer.global_pointer import (decode_spans, global_pointer_loss, global_pointer_scores,
                                      mask_value, multilabel_categorical_crossentropy)
from jaxformer.models.global_pointer import GlobalPointer

# ------------------------------------------------------------------------ float64 references


def np_rope(x, positions, layout="interleaved"):
    """RoPE in float64: pair p turns by ``pos * 10000^(-2p/D)`` with [[cos, -sin], [sin, cos]]."""
    x = np.asarray(x, np.float64)
    d = x.shape[-1]
    theta = 10000.0 ** (-2.0 * np.arange(d // 2) / d)
    ang = np.asarray(positions, np.float64)[:, :, None, None] * theta  # [B, T, 1, D/2]
    cos, sin = np.cos(ang), np.sin(ang)
    if layout == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x[..., : d // 2], x[..., d // 2:]
    ya, yb = a * cos - b * sin, a * sin + b * cos
    out = np.empty_like(x)
    if layout == "interleaved":
        out[..., 0::2], out[..., 1::2] = ya, yb
    else:
        out[..., : d // 2], out[..., d // 2:] = ya, yb
    return out


def np_valid(mask, tokens, exclude_lower=True):
    """``[B, T, T]`` bool: both ends real and (optionally) end >= start."""
    real = np.asarray(mask).astype(bool)
    valid = real[:, :, None] & real[:, None, :]
    if exclude_lower:
        valid = valid & np.triu(np.ones((tokens, tokens), bool))[None]
    return valid


def np_scores(q, k, positions=None, layout="interleaved", rope=True):
    """Unmasked ``[B, E, T, T]`` scores in float64."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    b, t, _, d = q.shape
    if rope:
        pos = np.broadcast_to(np.arange(t) if positions is None else positions, (b, t))
        q, k = np_rope(q, pos, layout), np_rope(k, pos, layout)
    return np.einsum("bied,bjed->beij", q, k) / np.sqrt(d)


def np_mcce(scores, labels):
    """Su's loss, term by term: log(1 + sum_neg e^s) + log(1 + sum_pos e^-s), per row."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    rows = (int(np.prod(s.shape[:-1])), s.shape[-1])
    return np.array([np.log1p(np.exp(r[~m]).sum()) + np.log1p(np.exp(-r[m]).sum())
                     for r, m in zip(s.reshape(rows), y.reshape(rows))])


def qk(seed, b=2, t=7, e=3, d=8, dtype=jnp.float32, scale=1.0):
    rng = np.random.default_rng(seed)
    q, k = (scale * rng.normal(size=(2, b, t, e, d))).astype(np.float32)
    return jnp.asarray(q, dtype), jnp.asarray(k, dtype)


MASK = np.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], np.int32)

# ------------------------------------------------------------------------------------ scores


@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("rope", [True, False])
def test_scores_equal_float64_reference(layout, rope):
    q, k = qk(0)
    got = np.asarray(global_pointer_scores(q, k, mask=jnp.asarray(MASK), rope=rope,
                                           rope_layout=layout))
    want = np_scores(q, k, layout=layout, rope=rope)
    valid = np.broadcast_to(np_valid(MASK, 7)[:, None], want.shape)
    assert got.dtype == np.float32 and got.shape == (2, 3, 7, 7)
    np.testing.assert_allclose(got[valid], want[valid], atol=1e-5, rtol=1e-5)
    assert np.all(got[~valid] == mask_value(jnp.float32))


def test_scores_with_explicit_positions_and_no_masking():
    """Packed rows (positions restart mid-row); nothing masked without mask / exclude_lower."""
    q, k = qk(1)
    pos = np.array([[0, 1, 2, 0, 1, 2, 3], [5, 6, 7, 8, 9, 10, 11]], np.int32)
    got = global_pointer_scores(q, k, positions=jnp.asarray(pos), exclude_lower=False)
    np.testing.assert_allclose(np.asarray(got), np_scores(q, k, positions=pos),
                               atol=1e-5, rtol=1e-5)


def test_default_masks_only_the_lower_triangle():
    q, k = qk(2)
    got = np.asarray(global_pointer_scores(q, k))
    lower = np.tril(np.ones((7, 7), bool), -1)
    assert np.all(got[:, :, lower] == mask_value(jnp.float32))
    assert np.all(got[:, :, ~lower] > mask_value(jnp.float32))


# Jitted once per shape and option, so the property tests draw values, not compilations.
masked_scores = jax.jit(lambda q, k, m, exclude_lower: global_pointer_scores(
    q, k, mask=m, exclude_lower=exclude_lower), static_argnums=3)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t=st.sampled_from([1, 2, 6]),
       exclude_lower=st.booleans(), data=st.data())
def test_masked_spans_never_win(seed, t, exclude_lower, data):
    real = data.draw(st.lists(st.lists(st.booleans(), min_size=t, max_size=t)
                              .filter(any), min_size=2, max_size=2))
    mask = np.array(real)
    q, k = qk(seed, t=t, e=2, d=4, scale=30.0)  # large scores: masking must still dominate
    scores = np.asarray(masked_scores(q, k, jnp.asarray(mask), exclude_lower))
    valid = np_valid(mask, t, exclude_lower)
    fill = mask_value(jnp.float32)
    assert np.isfinite(fill) and np.all(np.isfinite(scores))
    for b in range(2):
        assert np.all(scores[b][:, ~valid[b]] == fill)
        for row in scores[b]:
            i, j = np.unravel_index(np.argmax(row), row.shape)
            assert valid[b, i, j], f"masked span ({i}, {j}) won the argmax"
            assert row[i, j] == row[valid[b]].max()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_mask_value_is_finite_in_low_precision(dtype):
    q, k = qk(3, dtype=dtype)
    scores = global_pointer_scores(q, k, mask=jnp.asarray(MASK))
    assert scores.dtype == dtype
    values = np.asarray(scores).astype(np.float32)
    assert np.all(np.isfinite(values))
    assert np.all(values[np.broadcast_to(~np_valid(MASK, 7)[:, None], values.shape)]
                  == np.float32(mask_value(dtype)))
    assert mask_value(jnp.float16) == -32752.0
    loss = global_pointer_loss(scores, jnp.zeros(scores.shape, jnp.int32))
    assert np.isfinite(float(loss))


def test_rope_scores_are_invariant_to_a_position_shift():
    q, k = qk(4, d=16)
    base = global_pointer_scores(q, k, exclude_lower=False)
    shifted = global_pointer_scores(q, k, positions=jnp.arange(7, dtype=jnp.int32)[None] + 977,
                                    exclude_lower=False)
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(base), atol=1e-4, rtol=1e-4)


def test_rope_scores_depend_on_end_minus_start_only():
    """Constant q and k vectors: s[i, j] = q . R_{j-i} k, a Toeplitz matrix."""
    rng = np.random.default_rng(5)
    qv, kv = rng.normal(size=(2, 1, 1, 2, 8)).astype(np.float32)
    q = jnp.asarray(np.broadcast_to(qv, (1, 9, 2, 8)))
    k = jnp.asarray(np.broadcast_to(kv, (1, 9, 2, 8)))
    s = np.asarray(global_pointer_scores(q, k, exclude_lower=False))[0]
    np.testing.assert_allclose(s[:, 1:, 1:], s[:, :-1, :-1], atol=1e-5, rtol=1e-5)
    assert not np.allclose(s[:, 0, 1], s[:, 0, 2])  # and it does depend on j - i


def test_scores_jit_matches_eager():
    q, k = qk(6)
    fn = jax.jit(lambda q, k, m: global_pointer_scores(q, k, mask=m))
    got = np.asarray(fn(q, k, jnp.asarray(MASK)))
    eager = np.asarray(global_pointer_scores(q, k, mask=jnp.asarray(MASK)))
    # XLA fuses the jitted program differently: fp32 rounding apart, masked entries exact.
    np.testing.assert_allclose(got, eager, atol=1e-6, rtol=1e-6)
    assert np.array_equal(got == mask_value(jnp.float32), eager == mask_value(jnp.float32))


def test_scores_bad_input():
    q, k = qk(7)
    with pytest.raises((TypeError, ValueError), match="k"):
        global_pointer_scores(q, k[:, :5])
    with pytest.raises(TypeError, match="dtype"):
        global_pointer_scores(q, k.astype(jnp.bfloat16))
    with pytest.raises((TypeError, ValueError), match="mask"):
        global_pointer_scores(q, k, mask=jnp.ones((2, 6), jnp.int32))
    with pytest.raises(ValueError, match="even head size D, got D=5"):
        global_pointer_scores(q[..., :5], k[..., :5])
    with pytest.raises(ValueError, match="positions"):
        global_pointer_scores(q, k, rope=False, positions=jnp.zeros((1, 7), jnp.int32))

# -------------------------------------------------------------------------------------- loss


def test_loss_equals_closed_form():
    scores = np.array([[0.5, -1.0, 2.0, -3.0],    # two positives
                       [1.5, 0.2, -0.7, 4.0],     # no positive: second term is 0
                       [-2.0, 3.0, 0.0, -0.1]], np.float32)
    labels = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]], np.int32)
    got = np.asarray(multilabel_categorical_crossentropy(jnp.asarray(scores), jnp.asarray(labels)))
    np.testing.assert_allclose(got, np_mcce(scores, labels), rtol=1e-6)
    assert got[1] == pytest.approx(np.log1p(np.exp(scores[1].astype(np.float64)).sum()), rel=1e-6)
    # By hand for row 0: log(1 + e^-1 + e^-3) + log(1 + e^-0.5 + e^-2).
    assert got[0] == pytest.approx(np.log(1 + np.exp(-1) + np.exp(-3))
                                   + np.log(1 + np.exp(-0.5) + np.exp(-2)), rel=1e-6)


def test_global_pointer_loss_is_the_mean_over_batch_and_types():
    rng = np.random.default_rng(8)
    scores = rng.normal(0, 3, (2, 3, 5, 5)).astype(np.float32)
    labels = (rng.random((2, 3, 5, 5)) < 0.1).astype(np.int32)
    labels[0, 1] = 0  # a (example, type) row with no gold span
    want = np_mcce(scores.reshape(6, 25), labels.reshape(6, 25)).mean()
    got = float(global_pointer_loss(jnp.asarray(scores), jnp.asarray(labels)))
    assert got == pytest.approx(want, rel=1e-6)


def test_masked_spans_contribute_nothing_to_the_loss_and_its_gradient():
    q, k = qk(9)
    mask = jnp.asarray(MASK)
    labels = np.zeros((2, 3, 7, 7), np.int32)
    labels[0, 0, 1, 3] = labels[0, 2, 4, 4] = labels[1, 1, 0, 6] = 1  # valid spans only

    def loss(q, k):
        return global_pointer_loss(global_pointer_scores(q, k, mask=mask), jnp.asarray(labels))

    value, (gq, gk) = jax.value_and_grad(loss, argnums=(0, 1))(q, k)
    ref = np_scores(q, k)
    valid = np.broadcast_to(np_valid(MASK, 7)[:, None], ref.shape)
    rows = [np_mcce(r[v][None], y[v][None])[0] for r, y, v in
            zip(ref.reshape(6, 7, 7), labels.reshape(6, 7, 7), valid.reshape(6, 7, 7))]
    assert float(value) == pytest.approx(np.mean(rows), rel=1e-5)
    assert np.all(np.isfinite(np.asarray(gq))) and np.all(np.isfinite(np.asarray(gk)))
    # Padding tokens only start or end masked spans: no gradient reaches them.
    assert np.all(np.asarray(gq)[0, 5:] == 0) and np.all(np.asarray(gk)[0, 5:] == 0)
    assert np.any(np.asarray(gq)[0, :5] != 0)


@jax.jit
def loss_rows_and_grad(scores, labels):
    rows = multilabel_categorical_crossentropy(scores, labels)
    return rows, jax.grad(lambda s: multilabel_categorical_crossentropy(s, labels).sum())(scores)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([0.1, 3.0, 60.0]),
       p_masked=st.sampled_from([0.0, 0.3, 1.0]), p_positive=st.sampled_from([0.0, 0.3, 1.0]))
def test_loss_is_nonnegative_and_finite_with_masked_entries(seed, scale, p_masked, p_positive):
    rng = np.random.default_rng(seed)
    scores = (scale * rng.normal(size=(4, 12))).astype(np.float32)
    masked = rng.random((4, 12)) < p_masked
    scores[masked] = mask_value(jnp.float32)
    labels = ((rng.random((4, 12)) < p_positive) & ~masked).astype(np.int32)
    per_row, grad = loss_rows_and_grad(jnp.asarray(scores), jnp.asarray(labels))
    per_row = np.asarray(per_row)
    assert np.all(per_row >= 0) and np.all(np.isfinite(per_row))
    assert np.all(np.isfinite(np.asarray(grad))) and np.all(np.asarray(grad)[masked] == 0)
    # The masked entries change nothing: dropping them gives the same rows (~0 contribution).
    kept = [np_mcce(s[~m][None], y[~m][None])[0] for s, m, y in zip(scores, masked, labels)]
    np.testing.assert_allclose(per_row, kept, rtol=1e-5, atol=1e-6)


def test_loss_bad_input():
    with pytest.raises((TypeError, ValueError), match="labels"):
        multilabel_categorical_crossentropy(jnp.zeros((2, 3)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises((TypeError, ValueError), match="scores"):
        global_pointer_loss(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 4), jnp.int32))

# ---------------------------------------------------------------------------------- decoding


def test_decode_spans_returns_spans_above_threshold():
    scores = np.full((2, 2, 4, 4), mask_value(jnp.float32), np.float32)
    scores[:, :, np.triu_indices(4)[0], np.triu_indices(4)[1]] = -1.0
    scores[0, 1, 0, 2] = 2.5
    scores[0, 0, 3, 3] = 0.5
    scores[1, 1, 1, 1] = 0.25
    got = decode_spans(jnp.asarray(scores))
    assert got == [[(0, 3, 3, 0.5), (1, 0, 2, 2.5)], [(1, 1, 1, 0.25)]]
    assert decode_spans(scores, threshold=1.0) == [[(1, 0, 2, 2.5)], []]
    assert [len(r) for r in decode_spans(scores, threshold=-1e30)] == [20, 20]  # 2 x 10 valid
    with pytest.raises(ValueError, match="threshold"):
        decode_spans(scores, threshold=float("nan"))

# ------------------------------------------------------------------------------------ module


def test_module_shape_parameters_and_split_convention():
    head = GlobalPointer(16, 3, head_size=8, rngs=nnx.Rngs(0))
    params = nnx.state(head, nnx.Param)
    assert sum(x.size for x in jax.tree.leaves(params)) == 16 * 3 * 2 * 8 + 3 * 2 * 8
    hidden = jax.random.normal(jax.random.key(1), (2, 7, 16), jnp.float32)
    scores = head(hidden, jnp.asarray(MASK))
    assert scores.shape == (2, 3, 7, 7) and scores.dtype == jnp.float32
    # Each type's 2D chunk of the Dense output is [q | k].
    y = np.asarray(hidden) @ np.asarray(head.dense.kernel[...]) + np.asarray(head.dense.bias[...])
    y = y.reshape(2, 7, 3, 2 * 8)
    want = np_scores(y[..., :8], y[..., 8:])
    valid = np.broadcast_to(np_valid(MASK, 7)[:, None], want.shape)
    np.testing.assert_allclose(np.asarray(scores)[valid], want[valid], atol=1e-5, rtol=1e-5)
    no_bias = GlobalPointer(16, 3, head_size=8, use_bias=False, rngs=nnx.Rngs(0))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(no_bias, nnx.Param))) == 16 * 48


def test_module_init_is_truncated_normal_002():
    kernel = np.asarray(GlobalPointer(256, 4, rngs=nnx.Rngs(0)).dense.kernel[...])
    assert kernel.std() == pytest.approx(0.02, rel=0.02)
    assert np.abs(kernel).max() <= 2 * 0.02 / np.sqrt(0.7737413) + 1e-6


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden_size=0, num_types=3), "hidden_size must be an int >= 1, got 0"),
    (dict(hidden_size=16, num_types=-2), "num_types must be an int >= 1, got -2"),
    (dict(hidden_size=16, num_types=True), "num_types must be an int >= 1, got True"),
    (dict(hidden_size=16, num_types=3, head_size=0), "head_size must be an int >= 1, got 0"),
    (dict(hidden_size=16, num_types=3, head_size=7), "head_size must be even with rope=True"),
])
def test_module_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GlobalPointer(**kwargs, rngs=nnx.Rngs(0))


def test_module_rejects_a_float_count():
    # Under the test suite's jaxtyping/beartype hook the annotation `int` rejects it first;
    # without the hook the module's own check does. Either way the message names the argument.
    with pytest.raises((TypeError, ValueError), match="num_types"):
        GlobalPointer(16, 2.5, rngs=nnx.Rngs(0))


def test_module_odd_head_size_without_rope_and_bad_hidden():
    head = GlobalPointer(16, 2, head_size=7, rope=False, rngs=nnx.Rngs(0))
    assert head(jnp.zeros((1, 4, 16), jnp.float32)).shape == (1, 2, 4, 4)
    with pytest.raises(ValueError, match=r"hidden must have last axis H = hidden_size = 16, "
                                         r"got shape \(1, 4, 12\)"):
        head(jnp.zeros((1, 4, 12), jnp.float32))


def test_module_under_jit_after_split_and_merge(nnx_mode):
    head = GlobalPointer(16, 2, head_size=8, rngs=nnx.Rngs(0))
    hidden = jax.random.normal(jax.random.key(2), (2, 7, 16), jnp.float32)
    graphdef, params = nnx.split(head, nnx.Param)

    @jax.jit
    def loss_fn(params, hidden, mask, labels):
        scores = nnx.merge(graphdef, params)(hidden, mask)
        return global_pointer_loss(scores, labels), scores

    labels = jnp.zeros((2, 2, 7, 7), jnp.int32).at[0, 1, 2, 4].set(1)
    (loss, scores), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, hidden, jnp.asarray(MASK), labels)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(head(hidden, jnp.asarray(MASK))),
                               atol=1e-6, rtol=1e-6)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
