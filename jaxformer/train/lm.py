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
    k_pick, k_kind, k_rand = jax.random.split(key, 3)
    picked = maskable & jax.random.bernoulli(k_pick, rate, input_ids.shape)
    kind = jax.random.uniform(k_kind, input_ids.shape)
    random_ids = jax.random.randint(k_rand, input_ids.shape, 0, vocab_size, dtype=input_ids.dtype)
    corrupted = jnp.where(kind < 0.8, jnp.asarray(mask_id, input_ids.dtype),
                          jnp.where(kind < 0.9, random_ids, input_ids))
    return jnp.where(picked, corrupted, input_ids), picked.astype(jnp.float32)


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
