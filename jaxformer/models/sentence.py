"""Sentence embeddings: tokenizer -> encoder -> poolings (-> L2 normalisation), batched and jitted.

`embed_poolings` computes several poolings (post 8321's P1-P4, `jaxformer.pooling`) from ONE
encoder pass per batch, so comparing them costs one forward, not four; `embed_sentences` is the
one-pooling case. Sentences run longest first, so each batch pads to a length close to its own
rows (fewer padded tokens), and the rows are written back in input order.

Shape letters: N sentences, B batch, T tokens, E width.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Integer

from jaxformer.models.encoder import Encoder, EncoderOutput
from jaxformer.pooling import POOLINGS, cls_pool, first_last_avg_pool, l2_normalize, mean_pool

BUCKET = 16  # tokens; batch lengths round up to a multiple of this, so few shapes compile


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


def available_poolings(model: Encoder) -> tuple[str, ...]:
    """The poolings this model can give: all of `POOLINGS`, less ``pooler`` when it has none."""
    return tuple(p for p in POOLINGS if p != "pooler" or model.pooler is not None)


def _check_poolings(model: Encoder, poolings: Sequence[str] | None) -> tuple[str, ...]:
    if poolings is None:
        return available_poolings(model)
    if isinstance(poolings, str):
        raise TypeError(f"poolings: expected a sequence of names such as ({poolings!r},), "
                        f"got the string {poolings!r}")
    names = tuple(poolings)
    if not names:
        raise ValueError(f"poolings: expected at least one of {list(POOLINGS)}, got none")
    for name in names:
        if name not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"poolings: each name at most once, got {list(names)}")
    if "pooler" in names and model.pooler is None:
        raise ValueError("pooling 'pooler' needs a model with a pooler, and this one has none "
                         "(config.use_pooler=False, or the checkpoint has no pooler weights); "
                         "use cls, mean or first-last-avg")
    return names


def with_compute_dtype(model: Encoder, dtype: Any = None) -> Encoder:
    """The same parameters under another compute dtype (`EncoderConfig.dtype`).

    Parameters are shared, not copied or cast (their storage dtype, ``param_dtype``, is
    unchanged); only the graph's static dtype differs. None keeps the model's own.
    """
    if dtype is None or jnp.dtype(dtype) == jnp.dtype(model.config.dtype):
        return model
    cfg = model.config.replace(dtype=jnp.dtype(dtype).name)  # validated against DTYPES
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0))))
    return nnx.merge(graphdef, nnx.state(model))


@functools.lru_cache(maxsize=32)
def _jitted_poolings(graphdef: Any, names: tuple[str, ...], normalize: bool) -> Callable[..., dict[str, Array]]:
    """One jitted function per (model structure, poolings, normalize): calls on another model of
    the same structure, or a second call on the same one, reuse its compiled shapes."""

    @jax.jit
    def embed(state: Any, ids: Array, mask: Array, token_types: Array) -> dict[str, Array]:
        encoder = nnx.merge(graphdef, state)
        out = encoder(ids, attention_mask=mask, token_type_ids=token_types, deterministic=True)
        vecs = {name: pool(out, mask, name).astype(jnp.float32) for name in names}
        return {name: l2_normalize(v) for name, v in vecs.items()} if normalize else vecs

    return embed


def make_poolings_fn(
    model: Encoder, poolings: Sequence[str] | None = None, *, normalize: bool = False, dtype: Any = None
) -> Callable[[Array, Array, Array], dict[str, Array]]:
    """A jitted pure function ``(input_ids, attention_mask, token_type_ids) -> {pooling: [B, E]}``.

    The encoder runs once per call and every pooling reads its output. Results are float32
    whatever the compute dtype (L2 normalisation, when asked, in float32 too). The jit boundary
    is pure: the model is split once, and the merged copy lives only inside the traced function.
    """
    names = _check_poolings(model, poolings)
    graphdef, state = nnx.split(with_compute_dtype(model, dtype))
    embed = _jitted_poolings(graphdef, names, bool(normalize))
    return lambda ids, mask, token_types: embed(state, ids, mask, token_types)


def make_embed_fn(
    model: Encoder, *, pooling: str = "mean", normalize: bool = False, dtype: Any = None
) -> Callable[[Array, Array, Array], Array]:
    """A jitted pure function ``(input_ids, attention_mask, token_type_ids) -> [B, E]`` float32."""
    fn = make_poolings_fn(model, (pooling,), normalize=normalize, dtype=dtype)
    return lambda ids, mask, token_types: fn(ids, mask, token_types)[pooling]


def _bucket(length: int, multiple: int, cap: int) -> int:
    """Round a batch's length up to a multiple, so a few shapes cover every batch (fewer compiles).

    Extra padding changes nothing: padded keys are masked and every pooling is masked.
    """
    return min(cap, -(-length // multiple) * multiple)


def length_order(sentences: Sequence[str]) -> np.ndarray:
    """Indices of the sentences, longest first (by characters; ties keep input order).

    Characters stand in for tokens, as in sentence-transformers' ``encode`` (its
    ``length_sorted_idx``), so nothing is tokenized twice. Longest first puts the biggest batch
    first: an out-of-memory error shows at once, not at the end of a long run.
    """
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    return np.argsort(-lengths, kind="stable")


def _check_sizes(model: Encoder, max_length: int | None, batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    cap = model.config.max_position_embeddings
    max_length = cap if max_length is None else max_length
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= cap:
        # 2: [CLS] and [SEP] alone; cap: the position table (rows past it do not exist).
        raise ValueError(f"max_length must be in [2, max_position_embeddings={cap}], got {max_length!r}")
    return max_length


def embed_poolings(
    model: Encoder,
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    poolings: Sequence[str] | None = None,
    normalize: bool = False,
    max_length: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
    dtype: Any = None,
    sort_by_length: bool = True,
) -> dict[str, Float[np.ndarray, "N E"]]:
    """Embed sentences with several poolings from one encoder pass per batch.

    Args:
      model: the encoder.
      tokenizer: a `jaxformer.io.WordPieceTokenizer` (anything with ``encode_batch`` and
        ``pad_id``).
      sentences: N strings (empty strings are embedded as ``[CLS] [SEP]``).
      poolings: names from `jaxformer.pooling.POOLINGS` (``cls``, ``mean``, ``first-last-avg``,
        ``pooler``). None: every pooling the model has (``pooler`` only when it has a pooler).
        Asking for ``pooler`` from a model without one raises ValueError.
      normalize: L2-normalise each row (cosine similarity becomes a dot product).
      max_length: truncate to this many tokens, in [2, the position table size] (default: the
        position table size).
      batch_size: sentences per forward pass.
      progress: show a tqdm bar that counts sentences.
      dtype: compute dtype (``"float32"``, ``"bfloat16"``, ...; default: the model's own).
        The parameters stay as they are and the output is float32 either way.
      sort_by_length: run the sentences longest first (`length_order`), then restore the input
        order; False runs them in input order (same results up to float noise).

    Returns:
      ``{pooling: float32 [N, E]}`` in the order of `poolings`; row i is ``sentences[i]``.
    """
    if isinstance(sentences, str):
        raise TypeError("sentences: expected a sequence of strings, got one string")
    names = _check_poolings(model, poolings)
    max_length = _check_sizes(model, max_length, batch_size)
    n = len(sentences)
    out = {name: np.zeros((n, model.config.hidden_size), np.float32) for name in names}
    if n == 0:
        return out
    embed = make_poolings_fn(model, names, normalize=normalize, dtype=dtype)
    order = length_order(sentences) if sort_by_length else np.arange(n)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="sentence", desc="embed")
    try:
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            enc = tokenizer.encode_batch([sentences[i] for i in rows], max_length=max_length)
            t = _bucket(enc["input_ids"].shape[1], BUCKET, max_length)
            pad = ((0, 0), (0, t - enc["input_ids"].shape[1]))
            ids = np.pad(enc["input_ids"], pad, constant_values=tokenizer.pad_id)
            mask = np.pad(enc["attention_mask"], pad)
            types = np.pad(enc["token_type_ids"], pad)
            vecs = embed(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
            for name in names:
                out[name][rows] = np.asarray(vecs[name])
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
    return out


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
    dtype: Any = None,
    sort_by_length: bool = True,
) -> Float[np.ndarray, "N E"]:
    """Embed sentences into a float32 ``[N, E]`` array with one pooling (``cls``, ``mean``,
    ``first-last-avg`` or ``pooler``); the other arguments are `embed_poolings`'."""
    if not isinstance(pooling, str):
        raise TypeError(f"pooling: expected one name such as 'mean', got {pooling!r}")
    return embed_poolings(model, tokenizer, sentences, poolings=(pooling,), normalize=normalize,
                          max_length=max_length, batch_size=batch_size, progress=progress,
                          dtype=dtype, sort_by_length=sort_by_length)[pooling]
