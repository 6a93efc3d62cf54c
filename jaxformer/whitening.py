"""BERT-whitening (post 8069, arXiv 2103.15316): streamed statistics, the kernel, and its use.

Sentence vectors x (rows) are mapped to ``(x - mu) W`` with ``mu`` their mean and ``W`` any
matrix with ``W^T Sigma W = I``; from the SVD (here: symmetric eigendecomposition) of the
covariance ``Sigma = U diag(lambda) U^T``, post 8069 takes ``W = U diag(1 / sqrt(lambda))``, its
columns in decreasing ``lambda`` so that keeping the first k is PCA (post 8069: k = 256 for
base models).

The statistics are streamed: `accumulate` adds one batch to ``(count, sum, sum of outer
products)``, O(E^2) memory whatever N, and two partial statistics combine by adding them
(`combine`; inside ``shard_map`` that is one ``lax.psum`` of the pytree, `psum_stats`).
`jaxformer.models.whitening_store` saves them next to a model. The sums are taken
about a fixed `shift` (any vector near the mean, e.g. the first batch's mean): sentence vectors
have a large common mean (the anisotropy whitening removes, post 8069), and ``E[xx^T] -
mu mu^T`` computed about zero would cancel most float32 digits. The kernel itself is solved in
float64 on the host (an [E, E] problem).

``Sigma`` divides by N (post 8069's formula); Su's ``compute_kernel_bias`` calls ``np.cov``
(N - 1). The two kernels differ by the scalar ``sqrt((N - 1) / N)``, which changes no cosine.

Shape letters: N sentences, B batch, E width, K kept dimensions.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class WhiteningStats:
    """Streamed sums about `shift`, a pytree (jit, psum and save/load friendly).

    Attributes:
      count: number of rows seen (float32 scalar, so it psums with the rest).
      shift: [E] the fixed centre the sums are taken about.
      total: [E] sum of ``x - shift``.
      outer: [E, E] sum of ``(x - shift)^T (x - shift)``.
    """

    count: Float[Array, ""]
    shift: Float[Array, " E"]
    total: Float[Array, " E"]
    outer: Float[Array, "E E"]

    @property
    def width(self) -> int:
        return int(self.shift.shape[0])


def init_stats(shift: Float[Array, " E"]) -> WhiteningStats:
    """Empty statistics about `shift` (use the same shift on every device)."""
    shift = jnp.asarray(shift, jnp.float32)
    if shift.ndim != 1:
        raise ValueError(f"shift: expected a 1-D [E] vector, got shape {tuple(shift.shape)}")
    e = shift.shape[0]
    return WhiteningStats(jnp.zeros((), jnp.float32), shift, jnp.zeros((e,), jnp.float32),
                          jnp.zeros((e, e), jnp.float32))


@jax.jit
def accumulate(stats: WhiteningStats, x: Float[Array, "B E"],
               weights: Float[Array, " B"] | None = None) -> WhiteningStats:
    """`stats` plus the rows of `x` (rows with weight 0, e.g. batch padding, add nothing)."""
    d = x.astype(jnp.float32) - stats.shift[None, :]
    w = jnp.ones(d.shape[:1], jnp.float32) if weights is None else weights.astype(jnp.float32)
    return WhiteningStats(stats.count + jnp.sum(w), stats.shift,
                          stats.total + jnp.einsum("b,be->e", w, d),
                          stats.outer + jnp.einsum("b,be,bf->ef", w, d, d))


def combine(a: WhiteningStats, b: WhiteningStats) -> WhiteningStats:
    """The statistics of both streams (they must share the shift)."""
    return WhiteningStats(a.count + b.count, a.shift, a.total + b.total, a.outer + b.outer)


def psum_stats(stats: WhiteningStats, axis_name: str) -> WhiteningStats:
    """Inside ``shard_map``/``pmap``: the statistics of every device's rows (shift unchanged)."""
    return WhiteningStats(jax.lax.psum(stats.count, axis_name), stats.shift,
                          jax.lax.psum(stats.total, axis_name),
                          jax.lax.psum(stats.outer, axis_name))


def stats_of(x: Float[Array | np.ndarray, "N E"], *, batch_size: int = 1024) -> WhiteningStats:
    """Streamed statistics of all rows of `x`, shifted by the first batch's mean."""
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"x: expected a non-empty [N, E] array, got shape {tuple(x.shape)}")
    stats = init_stats(jnp.mean(x[:batch_size].astype(jnp.float32), axis=0))
    for start in range(0, x.shape[0], batch_size):
        stats = accumulate(stats, x[start:start + batch_size])
    return stats


@dataclasses.dataclass(frozen=True)
class Whitening:
    """The fitted map ``x -> (x - mean) @ kernel``.

    Attributes:
      mean: [E] float32.
      kernel: [E, K] float32, ``U diag(1/sqrt(lambda))`` with columns by decreasing variance.
      variances: [K] the kept eigenvalues of the covariance (float64).
      count: N, the rows the statistics came from.
    """

    mean: np.ndarray
    kernel: np.ndarray
    variances: np.ndarray
    count: int

    @property
    def k(self) -> int:
        return int(self.kernel.shape[1])


def mean_cov(stats: WhiteningStats) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, Sigma)`` in float64: the mean and the 1/N covariance of the streamed rows."""
    n = float(stats.count)
    if n < 1:
        raise ValueError(f"stats: expected statistics of at least 1 row, got count {n:g}")
    m = np.asarray(stats.total, np.float64) / n
    cov = np.asarray(stats.outer, np.float64) / n - np.outer(m, m)
    return np.asarray(stats.shift, np.float64) + m, (cov + cov.T) / 2


def fit_whitening(stats: WhiteningStats, k: int | None = None, *, eps: float = 1e-12) -> Whitening:
    """Solve post 8069's kernel from the statistics, keeping the first `k` dimensions.

    Args:
      stats: from `accumulate` / `stats_of` (N should exceed E, or the covariance is singular).
      k: dimensions kept, ``1 <= k <= E`` (None: all E; post 8069 uses 256 for base models).
      eps: eigenvalues are clamped at ``eps * max(lambda)`` so a rank-deficient covariance does
        not divide by zero (its null directions then carry noise, not signal).
    """
    e = stats.width
    k = e if k is None else k
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= e:
        raise ValueError(f"k: expected an int in [1, E={e}], got {k!r}")
    mean, cov = mean_cov(stats)
    lam, u = np.linalg.eigh(cov)  # ascending; the SVD of a symmetric PSD matrix
    order = np.argsort(lam)[::-1][:k]
    lam, u = lam[order], u[:, order]
    # Fix each column's sign (largest-magnitude entry positive): eigenvectors are defined up to
    # sign, and a deterministic kernel makes saved and refitted whitenings compare equal.
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(k)])
    u = u * np.where(signs == 0, 1.0, signs)
    lam = np.maximum(lam, eps * max(float(lam[0]), np.finfo(np.float64).tiny))
    kernel = u / np.sqrt(lam)
    return Whitening(mean.astype(np.float32), kernel.astype(np.float32), lam, int(round(float(stats.count))))


def whiten(x: Float[Array | np.ndarray, "N E"], w: Whitening) -> Float[Array, "N K"]:
    """``(x - mean) @ kernel`` (Su's code then L2-normalises; cosine scoring does that anyway)."""
    x = jnp.asarray(x, jnp.float32)
    if x.shape[-1] != w.mean.shape[0]:
        raise ValueError(f"x: expected width E={w.mean.shape[0]} (the whitening's), got "
                         f"{x.shape[-1]}")
    return (x - jnp.asarray(w.mean)[None, :]) @ jnp.asarray(w.kernel)
