"""Pure building blocks of a Transformer encoder: dense, layer norm, activations, FFN, dropout.

These are plain functions of arrays and options. They know no module, config or file, so the
same maths serves the NNX modules in `jaxformer.models`, the benchmarks and the notebooks.

Shape letters (README glossary): B batch, T tokens, E model width, F FFN width, ``...`` any
leading axes.

Every broadcast here is written out with an explicit reshape, because the test suite runs with
``jax_numpy_rank_promotion="raise"``: implicit rank promotion is where silent shape bugs hide.
"""


import math
from collections.abc import Callable

import jax
from jax.typing import DTypeLike
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxformer.random_bits import hash_bits, hash_index, keep_threshold


def compute_dtype(dtype: object) -> jnp.dtype:
    """fp32 for bf16/fp16/fp32, float64 for float64: the precision maps and sums run in.
    (Not `jnp.promote_types`, which refuses float64 + float32 under strict promotion.)"""
    return jnp.dtype(jnp.float64) if jnp.dtype(dtype) == jnp.float64 else jnp.dtype(jnp.float32)


def _lift(v: Array, ndim: int) -> Array:
    """Reshape a vector `[N]` to `[1, ..., 1, N]` with `ndim` axes for explicit broadcasting."""
    return jnp.reshape(v, (1,) * (ndim - 1) + (-1,))


def dense(
    x: Float[Array, "*batch I"], kernel: Float[Array, "I O"], bias: Float[Array, " O"] | None,
    *, multiplier: float = 1.0,
) -> Float[Array, "*batch O"]:
    """Affine map ``multiplier * (x @ kernel) + bias`` on the last axis. `kernel` is `[in, out]`
    (JAX layout). ``multiplier`` is the parametrization's constant: 1 in the standard one,
    ``1/sqrt(I)`` in the NTK one (post 8: ``y_j = b_j + (1/√m) Σ_i x_i w_ij``, w ~ N(0, 1))."""
    y = jnp.einsum("...i,io->...o", x, kernel.astype(x.dtype))
    if multiplier != 1.0:
        y = y * jnp.asarray(multiplier, y.dtype)
    if bias is not None:
        y = y + _lift(bias.astype(y.dtype), y.ndim)
    return y


def layer_norm(
    x: Float[Array, "*batch E"],
    scale: Float[Array, " E"] | None,
    bias: Float[Array, " E"] | None,
    *,
    eps: float,
) -> Float[Array, "*batch E"]:
    """LayerNorm over the last axis (Ba et al. 2016), statistics in fp32.

    The biased variance ``mean((x - mu)^2)`` is what PyTorch and HF BERT use; computing it in
    fp32 keeps bf16 activations from losing the small differences that LayerNorm amplifies.
    """
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + jnp.float32(eps))
    if scale is not None:
        y = y * _lift(scale.astype(jnp.float32), y.ndim)
    if bias is not None:
        y = y + _lift(bias.astype(jnp.float32), y.ndim)
    return y.astype(x.dtype)


def rms_norm(
    x: Float[Array, "*batch E"], scale: Float[Array, " E"] | None, *, eps: float
) -> Float[Array, "*batch E"]:
    """RMSNorm over the last axis (Zhang & Sennrich 2019): ``x / sqrt(mean(x²) + eps) * scale``.

    No centering and no bias: post 8 (kexue.fm/archives/8620) argues that centering, like the
    bias terms T5 also dropped, stores a prior that hurts transfer. Statistics in fp32, as
    `layer_norm`.
    """
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + jnp.float32(eps))
    if scale is not None:
        y = y * _lift(scale.astype(jnp.float32), y.ndim)
    return y.astype(x.dtype)


def gelu_erf(x: Array) -> Array:
    """Exact GELU, ``x * Phi(x)`` (Hendrycks & Gimpel 2016); HF's ``"gelu"``."""
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x: Array) -> Array:
    """Tanh approximation of GELU (GPT-2, original BERT TF code); HF's ``"gelu_new"``."""
    return jax.nn.gelu(x, approximate=True)


def quick_gelu(x: Array) -> Array:
    """``x * sigmoid(1.702 x)`` (CLIP); HF's ``"quick_gelu"``."""
    return x * jax.nn.sigmoid(jnp.asarray(1.702, x.dtype) * x)


# Names follow HF `ACT2FN`, so `config.json`'s `hidden_act` maps one to one.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": gelu_erf,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "quick_gelu": quick_gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable[[Array], Array]:
    """Look up an activation by its HF name, with an error that lists the known names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"hidden_act={name!r} is not supported; expected one of {sorted(ACTIVATIONS)}"
        ) from None


DROPOUT_RNGS = ("hash", "threefry")


def dropout(
    x: Array, rate: float, *, key: PRNGKeyArray | None, deterministic: bool, rng: str = "hash",
    index: Array | None = None,
) -> Array:
    """Inverted dropout: zero with probability `rate`, scale survivors by ``1 / (1 - rate)``.

    `deterministic` is always explicit (NNX stopped defaulting it in 2026-04), and a key is
    required only when units are actually dropped, so evaluation needs no key.

    An element is kept when its uint32 random word is ``>= round(rate * 2^32)``, so the keep
    probability is ``1 - rate`` to within 2^-32. ``rng="hash"`` (default) draws the words with
    `jaxformer.random_bits.hash_bits`, a counter hash ~50x cheaper than threefry on CPU;
    ``rng="threefry"`` draws them with `jax.random.bits`. Both are pure functions of `key`.
    ``index`` (uint32, broadcastable to ``x``; hash only) gives each element's flat position in
    a larger tensor, so a tile gets the mask it has in the whole (`softmax_attention`'s query
    tiles).
    """
    if deterministic or rate == 0.0:
        return x
    if key is None:
        raise ValueError("dropout with deterministic=False and rate > 0 needs key=, got None")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    if index is not None:
        if rng != "hash":
            raise ValueError(f"index= needs rng='hash', got rng={rng!r}")
        bits = jnp.broadcast_to(hash_index(key, index), x.shape)
    elif rng == "hash":
        bits = hash_bits(key, x.shape)
    elif rng == "threefry":
        bits = jax.random.bits(key, x.shape, jnp.uint32)
    else:
        raise ValueError(f"rng must be one of {DROPOUT_RNGS}, got {rng!r}")
    keep = bits >= keep_threshold(rate)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def feed_forward(
    x: Float[Array, "*batch E"],
    w_in: Float[Array, "E F"],
    b_in: Float[Array, " F"] | None,
    w_out: Float[Array, "F E"],
    b_out: Float[Array, " E"] | None,
    *,
    act: Callable[[Array], Array],
    multipliers: tuple[float, float] = (1.0, 1.0),
) -> Float[Array, "*batch E"]:
    """Position-wise FFN ``act(x W1 + b1) W2 + b2`` (Vaswani et al. 2017, eq. 2); `multipliers`
    are the two `dense` multipliers (NTK parametrization)."""
    m_in, m_out = multipliers
    return dense(act(dense(x, w_in, b_in, multiplier=m_in)), w_out, b_out, multiplier=m_out)


def normal_init(std: float) -> Callable[..., Array]:
    """``(key, shape, dtype) -> Array`` drawing N(0, std^2), as HF BERT's `_init_weights`."""

    def init(key: PRNGKeyArray, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32) -> Array:
        return std * jax.random.normal(key, shape, dtype)

    return init


def attention_scale(head_dim: int) -> float:
    """The ``1/sqrt(D)`` of scaled dot-product attention (Vaswani et al. 2017, eq. 1)."""
    return 1.0 / math.sqrt(head_dim)
