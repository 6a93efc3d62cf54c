"""BERT-of-Theseus module replacement as pure functions: the rate schedule, the draws, the mix.

BERT-of-Theseus (Xu et al. 2020, arXiv:2002.02925; Su, https://kexue.fm/archives/7575)
compresses a fine-tuned predecessor of N blocks into a successor of M blocks, N = r M: the
predecessor is cut into M modules of r consecutive blocks, and in each training forward pass
every module is replaced by its one successor block with probability p. Su's equation (1), with
``s = 1 - ε`` the successor's weight::

    x^(i)   = (1 - s_i) x_p^(i) + s_i x_s^(i)          s_i ~ Bernoulli(p)
    x_p^(i+1) = F_p^(i+1)(x^(i)),   x_s^(i+1) = F_s^(i+1)(x^(i))

so module i+1 reads whichever output module i chose. Everything here is a function of arrays
and plain options; `jaxformer.models.theseus` applies it to encoders.

Rate schedules (``schedule``):

- ``"constant"``: ``p_t = rate`` until ``replace_until`` steps, then 1 (the official code's
  `ConstantReplacementScheduler`; Su uses rate 0.5 throughout);
- ``"linear"``: the paper's curriculum ``p_t = min(slope * t + rate, 1)``.

Draws (``mix``):

- ``"bernoulli"``: ``s_i ~ Bernoulli(p_t)``, the post's and the paper's;
- ``"uniform"``: ``s_i ~ U(0, 1)``, a continuous ε, **beyond the post** (Su raises it as an
  untested idea; `p_t` is unused);
- ``"anneal"``: ``s_i = p_t``, deterministic, so a linear schedule anneals ε from 1 to 0,
  **beyond the post** (the other untested idea).

One draw per module per batch (Su's ``BinaryRandomChoice``: ``random_binomial(shape=[1])``) or,
with ``per_example=True``, one per module per example.

Keys: the draws of a step take that step's key, ``fold_in(root, step)`` (the training loop's),
and slot j (slot 0 the embeddings, slot i + 1 module i) uses ``fold_in(step_key, j)``, so the
same key and step give the same draws in any process, and adding or removing the embeddings
from the draw does not move the modules' coins.

Shape letters: J slots (modules, plus one for the embeddings), B batch, T tokens, E width.
N and M (block counts) and r are numbers in the prose, not shape letters.
"""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Integer, PRNGKeyArray

SCHEDULES = ("constant", "linear")
MIXES = ("bernoulli", "uniform", "anneal")


def module_groups(predecessor_layers: int, successor_layers: int) -> int:
    """r, the predecessor blocks per module, after checking M divides N.

    Module i is predecessor blocks ``i r .. i r + r - 1`` (Su's ``layers_per_module``).
    """
    for name, value in (("predecessor_layers", predecessor_layers),
                        ("successor_layers", successor_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if predecessor_layers % successor_layers:
        raise ValueError(
            f"the successor's block count must divide the predecessor's: predecessor_layers="
            f"{predecessor_layers} is not a multiple of successor_layers={successor_layers}; "
            f"expected one of {[m for m in range(1, predecessor_layers + 1) if predecessor_layers % m == 0]}")
    return predecessor_layers // successor_layers


def check_rate(name: str, value: float) -> None:
    """A ValueError naming `name` unless `value` is a finite number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def replacement_rate(
    step: Integer[Array, "*t"] | int,
    *,
    schedule: str,
    rate: float,
    slope: float = 0.0,
    replace_until: int | None = None,
) -> Float[Array, "*t"]:
    """p_t, the probability of choosing the successor at optimiser step `step` (0-based).

    Args:
      step: the step t (traced or concrete), or an array of steps.
      schedule: ``"constant"`` or ``"linear"`` (module doc).
      rate: the constant p, or the linear schedule's intercept b; in [0, 1].
      slope: the linear schedule's k per step (>= 0).
      replace_until: constant schedule only: from this step on p_t = 1 (None: never).

    Returns:
      float32 in [0, 1], shaped like `step`.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    check_rate("rate", rate)
    if not (math.isfinite(slope) and slope >= 0):
        raise ValueError(f"slope must be a finite number >= 0, got {slope!r}")
    t = jnp.asarray(step, jnp.float32)
    if schedule == "linear":
        return jnp.minimum(jnp.float32(slope) * t + jnp.float32(rate), jnp.float32(1))
    p = jnp.float32(rate)
    if replace_until is None:
        return jnp.broadcast_to(p, t.shape)
    return jnp.where(t >= replace_until, jnp.float32(1), p)


def successor_weights(
    key: PRNGKeyArray,
    rate: Float[Array, ""] | float,
    *,
    num_slots: int,
    mix: str = "bernoulli",
    batch_size: int | None = None,
) -> Float[Array, "J"] | Float[Array, "J B"]:
    """The successor weights s, ``[J]`` (one per slot per batch) or ``[J, B]`` (per example).

    Slot j draws from ``fold_in(key, j)`` (module doc). Bernoulli weights are exactly 0 or 1.

    Args:
      key: the step's key, ``fold_in(root, step)``.
      rate: p_t (`replacement_rate`).
      num_slots: J.
      mix: ``"bernoulli"``, ``"uniform"`` or ``"anneal"`` (module doc).
      batch_size: B for per-example draws; None for one draw per slot.
    """
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {list(MIXES)}, got {mix!r}")
    if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 1:
        raise ValueError(f"num_slots must be an int >= 1, got {num_slots!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
    shape = () if batch_size is None else (batch_size,)
    p = jnp.asarray(rate, jnp.float32)
    if mix == "anneal":
        return jnp.broadcast_to(p, (num_slots, *shape))
    slot_keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(
        jnp.arange(num_slots, dtype=jnp.uint32))
    if mix == "uniform":
        return jax.vmap(lambda k: jax.random.uniform(k, shape, jnp.float32))(slot_keys)
    return jax.vmap(lambda k: jax.random.bernoulli(k, p, shape).astype(jnp.float32))(slot_keys)


def blend(predecessor: Float[Array, "B T E"], successor: Float[Array, "B T E"],
          weight: Float[Array, ""] | Float[Array, "B"], *, binary: bool
          ) -> Float[Array, "B T E"]:
    """``(1 - s) x_p + s x_s`` with s per batch (scalar) or per example ``[B]``.

    With ``binary=True`` (s in {0, 1}) it is a select, so the chosen branch comes out bit-exact
    and a non-finite value in the other branch cannot leak in (``0 * inf`` is NaN).
    """
    s = weight.reshape(weight.shape + (1,) * (predecessor.ndim - weight.ndim))
    if binary:
        return jnp.where(s > 0.5, successor, predecessor)
    s = s.astype(predecessor.dtype)
    return (1 - s) * predecessor + s * successor
