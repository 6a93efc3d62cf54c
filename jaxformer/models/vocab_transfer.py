"""Carry a trained token table over to a new vocabulary: copy known rows, average the rest.

WoBERT (Su, https://kexue.fm/archives/7758) starts a word-level model from a char-level one: a
token of the new vocab that the old vocab has keeps its row; a new word's embedding starts as
the mean of the embeddings of the chars the old (char) tokenizer splits it into. The same rule
carries the MLM output bias over. Pure numpy, so it runs on checkpoint arrays before a model
exists.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Shaped

__all__ = ["resize_vocabulary", "transfer_rows"]


def transfer_rows(
    old_table: Shaped[np.ndarray, "V_old *rest"],
    old_vocab: Mapping[str, int],
    new_tokens: Sequence[str],
    *,
    split: Callable[[str], Sequence[str]],
    unk_token: str = "[UNK]",
) -> tuple[Shaped[np.ndarray, "V_new *rest"], dict[str, int]]:
    """Rows of a ``[V_old, ...]`` table (an embedding ``[V, E]`` or a bias ``[V]``) for a new vocab.

    Row ``i`` of the result, for ``token = new_tokens[i]``:

    * ``old_table[old_vocab[token]]`` when the old vocab has the token ("copied");
    * else the mean of the old rows of the pieces ``split(token)`` that the old vocab has,
      repeats counted ("averaged"); ``split`` is the old tokenizer, e.g.
      ``WordPieceTokenizer.tokenize``, so "公园" -> ["公", "园"];
    * else (no piece known) the ``unk_token`` row ("unk").

    Means are taken in float64 and cast to ``old_table``'s dtype.

    Returns:
        ``(new_table [V_new, ...], report)`` with counts ``copied``, ``averaged``, ``unk``.
    """
    table = np.asarray(old_table)
    if table.ndim < 1:
        raise ValueError(f"old_table: expected a [V_old, ...] array, got shape {table.shape}")
    size = table.shape[0]
    bad = {t: i for t, i in old_vocab.items() if not 0 <= int(i) < size}
    if bad:
        first = next(iter(bad.items()))
        raise ValueError(f"old_vocab: expected ids in [0, {size}) (old_table has {size} rows), "
                         f"got {len(bad)} outside, e.g. {first}")
    src: list[int] = []  # old row per copied/unk token, or -1 for an averaged one
    pieces: list[int] = []  # old ids of the averaged tokens' pieces, concatenated
    counts: list[int] = []  # pieces per averaged token
    report = {"copied": 0, "averaged": 0, "unk": 0}
    for token in new_tokens:
        if token in old_vocab:
            src.append(int(old_vocab[token]))
            report["copied"] += 1
            continue
        ids = [int(old_vocab[p]) for p in split(token) if p in old_vocab]
        if ids:
            src.append(-1)
            pieces.extend(ids)
            counts.append(len(ids))
            report["averaged"] += 1
            continue
        if unk_token not in old_vocab:
            raise ValueError(f"unk_token: expected {unk_token!r} in old_vocab (token {token!r} has no known "
                             f"piece and falls back to it), got a vocab without it")
        src.append(int(old_vocab[unk_token]))
        report["unk"] += 1
    index = np.asarray(src, dtype=np.int64)
    out = np.empty((len(src), *table.shape[1:]), dtype=table.dtype)
    direct = index >= 0
    out[direct] = table[index[direct]]
    if counts:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sums = np.add.reduceat(table[np.asarray(pieces)].astype(np.float64), starts, axis=0)
        divisor = np.asarray(counts, dtype=np.float64).reshape((-1,) + (1,) * (table.ndim - 1))
        out[~direct] = (sums / divisor).astype(table.dtype)
    return out, report


def resize_vocabulary(
    model: Any,
    old_vocab: Sequence[str],
    new_tokens: Sequence[str],
    *,
    split: Callable[[str], Sequence[str]],
    unk_token: str = "[UNK]",
) -> tuple[Any, dict[str, int]]:
    """A copy of `model` (an `Encoder` or a `MaskedLM`) on the vocabulary `new_tokens`.

    Every parameter is kept except the ``[V, E]`` word embedding and, for a `MaskedLM`, the
    ``[V]`` output bias, which `transfer_rows` carries over (known tokens copied, new words the
    mean of their pieces, post 7758). The output layer is tied to the embedding, so it follows.

    Returns:
        ``(new model, report)``; report as `transfer_rows`'s (counts over the new tokens).
    """
    from jaxformer.models.encoder import Encoder
    from jaxformer.models.lm import MaskedLM

    if not isinstance(model, Encoder | MaskedLM):
        raise TypeError(f"model: expected an Encoder or a MaskedLM, got {type(model).__name__}")
    encoder = model.encoder if isinstance(model, MaskedLM) else model
    cfg = encoder.config
    if len(old_vocab) != cfg.vocab_size:
        raise ValueError(f"old_vocab: expected {cfg.vocab_size} tokens (the model's vocab_size), "
                         f"got {len(old_vocab)}")
    ids = {t: i for i, t in enumerate(old_vocab)}
    table, report = transfer_rows(np.asarray(encoder.embed.word.embedding[...]), ids, new_tokens,
                                  split=split, unk_token=unk_token)
    new_cfg = cfg.replace(vocab_size=len(new_tokens))
    new_encoder = Encoder(new_cfg, rngs=nnx.Rngs(0))
    state = nnx.state(encoder, nnx.Param)
    new_state = nnx.state(new_encoder, nnx.Param)
    pure, new_pure = nnx.to_pure_dict(state), nnx.to_pure_dict(new_state)
    for path, value in jax.tree_util.tree_flatten_with_path(pure)[0]:
        node = new_pure
        keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    new_pure["embed"]["word"]["embedding"] = jnp.asarray(table)
    nnx.replace_by_pure_dict(new_state, new_pure)
    nnx.update(new_encoder, new_state)
    if isinstance(model, Encoder):
        return new_encoder, report
    new_lm = MaskedLM(new_encoder, rngs=nnx.Rngs(0))
    head = nnx.to_pure_dict(nnx.state(model.head, nnx.Param))
    bias, _ = transfer_rows(np.asarray(model.head.bias[...]), ids, new_tokens, split=split,
                            unk_token=unk_token)
    head["bias"] = jnp.asarray(bias)
    head_state = nnx.state(new_lm.head, nnx.Param)
    nnx.replace_by_pure_dict(head_state, head)
    nnx.update(new_lm.head, head_state)
    return new_lm, report
