"""bert4keras' AdaFactor (Su's CLUE optimiser) against a float64 NumPy transcription of its update
rule, and against ``optax.adafactor`` where the two should agree."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxformer.train.adafactor import bert4keras_adafactor
from jaxformer.train.optim import learning_rate_of


def reference_bert4keras(params, grads_seq, *, lr, beta1, clip=1.0, eps1=1e-30, eps2=1e-3):
    """The update rule of bert4keras' ``AdaFactorV1`` (unfactored), step by step, in float64:

        v_t = beta2_t v + (1 - beta2_t) (g^2 + eps1),  beta2_t = 1 - t^-0.8 (t from 1)
        u   = g / sqrt(v_t);  u /= max(1, RMS(u) / clip)
        m_t = beta1 m + (1 - beta1) u;  u = m_t                      (when beta1 > 0)
        p  -= lr * max(RMS(p), eps2) * u
    """
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    m = {k: np.zeros_like(x) for k, x in p.items()}
    for t, grads in enumerate(grads_seq, start=1):
        beta2 = 1.0 - t ** -0.8
        for k in p:
            g = np.asarray(grads[k], np.float64)
            v[k] = beta2 * v[k] + (1 - beta2) * (g * g + eps1)
            u = g / np.sqrt(v[k])
            u = u / max(1.0, np.sqrt(np.mean(u * u)) / clip)
            if beta1:
                m[k] = beta1 * m[k] + (1 - beta1) * u
                u = m[k]
            p[k] = p[k] - lr * max(np.sqrt(np.mean(p[k] ** 2)), eps2) * u
    return p


def run(tx, params, grads_seq):
    state = tx.init(params)
    for grads in grads_seq:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def problem(seed=0, steps=6):
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(5,)) * 1e-4, jnp.float32)}  # RMS < eps2
    grads = [{k: jnp.asarray(rng.normal(size=v.shape) * 10 ** rng.uniform(-3, 1), jnp.float32)
              for k, v in params.items()} for _ in range(steps)]
    return params, grads


@pytest.mark.parametrize("beta1", [0.9, None])
def test_matches_bert4keras_update_rule(beta1):
    params, grads = problem()
    got, state = run(bert4keras_adafactor(5e-4, beta1=beta1), params, grads)
    want = reference_bert4keras(params, grads, lr=5e-4, beta1=beta1)
    for k in params:
        # float32 against float64: relative round-off of a few ulps per step.
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(float(learning_rate_of(state)), 5e-4, rtol=1e-7)


def test_optax_order_is_optax_adafactor_and_differs_only_with_momentum():
    params, grads = problem(seed=1)
    ours, _ = run(bert4keras_adafactor(5e-4, order="optax"), params, grads)
    theirs, _ = run(optax.adafactor(5e-4, min_dim_size_to_factor=10**6, momentum=0.9),
                    params, grads)
    for k in params:
        np.testing.assert_allclose(np.asarray(ours[k]), np.asarray(theirs[k]), rtol=1e-6)
    b4k, _ = run(bert4keras_adafactor(5e-4), params, grads)
    assert not np.allclose(np.asarray(b4k["w"]), np.asarray(theirs["w"]), rtol=1e-7, atol=0)
    no_m = [run(bert4keras_adafactor(5e-4, beta1=None, order=o), params, grads)[0]
            for o in ("bert4keras", "optax")]
    for k in params:
        np.testing.assert_allclose(np.asarray(no_m[0][k]), np.asarray(no_m[1][k]), rtol=1e-6)


def test_schedule_is_injected_and_jits():
    params, grads = problem(steps=3)
    tx = bert4keras_adafactor(optax.linear_schedule(0.0, 1e-3, 4))
    state = tx.init(params)
    step = jax.jit(tx.update)
    for g in grads:
        _, state = step(g, state, params)
    # The injected rate is that of the last update (count 2 of a 0 -> 1e-3 ramp over 4).
    np.testing.assert_allclose(float(learning_rate_of(state)), 0.5e-3, rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"learning_rate": -1.0}, r"learning_rate must be in \[0.0, inf\], got -1.0"),
    ({"beta1": 1.5}, r"beta1 must be in \[0.0, 1.0\], got 1.5"),
    ({"order": "keras"}, r"order must be 'bert4keras' or 'optax', got 'keras'"),
    ({"min_dim_size_to_factor": 0}, r"min_dim_size_to_factor must be an int >= 1, got 0"),
    ({"clipping_threshold": 0.0}, r"clipping_threshold must be in \(0.0, inf\], got 0.0"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bert4keras_adafactor(**kwargs)
