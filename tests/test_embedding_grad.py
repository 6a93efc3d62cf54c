"""`functional.embedding_lookup`: the gradient accumulated in fp32 (one-hot matmul for small
tables, scatter-add otherwise), against a float64 NumPy ``np.add.at`` reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxformer.functional import ONE_HOT_GRAD_ROWS, embedding_lookup


def _reference_grad(rows: int, ids: np.ndarray, g: np.ndarray) -> np.ndarray:
    ref = np.zeros((rows, g.shape[-1]), np.float64)
    flat = ids.reshape(-1)
    flat = np.where(flat < 0, flat + rows, flat)
    keep = (flat >= 0) & (flat < rows)
    np.add.at(ref, flat[keep], g.reshape(-1, g.shape[-1]).astype(np.float64)[keep])
    return ref


@pytest.mark.parametrize("rows", [2, ONE_HOT_GRAD_ROWS, ONE_HOT_GRAD_ROWS + 1, 300])
@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)])
def test_gradient_matches_float64_scatter(rows, dtype, tol):
    """fp32: accumulation error only (1e-5 relative); bf16: one final rounding of an fp32 sum
    (2^-8 relative, so 1e-2 of the largest entry)."""
    table = jax.random.normal(jax.random.key(0), (rows, 8)).astype(dtype)
    ids = jax.random.randint(jax.random.key(1), (4, 16), 0, rows)
    g = jax.random.normal(jax.random.key(2), (4, 16, 8)).astype(dtype)

    def f(t):
        return jnp.sum(embedding_lookup(t, ids).astype(jnp.float32) * g.astype(jnp.float32))

    grad = jax.grad(f)(table)
    assert grad.dtype == jnp.dtype(dtype)
    ref = _reference_grad(rows, np.asarray(ids), np.asarray(g.astype(jnp.float32)))
    np.testing.assert_allclose(np.asarray(grad, np.float64), ref, atol=tol * np.abs(ref).max())


def test_forward_is_a_row_lookup_and_out_of_range_gives_nan_and_no_gradient():
    table = jnp.arange(12, dtype=jnp.float32).reshape(4, 3)
    ids = jnp.array([[0, 3, 7, -1]])  # 7 is out of range; -1 reads the last row, as jnp.take
    out = jax.jit(embedding_lookup)(table, ids)
    np.testing.assert_array_equal(out[0, 0], table[0])
    np.testing.assert_array_equal(out[0, 1], table[3])
    assert np.isnan(np.asarray(out[0, 2])).all()
    np.testing.assert_array_equal(out[0, 3], table[3])
    grad = jax.grad(lambda t: jnp.nansum(embedding_lookup(t, ids)))(table)
    np.testing.assert_array_equal(np.asarray(grad), [[1, 1, 1], [0, 0, 0], [0, 0, 0], [2, 2, 2]])


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 100), n=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_gradient_property_any_ids(rows, n, seed):
    """Any ids in [-V, V + 3): the gradient is the float64 scatter of the cotangent."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(-rows, rows + 3, size=(n,))
    g = rng.standard_normal((n, 5)).astype(np.float32)
    table = jnp.zeros((rows, 5), jnp.float32)
    _, pullback = jax.vjp(lambda t: embedding_lookup(t, jnp.asarray(ids)), table)
    (grad,) = pullback(jnp.asarray(g))
    np.testing.assert_allclose(np.asarray(grad, np.float64), _reference_grad(rows, ids, g),
                               atol=1e-5)
