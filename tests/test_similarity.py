"""Cosine scores and Spearman's rho on device, against scipy.stats (ties included)."""

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import require
from jaxformer.similarity import cosine_rows, pair_spearman, pearson, rank_average, spearman

scipy_stats = require("scipy.stats")

# Few distinct values force ties; scipy's rankdata(method="average") is the reference.
tied = hnp.arrays(np.float32, st.integers(3, 60),
                  elements=st.sampled_from([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]))


@settings(max_examples=60, deadline=None)
@given(tied)
def test_rank_average_equals_scipy_rankdata(x):
    np.testing.assert_array_equal(np.asarray(rank_average(jnp.asarray(x))),
                                  scipy_stats.rankdata(x, method="average"))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_spearman_equals_scipy_with_ties(data):
    x = data.draw(tied)  # constant draws included: both sides then give NaN
    y = data.draw(hnp.arrays(np.float32, x.shape, elements=st.sampled_from([0.0, 1.0, 2.0, 2.5])))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's ConstantInputWarning
        expected = scipy_stats.spearmanr(x, y).statistic
    got = float(spearman(jnp.asarray(x), jnp.asarray(y)))
    if np.isnan(expected):  # a constant side has no ranking
        assert np.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-5)


def test_spearman_at_sts_scale_equals_scipy():
    """LCQMC-sized (12,500 pairs, 0/1 labels: one big tie block per label)."""
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 12_500).astype(np.float32)
    pred = (gold + rng.normal(0, 2, gold.shape)).astype(np.float32)
    expected = scipy_stats.spearmanr(pred, gold).statistic
    assert float(spearman(jnp.asarray(pred), jnp.asarray(gold))) == pytest.approx(expected, abs=2e-6)


def test_pearson_equals_numpy_float64():
    rng = np.random.default_rng(1)
    x = rng.normal(1e3, 1.0, 500).astype(np.float32)  # a large mean: centring matters
    y = (x + rng.normal(0, 1, 500)).astype(np.float32)
    expected = np.corrcoef(x.astype(np.float64), y.astype(np.float64))[0, 1]
    assert float(pearson(jnp.asarray(x), jnp.asarray(y))) == pytest.approx(expected, abs=1e-5)


def test_pair_spearman_is_cosine_then_spearman():
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=(2, 40, 8)).astype(np.float32)
    gold = rng.integers(0, 6, 40).astype(np.float32)
    u64, v64 = u.astype(np.float64), v.astype(np.float64)
    cos = (u64 * v64).sum(1) / np.linalg.norm(u64, axis=1) / np.linalg.norm(v64, axis=1)
    np.testing.assert_allclose(np.asarray(cosine_rows(jnp.asarray(u), jnp.asarray(v))), cos,
                               atol=1e-6)
    assert float(pair_spearman(jnp.asarray(u), jnp.asarray(v), jnp.asarray(gold))) == \
        pytest.approx(scipy_stats.spearmanr(cos, gold).statistic, abs=1e-5)


def test_spearman_runs_on_device_under_jit():
    x = jnp.arange(10, dtype=jnp.float32)
    lowered = jax.jit(spearman).lower(x, x[::-1])
    assert "sort" in lowered.as_text()
    assert float(spearman(x, x[::-1])) == pytest.approx(-1.0)


def test_bad_shapes_are_named():
    # The functions' own checks, beneath the test run's jaxtyping hook (which refuses first).
    with pytest.raises(ValueError, match="u and v: expected the same"):
        inspect.unwrap(cosine_rows)(jnp.zeros((3, 4)), jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match="x: expected a 1-D"):
        inspect.unwrap(rank_average)(jnp.zeros((3, 4)))
