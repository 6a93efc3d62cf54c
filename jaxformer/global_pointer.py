"""GlobalPointer span scores and Su's multi-label cross-entropy, as pure kernels.

GlobalPointer (Su, https://kexue.fm/archives/8373; the CLUENER and CMRC2018 heads of the CLUE
baselines, https://kexue.fm/archives/8739) scores every span (start i, end j) of a sequence as
a whole, one score matrix per entity type e:

    s[b, e, i, j] = (R_i q[b, i, e]) . (R_j k[b, j, e]) / sqrt(D)

with R_p the RoPE rotation at token position p (`jaxformer.rope.apply_rope`), so the score
depends on the two tokens' contents and on j - i only. Span (i, j) covers tokens i .. j
inclusive; a span is *invalid* when its start or end is padding, or (``exclude_lower``) when
it ends before it starts, j < i. Single-token spans (i = j) are valid.

**Mask value.** Invalid entries are ``mask_value(dtype) = -finfo(dtype).max / 2`` in the
scores' dtype: about -1.7e38 for float32 and bfloat16, -32752 for float16, finite in every
float dtype (Su's code subtracts 1e12, which overflows float16 to -inf). Half of the largest
finite value leaves room to add one more score of the same size without overflowing, and it
is far below any real score, so a masked span never wins an argmax or passes a threshold and
its ``exp`` underflows to exactly 0 in the loss.

**Loss.** `multilabel_categorical_crossentropy` is Su's loss for multi-label classification
(https://kexue.fm/archives/7359): ``log(1 + sum_neg e^s) + log(1 + sum_pos e^-s)``, which
pushes every positive score above 0 and every negative one below 0, so 0 is the decision
threshold. `global_pointer_loss` flattens ``[B, E, T, T]`` to ``[B*E, T*T]`` rows and takes
the mean over the B*E rows: the reduction of ``globalpointer_crossentropy`` in Su's
https://github.com/bojone/CLUE-bert4keras/blob/master/src/cluener.py
(``K.mean(multilabel_categorical_crossentropy(reshape(y_true, (bh, -1)), ...))``).

Shape letters: B batch, T tokens (the span start i and end j both index T), E entity types
(GlobalPointer's "heads"), D head size.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, Float, Real, Shaped

from jaxformer.rope import apply_rope


def mask_value(dtype: DTypeLike) -> float:
    """The score of an invalid span: ``-finfo(dtype).max / 2`` (module doc)."""
    return -float(jnp.finfo(dtype).max) / 2.0


def span_validity(
    mask: Shaped[Array, "B T"] | None, tokens: int, *, exclude_lower: bool = True
) -> Shaped[Array, "#B T T"] | None:
    """Which spans (i, j) are valid: both ends real tokens and, with `exclude_lower`, j >= i.

    Returns a bool ``[B, T, T]`` (``[1, T, T]`` without `mask`), or None when nothing is masked.
    """
    valid = None
    if mask is not None:
        real = mask.astype(bool)
        valid = real[:, :, None] & real[:, None, :]
    if exclude_lower:
        upper = jnp.triu(jnp.ones((tokens, tokens), bool))[None]  # j >= i
        valid = upper if valid is None else valid & upper
    return valid


def _check_qk(q: Array, k: Array) -> None:
    if q.ndim != 4:
        raise ValueError(f"q must have rank 4 [B, T, E, D], got shape {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q [B, T, E, D] = {tuple(q.shape)}, got "
                         f"{tuple(k.shape)}")
    if k.dtype != q.dtype:
        raise TypeError(f"k must have q's dtype {q.dtype}, got {k.dtype}; cast one of them")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        raise TypeError(f"q and k must have a floating dtype, got {q.dtype}")


def global_pointer_scores(
    q: Float[Array, "B T E D"],
    k: Float[Array, "B T E D"],
    *,
    mask: Shaped[Array, "B T"] | None = None,
    positions: Real[Array, "#B T"] | Real[np.ndarray, "#B T"] | None = None,
    rope: bool = True,
    rope_layout: str = "interleaved",
    exclude_lower: bool = True,
) -> Float[Array, "B E T T"]:
    """Span scores ``s[b, e, i, j] = (R_i q_i) . (R_j k_j) / sqrt(D)``, invalid spans masked.

    Args:
      q: ``[B, T, E, D]`` span-start vectors, one per token and entity type.
      k: ``[B, T, E, D]`` span-end vectors; same shape and dtype as `q`.
      mask: optional ``[B, T]``, nonzero (or True) for real tokens, 0 for padding: a span whose
        start or end is padding gets `mask_value` (as Su's ``sequence_masking`` on both axes).
      positions: ``[B, T]`` or ``[1, T]`` token positions for RoPE; default ``arange(T)``.
      rope: rotate q and k by RoPE (base 10000) before the dot product; needs an even D.
      rope_layout: ``"interleaved"`` (pairs (2i, 2i+1): Su's and bert4keras') or ``"half"``.
      exclude_lower: give spans with end < start (j < i) `mask_value` (bert4keras'
        ``tril_mask=True``). Turn it off for GPLinker-style head/tail pair matrices.

    Returns:
      ``[B, E, T, T]`` in q's dtype; ``[b, e, i, j]`` scores the span from token i to token j.
    """
    _check_qk(q, k)
    batch, tokens, _, head = q.shape
    if mask is not None and mask.shape != (batch, tokens):
        raise ValueError(f"mask must have shape [B, T] = {(batch, tokens)} (from q), got "
                         f"{tuple(mask.shape)}")
    if rope:
        if head % 2:
            raise ValueError(f"rope=True needs an even head size D, got D={head} (from q)")
        if positions is None:
            positions = jnp.arange(tokens, dtype=jnp.int32)[None, :]
        q = apply_rope(q, positions, layout=rope_layout)
        k = apply_rope(k, positions, layout=rope_layout)
    elif positions is not None:
        raise ValueError("positions only matter with rope=True; got rope=False and positions")
    # i indexes the start tokens (from q), j the end tokens (from k).
    scores = jnp.einsum("bied,bjed->beij", q, k)
    scores = scores * jnp.asarray(1.0 / math.sqrt(head), scores.dtype)
    valid = span_validity(mask, tokens, exclude_lower=exclude_lower)
    if valid is None:
        return scores
    fill = jnp.asarray(mask_value(scores.dtype), scores.dtype)
    return jnp.where(valid[:, None, :, :], scores, fill)


def multilabel_categorical_crossentropy(
    scores: Float[Array, "*rows C"], labels: Shaped[Array, "*rows C"]
) -> Float[Array, "*rows"]:
    """Su's multi-label cross-entropy, one value per row (reduced over the last axis).

    ``loss = log(1 + sum_{c: label=0} e^{s_c}) + log(1 + sum_{c: label=1} e^{-s_c})``
    (https://kexue.fm/archives/7359), each term a logsumexp with a zero logit appended, in
    float32 (float64 for float64 scores). A row without positives has a zero second term.
    Entries at `mask_value` contribute exactly 0 as negatives; label them 0 (a positive there
    is a data bug and costs about ``|mask_value|``).

    Args:
      scores: ``[..., C]`` real-valued scores (no sigmoid or softmax before).
      labels: ``[..., C]``, nonzero (or True) for the target classes, 0 otherwise.

    Returns:
      ``[...]``, one loss per row, each >= 0.
    """
    if labels.shape != scores.shape:
        raise ValueError(f"labels must have the shape of scores {tuple(scores.shape)}, got "
                         f"{tuple(labels.shape)}")
    acc = jnp.float64 if scores.dtype == jnp.float64 else jnp.float32
    s = scores.astype(acc)
    positive = labels.astype(bool)
    off = jnp.asarray(-jnp.inf, acc)
    zero = jnp.zeros(s.shape[:-1] + (1,), acc)
    neg = jnp.concatenate([jnp.where(positive, off, s), zero], axis=-1)
    pos = jnp.concatenate([jnp.where(positive, -s, off), zero], axis=-1)
    return jax.nn.logsumexp(neg, axis=-1) + jax.nn.logsumexp(pos, axis=-1)


def global_pointer_loss(
    scores: Float[Array, "B E T T"], labels: Shaped[Array, "B E T T"]
) -> Float[Array, ""]:
    """Mean over the B*E (example, type) rows of `multilabel_categorical_crossentropy` over
    each row's T*T spans (the reduction of Su's ``globalpointer_crossentropy``, module doc).

    `labels` is 1 at ``[b, e, start, end]`` for each gold span, 0 elsewhere (padding too).
    """
    if scores.ndim != 4 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must both be [B, E, T, T], got "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    batch, types, tokens, _ = scores.shape
    rows = (batch * types, tokens * tokens)
    return jnp.mean(multilabel_categorical_crossentropy(scores.reshape(rows),
                                                        labels.reshape(rows)))


def decode_spans(
    scores: Float[Array, "B E T T"] | Float[np.ndarray, "B E T T"], threshold: float = 0.0
) -> list[list[tuple[int, int, int, float]]]:
    """Host helper: the spans scoring above `threshold`, per batch row.

    Returns, for each b, a list of ``(e, start, end, score)`` with `end` inclusive (token
    indices), ordered by type, then start, then end (Su's ``np.where(scores > 0)``). The default
    threshold 0 is the loss's decision boundary; masked spans are never returned for any
    threshold >= `mask_value`. Runs in NumPy on the host (not jittable).
    """
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    s = np.asarray(jax.device_get(scores)).astype(np.float32)
    if s.ndim != 4 or s.shape[2] != s.shape[3]:
        raise ValueError(f"scores must be [B, E, T, T], got shape {tuple(s.shape)}")
    out = []
    for row in s:
        hits = np.argwhere(row > threshold)  # row-major: by type, start, end
        out.append([(int(e), int(i), int(j), float(row[e, i, j])) for e, i, j in hits])
    return out
