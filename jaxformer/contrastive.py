"""Contrastive sentence-embedding objectives and their diagnostics, as pure functions.

- `simcse_loss`: unsupervised SimCSE (Gao, Yao & Chen 2021, arXiv:2104.08821), in the symmetric
  two-view form of Su's post (https://kexue.fm/archives/8348). Each sentence ``i`` is encoded
  twice with independent dropout, ``h_i^(0)`` and ``h_i^(1)``; for every row and view ``α``::

      l_i^α = -log  e^{cos(h_i^α, h_i^(1-α))/τ}
                    / ( Σ_{j≠i} e^{cos(h_i^α, h_j^α)/τ} + Σ_j e^{cos(h_i^α, h_j^(1-α))/τ} )

  and the loss is the mean over rows and both views. The denominator holds the other rows of the
  same view and every row of the other view (the positive included). Su's code computes the
  same thing on interleaved rows ``[x1, x1, x2, x2, ...]`` with the diagonal masked.
- `supervised_simcse_loss`: the paper's supervised objective (its eq. 5): anchor ``h_i``, an
  entailment ``h_i^+`` as positive and a contradiction ``h_i^-`` as hard negative; the
  denominator runs over every positive and every hard negative of the batch.
- `alignment`, `uniformity`: Wang & Isola 2020 (arXiv:2005.10242), on L2-normalised rows.

Every value is computed in fp32 from L2-normalised rows. ``weights`` ``[B]`` (0 for the padding
rows of an evaluation batch) weigh the rows as anchors, and rows of weight 0 are also dropped as
negatives, so padding changes nothing. With ``axis_name`` (inside `jax.shard_map` or `jax.pmap`
over a batch-sharded device axis) the rows of every device are gathered as negatives and the
sums reduced with ``psum``: the value and its gradients equal the single-device loss of the
global batch. Under GSPMD (`jax.jit` with shardings) no axis name is needed: the loss is written
over the global batch and XLA inserts the gather.

Shape letters: B rows (the global batch), b rows on one device (``b = B`` without an axis name),
E width, R query rows, C candidate rows.
"""

import math

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from jaxformer.pooling import l2_normalize

# The logits are cosines times 1/τ (20 at τ = 0.05): a TF32 matmul's ~1e-3 relative error would
# move them by ~0.02, so the [R, C] similarity matmul, tiny next to the encoder, runs at full
# fp32 precision on every backend.
_PRECISION = lax.Precision.HIGHEST


def _check_temperature(temperature: float) -> None:
    ok = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not (ok and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature: expected a finite float > 0, got {temperature!r}")


def _check_rows(name: str, z: Array, rows: int | None, width: int | None) -> None:
    if getattr(z, "ndim", None) != 2:
        raise ValueError(f"{name}: expected an array of rank 2 [B, E], got shape "
                         f"{tuple(getattr(z, 'shape', ()))}")
    if not jnp.issubdtype(z.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating array, got dtype {z.dtype}")
    if rows is not None and z.shape != (rows, width):
        raise ValueError(f"{name}: expected shape [B, E] = {(rows, width)} like the first "
                         f"embeddings, got {tuple(z.shape)}")


def _row_weights(weights: Array | None, rows: int) -> Float[Array, " b"]:
    if weights is None:
        return jnp.ones((rows,), jnp.float32)
    if getattr(weights, "shape", None) != (rows,):
        raise ValueError(f"weights: expected shape [B] = ({rows},), got "
                         f"{tuple(getattr(weights, 'shape', ()))}")
    return jnp.asarray(weights, jnp.float32)


def _unit(z: Array) -> Float[Array, "b E"]:
    return l2_normalize(jnp.asarray(z, jnp.float32))


def _gather(x: Array, axis_name: str | None) -> Array:
    """All devices' rows of `x` along axis 0, in device order (`x` itself without an axis)."""
    return x if axis_name is None else lax.all_gather(x, axis_name, axis=0, tiled=True)


def _row_offset(rows: int, axis_name: str | None) -> Array:
    """Index of this device's first row in the gathered batch (0 without an axis)."""
    if axis_name is None:
        return jnp.zeros((), jnp.int32)
    return lax.axis_index(axis_name).astype(jnp.int32) * rows


def _psum(x: Array, axis_name: str | None) -> Array:
    return x if axis_name is None else lax.psum(x, axis_name)


def _ratio(num: Array, den: Array) -> Array:
    """``num / den``, and 0 where ``den == 0`` (then ``num`` is a sum of zero-weight terms)."""
    return num / jnp.where(den > 0, den, jnp.ones_like(den))


def info_nce_sums(
    queries: Float[Array, "R E"],
    candidates: Float[Array, "C E"],
    *,
    positive: Array,
    excluded: Array,
    candidate_valid: Array,
    row_weights: Float[Array, " R"],
    temperature: float,
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
    """The weighted sums of an InfoNCE loss with an explicit candidate set per query row.

    Row r's logits are ``q_r · c_j / τ`` over the candidates j, minus those with
    ``candidate_valid[j] == False`` (padding; its own positive always stays) and
    ``j == excluded[r]`` (the query itself; -1 for none). Row r's loss is ``logsumexp_j -
    logit_{positive[r]}``.

    Args:
      queries, candidates: L2-normalised fp32 rows.
      positive: int ``[R]``, the column of each row's positive.
      excluded: int ``[R]``, a column left out of each row's denominator (-1: none).
      candidate_valid: bool ``[C]``.
      row_weights: ``[R]``; a row of weight 0 contributes 0 (never NaN).
      temperature: τ > 0.

    Returns:
      ``(Σ_r w_r l_r, Σ_r w_r, Σ_r w_r cos(q_r, c_{positive[r]}))``.
    """
    logits = jnp.einsum("re,ce->rc", queries, candidates, precision=_PRECISION) / temperature
    cols = jnp.arange(candidates.shape[0], dtype=jnp.int32)[None, :]
    is_positive = cols == positive[:, None]
    keep = (candidate_valid[None, :] | is_positive) & (cols != excluded[:, None])
    masked = jnp.where(keep, logits, -jnp.inf)
    positive_logit = jnp.sum(jnp.where(is_positive, logits, jnp.zeros_like(logits)), axis=1)
    per_row = jax.nn.logsumexp(masked, axis=1) - positive_logit
    counts = row_weights > 0
    zero = jnp.zeros_like(per_row)
    loss_sum = jnp.sum(row_weights * jnp.where(counts, per_row, zero))
    cosine_sum = jnp.sum(row_weights * jnp.where(counts, positive_logit * temperature, zero))
    return loss_sum, jnp.sum(row_weights), cosine_sum


def simcse_loss(
    z1: Array,
    z2: Array,
    *,
    temperature: float = 0.05,
    axis_name: str | None = None,
    weights: Array | None = None,
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Unsupervised SimCSE over in-batch negatives, symmetric in the two views (module doc).

    Args:
      z1, z2: ``[b, E]`` embeddings of the same b sentences under two dropout masks (any float
        dtype; normalised and scored in fp32).
      temperature: τ; the post's code multiplies cosines by 20, i.e. τ = 0.05.
      axis_name: a device axis the batch is split over (inside `jax.shard_map` / `jax.pmap`);
        every device's rows become negatives and the result is the global-batch loss.
      weights: optional ``[b]`` row weights (0: a padding row, neither anchor nor negative).

    Returns:
      ``(loss, {"positive_cosine": weighted mean cos(h_i^(0), h_i^(1))})``, fp32 scalars, the
      same on every device (0 when every weight is 0).
    """
    _check_rows("z1", z1, None, None)
    _check_rows("z2", z2, *z1.shape)
    _check_temperature(temperature)
    b = z1.shape[0]
    w = _row_weights(weights, b)
    u1, u2 = _unit(z1), _unit(z2)
    g1, g2, gw = _gather(u1, axis_name), _gather(u2, axis_name), _gather(w, axis_name)
    big_b = g1.shape[0]
    local = _row_offset(b, axis_name) + jnp.arange(b, dtype=jnp.int32)
    # Queries: this device's rows of view 0 then view 1; candidates: all rows of view 0 then 1.
    sums = info_nce_sums(
        jnp.concatenate([u1, u2]), jnp.concatenate([g1, g2]),
        positive=jnp.concatenate([local + big_b, local]),
        excluded=jnp.concatenate([local, local + big_b]),
        candidate_valid=jnp.concatenate([gw, gw]) > 0,
        row_weights=jnp.concatenate([w, w]), temperature=temperature)
    loss_sum, weight_sum, cosine_sum = (_psum(s, axis_name) for s in sums)
    return _ratio(loss_sum, weight_sum), {"positive_cosine": _ratio(cosine_sum, weight_sum)}


def supervised_simcse_loss(
    anchor: Array,
    positive: Array,
    hard_negative: Array | None = None,
    *,
    temperature: float = 0.05,
    axis_name: str | None = None,
    weights: Array | None = None,
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Supervised SimCSE (the paper's eq. 5): ``l_i = -log e^{cos(h_i, h_i^+)/τ} /
    Σ_j (e^{cos(h_i, h_j^+)/τ} + e^{cos(h_i, h_j^-)/τ})``, averaged over anchors.

    Args:
      anchor, positive: ``[b, E]`` premises and their entailment hypotheses.
      hard_negative: optional ``[b, E]`` contradiction hypotheses; without them the
        denominator holds the positives only.
      temperature, axis_name, weights: as in `simcse_loss` (a weight-0 row's positive and hard
        negative are dropped as candidates too).

    Returns:
      ``(loss, {"positive_cosine": weighted mean cos(h_i, h_i^+)})``.
    """
    _check_rows("anchor", anchor, None, None)
    _check_rows("positive", positive, *anchor.shape)
    if hard_negative is not None:
        _check_rows("hard_negative", hard_negative, *anchor.shape)
    _check_temperature(temperature)
    b = anchor.shape[0]
    w = _row_weights(weights, b)
    gw = _gather(w, axis_name)
    candidates = [_gather(_unit(positive), axis_name)]
    if hard_negative is not None:
        candidates.append(_gather(_unit(hard_negative), axis_name))
    local = _row_offset(b, axis_name) + jnp.arange(b, dtype=jnp.int32)
    sums = info_nce_sums(
        _unit(anchor), jnp.concatenate(candidates), positive=local,
        excluded=jnp.full((b,), -1, jnp.int32),
        candidate_valid=jnp.concatenate([gw] * len(candidates)) > 0,
        row_weights=w, temperature=temperature)
    loss_sum, weight_sum, cosine_sum = (_psum(s, axis_name) for s in sums)
    return _ratio(loss_sum, weight_sum), {"positive_cosine": _ratio(cosine_sum, weight_sum)}


def alignment(z1: Array, z2: Array, alpha: float = 2.0, *, weights: Array | None = None
              ) -> Float[Array, ""]:
    """Wang & Isola's alignment ``E ||f(x) - f(x+)||^α`` over the positive pairs ``(z1_i,
    z2_i)`` of L2-normalised rows (lower is better; weighted mean with `weights` ``[B]``)."""
    _check_rows("z1", z1, None, None)
    _check_rows("z2", z2, *z1.shape)
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha: expected a finite float > 0, got {alpha!r}")
    w = _row_weights(weights, z1.shape[0])
    diff = _unit(z1) - _unit(z2)
    # Powers of the squared distance, not of the norm: the norm's gradient is NaN at 0
    # (identical views, e.g. without dropout).
    dist = jnp.sum(diff * diff, axis=1) ** (alpha / 2)
    return _ratio(jnp.sum(w * dist), jnp.sum(w))


def uniformity(z: Array, t: float = 2.0, *, weights: Array | None = None) -> Float[Array, ""]:
    """Wang & Isola's uniformity ``log E_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)`` over the distinct
    pairs of L2-normalised rows (lower is better).

    With `weights` ``[B]``, pair ``(i, j)`` has weight ``w_i w_j``; 0 when fewer than two rows
    have weight > 0 (no pair).
    """
    _check_rows("z", z, None, None)
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
        raise ValueError(f"t: expected a finite float > 0, got {t!r}")
    n = z.shape[0]
    w = _row_weights(weights, n)
    u = _unit(z)
    # ||a - b||^2 = 2 - 2 a·b for unit rows; clamped at 0 against rounding.
    gram = jnp.einsum("ie,je->ij", u, u, precision=_PRECISION)
    sq = jnp.maximum(2.0 - 2.0 * gram, jnp.zeros_like(gram))
    upper = jnp.arange(n)[:, None] < jnp.arange(n)[None, :]
    pair_w = jnp.where(upper, w[:, None] * w[None, :], jnp.zeros_like(gram))
    has_pairs = pair_w > 0
    # log Σ w e^{-t d} - log Σ w, as a logsumexp (the mean of e^{-t d} underflows for large t).
    log_w = jnp.log(jnp.where(has_pairs, pair_w, jnp.ones_like(pair_w)))
    terms = jnp.where(has_pairs, -t * sq + log_w, -jnp.inf)
    total = jnp.sum(pair_w)
    any_pair = total > 0
    value = jax.nn.logsumexp(jnp.where(any_pair, terms, jnp.zeros_like(terms))) \
        - jnp.log(jnp.where(any_pair, total, jnp.ones_like(total)))
    return jnp.where(any_pair, value, jnp.zeros_like(value))
