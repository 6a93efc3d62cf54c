"""Sentence embeddings: tokenizer -> encoder -> pooling (-> L2 normalisation), batched and jitted.

Shape letters: N sentences, B batch, T tokens, E width.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Integer

from jaxformer.models.encoder import Encoder, EncoderOutput
from jaxformer.pooling import POOLINGS, cls_pool, first_last_avg_pool, l2_normalize, mean_pool


def pool(output: EncoderOutput, attention_mask: Integer[Array, "B T"], pooling: str) -> Float[Array, "B E"]:
    """Apply a named pooling (see `jaxformer.pooling`) to an encoder output."""
    if pooling == "cls":
        return cls_pool(output.last_hidden_state)
    if pooling == "mean":
        return mean_pool(output.last_hidden_state, attention_mask)
    if pooling == "first-last-avg":
        if len(output.hidden_states) < 2:
            raise ValueError("pooling='first-last-avg' needs at least one block")
        return first_last_avg_pool(output.hidden_states[1], output.last_hidden_state, attention_mask)
    if pooling == "pooler":
        if output.pooled is None:
            raise ValueError("pooling='pooler' needs a model with a pooler (config.use_pooler=True)")
        return output.pooled
    raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")


def make_embed_fn(
    model: Encoder, *, pooling: str = "mean", normalize: bool = False
) -> Callable[[Array, Array, Array], Array]:
    """A jitted pure function ``(input_ids, attention_mask, token_type_ids) -> [B, E]``.

    The jit boundary is pure: the model is split once, and the merged copy lives only inside
    the traced function.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    graphdef, state = nnx.split(model)

    @jax.jit
    def embed(state: Any, ids: Array, mask: Array, token_types: Array) -> Array:
        encoder = nnx.merge(graphdef, state)
        out = encoder(ids, attention_mask=mask, token_type_ids=token_types, deterministic=True)
        vec = pool(out, mask, pooling)
        return l2_normalize(vec) if normalize else vec

    return lambda ids, mask, token_types: embed(state, ids, mask, token_types)


def _bucket(length: int, multiple: int, cap: int) -> int:
    """Round a batch's length up to a multiple, so a few shapes cover every batch (fewer compiles).

    Extra padding changes nothing: padded keys are masked and every pooling is masked.
    """
    return min(cap, -(-length // multiple) * multiple)


def embed_sentences(
    model: Encoder,
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    pooling: str = "mean",
    normalize: bool = False,
    max_length: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Float[np.ndarray, "N E"]:
    """Embed sentences into a float32 ``[N, E]`` array.

    Args:
      model: the encoder.
      tokenizer: a `jaxformer.io.WordPieceTokenizer` (anything with ``encode_batch``).
      sentences: N strings.
      pooling: ``cls``, ``mean``, ``first-last-avg`` or ``pooler``.
      normalize: L2-normalise each row (cosine similarity becomes a dot product).
      max_length: truncate to this many tokens (default: the position table size).
      batch_size: sentences per forward pass.
      progress: show a tqdm bar.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cap = model.config.max_position_embeddings
    max_length = cap if max_length is None else max_length
    if not 2 <= max_length <= cap:
        raise ValueError(f"max_length must be in [2, max_position_embeddings={cap}], got {max_length}")
    embed = make_embed_fn(model, pooling=pooling, normalize=normalize)
    starts = range(0, len(sentences), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, total=len(starts), unit="batch", desc="embed")
    chunks = []
    for start in starts:
        enc = tokenizer.encode_batch(list(sentences[start : start + batch_size]), max_length=max_length)
        t = _bucket(enc["input_ids"].shape[1], 16, max_length)
        pad = ((0, 0), (0, t - enc["input_ids"].shape[1]))
        ids = np.pad(enc["input_ids"], pad, constant_values=tokenizer.pad_id)
        mask = np.pad(enc["attention_mask"], pad)
        types = np.pad(enc["token_type_ids"], pad)
        chunks.append(np.asarray(embed(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))))
    if not chunks:
        return np.zeros((0, model.config.hidden_size), np.float32)
    return np.concatenate(chunks).astype(np.float32)
