"""Softmax attention as a pure kernel, plus the mask helpers every attention kernel shares.

Shape letters: B batch, T query tokens, S key tokens, H heads, D head dim (q and k), K value
head dim. Masks are boolean, ``True`` = may attend, with shape ``[B|1, H|1, T|1, S]``.

Two layers of signature:

- the pure kernels here (`softmax_attention`, `fused_attention`) and beside it
  (`jaxformer.linear_attention.linear_attention`, `jaxformer.flash_attention.flash_attention`)
  take every option as a keyword;
- an :class:`AttentionKernel` is one of them with its options (scale, dropout rate, causality,
  RoPE settings, precision, implementation) bound once, so that it receives only what changes
  per call: ``kernel(q, k, v, *, mask, positions, freqs, key, deterministic)``. The encoder
  block calls the one `jaxformer.models.bind_attention` makes from its config and knows no
  kernel by name: softmax (XLA, fused, flash), linear, and any later kernel plug in there.
"""


import functools
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Integer, PRNGKeyArray

from jaxformer.functional import (Precision, attention_scale, compute_dtype, dropout,
                                  precision_scope, resolve_precision)
from jaxformer.random_bits import check_size


def padding_mask(attention_mask: Integer[Array, "B S"] | Bool[Array, "B S"]) -> Bool[Array, "B 1 1 S"]:
    """Turn an HF-style ``[B, S]`` 1/0 padding mask into a broadcastable boolean ``[B, 1, 1, S]``."""
    if attention_mask.ndim != 2:
        raise ValueError(
            f"attention_mask must have rank 2 [B, S], got shape {tuple(attention_mask.shape)}"
        )
    return (attention_mask != 0)[:, None, None, :]


def causal_mask(num_tokens: int) -> Bool[Array, "1 1 T T"]:
    """Lower-triangular mask: query t attends to keys s <= t."""
    return jnp.tril(jnp.ones((num_tokens, num_tokens), dtype=jnp.bool_))[None, None]


def check_qkv(q: Array, k: Array, v: Array) -> int:
    """Raise a ValueError naming the expected and actual shape unless k is ``[B, S, H, D]`` and
    v ``[B, S, H, K]`` for q ``[B, T, H, D]``; returns S."""
    batch, _, heads, head_dim = q.shape
    k_len = k.shape[1]
    if k.shape[0] != batch or k.shape[2] != heads or k.shape[3] != head_dim:
        raise ValueError(f"k has shape {tuple(k.shape)}; expected [B={batch}, S, H={heads}, D={head_dim}]")
    if v.shape[:3] != (batch, k_len, heads):
        raise ValueError(f"v has shape {tuple(v.shape)}; expected [B={batch}, S={k_len}, H={heads}, K]")
    return k_len


def check_mask(mask: Array, *, batch: int, heads: int, q_len: int, k_len: int) -> None:
    """Raise a ValueError naming the expected and actual mask shapes unless it broadcasts."""
    want = (batch, heads, q_len, k_len)
    ok = mask.ndim == 4 and all(m in (1, w) for m, w in zip(mask.shape[:3], want[:3]))
    ok = ok and mask.shape[3] == k_len
    if not ok:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}; expected [B|1, H|1, T|1, S] with "
            f"B={batch}, H={heads}, T={q_len}, S={k_len}"
        )


@runtime_checkable
class AttentionKernel(Protocol):
    """A bound attention kernel: the options are fixed, the arrays come per call.

    Args:
      q, k, v: ``[B, T, H, D]``, ``[B, S, H, D]``, ``[B, S, H, K]``, before any RoPE rotation.
      mask: boolean ``[B|1, H|1, T|1, S]`` (True = may attend), or None.
      positions: RoPE positions ``[B|1, T]`` or ``[B|1, T, A]``, or None (``0..T-1`` when the
        kernel rotates; ignored by kernels without RoPE).
      freqs: learned RoPE frequencies ``[H, A, D/2]`` (RoPE-Mixed), or None.
      key: PRNG key for attention dropout, or None.
      deterministic: True disables dropout.

    Returns:
      ``[B, T, H, K]`` in v's dtype.
    """

    def __call__(
        self,
        q: Float[Array, "B T H D"],
        k: Float[Array, "B S H D"],
        v: Float[Array, "B S H K"],
        *,
        mask: Bool[Array, "b h t S"] | None,
        positions: Array | None,
        freqs: Array | None,
        key: PRNGKeyArray | None,
        deterministic: bool,
    ) -> Float[Array, "B T H K"]: ...


def softmax_attention(
    q: Float[Array, "B T H D"],
    k: Float[Array, "B S H D"],
    v: Float[Array, "B S H K"],
    *,
    mask: Array | None = None,  # [B|1, H|1, T|1, S] bool; validated by check_mask
    dropout_rate: float = 0.0,
    key: PRNGKeyArray | None = None,
    deterministic: bool = True,
    scale: float | None = None,
    query_tile: int | str | None = "auto",
    precision: Precision = None,
) -> Float[Array, "B T H K"]:
    """Scaled dot-product attention ``softmax(q k^T / sqrt(D)) v`` (Vaswani et al. 2017, eq. 1).

    Masked scores are set to the dtype's most negative finite value rather than ``-inf``: that is
    what HF BERT adds, so padded keys get exactly zero weight, while a fully masked row stays
    finite (uniform) instead of NaN. Scores, the softmax and its normaliser are fp32 whatever the
    input dtype (float64 for float64). Dropout acts on the probabilities, as in BERT.

    The normalisation is deferred, as in FlashAttention (Dao et al. 2022, Alg. 1):
    ``out = (exp(s - m) v) / l`` with ``l = sum_S exp(s - m)``, which equals ``softmax(s) v``
    (dropout scales elements, so it commutes with the per-row division). Dividing ``[T, K]``
    instead of ``[T, S]`` saves one pass over the scores, and the backward pass then reduces over
    K instead of S: it removes the ``sum_S(P * dP)`` row reduction of the softmax vjp, which
    XLA:CPU runs slowly. Measured on 2 CPU cores at B=1, T=512, H=12, D=64: forward unchanged
    (6.4 vs 6.7 ms), forward+backward 38.9 -> 21.4 ms.

    ``query_tile`` W splits the queries into tiles of W rows, each attending to all keys (the
    outer loop of FlashAttention without its online softmax, since a row's keys are all in
    one tile). ``"auto"`` tiles on CPU only (`resolve_query_tile`); results equal one pass up
    to rounding, and dropout masks are identical.

    ``precision`` is the two matmuls' `precision=` (`jaxformer.functional.resolve_precision`).
    """
    batch, q_len, heads, head_dim = q.shape
    k_len = check_qkv(q, k, v)
    scale = attention_scale(head_dim) if scale is None else scale
    if mask is not None:
        check_mask(mask, batch=batch, heads=heads, q_len=q_len, k_len=k_len)
    tile = resolve_query_tile(query_tile, q_len)
    if not deterministic and dropout_rate > 0:
        check_size((batch, heads, q_len, k_len))  # the dropout counter indexes [B, H, T, S]
    # Heads move next to batch before the contractions: XLA:CPU runs `BHTD,BHSD->BHTS` as a
    # plain batched matmul, while contracting straight from [B, T, H, D] was measured 1.2x
    # (BERT-base) to 4.5x (tiny) slower on 2 cores.
    qh, kh, vh = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
    attend = functools.partial(_attend, kh=kh, vh=vh, scale=scale, q_len=q_len,
                               dropout_rate=dropout_rate, key=key, deterministic=deterministic,
                               precision=resolve_precision(precision))
    if tile is None:
        out = attend(qh, mask, jnp.uint32(0))
    else:
        # Query tiles [G, B, H, W, D], each against all keys; a mask with a query axis is
        # tiled alike. XLA:CPU keeps a tile's [B, H, W, S] scores in cache between the matmul,
        # the softmax and the second matmul (`resolve_query_tile` has the measurements).
        groups = q_len // tile
        split = lambda a: jnp.moveaxis(a.reshape(*a.shape[:2], groups, tile, a.shape[-1]), 2, 0)  # noqa: E731
        mask_tiles = None if mask is None or mask.shape[2] == 1 else split(mask)
        starts = jnp.arange(groups, dtype=jnp.uint32) * jnp.uint32(tile)
        out = jax.lax.map(lambda xs: attend(xs[0], mask if xs[1] is None else xs[1], xs[2]),
                          (split(qh), mask_tiles, starts))
        out = jnp.moveaxis(out, 0, 2).reshape(*out.shape[1:3], q_len, out.shape[-1])
    return jnp.swapaxes(out, 1, 2)


# Query tiles on XLA:CPU, measured on 2 cores, fp32. Attention core alone (B=1, H=12, D=64):
# T=2048 one pass 198 ms, 16 tiles of 128 under `lax.map` 119 ms. Whole BERT-base forward
# (B=1): T=2048 3606 -> 3038 ms, but T=512 519 -> 533 ms (4 tiles), so "auto" starts at 2048.
# Accelerators fuse attention differently (or call a flash kernel), so "auto" is CPU only.
# The tiles run under `lax.map`, a while loop: XLA's cost analysis counts one tile and
# `jaxformer.flops.xla_flops` flags the figure.
QUERY_TILE = 128
AUTO_TILE_FROM = 2048


def resolve_query_tile(query_tile: int | str | None, q_len: int) -> int | None:
    """The query tile W `softmax_attention` uses for T=`q_len`, or None for one pass.

    ``"auto"``: `QUERY_TILE` on a CPU backend when T >= `AUTO_TILE_FROM` and W divides T,
    else None. An int W must divide T (W >= T means one pass).
    """
    if query_tile is None:
        return None
    if query_tile == "auto":
        if jax.default_backend() != "cpu" or q_len < AUTO_TILE_FROM or q_len % QUERY_TILE:
            return None
        return QUERY_TILE
    if isinstance(query_tile, bool) or not isinstance(query_tile, int) or query_tile < 1:
        raise ValueError(f"query_tile must be 'auto', None or an int >= 1, got {query_tile!r}")
    if query_tile >= q_len:
        return None
    if q_len % query_tile:
        raise ValueError(f"query_tile={query_tile} must divide the number of queries T={q_len}")
    return query_tile


def _attend(qh: Array, mask: Array | None, start: Array, *, kh: Array, vh: Array, scale: float,
            q_len: int, dropout_rate: float, key: PRNGKeyArray | None, deterministic: bool,
            precision: jax.lax.Precision | None) -> Array:
    """Attention of the query rows ``start ... start + W - 1`` ``qh: [B, H, W, D]`` to all keys."""
    acc = compute_dtype(vh.dtype)  # fp32, or float64 for float64 inputs
    scores = jnp.einsum("BHTD,BHSD->BHTS", qh, kh, preferred_element_type=acc,
                        precision=precision) * acc.type(scale)
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(acc).min)
    # The max only shifts the exponent (softmax is invariant to it), so no gradient flows
    # through it; the shifted exponentials are <= 1 and cannot overflow.
    shift = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    weights = jnp.exp(scores - shift)
    norm = jnp.sum(weights, axis=-1)  # [B, H, W]; >= 1 (the arg-max term is exp(0))
    if not deterministic and dropout_rate > 0:
        # Each weight's flat index in the whole [B, H, T, S]: a tile draws the mask it has
        # in one pass, so tiling never changes the training run.
        b, h, w, s = scores.shape
        iota = lambda axis: jax.lax.broadcasted_iota(jnp.uint32, (b, h, w, s), axis)  # noqa: E731
        row = iota(2) + start
        index = ((iota(0) * jnp.uint32(h) + iota(1)) * jnp.uint32(q_len) + row) * jnp.uint32(s) + iota(3)
        weights = dropout(weights, dropout_rate, key=key, deterministic=False, index=index)
    # fp32 accumulation and output: unnormalised sums of S values could overflow fp16.
    out = jnp.einsum("BHTS,BHSK->BHTK", weights.astype(vh.dtype), vh,
                     preferred_element_type=acc, precision=precision) / norm[..., None]
    return out.astype(vh.dtype)


FUSED_IMPLEMENTATIONS = ("cudnn", "xla")


def fused_implementation(dtype: object, head_dim: int, *, backend: str | None = None) -> str:
    """What `fused_attention` asks `jax.nn.dot_product_attention` for: ``"cudnn"`` on an
    NVIDIA GPU for bf16/fp16 inputs with D a multiple of 8 up to 128 (cuDNN's fused
    flash-attention kernels; fp32 has none), else ``"xla"``."""
    backend = jax.default_backend() if backend is None else backend
    if (backend == "gpu" and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
            and head_dim % 8 == 0 and head_dim <= 128):
        return "cudnn"
    return "xla"


def fused_attention(
    q: Float[Array, "B T H D"],
    k: Float[Array, "B S H D"],
    v: Float[Array, "B S H K"],
    *,
    mask: Array | None = None,  # [B|1, H|1, T|1, S] bool; validated by check_mask
    scale: float | None = None,
    causal: bool = False,
    implementation: str | None = None,
    precision: Precision = None,
) -> Float[Array, "B T H K"]:
    """Softmax attention through `jax.nn.dot_product_attention`, without dropout.

    ``implementation``: ``"cudnn"`` (cuDNN's fused kernel: scores never reach device memory),
    ``"xla"``, or None for `fused_implementation`'s choice. Same maths as `softmax_attention`
    (masked logits get a large negative number, so a fully masked row is a uniform average, not
    NaN); it cannot drop attention weights, which is why training with attention dropout falls
    back to a kernel that can (`jaxformer.models.attention_path` says which).
    """
    batch, q_len, heads, head_dim = q.shape
    k_len = check_qkv(q, k, v)
    if mask is not None:
        check_mask(mask, batch=batch, heads=heads, q_len=q_len, k_len=k_len)
    if implementation is None:
        implementation = fused_implementation(q.dtype, head_dim)
    if implementation not in FUSED_IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {list(FUSED_IMPLEMENTATIONS)} or None, "
                         f"got {implementation!r}")
    scale = attention_scale(head_dim) if scale is None else scale
    if mask is not None and implementation == "cudnn" and mask.shape[2] != q_len:
        # cuDNN takes the mask as an additive bias, which must span the query axis.
        mask = jnp.broadcast_to(mask, (*mask.shape[:2], q_len, k_len))
    # jax's own XLA implementation promotes bf16 logits to fp32 implicitly, which the strict
    # promotion mode (this kit's tests) refuses; the promotion is jax's, so allow it there.
    with precision_scope(precision), jax.numpy_dtype_promotion("standard"):
        out = jax.nn.dot_product_attention(q, k, v.astype(q.dtype), mask=mask, scale=scale,
                                           is_causal=causal, implementation=implementation)
    return out.astype(v.dtype)
