"""Language-model objectives as pure functions: BERT masking, token cross-entropy, and the
``loss_fn(model, batch, *, key, deterministic)`` callables that `make_train_step` takes.

Shape letters: B batch, T tokens, V vocabulary.

Randomness is explicit: an MLM loss draws its masking pattern from ``fold_in(key, 1)`` and the
model's dropout from ``fold_in(key, 0)``, so a step key reproduces both.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Integer, PRNGKeyArray

from jaxformer.models.heads import classification_loss


def token_cross_entropy(
    logits: Float[Array, "B T V"], labels: Integer[Array, "B T"], weights: Float[Array, "B T"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Weighted mean cross-entropy (fp32) and accuracy over the positions with weight:
    `classification_loss` over the ``B·T`` tokens."""
    b, t, v = logits.shape
    return classification_loss(logits.reshape(b * t, v), labels.reshape(b * t),
                               weights=weights.reshape(b * t))


def mask_tokens(
    input_ids: Integer[Array, "B T"],
    maskable: Bool[Array, "B T"],
    *,
    key: PRNGKeyArray,
    mask_id: int,
    vocab_size: int,
    rate: float = 0.15,
) -> tuple[Integer[Array, "B T"], Float[Array, "B T"]]:
    """BERT's corruption (Devlin et al. 2019, §3.1): pick ``rate`` of the maskable tokens; of
    those 80% become ``[MASK]``, 10% a random token, 10% stay. Returns the corrupted ids and
    the fp32 weights (1 at picked positions) of the prediction loss."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate!r}")
    # The first of three keys picks (as before `corrupt_selected` existed: same positions).
    k_pick, k_corrupt, _ = jax.random.split(key, 3)
    picked = maskable & jax.random.bernoulli(k_pick, rate, input_ids.shape)
    corrupted = corrupt_selected(input_ids, picked, key=k_corrupt, mask_id=mask_id,
                                 vocab_size=vocab_size)
    return corrupted, picked.astype(jnp.float32)


def make_mlm_loss(*, mask_id: int, vocab_size: int, special_ids: Sequence[int],
                  rate: float = 0.15) -> Callable[..., tuple[Array, Mapping[str, Array]]]:
    """A masked-LM ``loss_fn`` for a `MaskedLM`; batches hold ``input_ids`` and
    ``attention_mask`` ``[B, T]``. Padding and ``special_ids`` ([CLS], [SEP]) are never picked."""
    specials = tuple(int(i) for i in special_ids)

    def loss_fn(model: Any, batch: Mapping[str, Array], *, key: PRNGKeyArray | None,
                deterministic: bool) -> tuple[Array, Mapping[str, Array]]:
        if key is None:
            raise ValueError("the MLM loss draws its masking pattern from key=, got None")
        ids, attn = batch["input_ids"], batch["attention_mask"]
        maskable = attn != jnp.zeros((), attn.dtype)
        for sid in specials:
            maskable = maskable & (ids != jnp.asarray(sid, ids.dtype))
        inputs, weights = mask_tokens(ids, maskable, key=jax.random.fold_in(key, 1),
                                      mask_id=mask_id, vocab_size=vocab_size, rate=rate)
        logits = model(inputs, attention_mask=attn, deterministic=deterministic,
                       key=jax.random.fold_in(key, 0))
        loss, acc = token_cross_entropy(logits, ids, weights)
        return loss, {"accuracy": acc, "predicted_tokens": jnp.sum(weights)}

    return loss_fn


def causal_lm_loss(model: Any, batch: Mapping[str, Array], *, key: PRNGKeyArray | None,
                   deterministic: bool) -> tuple[Array, Mapping[str, Array]]:
    """Next-token ``loss_fn`` for a `CausalLM`: logits at t score token t + 1 wherever both are
    real (``attention_mask``)."""
    ids, attn = batch["input_ids"], batch["attention_mask"]
    logits = model(ids, attention_mask=attn, deterministic=deterministic,
                   key=None if key is None else jax.random.fold_in(key, 0))
    real = attn != jnp.zeros((), attn.dtype)
    weights = (real[:, 1:] & real[:, :-1]).astype(jnp.float32)
    loss, acc = token_cross_entropy(logits[:, :-1], ids[:, 1:], weights)
    return loss, {"accuracy": acc}


def word_first_index(word_starts: Bool[Array, "B T"]) -> Integer[Array, "B T"]:
    """For every token, the index of the first token of its word (``word_starts`` marks the
    first token of each word; a row must start a word at position 0)."""
    t = word_starts.shape[1]
    idx = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), word_starts.shape)
    return jax.lax.cummax(jnp.where(word_starts, idx, jnp.zeros((), jnp.int32)), axis=1)


def select_for_prediction(
    maskable: Bool[Array, "B T"],
    *,
    key: PRNGKeyArray,
    rate: float,
    max_predictions: int,
    word_starts: Bool[Array, "B T"] | None = None,
) -> tuple[Bool[Array, "B T"], Integer[Array, "B P"]]:
    """Pick ``round(rate * n)`` of each row's ``n`` maskable tokens (at least one, at most
    ``max_predictions``), as BERT's ``create_pretraining_data`` does, not a Bernoulli draw.

    With ``word_starts`` the picks are whole words (whole-word masking, Cui et al. 2019,
    arXiv:1906.08101): words are visited in random order and taken while the tokens taken so far
    still fit in the row's quota. Returns the ``[B, T]`` selection and ``[B, P]`` positions
    (selected positions first, ascending; the rest padding that the weights zero out).
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate: expected a float in (0, 1), got {rate!r}")
    b, t = maskable.shape
    if not 1 <= max_predictions <= t:
        raise ValueError(f"max_predictions: expected an int in [1, T={t}], got {max_predictions!r}")
    n = jnp.sum(maskable, axis=1, dtype=jnp.int32)
    quota = jnp.round(jnp.asarray(rate, jnp.float32) * n.astype(jnp.float32)).astype(jnp.int32)
    quota = jnp.where(n > 0, jnp.clip(quota, 1, max_predictions), 0)
    score = jax.random.uniform(key, (b, t))
    if word_starts is not None:
        # Specials and padding are words of their own, and the token after one starts a word,
        # so no word straddles [CLS], [SEP] or padding.
        after_fixed = jnp.concatenate([jnp.ones((b, 1), bool), ~maskable[:, :-1]], axis=1)
        first = word_first_index((word_starts & maskable) | ~maskable | after_fixed)
        score = jnp.take_along_axis(score, first, axis=1)  # one score per word
    # Unmaskable tokens sort last; ties inside a word are broken by position (stable sort).
    order = jnp.argsort(jnp.where(maskable, -score, 1.0), axis=1, stable=True)
    rank = jnp.argsort(order, axis=1).astype(jnp.int32)
    if word_starts is None:
        selected = maskable & (rank < quota[:, None])
    else:
        # A word is taken only when its last token in the visiting order is within the quota.
        seg = (jnp.arange(b, dtype=jnp.int32)[:, None] * t + first).reshape(-1)
        word_last = jax.ops.segment_max(rank.reshape(-1), seg, num_segments=b * t)
        selected = maskable & (word_last[seg].reshape(b, t) < quota[:, None])
    # Selected positions first, in ascending order: top_k of (selected, -position).
    pos = jnp.arange(t, dtype=jnp.float32)
    _, positions = jax.lax.top_k(jnp.where(selected, 2.0 * t - pos, -pos), max_predictions)
    return selected, positions.astype(jnp.int32)


def corrupt_selected(
    input_ids: Integer[Array, "B T"],
    selected: Bool[Array, "B T"],
    *,
    key: PRNGKeyArray,
    mask_id: int,
    vocab_size: int,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
) -> Integer[Array, "B T"]:
    """BERT's 80/10/10 rule on the selected tokens (Devlin et al. 2019, §3.1): ``mask_prob``
    become ``[MASK]``, ``random_prob`` a uniformly random id, the rest stay."""
    if not (0.0 <= mask_prob and 0.0 <= random_prob and mask_prob + random_prob <= 1.0):
        raise ValueError(f"mask_prob, random_prob: expected >= 0 with a sum <= 1, got "
                         f"{mask_prob!r}, {random_prob!r}")
    k_kind, k_rand = jax.random.split(key)
    kind = jax.random.uniform(k_kind, input_ids.shape)
    random_ids = jax.random.randint(k_rand, input_ids.shape, 0, vocab_size, dtype=input_ids.dtype)
    corrupted = jnp.where(kind < mask_prob, jnp.asarray(mask_id, input_ids.dtype),
                          jnp.where(kind < mask_prob + random_prob, random_ids, input_ids))
    return jnp.where(selected, corrupted, input_ids)
