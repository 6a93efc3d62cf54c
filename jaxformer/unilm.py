"""UniLM's sequence-to-sequence attention mask, as a pure kernel.

Shape letters: B batch, T tokens (queries i and keys j both index T).

UniLM (Dong et al. 2019, "Unified Language Model Pre-training for Natural Language
Understanding and Generation", arXiv:1905.03197, Fig. 1: the seq-to-seq LM) makes one bidirectional
Transformer encoder a seq2seq model through its self-attention mask alone. The input is
``[CLS] source [SEP] target [SEP]`` with segment id 0 on the source and 1 on the target:

* a source token attends to the whole source and to no target token (the source is encoded
  bidirectionally, as by an encoder);
* a target token attends to the whole source and to the target tokens up to and including
  itself (the target is a left-to-right language model conditioned on the source, as a decoder).

Training then predicts target token t + 1 from position t with the ordinary (tied) MLM head, and
no parameter is added, which is why a pretrained BERT can be fine-tuned for generation as it is.
Su's posts explain the idea and use it with bert4keras: https://kexue.fm/archives/6933 ("from
language models to seq2seq: it all depends on the mask") and https://kexue.fm/archives/7427
(SimBERT, whose generation half is this mask).

**The rule.** Let ``c = cumsum(segment_ids)`` along T. Then

    mask[i, j] = c[j] <= c[i]            (query i may attend to key j)

which is bert4keras' ``unilm_mask`` (``idxs[:, None, :] <= idxs[:, :, None]``). Derivation for
the layout source-then-target, s source tokens followed by target tokens: every source token
has ``c = 0`` and the k-th target token (k = 1, 2, ...) has ``c = k``. A source query (``c[i] =
0``) sees exactly the keys with ``c[j] = 0``, the source. A target query with ``c[i] = k`` sees
every source key (``0 <= k``) and the target keys with ``c[j] <= k``, the first k target tokens,
i.e. itself and the target tokens before it. For any 0/1 pattern ``c`` numbers *blocks* (each
target token opens a new one, which source tokens after it join) and a token sees its own block
and every earlier one: all-zero segment ids give one block (BERT's bidirectional mask), all-one
ids T blocks (the causal mask of a decoder-only LM).

**Padding.** Padded rows usually carry segment id 0 after the target (HF and bert4keras
tokenizers pad ``token_type_ids`` with 0), so ``c`` alone would put the padding in the last
target token's block. With ``attention_mask`` given, padding keys are removed from every row,
and a padding *query* sees itself only: its row is never all False, so no kernel meets a row
without keys (the kit's softmax stays finite there anyway; other implementations may return
NaN), and what a padding position computes never depends on the real tokens. Every row of the
result contains its diagonal (a real query is in its own block), so no row is all False.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Integer


def _check_inputs(segment_ids: Array, attention_mask: Array | None) -> None:
    """Shape and dtype checks at trace time; the {0, 1} value check on concrete arrays only
    (inside `jit` any nonzero segment id counts as target)."""
    if segment_ids.ndim != 2:
        raise ValueError(f"segment_ids must have rank 2 [B, T], got shape "
                         f"{tuple(segment_ids.shape)}")
    if not (jnp.issubdtype(segment_ids.dtype, jnp.integer) or segment_ids.dtype == jnp.bool_):
        raise TypeError(f"segment_ids must be an integer or bool array (0 = source, 1 = "
                        f"target), got dtype {segment_ids.dtype}")
    if not isinstance(segment_ids, jax.core.Tracer) and segment_ids.size:
        values = np.unique(np.asarray(segment_ids).astype(np.int64))
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"segment_ids must hold 0 (source) and 1 (target) only, got values "
                             f"{values.tolist()}")
    if attention_mask is None:
        return
    if attention_mask.shape != segment_ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected "
                         f"[B, T] = {tuple(segment_ids.shape)} like segment_ids")
    if not (jnp.issubdtype(attention_mask.dtype, jnp.integer)
            or attention_mask.dtype == jnp.bool_):
        raise TypeError(f"attention_mask must be an integer or bool array (1 = real token, "
                        f"0 = padding), got dtype {attention_mask.dtype}")


def unilm_mask(
    segment_ids: Integer[Array, "B T"] | Bool[Array, "B T"],
    attention_mask: Integer[Array, "B T"] | Bool[Array, "B T"] | None = None,
) -> Bool[Array, "B 1 T T"]:
    """UniLM's seq2seq attention mask ``mask[b, 0, i, j] = c[b, j] <= c[b, i]``, ``c`` the
    cumulative sum of the segment ids (module doc).

    Args:
      segment_ids: ``[B, T]``, 0 for source tokens, 1 for target tokens (the encoder's
        ``token_type_ids``), laid out source first.
      attention_mask: ``[B, T]`` 1 (or True) for real tokens, 0 for padding. Pass it whenever
        the batch is padded: padding keys are then visible to no query, and a padding query
        sees itself only.

    Returns:
      Boolean ``[B, 1, T, T]``, True where query i may attend to key j; it broadcasts over
      heads and goes to the encoder as ``attention_mask`` (or to a block as ``mask``).
    """
    _check_inputs(segment_ids, attention_mask)
    block = jnp.cumsum(segment_ids.astype(jnp.bool_).astype(jnp.int32), axis=1)  # c: [B, T]
    mask = block[:, None, :] <= block[:, :, None]  # [B, T_i, T_j]: c[j] <= c[i]
    if attention_mask is not None:
        real = attention_mask.astype(jnp.bool_)
        itself = jnp.eye(segment_ids.shape[1], dtype=jnp.bool_)[None]  # [1, T, T]
        # Real queries: the rule, restricted to real keys. Padding queries: the diagonal only.
        mask = jnp.where(real[:, :, None], mask & real[:, None, :], itself)
    return mask[:, None]
