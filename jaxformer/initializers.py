"""Initializers that keep second moments at 1 (Su, kexue.fm post 8620), and tree rewrites.

Shape letters: a dense kernel is ``[I, O]`` (Flax layout: `I` inputs, `O` outputs); a
convolution kernel ``[*K, I, O]`` with receptive field `K`.

Every initializer here is an ``Init``: ``init(key, shape, dtype=float32) -> Array``, the calling
convention of `jax.nn.initializers`, so they plug into Flax modules unchanged.

**Sampling distributions** (post 8620, "采样分布"). `normal` is ``N(mean, std²)``; `uniform` is
``U[-√3 std, √3 std]``, which has the same variance ``(2√3 std)²/12 = std²``. The truncated
normal redraws anything outside ``±2`` standard deviations, so its variance is not ``std²`` but
``γ std²`` with

    γ(a) = ∫_{-a}^{a} x² φ(x) dx / ∫_{-a}^{a} φ(x) dx = 1 - 2 a φ(a) / (2Φ(a) - 1)

(integrate ``x² φ`` by parts: ``∫ x·xφ = [-xφ] + ∫ φ``). For ``a = 2`` the post gives
``γ = 0.7737413`` and the correction ``1/√γ = 1.1368472``: pass ``1.1368472 σ`` to get std
``σ``. **The pitfall:** `jax.nn.initializers.truncated_normal(stddev=σ)`, TF's / bert4keras'
``TruncatedNormal(0.02)`` and PyTorch's ``trunc_normal_(std=σ, a=-2σ, b=2σ)`` are all
*uncorrected* (actual std ``0.8796 σ``), while ``jax.nn.initializers.variance_scaling(...,
"truncated_normal")`` *is* corrected. The same "std 0.02" therefore means two different
variances depending on the framework (flax #4091, keras #8048), a silent porting bug.
`truncated_normal` corrects by default; ``corrected=False`` reproduces the others.

**Second-moment preservation** (post 8620, "二阶矩"). For ``y_j = Σ_i x_i w_ij`` over `m`
inputs with independent ``w`` of mean 0, ``E[y_j²] = m E[x²] E[w²]``, with no assumption on the
mean of ``x``. Keeping ``E[y²] = E[x²]`` needs ``Var(w) = 1/m`` (LeCun et al. 1998, `lecun`); a
ReLU zeroes half the units, ``E[relu(x)²] = E[x²]/2``, so ``Var(w) = 2/m`` (He et al. 2015,
`he`). Xavier/Glorot (Glorot & Bengio 2010, `xavier`) averages the forward and backward
conditions, ``Var(w) = 2/(fan_in + fan_out)``; the post does not give this formula (its NTK
section loosely calls the 1/m rule "Xavier"). All three are `variance_scaling`.

For sigmoid (and tanh) no weight variance yields second moment 1, so the post "fine-tunes" the
activation instead: ``E[sigmoid(z)²] = 0.2933790`` for ``z ~ N(0, 1)``, and
``sigmoid(x)/√0.2933790`` (`scaled_sigmoid`) has second moment 1. SELU (Klambauer et al. 2017)
is the same trick applied to ELU; `selu_constants` derives its λ and α in closed form. Su:
"顶多算是一种比较好的初始化罢了" (at most a rather good initialization).

**Re-initialising a built model** is a pure tree rewrite over dotted leaf names
(`jaxformer.pytree`): ``nnx.update(model, reinitialize(nnx.state(model, nnx.Param), rule,
key=key))``; `scale_leaves` multiplies chosen leaves, e.g. GPT-2's ``1/√(2L)`` on residual
output projections (Radford et al. 2019) or DeepNet's β (Wang et al. 2022, arXiv 2203.00555).
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from jaxformer.pytree import path_name

Init = Callable[[PRNGKeyArray, Sequence[int], DTypeLike], Array]

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")


def _phi(x: float) -> float:
    """The standard normal density."""
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _Phi(x: float) -> float:
    """The standard normal CDF, via erfc so that the lower tail keeps its relative precision."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _positive(name: str, value: Any) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _finite(name: str, value: Any) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(shape)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"shape must be a tuple of non-negative ints, got {shape!r} "
                            f"(entry {d!r} of type {type(d).__name__})")
        if d < 0:
            raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r} "
                             f"(entry {int(d)} < 0)")
    return tuple(int(d) for d in dims)


def _check_dtype(dtype: DTypeLike) -> np.dtype:
    dt = jnp.dtype(dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype (float32, bfloat16, ...), got {dt}")
    return dt


# --------------------------------------------------------------------------- truncated normal


def truncated_normal_variance(bound: float = 2.0) -> float:
    """γ(a): the variance of a standard normal truncated to ``[-a, a]``, in float64.

    ``γ = 1 - 2 a φ(a) / (2Φ(a) - 1)`` with ``2Φ(a) - 1 = erf(a/√2)``. The subtraction loses
    about ``ε/a²`` relatively, so bounds below ~1e-3 are imprecise (and pointless).
    """
    a = _positive("bound", bound)
    return 1.0 - 2.0 * a * _phi(a) / math.erf(a / math.sqrt(2.0))


# Post 8620's numbers: γ = 0.7737413 and the std correction 1/√γ = 1.1368472 for ±2σ.
# (jax's variance_scaling divides by √γ = .87962566103423978.)
TRUNCATED_NORMAL_GAMMA = truncated_normal_variance(2.0)
TRUNCATED_NORMAL_CORRECTION = 1.0 / math.sqrt(TRUNCATED_NORMAL_GAMMA)


# --------------------------------------------------------------------------- distributions


def normal(std: float, *, mean: float = 0.0) -> Init:
    """``N(mean, std²)``."""
    std = _positive("std", std)
    mean = _finite("mean", mean)

    def init(key: PRNGKeyArray, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        shape, dtype = _check_shape(shape), _check_dtype(dtype)
        x = std * jax.random.normal(key, shape, dtype)
        return x + mean if mean != 0.0 else x

    return init


def uniform(std: float) -> Init:
    """``U[-√3 std, √3 std]``: mean 0 and variance ``std²``, like ``normal(std)``."""
    std = _positive("std", std)
    limit = math.sqrt(3.0) * std

    def init(key: PRNGKeyArray, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        shape, dtype = _check_shape(shape), _check_dtype(dtype)
        return limit * jax.random.uniform(key, shape, dtype, -1.0, 1.0)

    return init


def truncated_normal(std: float, *, bound: float = 2.0, corrected: bool = True) -> Init:
    """A normal truncated to ``±bound`` of its own std, with actual std `std` when `corrected`.

    Draws ``s · t`` with ``t`` standard normal truncated to ``[-bound, bound]`` (`bound` is in
    units of the untruncated std) and ``s = std/√γ(bound)`` (corrected: ``Var = std²``) or
    ``s = std`` (uncorrected: ``Var = γ std²``, i.e. std ``0.8796·std`` for bound 2; this is
    `jax.nn.initializers.truncated_normal`, TF/bert4keras ``TruncatedNormal`` and PyTorch's
    ``trunc_normal_(std=σ, a=-2σ, b=2σ)``). Every value lies within ``±bound·s``.
    """
    std = _positive("std", std)
    bound = _positive("bound", bound)
    scale = std / math.sqrt(truncated_normal_variance(bound)) if corrected else std

    def init(key: PRNGKeyArray, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        shape, dtype = _check_shape(shape), _check_dtype(dtype)
        return scale * jax.random.truncated_normal(key, -bound, bound, shape, dtype)

    return init


# --------------------------------------------------------------------------- variance scaling


def fans(shape: Sequence[int], *, in_axis: int = -2, out_axis: int = -1) -> tuple[int, int]:
    """``(fan_in, fan_out) = (shape[in_axis]·R, shape[out_axis]·R)``, R the product of the
    other axes (the receptive field of a conv kernel ``[*K, I, O]``); jax.nn.initializers'
    convention without a batch axis. Kernels are ``[I, O]`` (Flax), hence the defaults."""
    shape = _check_shape(shape)
    rank = len(shape)
    if rank < 2:
        raise ValueError(f"fans needs a kernel shape of rank >= 2 ([..., I, O]), got shape "
                         f"{shape} of rank {rank}")
    axes = []
    for name, axis in (("in_axis", in_axis), ("out_axis", out_axis)):
        if not -rank <= axis < rank:
            raise ValueError(f"{name} must be in [{-rank}, {rank}) for shape {shape}, got {axis}")
        axes.append(axis % rank)
    i, o = axes
    if i == o:
        raise ValueError(f"in_axis and out_axis must differ, got in_axis={in_axis} and "
                         f"out_axis={out_axis} (both axis {i} of shape {shape})")
    receptive = math.prod(d for k, d in enumerate(shape) if k not in (i, o))
    return shape[i] * receptive, shape[o] * receptive


_DRAWS = {"normal": normal, "truncated_normal": truncated_normal, "uniform": uniform}


def variance_scaling(scale: float, mode: str, distribution: str, *, in_axis: int = -2,
                     out_axis: int = -1) -> Init:
    """Mean 0 and ``Var = scale/n``, ``n`` = fan_in, fan_out or (fan_in + fan_out)/2 (`fans`).

    `distribution` is ``"normal"``, ``"truncated_normal"`` (±2σ, corrected, so the variance is
    exactly ``scale/n`` as in jax's `variance_scaling`) or ``"uniform"`` (``±√(3 scale/n)``).
    """
    scale = _positive("scale", scale)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    draw = _DRAWS[distribution]

    def init(key: PRNGKeyArray, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        shape, dtype = _check_shape(shape), _check_dtype(dtype)
        fan_in, fan_out = fans(shape, in_axis=in_axis, out_axis=out_axis)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        if n == 0:  # a zero-sized axis: the array is empty, there is nothing to scale
            return jnp.zeros(shape, dtype)
        return draw(math.sqrt(scale / n))(key, shape, dtype)

    return init


def lecun(*, mode: str = "fan_in", distribution: str = "normal", in_axis: int = -2,
          out_axis: int = -1) -> Init:
    """``Var = 1/m`` (LeCun et al. 1998): keeps ``E[y²] = E[x²]`` through ``y = x W``."""
    return variance_scaling(1.0, mode, distribution, in_axis=in_axis, out_axis=out_axis)


def he(*, mode: str = "fan_in", distribution: str = "normal", in_axis: int = -2,
       out_axis: int = -1) -> Init:
    """``Var = 2/m`` (He et al. 2015): ReLU zeroes half the units, halving ``E[x²]``."""
    return variance_scaling(2.0, mode, distribution, in_axis=in_axis, out_axis=out_axis)


def xavier(*, mode: str = "fan_avg", distribution: str = "normal", in_axis: int = -2,
           out_axis: int = -1) -> Init:
    """``Var = 2/(fan_in + fan_out)`` (Glorot & Bengio 2010; not a formula of post 8620)."""
    return variance_scaling(1.0, mode, distribution, in_axis=in_axis, out_axis=out_axis)


# --------------------------------------------------------------------------- activations


def gaussian_expectation(fn: Callable[[np.ndarray], np.ndarray], *, order: int = 200) -> float:
    """``E[fn(z)]`` for ``z ~ N(0, 1)`` by Gauss–Hermite quadrature (probabilists' weight
    ``e^{-z²/2}``), in float64. `fn` maps a numpy array of nodes to values elementwise.

    Exact for polynomials of degree < 2·order; for smooth (analytic) `fn` such as sigmoid the
    error falls geometrically with `order`. Kinks (relu, selu) converge slowly: integrate those
    piecewise instead.
    """
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    nodes, weights = np.polynomial.hermite_e.hermegauss(int(order))
    values = np.asarray(fn(nodes), dtype=np.float64)
    if values.shape != nodes.shape:
        raise ValueError(f"fn must map the {nodes.shape} nodes elementwise, got output shape "
                         f"{values.shape}")
    return float(np.dot(weights, values) / math.sqrt(2.0 * math.pi))


def _sigmoid_np(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow at the far nodes


# Post 8620: E[sigmoid(z)²] = 0.2933790 for z ~ N(0, 1) ("numerically confirmed").
SIGMOID_SECOND_MOMENT = gaussian_expectation(lambda z: _sigmoid_np(z) ** 2)
SIGMOID_GAIN = 1.0 / math.sqrt(SIGMOID_SECOND_MOMENT)


def scaled_sigmoid(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """``sigmoid(x)/√0.2933790``: second moment 1 for ``x ~ N(0, 1)`` (post 8620); x's dtype."""
    return jax.nn.sigmoid(x) * SIGMOID_GAIN


def selu_constants() -> tuple[float, float]:
    """``(λ, α)`` making ``selu(z) = λ·(z if z > 0 else α(e^z − 1))`` have mean 0 and second
    moment 1 for ``z ~ N(0, 1)`` (Klambauer et al. 2017: λ = 1.0507009873554805,
    α = 1.6732632423543772).

    Derivation, with φ, Φ the standard normal pdf and cdf:

    - ``E[z; z > 0] = ∫_0^∞ z φ(z) dz = φ(0) = 1/√(2π)``, since ``φ' = -zφ``.
    - ``E[e^{kz}; z < 0] = e^{k²/2} Φ(-k)``: complete the square,
      ``e^{kz} φ(z) = e^{k²/2} φ(z - k)``, and ``∫_{-∞}^0 φ(z - k) dz = Φ(-k)``.
    - ``E[z²; z > 0] = 1/2`` and ``P(z < 0) = 1/2`` by symmetry.

    Mean zero: ``φ(0) + α (e^{1/2} Φ(-1) − 1/2) = 0``, so ``α = φ(0) / (1/2 − e^{1/2} Φ(-1))``.
    Second moment: ``E[(e^z − 1)²; z < 0] = e² Φ(-2) − 2 e^{1/2} Φ(-1) + 1/2``, so
    ``λ² (1/2 + α² (e² Φ(-2) − 2 e^{1/2} Φ(-1) + 1/2)) = 1``. Evaluated in float64, with Φ
    from erfc so that the small tails keep their relative precision.
    """
    e1 = math.exp(0.5) * _Phi(-1.0)  # E[e^z; z < 0]
    e2 = math.exp(2.0) * _Phi(-2.0)  # E[e^{2z}; z < 0]
    alpha = _phi(0.0) / (0.5 - e1)
    lam = 1.0 / math.sqrt(0.5 + alpha * alpha * (e2 - 2.0 * e1 + 0.5))
    return lam, alpha


SELU_LAMBDA, SELU_ALPHA = selu_constants()


# --------------------------------------------------------------------------- tree rewrites


def reinitialize(params: Any, rule: Callable[[str, Any], Init | None], *,
                 key: PRNGKeyArray) -> Any:
    """`params` with the leaves chosen by `rule` redrawn; the tree's structure is kept.

    ``rule(name, leaf)`` gets each leaf's dotted name (`jaxformer.pytree.path_name`, e.g.
    ``"blocks.0.ffn.output.kernel"``) and returns an `Init`, or None to keep the leaf. A chosen
    leaf becomes ``init(fold_in(key, i), leaf.shape, leaf.dtype)``, where ``i`` is the index
    of its name among the *sorted names of all leaves* of `params`. So a draw does not depend
    on which other leaves the rule selects, and an ``nnx.State`` and its pure dict get the same
    draws; it does depend on the full name list (adding or removing a leaf whose name sorts
    before it shifts ``i``).

    Works on nested dicts/lists and on ``nnx.State`` (whose leaves are Variables' values):

        state = nnx.state(model, nnx.Param)
        nnx.update(model, reinitialize(state, rule, key=key))
    """
    names = [path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"params must give each leaf a distinct dotted name, got duplicates "
                         f"{dupes}")
    index = {name: i for i, name in enumerate(sorted(names))}

    def redraw(path: Any, leaf: Any) -> Any:
        name = path_name(path)
        init = rule(name, leaf)
        if init is None:
            return leaf
        new = init(jax.random.fold_in(key, index[name]), leaf.shape, leaf.dtype)
        if new.shape != leaf.shape or new.dtype != leaf.dtype:
            raise ValueError(f"the init chosen for {name!r} must return shape {leaf.shape} and "
                             f"dtype {leaf.dtype}, got shape {new.shape} and dtype {new.dtype}")
        return new

    return jax.tree_util.tree_map_with_path(redraw, params)


def scale_leaves(params: Any, rule: Callable[[str, Any], float | None]) -> Any:
    """`params` with each leaf for which ``rule(name, leaf)`` gives a factor multiplied by it.

    The factor is cast to the leaf's dtype first (``leaf * dtype(factor)``); None keeps the
    leaf. For scaling at initialization: GPT-2's ``1/√(2L)`` on the residual branches' output
    kernels, DeepNet's β on the FFN and value/output projections.
    """

    def scale(path: Any, leaf: Any) -> Any:
        name = path_name(path)
        factor = rule(name, leaf)
        if factor is None:
            return leaf
        factor = _finite(f"the factor for {name!r}", factor)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"scale_leaves can only scale floating leaves, got {name!r} with "
                             f"dtype {leaf.dtype}")
        return leaf * jnp.asarray(factor, leaf.dtype)

    return jax.tree_util.tree_map_with_path(scale, params)
