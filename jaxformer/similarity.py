"""Pair scores and rank correlation on device: cosine similarity, tie-averaged ranks, Spearman.

STS evaluation (post 8321; SentEval; Su's `compute_corrcoef` in bojone/SimCSE) scores each
sentence pair by the cosine of its two embeddings and reports Spearman's rho between those
scores and the gold labels. Everything here is a pure, jittable function; `spearman` matches
``scipy.stats.spearmanr`` including ties (tied values share the mean of their ranks).

Shape letters: N pairs (or values), E width.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def cosine_rows(u: Float[Array, "N E"], v: Float[Array, "N E"], *, eps: float = 1e-12
                ) -> Float[Array, " N"]:
    """Row-wise cosine similarity, in float32 (norms clamped at `eps`, as torch's
    ``F.cosine_similarity``)."""
    if u.shape != v.shape:
        raise ValueError(f"u and v: expected the same [N, E] shape, got {tuple(u.shape)} and "
                         f"{tuple(v.shape)}")
    u = u.astype(jnp.float32)
    v = v.astype(jnp.float32)
    dot = jnp.einsum("ne,ne->n", u, v)
    norms = jnp.linalg.norm(u, axis=-1) * jnp.linalg.norm(v, axis=-1)
    return dot / jnp.maximum(norms, jnp.float32(eps))


def rank_average(x: Float[Array, " N"]) -> Float[Array, " N"]:
    """1-based ranks of `x`, ties given the mean of the ranks they span (scipy's
    ``rankdata(method="average")``).

    With ``s = sort(x)``, the tied block of a value ``x_i`` occupies sorted positions
    ``[searchsorted(s, x_i, "left"), searchsorted(s, x_i, "right"))``, so its average 1-based
    rank is ``(left + right + 1) / 2``: two binary searches, no Python loop over ties.
    """
    if x.ndim != 1:
        raise ValueError(f"x: expected a 1-D array [N], got shape {tuple(x.shape)}")
    s = jnp.sort(x)
    left = jnp.searchsorted(s, x, side="left")
    right = jnp.searchsorted(s, x, side="right")
    return (left + right + 1).astype(jnp.float32) * jnp.float32(0.5)


def pearson(x: Float[Array, " N"], y: Float[Array, " N"]) -> Float[Array, ""]:
    """Pearson's r in float32, centred first (the raw-moment form loses digits at large N);
    NaN when a side is constant."""
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y: expected two 1-D arrays of equal length, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    # A constant side has no correlation (NaN, as scipy); tested explicitly because the centred
    # values of a constant vector need not round to exact zeros (the mean is sum * (1/N)).
    constant = (jnp.max(x) == jnp.min(x)) | (jnp.max(y) == jnp.min(y))
    x = x - jnp.mean(x)
    y = y - jnp.mean(y)
    r = jnp.sum(x * y) / jnp.sqrt(jnp.sum(x * x) * jnp.sum(y * y))
    return jnp.where(constant, jnp.float32(jnp.nan), r)


@jax.jit
def spearman(x: Float[Array, " N"], y: Float[Array, " N"]) -> Float[Array, ""]:
    """Spearman's rho: the Pearson correlation of the tie-averaged ranks.

    A constant input has no ranking and gives NaN (as scipy, which also warns).
    """
    return pearson(rank_average(x), rank_average(y))


@jax.jit
def pair_spearman(u: Float[Array, "N E"], v: Float[Array, "N E"], gold: Float[Array, " N"]
                  ) -> Float[Array, ""]:
    """Spearman's rho between the pairs' cosine similarities and the gold scores."""
    return spearman(cosine_rows(u, v), gold.astype(jnp.float32))
