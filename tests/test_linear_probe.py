"""`jaxformer.train.linear_probe`: L-BFGS against scikit-learn, minibatch descent, bad input.

The scikit-learn references run its own L-BFGS to a tight tolerance (tol=1e-10) on standardised
features; ours runs in float64. The penalty mapping (module docstring): our ``(λ/2)‖W‖²`` on
``[C, E]`` rows is ``LogisticRegression(C = 1/(Nλ))`` for C > 2 and ``C = 2/(Nλ)`` for two
classes (the optimum splits ``w`` as ``w_1 = −w_0 = w/2``). ``C=np.inf`` is its unpenalised
fit (the ``penalty=None`` of scikit-learn < 1.8).

Unpenalised maximum likelihood exists only without (quasi-)separation, and standardised
breast_cancer (30 features) and wine (13) ARE linearly separable, so the tests (a) compare
penalised fits on the full data sets and (b) compare unpenalised fits on leading feature
subsets that a linear program proves NOT separable.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from jaxformer.logreg import AnalyticModel, fit_analytic
from jaxformer.train.linear_probe import accuracy, fit_gradient_descent, fit_lbfgs, log_loss

PARITY = 1e-4  # max |ours − sklearn| / max |sklearn| on decision functions / probabilities
LOADERS = {"breast_cancer": load_breast_cancer, "wine": load_wine, "iris": load_iris}


def data(name, features=None, dtype=np.float64):
    x, y = LOADERS[name](return_X_y=True)
    x = StandardScaler().fit_transform(x if features is None else x[:, :features])
    return x.astype(dtype), y.astype(np.int32)


def separable(x, positive):
    """Whether some ``(w, b)`` has ``s_i (x_i w + b) >= 1`` for all rows (an LP feasibility)."""
    s = np.where(positive, 1.0, -1.0)
    a = -s[:, None] * np.hstack([x, np.ones((len(x), 1))])
    res = linprog(np.zeros(x.shape[1] + 1), A_ub=a, b_ub=-np.ones(len(x)), bounds=(None, None))
    return res.status == 0


def any_pair_separable(x, y):
    classes = np.unique(y)
    return any(separable(x[(y == a) | (y == b)], y[(y == a) | (y == b)] == a)
               for a in classes for b in classes if a < b)


def rel(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# (data set, leading features or None, λ). λ > 0 on the separable full sets; λ = 0 on subsets.
CASES = [("breast_cancer", None, 1e-3), ("breast_cancer", 10, 0.0),
         ("wine", None, 1e-2), ("wine", 5, 0.0)]


@pytest.mark.parametrize("name, features, l2", CASES)
def test_lbfgs_matches_sklearn(name, features, l2):
    x, y = data(name, features)
    n, c = len(y), int(y.max()) + 1
    # Honesty check of the case table: unpenalised only where the MLE exists.
    assert any_pair_separable(x, y) == (l2 > 0)
    sk_c = np.inf if l2 == 0 else (2.0 if c == 2 else 1.0) / (n * l2)
    sk = LogisticRegression(C=sk_c, solver="lbfgs", tol=1e-10, max_iter=10000).fit(x, y)
    assert sk.n_iter_.max() < 10000
    with jax.enable_x64(True):
        model = fit_lbfgs(jnp.asarray(x), jnp.asarray(y), num_classes=c, l2=l2)
        assert model.coef.dtype == jnp.float64
        dec = np.asarray(model.decision_function(jnp.asarray(x)))
        proba = np.asarray(model.predict_proba(jnp.asarray(x)))
    coef = np.asarray(model.coef)
    np.testing.assert_allclose(coef.sum(0), 0, atol=1e-12)  # centred representative
    assert rel(proba, sk.predict_proba(x)) < PARITY
    if c == 2:
        assert rel(dec, sk.decision_function(x)) < PARITY
        assert rel(coef[1] - coef[0], sk.coef_[0]) < PARITY
    else:  # rows are defined up to a common shift: compare centred rows
        assert rel(coef, sk.coef_ - sk.coef_.mean(0)) < PARITY


def test_lbfgs_warm_start_reaches_same_optimum():
    x, y = data("wine", 5)
    with jax.enable_x64(True):
        xs, ys = jnp.asarray(x), jnp.asarray(y)
        cold = fit_lbfgs(xs, ys, num_classes=3)
        warm = fit_lbfgs(xs, ys, num_classes=3, init=fit_analytic(xs, ys))
        np.testing.assert_allclose(warm.predict_proba(xs), cold.predict_proba(xs), atol=1e-7)
        assert float(log_loss(warm, xs, ys)) < float(log_loss(fit_analytic(xs, ys), xs, ys))


def test_gradient_descent_learns_iris(key):
    x, y = data("iris", dtype=np.float32)
    # 10 epochs of 5 batches of 32 at 1e-2 are 50 Adam steps (|ΔW| <= 0.5): ~85% train
    # accuracy. Batches of 8 at 3e-2 (190 steps) reach ~95%.
    model = fit_gradient_descent(x, y, num_classes=3, key=key, learning_rate=3e-2, batch_size=8)
    assert float(accuracy(model, x, y)) >= 0.9
    assert float(log_loss(model, x, y)) < np.log(3)  # the zero model's loss
    again = fit_gradient_descent(x, y, num_classes=3, key=key, learning_rate=3e-2, batch_size=8)
    other = fit_gradient_descent(x, y, num_classes=3, key=jax.random.fold_in(key, 1),
                                 learning_rate=3e-2, batch_size=8)
    np.testing.assert_array_equal(again.coef, model.coef)
    assert not np.allclose(other.coef, model.coef)


def test_padded_batch_is_masked(key):
    """One padded batch (N=150 rows in a batch of 200) with plain SGD is one exact full-batch
    gradient step from zero: the 50 padded rows contribute nothing."""
    x, y = data("iris", dtype=np.float32)
    lr = 0.5
    model = fit_gradient_descent(x, y, num_classes=3, key=key, learning_rate=lr, batch_size=200,
                                 epochs=1, optimizer="sgd")
    zero = AnalyticModel(jnp.zeros((3, 4)), jnp.zeros(3))
    grad = jax.grad(log_loss)(zero, x, y)
    np.testing.assert_allclose(model.coef, -lr * grad.coef, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.intercept, -lr * grad.intercept, rtol=1e-5, atol=1e-7)


def test_gradient_descent_warm_start(key):
    x, y = data("iris", dtype=np.float32)
    analytic = fit_analytic(x, y)
    start = log_loss(analytic, x, y)
    same = fit_gradient_descent(x, y, num_classes=3, key=key, epochs=0, init=analytic)
    np.testing.assert_array_equal(same.coef, analytic.coef)
    np.testing.assert_array_equal(same.intercept, analytic.intercept)
    assert float(log_loss(same, x, y)) == float(start)
    tuned = fit_gradient_descent(x, y, num_classes=3, key=key, init=analytic)  # Su's defaults
    assert float(log_loss(tuned, x, y)) <= float(start) + 1e-3
    assert analytic.coef is not same.coef  # a copy: the caller's model is never donated


X3, Y3 = np.zeros((6, 3), np.float32), np.array([0, 1, 2, 0, 1, 2], np.int32)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(x=np.zeros(6, np.float32)), ValueError, r"x must have shape \[N, E\].*\(6,\)"),
    (dict(y=Y3[:5]), ValueError, r"y must have shape \[N\] = \[6\], got \(5,\)"),
    (dict(y=Y3 + 1), ValueError, r"y must lie in \[0, num_classes=3\), got labels in \[1, 3\]"),
    (dict(y=Y3 - 1), ValueError, r"got labels in \[-1, 1\]"),
    (dict(y=Y3.astype(np.float32)), TypeError, "y must hold integer class ids"),
    (dict(x=np.full((6, 3), np.nan, np.float32)), ValueError, "x must be finite"),
    (dict(num_classes=1), ValueError, r"num_classes must be an int >= 2, got 1"),
    (dict(batch_size=0), ValueError, r"batch_size must be an int >= 1, got 0"),
    (dict(epochs=-1), ValueError, r"epochs must be an int >= 0, got -1"),
    (dict(learning_rate=0.0), ValueError, r"learning_rate must be a finite float > 0"),
    (dict(optimizer="rmsprop"), ValueError, r"optimizer must be one of \('adam', 'sgd'\)"),
    (dict(init=AnalyticModel(jnp.zeros((2, 3)), jnp.zeros(2))), ValueError,
     r"init must have coef \[C, E\] = \[3, 3\].*got \[2, 3\]"),
])
def test_gradient_descent_bad_input(key, kwargs, err, match):
    args = dict(x=X3, y=Y3, num_classes=3) | kwargs
    with pytest.raises(err, match=match):
        fit_gradient_descent(args.pop("x"), args.pop("y"), key=key, **args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(l2=-1.0), r"l2 must be a finite float >= 0, got -1.0"),
    (dict(max_iter=-1), r"max_iter must be an int >= 0, got -1"),
    (dict(num_classes=2), r"y must lie in \[0, num_classes=2\), got labels in \[0, 2\]"),
])
def test_lbfgs_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_lbfgs(X3, Y3, **(dict(num_classes=3) | kwargs))
