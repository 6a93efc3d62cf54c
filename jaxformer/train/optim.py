"""The BERT fine-tuning optimiser: AdamW, linear warmup then linear decay, no decay on 1-D params.

Devlin et al. (2019, App. A.3) and HF's ``get_linear_schedule_with_warmup``: the learning rate
rises linearly from 0 to `peak_lr` over `warmup_steps`, then falls linearly to 0 at
`total_steps`. Weight decay skips biases and LayerNorm scale/bias, which in BERT's
``no_decay = ["bias", "LayerNorm.weight"]`` list are exactly the 1-D parameters; the mask here
is computed from each leaf's rank and name, so it needs no list of module names.

The learning rate is wrapped in ``optax.inject_hyperparams``, so the optimiser state carries the
rate of the last update and the train step can log it (`learning_rate_of`).
"""


import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from jaxformer.pytree import path_name

# Leaf names that never get weight decay, whatever their rank (LayerNorm gamma/beta, biases).
NO_DECAY_NAMES = ("bias", "scale")


def _check_number(name: str, value: float, *, low: float, high: float = math.inf,
                  low_open: bool = False) -> None:
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")


def _check_steps(total_steps: int, warmup_steps: int) -> None:
    if isinstance(total_steps, bool) or total_steps < 1:
        raise ValueError(f"total_steps must be an int >= 1, got {total_steps!r}")
    if isinstance(warmup_steps, bool) or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must be an int in [0, total_steps={total_steps}], got {warmup_steps!r}"
        )


def warmup_linear_schedule(
    peak_lr: float, *, total_steps: int, warmup_steps: int = 0
) -> Callable[[Any], Float[Array, ""]]:
    """``lr(s) = peak * s / W`` for ``s < W``, then ``peak * max(0, (N - s) / (N - W))``.

    W = `warmup_steps`, N = `total_steps`; the same formula as HF's
    ``get_linear_schedule_with_warmup`` (denominators clamped at 1), so ``lr(0) = 0`` when
    there is warmup and ``lr(N) = 0``.
    """
    _check_number("peak_lr", peak_lr, low=0.0)
    _check_steps(total_steps, warmup_steps)
    warm = float(max(warmup_steps, 1))
    decay = float(max(total_steps - warmup_steps, 1))

    def schedule(count):  # noqa: ANN001, ANN202 (optax passes an int32 array or a Python int)
        s = jnp.asarray(count).astype(jnp.float32)
        rising = s / jnp.float32(warm)
        falling = jnp.clip((jnp.float32(total_steps) - s) / jnp.float32(decay), 0.0, 1.0)
        frac = jnp.where(s < jnp.float32(warmup_steps), rising, falling)
        return jnp.float32(peak_lr) * frac

    return schedule


def _key_name(entry: Any) -> str:
    """The name of one key-path entry (dict key, attribute or sequence index) as a string."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_name(path: tuple[Any, ...]) -> str:
    """The parameter's own name in a key path: ``(..., 'bias', .value) -> 'bias'``.

    NNX Variables flatten to one attribute child ``.value``; that wrapper is skipped (a module
    *named* ``value``, like attention's V projection, is a dict key and is kept).
    """
    names = [_key_name(e) for e in path
             if not (isinstance(e, jax.tree_util.GetAttrKey) and e.name == "value")]
    return names[-1] if names else ""


def decay_mask(params: Any) -> Any:
    """A tree like `params` with True where weight decay applies.

    Decay applies to leaves of rank >= 2 (kernels, embeddings) whose name is not in
    `NO_DECAY_NAMES`; 1-D leaves (biases, LayerNorm scale/bias) and scalars get none.
    """
    def rule(path, leaf):  # noqa: ANN001, ANN202
        return jnp.ndim(leaf) >= 2 and leaf_name(path) not in NO_DECAY_NAMES

    return jax.tree_util.tree_map_with_path(rule, params)


def adamw(
    peak_lr: float,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    weight_decay: float = 0.01,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW on `warmup_linear_schedule`, decay masked by `decay_mask`.

    Optax's AdamW is decoupled (Loshchilov & Hutter 2019: ``p -= lr * (adam + wd * p)``) and
    bias-corrected, like HF's ``AdamW(correct_bias=True)``; the original TF ``BertAdam`` skipped
    bias correction. ``clip_norm=None`` disables clipping.
    """
    schedule = warmup_linear_schedule(peak_lr, total_steps=total_steps, warmup_steps=warmup_steps)
    _check_number("weight_decay", weight_decay, low=0.0)
    _check_number("b1", b1, low=0.0, high=1.0)
    _check_number("b2", b2, low=0.0, high=1.0)
    _check_number("eps", eps, low=0.0, low_open=True)
    if clip_norm is not None:
        _check_number("clip_norm", clip_norm, low=0.0, low_open=True)

    def build(learning_rate):  # noqa: ANN001, ANN202 (called by inject_hyperparams)
        parts = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
        parts.append(optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps,
                                 weight_decay=weight_decay, mask=decay_mask))
        return optax.chain(*parts)

    return standard_promotion(optax.inject_hyperparams(build)(learning_rate=schedule))


def standard_promotion(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """`tx` with its init/update traced under JAX's default ("standard") dtype promotion.

    Optax's Adam bias correction computes ``b1 ** count`` (a weak float to the power of an
    int32 count), which ``jax_numpy_dtype_promotion="strict"`` (the test suite's setting)
    rejects. The wrapper scopes the default rule to optax's own code; numerics are unchanged.
    Extra update arguments (``value``, ``grad``, ``value_fn``: what `optax.lbfgs`'s line search
    needs) are passed through.
    """
    tx = optax.with_extra_args_support(tx)

    def init(params):  # noqa: ANN001, ANN202
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    def update(updates, state, params=None, **extra):  # noqa: ANN001, ANN003, ANN202
        with jax.numpy_dtype_promotion("standard"):
            return tx.update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(init, update)


def learning_rate_of(opt_state: Any) -> Array | None:
    """The learning rate of the last update, if some part of `opt_state` injects one."""
    stack = [opt_state]
    while stack:
        node = stack.pop()
        hyper = getattr(node, "hyperparams", None)
        if isinstance(hyper, dict) and "learning_rate" in hyper:
            return hyper["learning_rate"]
        if isinstance(node, (tuple, list)):
            stack.extend(node)
    return None


# Parameter names (last two path parts) of μP's "input weights": their fan-in is a vocabulary or
# a position count, not the width, so their Adam learning rate is not scaled (Yang et al. 2022,
# Table 3). Everything else of rank 2 in the encoder is a hidden weight (both fans ∝ width).
MUP_INPUT_WEIGHTS = ("word.embedding", "position.embedding", "token_type.embedding")


def mup_lr_multipliers(params: Any, width_mult: float) -> Any:
    """μP's per-leaf Adam learning-rate factors: ``1/width_mult`` for hidden weights (rank 2,
    not an embedding table), 1 for input weights, biases and norm scales (Yang et al. 2022,
    "Tensor Programs V", Table 3, Adam column; `mup.MuAdam` divides the hidden lr the same way).

    `params` is the model's ``nnx.State`` of Params (or its pure dict); returns a tree of Python
    floats with the same structure. With the tied LM readout the embedding is both input and
    output weight; μP keeps its lr and puts ``1/width_mult`` on the logits instead
    (`EncoderConfig.parametrization="mup"`).
    """
    if not (math.isfinite(width_mult) and width_mult > 0):
        raise ValueError(f"width_mult must be a positive finite number, got {width_mult!r}")

    def rule(path, leaf):  # noqa: ANN001, ANN202
        name = path_name(path)
        hidden = jnp.ndim(leaf) == 2 and not name.endswith(MUP_INPUT_WEIGHTS)
        return 1.0 / width_mult if hidden else 1.0

    return jax.tree_util.tree_map_with_path(rule, params)


def scale_updates(multipliers: Any) -> optax.GradientTransformation:
    """Multiply each update leaf by its factor in `multipliers` (a tree like the params); chained
    after Adam this is a per-leaf learning rate (`mup_lr_multipliers`)."""

    def init(params):  # noqa: ANN001, ANN202
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):  # noqa: ANN001, ANN202
        del params
        scaled = jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, multipliers)
        return scaled, state

    return optax.GradientTransformation(init, update)
