"""Sentence poolings over an encoder's hidden states, as pure functions.

Shape letters: B batch, T tokens, E width, L layers. `mask` is the ``[B, T]`` 1/0 padding mask.

Su's post 8321 names four poolings, P1 to P4; the CLI's ``--pooling`` uses these names:

| name             | post 8321 | what                                                    |
|------------------|-----------|---------------------------------------------------------|
| ``cls``          | P1        | last layer, first token                                 |
| ``pooler``       | P2        | BERT's pooler: ``tanh(W h_cls + b)`` (needs the pooler)  |
| ``mean``         | P3        | last layer, mean over unpadded tokens                   |
| ``first-last-avg``| P4       | mean over tokens of (block-0 output + last layer) / 2    |

"First layer" means the output of block 0 (``hidden_states[1]``), not the embeddings, as in
BERT-flow's "first-last-avg" (a known pitfall when porting).
"""


import jax.numpy as jnp
from jaxtyping import Array, Float, Integer

POOLINGS = ("cls", "mean", "first-last-avg", "pooler")


def cls_pool(hidden: Float[Array, "B T E"]) -> Float[Array, "B E"]:
    """The first token's vector."""
    return hidden[:, 0, :]


def mean_pool(hidden: Float[Array, "B T E"], mask: Integer[Array, "B T"]) -> Float[Array, "B E"]:
    """Mean over the tokens where ``mask != 0``, accumulated in fp32.

    The denominator is clamped at 1e-9 as sentence-transformers does, so an all-padding row
    gives zeros instead of NaN.
    """
    if mask.shape != hidden.shape[:2]:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected [B, T] = {hidden.shape[:2]}")
    m = (mask != 0).astype(jnp.float32)[:, :, None]
    total = jnp.sum(hidden.astype(jnp.float32) * m, axis=1)
    count = jnp.maximum(jnp.sum(m, axis=1), jnp.float32(1e-9))
    return (total / count).astype(hidden.dtype)


def first_last_avg_pool(
    first: Float[Array, "B T E"], last: Float[Array, "B T E"], mask: Integer[Array, "B T"]
) -> Float[Array, "B E"]:
    """Masked mean of ``(first + last) / 2`` (post 8321's P4)."""
    return mean_pool((first + last) * jnp.asarray(0.5, last.dtype), mask)


def l2_normalize(x: Float[Array, "B E"], *, eps: float = 1e-12) -> Float[Array, "B E"]:
    """Divide rows by their L2 norm (clamped at `eps`, as torch's F.normalize)."""
    norm = jnp.linalg.norm(x.astype(jnp.float32), axis=-1, keepdims=True)
    return (x.astype(jnp.float32) / jnp.maximum(norm, jnp.float32(eps))).astype(x.dtype)
