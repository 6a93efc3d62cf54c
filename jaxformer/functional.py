"""Pure building blocks of a Transformer encoder: dense, layer norm, activations, FFN, dropout.

These are plain functions of arrays and options. They know no module, config or file, so the
same maths serves the NNX modules in `jaxformer.models`, the benchmarks and the notebooks.

Shape letters (README glossary): B batch, T tokens, E model width, F FFN width, ``...`` any
leading axes.

Every broadcast here is written out with an explicit reshape, because the test suite runs with
``jax_numpy_rank_promotion="raise"``: implicit rank promotion is where silent shape bugs hide.
"""


import contextlib
import functools
import math
from collections.abc import Callable

import jax
from jax.typing import DTypeLike
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxformer.random_bits import hash_bits, hash_index, keep_threshold


# `precision=` of a matmul: None defers to jax's `jax_default_matmul_precision` config (the
# backend's default when unset: TF32 for fp32 on NVIDIA GPUs, one bf16 pass on TPU); a name or a
# `jax.lax.Precision` pins it. Every matmul-bearing kernel of the kit takes one.
Precision = str | jax.lax.Precision | None
PRECISION_NAMES = {"default": None, "high": jax.lax.Precision.HIGH,
                   "highest": jax.lax.Precision.HIGHEST}


def resolve_precision(precision: Precision) -> jax.lax.Precision | None:
    """The `jax.lax.Precision` (or None) for a kit precision: ``"default"`` / None (jax's
    configured default), ``"high"``, ``"highest"``, or a `jax.lax.Precision` as is."""
    if precision is None or isinstance(precision, jax.lax.Precision):
        return precision
    if precision in PRECISION_NAMES:
        return PRECISION_NAMES[precision]
    raise ValueError(f"precision must be one of {list(PRECISION_NAMES)}, a jax.lax.Precision "
                     f"or None, got {precision!r}")


_SCOPE_NAMES = {jax.lax.Precision.DEFAULT: "default", jax.lax.Precision.HIGH: "high",
                jax.lax.Precision.HIGHEST: "highest"}


def precision_scope(precision: Precision) -> contextlib.AbstractContextManager:
    """A context under which every matmul traced with ``precision=None`` runs at `precision`
    (`jax.default_matmul_precision`); a no-op for None / ``"default"``. For kernels with many
    internal einsums (linear attention, the logistic-regression statistics)."""
    resolved = resolve_precision(precision)
    if resolved is None:
        return contextlib.nullcontext()
    return jax.default_matmul_precision(_SCOPE_NAMES[resolved])


def compute_dtype(dtype: object) -> jnp.dtype:
    """fp32 for bf16/fp16/fp32, float64 for float64: the precision maps and sums run in.
    (Not `jnp.promote_types`, which refuses float64 + float32 under strict promotion.)"""
    return jnp.dtype(jnp.float64) if jnp.dtype(dtype) == jnp.float64 else jnp.dtype(jnp.float32)


def _lift(v: Array, ndim: int) -> Array:
    """Reshape a vector `[N]` to `[1, ..., 1, N]` with `ndim` axes for explicit broadcasting."""
    return jnp.reshape(v, (1,) * (ndim - 1) + (-1,))


def dense(
    x: Float[Array, "*batch I"], kernel: Float[Array, "I O"], bias: Float[Array, " O"] | None,
    *, multiplier: float = 1.0, precision: Precision = None,
) -> Float[Array, "*batch O"]:
    """Affine map ``multiplier * (x @ kernel) + bias`` on the last axis. `kernel` is `[in, out]`
    (JAX layout). ``multiplier`` is the parametrization's constant: 1 in the standard one,
    ``1/sqrt(I)`` in the NTK one (post 8: ``y_j = b_j + (1/√m) Σ_i x_i w_ij``, w ~ N(0, 1)).
    The kernel and bias are cast to x's dtype (the compute dtype of mixed precision)."""
    y = jnp.einsum("...i,io->...o", x, kernel.astype(x.dtype),
                   precision=resolve_precision(precision))
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


# Tables with at most this many rows (segment tables) take their gradient as a one-hot matmul.
ONE_HOT_GRAD_ROWS = 64


def embedding_lookup(table: Float[Array, "V E"], ids: Array) -> Float[Array, "*batch E"]:
    """Rows of `table` at integer `ids` (any shape); out-of-range ids give NaN rows (inside
    `jit`, where a Python check is impossible) and no gradient.

    The gradient is accumulated in fp32 and then cast to the table's dtype, rather than the
    scatter-add in the table's dtype that the gradient of `jnp.take` is: on a GPU a bf16 table
    turns that scatter into compare-and-swap loops on 16-bit words, and a segment table (2 rows,
    every token hitting one of them) serialises all B·T updates on the same addresses. Tables of
    up to `ONE_HOT_GRAD_ROWS` rows use a one-hot matmul ``onehot(ids)ᵀ g`` instead of a scatter.
    """
    return _lookup(table, ids, (table.shape[0], jnp.dtype(table.dtype).name))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _lookup(table: Array, ids: Array, spec: tuple[int, str]) -> Array:
    del spec
    return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)


def _lookup_fwd(table: Array, ids: Array, spec: tuple[int, str]) -> tuple[Array, Array]:
    return _lookup(table, ids, spec), ids


def _lookup_bwd(spec: tuple[int, str], ids: Array, g: Array) -> tuple[Array, None]:
    rows, dtype = spec
    flat = ids.reshape(-1)
    flat = jnp.where(flat < 0, flat + rows, flat)  # `jnp.take` reads ids in [-V, 0) from the end
    gf = g.reshape(flat.shape[0], g.shape[-1]).astype(jnp.float32)
    if rows <= ONE_HOT_GRAD_ROWS:
        onehot = (flat[:, None] == jnp.arange(rows, dtype=flat.dtype)[None, :]).astype(jnp.float32)
        grad = jnp.einsum("NV,NE->VE", onehot, gf, precision=jax.lax.Precision.HIGHEST)
    else:
        in_range = (flat >= 0) & (flat < rows)
        grad = jnp.zeros((rows, g.shape[-1]), jnp.float32).at[jnp.where(in_range, flat, rows)].add(
            gf, mode="drop")
    return grad.astype(dtype), None


_lookup.defvjp(_lookup_fwd, _lookup_bwd)


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
    precision: Precision = None,
) -> Float[Array, "*batch E"]:
    """Position-wise FFN ``act(x W1 + b1) W2 + b2`` (Vaswani et al. 2017, eq. 2); `multipliers`
    are the two `dense` multipliers (NTK parametrization)."""
    m_in, m_out = multipliers
    hidden = act(dense(x, w_in, b_in, multiplier=m_in, precision=precision))
    return dense(hidden, w_out, b_out, multiplier=m_out, precision=precision)


def normal_init(std: float) -> Callable[..., Array]:
    """``(key, shape, dtype) -> Array`` drawing N(0, std^2), as HF BERT's `_init_weights`."""

    def init(key: PRNGKeyArray, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32) -> Array:
        return std * jax.random.normal(key, shape, dtype)

    return init


def attention_scale(head_dim: int) -> float:
    """The ``1/sqrt(D)`` of scaled dot-product attention (Vaswani et al. 2017, eq. 1)."""
    return 1.0 / math.sqrt(head_dim)
