"""Thin NNX parameter holders. Each one creates its parameters and calls a pure kernel.

Parameter names (`kernel`, `bias`, `scale`, `embedding`) and layouts (`kernel` is ``[in, out]``)
follow Flax; `jaxformer.models.pretrained` maps them to HF names and the ``[out, in]`` PyTorch
layout.
"""


from collections.abc import Callable

import jax
from jax.typing import DTypeLike
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Integer

from jaxformer import functional as F
from jaxformer.pytree import named_leaves  # noqa: F401  (re-exported: models' name tables use it)

Init = Callable[..., Array]


class Dense(nnx.Module):
    """``y = multiplier · x W + b`` with ``W: [I, O]``; `multiplier` is a constant of the
    parametrization (1, or ``1/√I`` for NTK: `jaxformer.models.parametrization`).

    Parameters are stored in `param_dtype` and cast to the input's dtype (the compute dtype);
    `precision` is the matmul's (`jaxformer.functional.resolve_precision`)."""

    def __init__(self, in_features: int, out_features: int, *, init: Init, rngs: nnx.Rngs,
                 use_bias: bool = True, param_dtype: DTypeLike = jnp.float32,
                 multiplier: float = 1.0, precision: str | None = None):
        # Drawn in fp32, then stored: a bf16 model is its fp32 twin rounded, whatever the init.
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features),
                                     jnp.float32).astype(param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None
        self.multiplier = float(multiplier)
        self.precision = precision

    def __call__(self, x: Float[Array, "*batch I"]) -> Float[Array, "*batch O"]:
        return F.dense(x, self.kernel[...], None if self.bias is None else self.bias[...],
                       multiplier=self.multiplier, precision=self.precision)


class LayerNorm(nnx.Module):
    """LayerNorm with learned `scale` (gamma) and `bias` (beta)."""

    def __init__(self, features: int, *, eps: float, param_dtype: DTypeLike = jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((features,), param_dtype))

    def __call__(self, x: Float[Array, "*batch E"]) -> Float[Array, "*batch E"]:
        return F.layer_norm(x, self.scale[...], self.bias[...], eps=self.eps)


class RMSNorm(nnx.Module):
    """RMSNorm with a learned `scale` and no bias (Zhang & Sennrich 2019; T5)."""

    def __init__(self, features: int, *, eps: float, param_dtype: DTypeLike = jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))

    def __call__(self, x: Float[Array, "*batch E"]) -> Float[Array, "*batch E"]:
        return F.rms_norm(x, self.scale[...], eps=self.eps)


NORM_LAYERS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}


def norm_layer(norm_type: str, features: int, *, eps: float,
               param_dtype: DTypeLike = jnp.float32) -> LayerNorm | RMSNorm:
    """A `LayerNorm` or `RMSNorm` by name (`EncoderConfig.norm_type`)."""
    try:
        return NORM_LAYERS[norm_type](features, eps=eps, param_dtype=param_dtype)
    except KeyError:
        raise ValueError(f"norm_type must be one of {list(NORM_LAYERS)}, got {norm_type!r}") from None


class Embedding(nnx.Module):
    """A lookup table ``[N, E]``; ids outside ``[0, N)`` are an error, not a silent clamp."""

    def __init__(self, num: int, features: int, *, init: Init, rngs: nnx.Rngs,
                 param_dtype: DTypeLike = jnp.float32):
        self.embedding = nnx.Param(init(rngs.params(), (num, features),
                                        jnp.float32).astype(param_dtype))

    def __call__(self, ids: Integer[Array, "*batch"]) -> Float[Array, "*batch E"]:
        # Out-of-range ids give NaN rows inside jit, where a Python check is impossible; the
        # encoder validates concrete ids before this. The gradient accumulates in fp32
        # (`F.embedding_lookup`).
        return F.embedding_lookup(self.embedding[...], ids)

    def attend(self, x: Float[Array, "*batch E"], *, precision: str | None = None
               ) -> Float[Array, "*batch N"]:
        """Logits against the table (tied output embedding), without aliasing the Param."""
        return jnp.einsum("...e,ne->...n", x, self.embedding[...].astype(x.dtype),
                          precision=F.resolve_precision(precision))


def split_key(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    """`n` independent keys from `key`, or `n` Nones in deterministic mode."""
    if key is None:
        return [None] * n
    return list(jax.random.split(key, n))
