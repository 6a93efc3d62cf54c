"""BERT-whitening: streamed statistics, the kernel, truncation, psum over devices, save/load."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxformer.io import CheckpointError, write_safetensors
from jaxformer.models.whitening_store import load_stats, save_stats
from jaxformer.whitening import (accumulate, combine, fit_whitening, init_stats, mean_cov,
                                 psum_stats, stats_of, whiten)


def anisotropic(n=600, e=12, seed=0):
    """Rows with a large common mean and very unequal variances, like raw BERT vectors."""
    rng = np.random.default_rng(seed)
    # Variances span about 1e-3 (float32 sums resolve eigenvalues down to ~1e-6 of the
    # largest; below that the float32 embeddings themselves carry little signal).
    mix = np.linalg.qr(rng.normal(size=(e, e)))[0] * np.logspace(0, -1.5, e)[:, None]
    return (rng.normal(size=(n, e)) @ mix + 8.0).astype(np.float32)


def test_streamed_mean_and_covariance_equal_float64_numpy():
    x = anisotropic()
    stats = init_stats(jnp.asarray(x[:50].mean(0)))
    for start in range(0, len(x), 64):  # uneven last batch
        stats = accumulate(stats, jnp.asarray(x[start:start + 64]))
    mean, cov = mean_cov(stats)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(cov, np.cov(x64.T, bias=True), atol=1e-6 * np.abs(cov).max())


def test_whitened_fit_set_has_identity_covariance():
    """Post 8069's defining property, W^T Sigma W = I, checked on the fit set in float64."""
    x = anisotropic()
    stats = stats_of(jnp.asarray(x), batch_size=100)
    w = fit_whitening(stats)
    y = np.asarray(whiten(jnp.asarray(x), w), np.float64)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=2e-3)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(x.shape[1]), atol=5e-3)
    # Against the statistics' own float64 covariance, up to the kernel's float32 cast.
    _, cov = mean_cov(stats)
    kernel = w.kernel.astype(np.float64)
    np.testing.assert_allclose(kernel.T @ cov @ kernel, np.eye(x.shape[1]), atol=2e-5)
    assert np.all(np.diff(w.variances) <= 0)  # columns by decreasing variance (PCA order)


def test_truncation_to_k_equals_dropping_columns():
    x = anisotropic()
    stats = stats_of(jnp.asarray(x))
    full, four = fit_whitening(stats), fit_whitening(stats, 4)
    np.testing.assert_array_equal(four.kernel, full.kernel[:, :4])
    # The same columns, but an [N, E] @ [E, 4] matmul may be tiled differently from [E, E]
    # (the CPU's kernels differ by ISA), so equal up to fp32 rounding: rtol 1e-5, atol 1e-6.
    np.testing.assert_allclose(np.asarray(whiten(jnp.asarray(x), four)),
                               np.asarray(whiten(jnp.asarray(x), full))[:, :4],
                               rtol=1e-5, atol=1e-6)


def test_weights_zero_rows_add_nothing():
    x = anisotropic(n=40)
    pad = np.concatenate([x, np.full((8, x.shape[1]), 1e3, np.float32)])
    w = np.concatenate([np.ones(40), np.zeros(8)]).astype(np.float32)
    a = accumulate(init_stats(jnp.zeros(x.shape[1])), jnp.asarray(pad), jnp.asarray(w))
    b = accumulate(init_stats(jnp.zeros(x.shape[1])), jnp.asarray(x))
    for name in ("count", "total", "outer"):
        np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)),
                                   rtol=1e-6)


def test_psum_over_eight_devices_equals_one_stream():
    x = anisotropic(n=8 * 32)
    shift = jnp.asarray(x[:32].mean(0))
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))

    def local(rows):
        return psum_stats(accumulate(init_stats(shift), rows), "data")

    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("data"), out_specs=P()))(
        jnp.asarray(x))
    one = accumulate(init_stats(shift), jnp.asarray(x))
    halves = combine(accumulate(init_stats(shift), jnp.asarray(x[:100])),
                     accumulate(init_stats(shift), jnp.asarray(x[100:])))
    for other in (sharded, halves):
        for name in ("count", "total", "outer"):
            np.testing.assert_allclose(np.asarray(getattr(other, name)),
                                       np.asarray(getattr(one, name)), rtol=1e-5, atol=1e-4)


def test_save_load_round_trip_and_refusal(tmp_path):
    stats = stats_of(jnp.asarray(anisotropic()))
    path = save_stats(stats, tmp_path, metadata={"pooling": "cls", "source": ["a.txt"]})
    assert path.name == "whitening.safetensors"
    loaded, meta = load_stats(tmp_path)
    assert meta == {"pooling": "cls", "source": ["a.txt"]}
    np.testing.assert_array_equal(fit_whitening(loaded, 5).kernel, fit_whitening(stats, 5).kernel)
    bad = tmp_path / "bad.safetensors"
    write_safetensors({"count": np.ones((), np.float32), "shift": np.zeros(3, np.float32),
                       "total": np.zeros(3, np.float32), "outer": np.zeros((3, 4), np.float32)},
                      bad)
    with pytest.raises(CheckpointError, match="outer"):
        load_stats(bad)
    with pytest.raises(FileNotFoundError, match="whitening statistics"):
        load_stats(tmp_path / "missing.safetensors")


def test_bad_k_is_named():
    stats = stats_of(jnp.asarray(anisotropic()))
    for k in (0, 13, 2.5):  # beneath the test run's type-checking hook, which refuses 2.5 first
        with pytest.raises(ValueError, match=r"k: expected an int in \[1, E=12\]"):
            inspect.unwrap(fit_whitening)(stats, k)
