"""The statistics and contrastive losses under every sharding preset and mesh shape (8 virtual
CPU devices): the analytic-logreg class statistics, the BERT-whitening moments and SimCSE's loss
with gathered negatives give the one-device result, however the rows are laid out.

Rows follow each preset's batch rule (`ShardingRules.batch_axis`: ``data`` for dp, fsdp and
dp_tp; replicated for tp; none of these has parameters for the other rules to split). Two routes
per layout: GSPMD (the one-device function under ``jax.jit`` with the rows placed by
`batch_sharding`: XLA inserts the reductions) and, where the batch is split, the explicit one
(``shard_map`` with the kit's ``psum`` / all-gather over the batch axis). Reference: float64
NumPy for the statistics, the one-device fp32 loss for SimCSE. Tolerances are for fp32 sums in
another order: rtol 1e-5 on the statistics against float64, loss rtol 5e-6 and gradients rtol
1e-5 / atol 1e-6 (`tests/test_simcse.py` measured 1.2e-6 on an 8-way data axis).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxformer import logreg, whitening
from jaxformer.contrastive import simcse_loss
from jaxformer.train import sharding as S

SHAPES = [(8, 1), (4, 2), (2, 4), (1, 8)]
N, E, C = 64, 12, 3

pytestmark = pytest.mark.usefixtures("fast_compile")


def _layouts(shape):
    """``(batch axis, presets)`` of each distinct row layout the presets give on `shape`."""
    mesh = S.make_mesh(shape)
    groups: dict[str | None, list[str]] = {}
    for preset in S.PRESETS:
        groups.setdefault(S.ShardingRules.preset(preset).batch_axis, []).append(preset)
    assert sorted(p for ps in groups.values() for p in ps) == sorted(S.PRESETS)
    return mesh, groups


def _data():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(N, E)) * np.linspace(0.2, 3.0, E) + 1.5).astype(np.float32)
    y = rng.integers(0, C, N).astype(np.int32)
    return x, y


def _place(mesh, axis, *arrays):
    return [jax.device_put(jnp.asarray(a), jax.sharding.NamedSharding(mesh, P(axis)))
            for a in arrays]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_logreg_and_whitening_statistics_equal_float64(shape):
    x, y = _data()
    x64 = x.astype(np.float64)
    one_hot = np.eye(C)[y]
    want_logreg = {"count": one_hot.sum(0), "sums": one_hot.T @ x64, "scatter": x64.T @ x64,
                   "norm4": np.sum(np.sum(x64**2, 1) ** 2),
                   "norm2_x": np.sum(x64**2, 1) @ x64}
    shift = x64[:8].mean(0)
    d = x64 - shift
    want_white = {"count": float(N), "total": d.sum(0), "outer": d.T @ d}

    def check(got_logreg, got_white, where):
        for name, want in want_logreg.items():
            np.testing.assert_allclose(np.asarray(getattr(got_logreg, name)), want, rtol=1e-5,
                                       atol=1e-5 * np.abs(want).max(), err_msg=f"{where} {name}")
        for name, want in want_white.items():
            np.testing.assert_allclose(np.asarray(getattr(got_white, name)), want, rtol=1e-5,
                                       atol=1e-5 * np.abs(want).max(), err_msg=f"{where} {name}")

    stats = jax.jit(lambda a, b: logreg.batch_stats(a, b, num_classes=C))
    start = whitening.init_stats(jnp.asarray(shift, jnp.float32))
    moments = jax.jit(lambda s, a: whitening.accumulate(s, a))
    mesh, groups = _layouts(shape)
    for axis, presets in groups.items():
        where = f"{shape} {presets}"
        xs, ys = _place(mesh, axis, x, y)
        check(stats(xs, ys), moments(start, xs), f"GSPMD {where}")
        if axis is None:
            continue
        # Explicit: each device reduces its rows, one psum over the batch axis.
        white = jax.jit(jax.shard_map(
            lambda s, a: whitening.psum_stats(whitening.accumulate(s, a), axis), mesh=mesh,
            in_specs=(P(), P(axis)), out_specs=P()))(start, xs)
        check(logreg.sharded_stats(x, y, num_classes=C, mesh=mesh, axis=axis), white,
              f"psum {where}")


def _embed(params, x):
    return jnp.tanh(x @ params["w"] + params["b"][None, :])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_simcse_gathered_negatives_equal_one_device(shape):
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(E, 6)).astype(np.float32)),
              "b": jnp.asarray(rng.normal(size=(6,)).astype(np.float32))}
    x1 = rng.normal(size=(16, E)).astype(np.float32)
    x2 = (x1 + 0.3 * rng.normal(size=x1.shape)).astype(np.float32)
    w = np.array([1.0] * 13 + [0.0] * 3, np.float32)  # three padding rows

    def loss(p, a, b, wt, axis_name=None):
        return simcse_loss(_embed(p, a), _embed(p, b), weights=wt, axis_name=axis_name)[0]

    grad_fn = jax.jit(jax.value_and_grad(loss))
    want_value, want_grads = grad_fn(params, jnp.asarray(x1), jnp.asarray(x2), jnp.asarray(w))

    def check(value, grads, where):
        np.testing.assert_allclose(float(value), float(want_value), rtol=5e-6, err_msg=where)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6,
                                       err_msg=where)

    mesh, groups = _layouts(shape)
    for axis, presets in groups.items():
        where = f"{shape} {presets}"
        xs = _place(mesh, axis, x1, x2, w)
        check(*grad_fn(params, *xs), f"GSPMD {where}")
        if axis is None:
            continue
        # Explicit: every device's rows become negatives through an all-gather over the axis;
        # the replicated parameters' gradient is the global one.
        local = jax.shard_map(
            lambda p, a, b, wt: jax.value_and_grad(loss)(p, a, b, wt, axis_name=axis),
            mesh=mesh, in_specs=(P(), P(axis), P(axis), P(axis)), out_specs=(P(), P()))
        check(*jax.jit(local)(params, *xs), f"all-gather {where}")
