"""Softmax attention as a pure kernel, plus the mask helpers every attention kernel shares.

Shape letters: B batch, T query tokens, S key tokens, H heads, D head dim (q and k), K value
head dim. Masks are boolean, ``True`` = may attend, with shape ``[B|1, H|1, T|1, S]``.

An attention kernel is any function with the signature of :func:`softmax_attention`:
``kernel(q, k, v, *, mask, dropout_rate, key, deterministic) -> [B, T, H, K]``. The encoder
block calls whichever kernel its config names, so RoPE and linear attention plug in as new
kernels (and q/k transforms) without a new block class.
"""


from typing import Protocol

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Integer, PRNGKeyArray

from jaxformer.functional import attention_scale, dropout


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


class AttentionKernel(Protocol):
    """The signature every attention kernel implements."""

    def __call__(
        self,
        q: Float[Array, "B T H D"],
        k: Float[Array, "B S H D"],
        v: Float[Array, "B S H K"],
        *,
        mask: Bool[Array, "b h t S"] | None,
        dropout_rate: float,
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
) -> Float[Array, "B T H K"]:
    """Scaled dot-product attention ``softmax(q k^T / sqrt(D)) v`` (Vaswani et al. 2017, eq. 1).

    Masked scores are set to the dtype's most negative finite value rather than ``-inf``: that is
    what HF BERT adds, so padded keys get exactly zero weight and the outputs match it bit for
    bit in the unmasked rows, while a fully masked row stays finite (uniform) instead of NaN.
    The softmax runs in fp32 whatever the input dtype. Dropout acts on the probabilities, as in
    BERT.
    """
    batch, q_len, heads, head_dim = q.shape
    k_len = k.shape[1]
    if k.shape[0] != batch or k.shape[2] != heads or k.shape[3] != head_dim:
        raise ValueError(f"k has shape {tuple(k.shape)}; expected [B={batch}, S, H={heads}, D={head_dim}]")
    if v.shape[:3] != (batch, k_len, heads):
        raise ValueError(f"v has shape {tuple(v.shape)}; expected [B={batch}, S={k_len}, H={heads}, K]")
    scale = attention_scale(head_dim) if scale is None else scale
    if mask is not None:
        check_mask(mask, batch=batch, heads=heads, q_len=q_len, k_len=k_len)
    # Heads move next to batch before the contractions: XLA:CPU runs `BHTD,BHSD->BHTS` as a
    # plain batched matmul, while contracting straight from [B, T, H, D] was measured 1.2x
    # (BERT-base) to 4.5x (tiny) slower on 2 cores (benchmarks/bench_encoder.py).
    qh, kh, vh = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
    scores = jnp.einsum("BHTD,BHSD->BHTS", qh, kh).astype(jnp.float32) * jnp.float32(scale)
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    probs = dropout(probs, dropout_rate, key=key, deterministic=deterministic)
    return jnp.swapaxes(jnp.einsum("BHTS,BHSK->BHTK", probs, vh), 1, 2)
