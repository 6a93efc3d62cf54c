"""`jaxformer.logreg`: post 8578's closed form against scikit-learn, streaming and sharded.

References: scikit-learn's `LinearDiscriminantAnalysis(solver="lsqr")` (the same Gaussian,
shared-covariance model, solved by its own code) and `sklearn.covariance.ledoit_wolf_shrinkage`;
the whitened identity Σ = I − Σ p_c m_cᵀ m_c is checked with NumPy alone. Parity runs in float64.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from jaxformer.logreg import (ClassStats, batch_stats, fit_analytic, ledoit_wolf_intensity,
                              merge_stats, sharded_stats, stream_stats)

PARITY = 1e-6  # decision functions within 1e-6 of scikit-learn, float64
LOADERS = {"breast_cancer": load_breast_cancer, "wine": load_wine, "iris": load_iris,
           "digits": load_digits}


def data(name):
    x, y = LOADERS[name](return_X_y=True)
    return x.astype(np.float64), y.astype(np.int32)


# digits with whitening is not a case: its Σ is singular, so it needs shrinkage, and shrinking
# towards I in whitened coordinates is another model than scikit-learn's.
@pytest.mark.parametrize("name, whiten", [(n, w) for n in LOADERS for w in (False, True)
                                          if not (n == "digits" and w)])
def test_matches_sklearn_lda(name, whiten):
    x, y = data(name)
    # digits has constant pixels, so Σ is singular: both sides get the same fixed shrinkage
    # (shrinking each class covariance, as scikit-learn does, equals shrinking the pooled one).
    shrinkage = 0.1 if name == "digits" else None
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(x, y)
    with jax.enable_x64(True):
        model = fit_analytic(jnp.asarray(x), jnp.asarray(y), shrinkage=shrinkage, whiten=whiten)
        got = np.asarray(model.decision_function(jnp.asarray(x)))
        pred = np.asarray(model.predict(jnp.asarray(x)))
    want = lda.decision_function(x)
    assert got.shape == want.shape  # [N] for two classes, [N, C] otherwise
    np.testing.assert_allclose(got, want, rtol=0, atol=PARITY * max(1.0, np.abs(want).max()))
    np.testing.assert_array_equal(pred, lda.predict(x))


def test_whitened_covariance_identity():
    """Post 8578: after whitening (global mean 0, covariance I) the pooled within-class
    covariance is I − Σ_c p_c m_cᵀ m_c (NumPy only, no kit code)."""
    x, y = data("wine")
    mu = x.mean(0)
    lam, u = np.linalg.eigh(np.cov(x.T, bias=True))
    z = (x - mu) @ (u / np.sqrt(lam))
    classes = np.unique(y)
    p = np.array([np.mean(y == c) for c in classes])
    m = np.stack([z[y == c].mean(0) for c in classes])
    within = sum(pc * np.cov(z[y == c].T, bias=True) for pc, c in zip(p, classes, strict=True))
    np.testing.assert_allclose(within, np.eye(x.shape[1]) - (p[:, None] * m).T @ m, atol=1e-10)


@pytest.mark.parametrize("name", ["breast_cancer", "digits"])
def test_ledoit_wolf(name):
    x, y = data(name)
    with jax.enable_x64(True):
        stats = batch_stats(jnp.asarray(x), jnp.asarray(y), num_classes=int(y.max()) + 1)
        alpha = float(ledoit_wolf_intensity(stats))
        got = np.asarray(fit_analytic(stats, shrinkage="ledoit-wolf").decision_function(
            jnp.asarray(x)))
    assert alpha == pytest.approx(ledoit_wolf_shrinkage(x), rel=1e-9)
    want = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=alpha).fit(x, y).decision_function(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=PARITY * max(1.0, np.abs(want).max()))


def _assert_stats_close(a: ClassStats, b: ClassStats, rtol=1e-12):
    for name, u, v in zip(ClassStats._fields, a, b, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=1e-9, err_msg=name)


def test_streaming_merging_and_sharding_equal_one_pass():
    x, y = data("digits")
    x, y = x[:1792], y[:1792]  # divisible by the 8 virtual devices
    with jax.enable_x64(True):
        one = batch_stats(jnp.asarray(x), jnp.asarray(y), num_classes=10)
        streamed = stream_stats(((x[i:i + 100], y[i:i + 100]) for i in range(0, 1792, 100)),
                                num_classes=10, dim=64, dtype=jnp.float64)
        halves = merge_stats(batch_stats(jnp.asarray(x[:700]), jnp.asarray(y[:700]), num_classes=10),
                             batch_stats(jnp.asarray(x[700:]), jnp.asarray(y[700:]), num_classes=10))
        mesh = jax.make_mesh((8,), ("data",))
        sharded = sharded_stats(x, y, num_classes=10, mesh=mesh)
        for other in (streamed, halves, sharded):
            _assert_stats_close(one, other)
        a = fit_analytic(streamed, shrinkage=0.1).decision_function(jnp.asarray(x))
        b = fit_analytic(jnp.asarray(x), jnp.asarray(y), shrinkage=0.1).decision_function(
            jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-8)
    # Memory is O(C·E + E²) whatever N: the statistics have no N axis.
    assert [tuple(s.shape) for s in streamed] == [(10,), (10, 64), (64, 64), (), (64,)]


def test_padded_rows_with_zero_weight_do_not_count():
    x, y = data("iris")
    with jax.enable_x64(True):
        pad_x = np.concatenate([x, np.full((6, 4), 1e3)])
        pad_y = np.concatenate([y, np.zeros(6, np.int32)])
        w = np.concatenate([np.ones(len(y)), np.zeros(6)])
        padded = stream_stats([(pad_x, pad_y, w)], num_classes=3, dim=4, dtype=jnp.float64)
        _assert_stats_close(padded, batch_stats(jnp.asarray(x), jnp.asarray(y), num_classes=3))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), classes=st.integers(2, 4), cut=st.floats(0.2, 0.8))
def test_fit_is_a_function_of_the_statistics(seed, classes, cut):
    """Any split of the rows, merged, gives the same model; probabilities are a distribution;
    for two classes decision_function is the logit difference."""
    rng = np.random.default_rng(seed)
    n, e = 60 * classes, 5
    y = np.repeat(np.arange(classes), 60).astype(np.int32)
    x = rng.normal(size=(n, e)) + 2.0 * rng.normal(size=(classes, e))[y]
    perm = rng.permutation(n)
    x, y = x[perm], y[perm]
    k = int(cut * n)
    with jax.enable_x64(True):
        whole = fit_analytic(jnp.asarray(x), jnp.asarray(y))
        split = fit_analytic(merge_stats(
            batch_stats(jnp.asarray(x[:k]), jnp.asarray(y[:k]), num_classes=classes),
            batch_stats(jnp.asarray(x[k:]), jnp.asarray(y[k:]), num_classes=classes)))
        np.testing.assert_allclose(np.asarray(split.coef), np.asarray(whole.coef), rtol=1e-9, atol=1e-9)
        proba = np.asarray(whole.predict_proba(jnp.asarray(x)))
        np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
        if classes == 2:
            logits = np.asarray(whole.logits(jnp.asarray(x)))
            np.testing.assert_allclose(np.asarray(whole.decision_function(jnp.asarray(x))),
                                       logits[:, 1] - logits[:, 0], atol=1e-12)


def test_jit_and_priors():
    x, y = data("iris")
    xf, yf = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    eager = fit_analytic(xf, yf)
    jitted = jax.jit(lambda a, b: fit_analytic(a, b, num_classes=3))(xf, yf)
    np.testing.assert_allclose(np.asarray(jitted.coef), np.asarray(eager.coef), rtol=1e-5, atol=1e-5)
    # Priors move only the ln π_c term: the weights stay.
    priors = jnp.asarray([0.5, 0.25, 0.25], jnp.float32)
    tilted = fit_analytic(xf, yf, priors=priors)
    np.testing.assert_allclose(np.asarray(tilted.coef), np.asarray(eager.coef), rtol=1e-6)
    shift = np.asarray(tilted.intercept - eager.intercept)
    # float32: the two intercepts (magnitude ~1e2) are each rounded to ~1e-5 before differencing.
    np.testing.assert_allclose(shift, np.log([0.5, 0.25, 0.25]) - np.log([1 / 3] * 3), atol=1e-4)


def test_bad_input():
    x, y = data("iris")
    fx, fy = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    with pytest.raises(ValueError, match="need at least 2 classes .* got 1"):
        fit_analytic(fx, jnp.zeros_like(fy))
    with pytest.raises(ValueError, match=r"classes \[3\] of num_classes=4 have none"):
        fit_analytic(fx, fy, num_classes=4)
    for bad in (np.nan, np.inf):
        xb = x.copy()
        xb[7, 2] = bad
        with pytest.raises(ValueError, match=f"X must be finite, got {bad} at row 7, column 2"):
            fit_analytic(jnp.asarray(xb), fy)
    with pytest.raises(ValueError, match=r"y must lie in \[0, num_classes=2\), got label 2"):
        fit_analytic(fx, fy, num_classes=2)
    with pytest.raises(ValueError, match="y must hold class ids >= 0, got -1"):
        fit_analytic(fx, fy.at[0].set(-1))
    with pytest.raises(ValueError, match=r"y must have shape \[N\] = \[150\]"):
        fit_analytic(fx, fy[:-1])
    with pytest.raises(ValueError, match=r"X must have rank 2 \[N, E\], got shape \(150,\)"):
        fit_analytic(fx[:, 0], fy)
    with pytest.raises(TypeError, match="y must hold integer class ids"):
        fit_analytic(fx, fy.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"priors must have shape \[C\] = \[3\]"):
        fit_analytic(fx, fy, priors=jnp.ones(2) / 2)
    with pytest.raises(ValueError, match="priors must be positive and sum to 1"):
        fit_analytic(fx, fy, priors=jnp.asarray([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="shrinkage must be None, a float in"):
        fit_analytic(fx, fy, shrinkage=1.5)
    with pytest.raises(ValueError, match="batch 1: X must be finite"):
        stream_stats([(x[:10], y[:10]), (np.full((2, 4), np.nan), y[:2])], num_classes=3, dim=4)


@pytest.mark.parametrize("labels", [np.array(["a", "b"] * 4), np.array([b"a", b"b"] * 4),
                                    np.array(["a", 1] * 4, dtype=object)],
                         ids=["str", "bytes", "object"])
def test_string_labels_name_y_and_dtype(labels):
    """String (or object) labels get the library's error naming `y`, what it takes and the dtype,
    not JAX's "Error interpreting argument" from `jnp.asarray`; every entry point shares it."""
    x = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    dtype = re.escape(str(np.asarray(labels).dtype))
    expected = rf"y must hold integer class ids 0\.\.C-1 \(0/1 for two classes\), got dtype {dtype}"
    hint = r"; map them to ids first, e\.g\. classes, y = np\.unique\(y, return_inverse=True\)"
    with pytest.raises(TypeError, match=expected + hint):
        fit_analytic(x, labels)
    with pytest.raises(TypeError, match=r"batch 0: " + expected):
        stream_stats([(x, labels)], num_classes=2, dim=2)
    with pytest.raises(TypeError, match=expected):
        sharded_stats(x, labels, num_classes=2, mesh=jax.make_mesh((8,), ("data",)))


def test_more_features_than_examples_warns_and_shrinks():
    """E > N − C makes Σ singular: without shrinkage the fit warns and uses Ledoit–Wolf
    (documented), and the model is finite and equals the explicit Ledoit–Wolf fit."""
    x, y = data("digits")
    x, y = x[:40], y[:40]  # 64 features, 40 examples
    with jax.enable_x64(True):
        with pytest.warns(RuntimeWarning, match="singular .* using shrinkage='ledoit-wolf'"):
            model = fit_analytic(jnp.asarray(x), jnp.asarray(y))
        explicit = fit_analytic(jnp.asarray(x), jnp.asarray(y), shrinkage="ledoit-wolf")
    assert np.all(np.isfinite(np.asarray(model.coef)))
    np.testing.assert_allclose(np.asarray(model.coef), np.asarray(explicit.coef))


def test_constant_features_warn_and_shrink():
    """N − C ≥ E but a constant column makes Σ singular: the solve would return NaN, so the fit
    warns and falls back to Ledoit–Wolf (digits has such pixels; standardised they are 0)."""
    x, y = data("iris")
    x = np.concatenate([x, np.zeros((len(y), 1))], axis=1)  # a constant feature
    with jax.enable_x64(True):
        with pytest.warns(RuntimeWarning, match=r"singular \(constant or collinear"):
            model = fit_analytic(jnp.asarray(x), jnp.asarray(y))
        explicit = fit_analytic(jnp.asarray(x), jnp.asarray(y), shrinkage="ledoit-wolf")
        acc = float(np.mean(np.asarray(model.predict(jnp.asarray(x))) == y))
    assert np.all(np.isfinite(np.asarray(model.coef))) and acc > 0.9
    np.testing.assert_allclose(np.asarray(model.coef), np.asarray(explicit.coef))
