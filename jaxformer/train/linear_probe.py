"""Iterative baselines for the closed-form classifier of `jaxformer.logreg`: maximum likelihood
by minibatch gradient descent (Su's probe: Adam 1e-3, batch 32, 10 epochs) and full-batch
L-BFGS. Every solver returns an `AnalyticModel`, so all of them evaluate the same way.

Shape letters: N examples, E features, C classes.

The objective is the mean softmax cross-entropy plus an optional ridge on the weights only,

    L(W, b) = (1/N) Σ_i −log softmax(x_i Wᵀ + b)_{y_i}  +  (λ/2) ‖W‖²,

with ``W [C, E]`` for every C (for C=2 the logits depend only on ``w = w_1 − w_0``, so this is
the sigmoid model). Matching scikit-learn's ``LogisticRegression(C=…)``, which minimises
``½‖w‖² + C Σ loss``, i.e. ``mean loss + ‖w‖² / (2 C N)``: multinomial (C > 2),
``C_sk = 1 / (N λ)``; binary, the optimum splits ``w`` as ``w_1 = −w_0 = w/2`` so our penalty is
``(λ/4)‖w‖²`` and ``C_sk = 2 / (N λ)``.

Unpenalised (λ = 0), the optimum is defined only up to adding one vector to every row of W (and
one number to every b_c); it exists at all only if no class is (quasi-)linearly separable,
otherwise the likelihood keeps rising as ‖W‖ → ∞. Compare solvers by decision functions or
probabilities, not raw rows; `fit_lbfgs` returns the centred representative (rows sum to 0).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from jaxformer.functional import compute_dtype
from jaxformer.logreg import AnalyticModel
from jaxformer.train.optim import standard_promotion

OPTIMIZERS = ("adam", "sgd")


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_float(name: str, value: object, *, positive: bool = False) -> None:
    ok = (not isinstance(value, bool) and isinstance(value, int | float)
          and np.isfinite(value) and (value > 0 if positive else value >= 0))
    if not ok:
        raise ValueError(f"{name} must be a finite float {'> 0' if positive else '>= 0'}, "
                         f"got {value!r}")


def _check_data(x: ArrayLike, y: ArrayLike, num_classes: int) -> tuple[Array, Array]:
    """Validate ``x [N, E]`` (finite floats) and ``y [N]`` (ints in ``[0, C)``); return arrays."""
    _check_int("num_classes", num_classes, 2)
    if np.ndim(x) != 2 or np.shape(x)[0] < 1:
        raise ValueError(f"x must have shape [N, E] with N >= 1, got {tuple(np.shape(x))}")
    if np.ndim(y) != 1 or np.shape(y)[0] != np.shape(x)[0]:
        raise ValueError(f"y must have shape [N] = [{np.shape(x)[0]}], got {tuple(np.shape(y))}")
    xa, ya = jnp.asarray(x), jnp.asarray(y)
    if not jnp.issubdtype(xa.dtype, jnp.floating):
        raise TypeError(f"x must hold floats, got dtype {xa.dtype}")
    if not jnp.issubdtype(ya.dtype, jnp.integer):
        raise TypeError(f"y must hold integer class ids, got dtype {ya.dtype}")
    if not isinstance(xa, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(xa))):
        raise ValueError("x must be finite, got NaN or inf")
    if not isinstance(ya, jax.core.Tracer):
        lo, hi = int(jnp.min(ya)), int(jnp.max(ya))
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"y must lie in [0, num_classes={num_classes}), got labels in "
                             f"[{lo}, {hi}]")
    return xa.astype(compute_dtype(xa.dtype)), ya.astype(jnp.int32)


def _start(init: AnalyticModel | None, num_classes: int, dim: int,
           dtype: jnp.dtype) -> AnalyticModel:
    """Zeros, or a copy of `init` (checked against ``[C, E]`` / ``[C]``) in `dtype`."""
    if init is None:
        return AnalyticModel(jnp.zeros((num_classes, dim), dtype), jnp.zeros((num_classes,), dtype))
    if not isinstance(init, AnalyticModel):
        raise TypeError(f"init must be an AnalyticModel or None, got {type(init).__name__}")
    want = ((num_classes, dim), (num_classes,))
    got = (tuple(np.shape(init.coef)), tuple(np.shape(init.intercept)))
    if got != want:
        raise ValueError(f"init must have coef [C, E] = {list(want[0])} and intercept [C] = "
                         f"{list(want[1])}, got {list(got[0])} and {list(got[1])}")
    return AnalyticModel(*(jnp.array(p, dtype) for p in init))  # a copy: donation-safe


def _objective(model: AnalyticModel, x: Array, y: Array, weights: Array, l2: Array) -> Array:
    """Weighted mean cross-entropy plus ``(l2/2)‖W‖²`` (`weights` 0 masks padded rows)."""
    logp = jax.nn.log_softmax(model.logits(x), axis=-1)
    nll = -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
    w = weights.astype(nll.dtype)
    data = jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), 1)
    return data + 0.5 * l2.astype(nll.dtype) * jnp.sum(model.coef * model.coef)


def log_loss(model: AnalyticModel, x: ArrayLike, y: ArrayLike) -> Float[Array, ""]:
    """Mean cross-entropy ``−(1/N) Σ log p(y_i | x_i)`` of `model` on ``(x, y)``."""
    xa, ya = _check_data(x, y, model.coef.shape[0])
    ones = jnp.ones(ya.shape, xa.dtype)
    return _objective(model, xa, ya, ones, jnp.zeros((), xa.dtype))


def accuracy(model: AnalyticModel, x: ArrayLike, y: ArrayLike) -> Float[Array, ""]:
    """Fraction of rows whose arg-max class is the label."""
    xa, ya = _check_data(x, y, model.coef.shape[0])
    return jnp.mean((model.predict(xa) == ya).astype(jnp.float32))


class _OptState(NamedTuple):
    model: AnalyticModel
    opt: optax.OptState


def _make_tx(optimizer: str, learning_rate: float | Array) -> optax.GradientTransformation:
    return standard_promotion(optax.adam(learning_rate) if optimizer == "adam"
                     else optax.sgd(learning_rate))


@functools.partial(jax.jit, static_argnames=("optimizer", "batch_size"), donate_argnums=(0,))
def _epoch(state: _OptState, x: Array, y: Array, key: PRNGKeyArray, l2: Array,
           learning_rate: Array, *, optimizer: str, batch_size: int) -> tuple[_OptState, Array]:
    """One epoch: shuffle, pad to whole batches (weight 0), `lax.scan` the steps. Returns the
    state and the ``[steps]`` batch losses. The rate is traced: one compile for all rates."""
    tx = _make_tx(optimizer, learning_rate)
    n = x.shape[0]
    steps = -(-n // batch_size)
    pad = steps * batch_size - n
    order = jax.random.permutation(key, n)
    order = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)]).reshape(steps, batch_size)
    valid = (jnp.arange(steps * batch_size) < n).reshape(steps, batch_size)

    def step(carry: _OptState, batch: tuple[Array, Array]) -> tuple[_OptState, Array]:
        idx, mask = batch
        loss, grads = jax.value_and_grad(_objective)(carry.model, x[idx], y[idx], mask, l2)
        updates, opt = tx.update(grads, carry.opt, carry.model)
        return _OptState(optax.apply_updates(carry.model, updates), opt), loss

    return lax.scan(step, state, (order, valid))


def fit_gradient_descent(x: ArrayLike, y: ArrayLike, *, num_classes: int, key: PRNGKeyArray,
                         learning_rate: float = 1e-3, batch_size: int = 32, epochs: int = 10,
                         optimizer: str = "adam", init: AnalyticModel | None = None,
                         weight_decay: float = 0.0) -> AnalyticModel:
    """Maximum likelihood by minibatch `optax` descent on the mean cross-entropy.

    Epoch ``e`` visits the rows in the order ``permutation(fold_in(key, e), N)``; every row is
    used once per epoch, the last partial batch padded and masked, so one compiled epoch (a
    `lax.scan` over batches) serves all epochs. ``epochs=0`` returns `init` unchanged.

    Args:
      x: ``[N, E]`` features (fp32, or float64 under ``jax.enable_x64``).
      y: ``[N]`` integer labels in ``[0, num_classes)``.
      num_classes: C >= 2.
      key: PRNG key of the shuffles.
      learning_rate, batch_size, epochs: Su's probe defaults (1e-3, 32, 10).
      optimizer: ``"adam"`` or ``"sgd"`` (plain).
      init: start point; None starts from zeros, `fit_analytic`'s model warm-starts.
      weight_decay: λ of the ridge ``(λ/2)‖W‖²`` in the loss (the same objective as
        `fit_lbfgs`'s `l2`; biases are not penalised).
    """
    xa, ya = _check_data(x, y, num_classes)
    _check_int("batch_size", batch_size, 1)
    _check_int("epochs", epochs, 0)
    _check_float("learning_rate", learning_rate, positive=True)
    _check_float("weight_decay", weight_decay)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    model = _start(init, num_classes, xa.shape[1], xa.dtype)
    if epochs == 0:
        return model
    state = _OptState(model, _make_tx(optimizer, learning_rate).init(model))
    l2, lr = jnp.asarray(weight_decay, xa.dtype), jnp.asarray(learning_rate, xa.dtype)
    for e in range(epochs):
        state, _ = _epoch(state, xa, ya, jax.random.fold_in(key, e), l2, lr,
                          optimizer=optimizer, batch_size=batch_size)
    return state.model


def _lbfgs_solve(model: AnalyticModel, x: Array, y: Array, l2: Array, max_iter: Array,
                 tol: Array) -> tuple[AnalyticModel, Array]:
    ones = jnp.ones(y.shape, x.dtype)

    def fun(m: AnalyticModel) -> Array:
        return _objective(m, x, y, ones, l2)

    tx = standard_promotion(optax.lbfgs())
    value_and_grad = optax.value_and_grad_from_state(fun)

    def body(carry: tuple[AnalyticModel, optax.OptState]) -> tuple[AnalyticModel, optax.OptState]:
        params, state = carry
        with jax.numpy_dtype_promotion("standard"):
            value, grad = value_and_grad(params, state=state)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(params, updates), state

    def running(carry: tuple[AnalyticModel, optax.OptState]) -> Array:
        count = optax.tree.get(carry[1], "count")
        norm = optax.tree.norm(optax.tree.get(carry[1], "grad"))
        return (count < max_iter) & ((count == 0) | (norm >= tol.astype(norm.dtype)))

    model, state = lax.while_loop(running, body, (model, tx.init(model)))
    return model, optax.tree.get(state, "count")


_lbfgs_jit = jax.jit(_lbfgs_solve)


def fit_lbfgs(x: ArrayLike, y: ArrayLike, *, num_classes: int, l2: float = 0.0,
              max_iter: int = 500, tol: float = 1e-9,
              init: AnalyticModel | None = None) -> AnalyticModel:
    """Full-batch L-BFGS (`optax.lbfgs`, zoom line search) on the penalised mean cross-entropy.

    Stops when the gradient's global L2 norm falls below `tol` or after `max_iter` iterations
    (in fp32 the norm rarely reaches 1e-9: use float64 for tight solutions). ``l2=0`` is
    unpenalised maximum likelihood (which diverges on separable data, see the module
    docstring). The result is centred, ``Σ_c W_c = 0`` and ``Σ_c b_c = 0``: the same
    probabilities, and the one representative of the unpenalised optimum with least norm.
    """
    xa, ya = _check_data(x, y, num_classes)
    _check_float("l2", l2)
    _check_float("tol", tol)
    _check_int("max_iter", max_iter, 0)
    model = _start(init, num_classes, xa.shape[1], xa.dtype)
    model, _ = _lbfgs_jit(model, xa, ya, jnp.asarray(l2, xa.dtype),
                          jnp.asarray(max_iter, jnp.int32), jnp.asarray(tol, xa.dtype))
    return AnalyticModel(*(p - jnp.mean(p, axis=0, keepdims=True) for p in model))
