"""Feature maps φ for linear attention: ``sim(q, k) = φ(q)ᵀ φ(k)`` replaces ``exp(qᵀk)``.

Shape letters: B batch, T tokens, H heads, D head dim, M feature dim (``M = D`` unless a map
says otherwise; for FAVOR+ the number of random features).

Su's post 7546 (linear attention background) and Katharopoulos et al. 2020 ("Transformers are
RNNs") write linear attention as ``φ(Q)(φ(K)ᵀV)``. With the ``"divide"`` normaliser the maps
must be non-negative (otherwise the denominator ``φ(q)ᵀΣφ(k)`` can cross zero); ``"relu"`` and
``"identity"`` are meant for ``normalize="rmsnorm"`` or ``"none"`` (fla's default layer uses
identity features with an output RMSNorm).

| name | φ(x) | M | source |
|---|---|---|---|
| ``"elu+1"`` | ``elu(x) + 1`` | D | Katharopoulos et al. 2020, eq. 7 |
| ``"relu"`` | ``max(x, 0)`` | D | fla ``feature_map="relu"`` |
| ``"identity"`` | ``x`` | D | fla's default linear-attention layer |
| ``"taylor"`` | ``[1, x/D^¼, x_i x_j/√(2D) (i=j), x_i x_j/√D (i<j)]`` | 1 + D + D(D+1)/2 | Based (Arora et al. 2024): ``φ(q)ᵀφ(k) = 1 + s + s²/2`` with ``s = qᵀk/√D``, the 2nd-order Taylor expansion of ``exp(s)`` |
| ``"favor+"`` / :class:`FavorPlus` | ``exp(ωx' − ‖x'‖²/2)/√M``, ``x' = x/D^¼`` | M | Choromanski et al. 2021 (Performer), Lemma 1: positive orthogonal random features, ``E[φ(q)ᵀφ(k)] = exp(qᵀk/√D)`` |
| any callable | ``fn(x)`` | any | |

Every built-in map computes in fp32 and returns the input dtype (exp and squares in bf16 lose
too much; fp16 overflows: fast-transformers #32).
"""

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxformer.functional import compute_dtype

FeatureFn = Callable[[Array], Array]


def _fp32(fn: Callable[[Array], Array]) -> FeatureFn:
    def wrapped(x: Array) -> Array:
        return fn(x.astype(compute_dtype(x.dtype))).astype(x.dtype)
    wrapped.__name__ = fn.__name__
    return wrapped


@_fp32
def elu_plus_one(x: Array) -> Array:
    """Katharopoulos et al. 2020, eq. 7: positive, and linear (not exponential) for x > 0."""
    return jax.nn.elu(x) + 1.0


@_fp32
def relu(x: Array) -> Array:
    return jax.nn.relu(x)


def identity(x: Array) -> Array:
    return x


def _taylor(x: Float[Array, "*b D"]) -> Float[Array, "*b M"]:
    d = x.shape[-1]
    i, j = np.triu_indices(d)
    # Off-diagonal products appear twice in (qᵀk)² = Σ_ij q_i q_j k_i k_j, hence √2 on them;
    # scaled so that φ(q)ᵀφ(k) = 1 + s + s²/2 with s = qᵀk/√D (Based, Arora et al. 2024 §4).
    weight = np.where(i == j, 1.0 / math.sqrt(2.0 * d), 1.0 / math.sqrt(d))
    quad = x[..., i] * x[..., j] * jnp.asarray(weight, x.dtype).reshape((1,) * (x.ndim - 1) + (-1,))
    ones = jnp.ones(x.shape[:-1] + (1,), dtype=x.dtype)
    return jnp.concatenate([ones, x * (d ** -0.25), quad], axis=-1)


taylor = _fp32(_taylor)
taylor.__doc__ = "Second-order Taylor features (Based): M = 1 + D + D(D+1)/2."


def taylor_dim(head_dim: int) -> int:
    return 1 + head_dim + head_dim * (head_dim + 1) // 2


def orthogonal_gaussian(key: PRNGKeyArray, num_features: int, head_dim: int) -> Float[Array, "M D"]:
    """``[M, D]`` rows that are orthogonal within each block of D, with chi-distributed norms.

    Performer's ORF construction (Choromanski et al. 2021, §2.4): QR of Gaussian blocks gives
    orthonormal directions; rescaling each row to the norm of an independent Gaussian vector keeps
    every row marginally N(0, I), so the estimator stays unbiased while its variance drops.
    """
    blocks = -(-num_features // head_dim)
    k_dirs, k_norms = jax.random.split(key)
    gauss = jax.random.normal(k_dirs, (blocks, head_dim, head_dim), dtype=jnp.float32)
    q, r = jnp.linalg.qr(gauss)  # [blocks, D, D], orthonormal columns
    # Householder QR fixes the signs of diag(R), which biases Q (column 0 always points against
    # the Gaussian's first entry); flipping each column by sign(R_ii) makes Q Haar-distributed.
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    dirs = jnp.swapaxes(q, 1, 2).reshape(blocks * head_dim, head_dim)[:num_features]
    norms = jnp.linalg.norm(
        jax.random.normal(k_norms, (num_features, head_dim), dtype=jnp.float32), axis=-1)
    return dirs * norms[:, None]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FavorPlus:
    """FAVOR+ positive random features (Performer), a pytree holding the projection ω ``[M, D]``.

    Draw with :meth:`draw` from an explicit key; *redraw* by drawing again with a new key (e.g.
    ``fold_in(key, step // redraw_every)``), which is Performer's ``redraw_features``.

    ``φ(x) = exp(ω x' − ‖x'‖²/2) / √M`` with ``x' = x / D^¼`` (Lemma 1: the softmax kernel
    ``exp(qᵀk/√D)`` in expectation). Queries subtract their own row max before the exp, a per-
    query constant that cancels exactly under ``normalize="divide"`` and ``"rmsnorm"``; keys get
    no data-dependent shift, so recurrent decoding (which never sees future keys) computes the
    same features as the parallel form.
    """

    omega: Float[Array, "M D"]

    @classmethod
    def draw(cls, key: PRNGKeyArray, *, head_dim: int, num_features: int | None = None) -> "FavorPlus":
        """Draw M (default ``4 D``: Su's post 8610 "4× the head dim" for low-rank parity, and
        Performer's 256 at D = 64) orthogonal random features."""
        m = 4 * head_dim if num_features is None else num_features
        if not isinstance(m, int) or m < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        return cls(orthogonal_gaussian(key, m, head_dim))

    @property
    def num_features(self) -> int:
        return self.omega.shape[0]

    def __call__(self, x: Float[Array, "*b D"], *, is_query: bool = False) -> Float[Array, "*b M"]:
        d = self.omega.shape[1]
        if x.shape[-1] != d:
            raise ValueError(f"FavorPlus was drawn for head_dim={d}, got inputs with D={x.shape[-1]}")
        xf = x.astype(compute_dtype(x.dtype)) * (d ** -0.25)
        proj = jnp.einsum("...d,md->...m", xf, self.omega.astype(xf.dtype))
        logits = proj - 0.5 * jnp.sum(xf * xf, axis=-1, keepdims=True)
        if is_query:
            logits = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
        phi = jnp.exp(logits) * (self.num_features ** -0.5)
        return phi.astype(x.dtype)


FEATURE_MAPS: dict[str, FeatureFn] = {
    "elu+1": elu_plus_one,
    "relu": relu,
    "identity": identity,
    "taylor": taylor,
}
RANDOM_FEATURE_MAPS = ("favor+",)


def resolve_feature_map(
    spec: object, *, head_dim: int, key: PRNGKeyArray | None = None
) -> tuple[FeatureFn, FeatureFn]:
    """``(φ_query, φ_key)`` for a name, a :class:`FavorPlus`, a callable or a pair of callables.

    ``"favor+"`` draws fresh features from ``key`` (required); pass a :class:`FavorPlus` to
    reuse one draw across calls and steps.
    """
    if isinstance(spec, str):
        if spec in FEATURE_MAPS:
            fn = FEATURE_MAPS[spec]
            return fn, fn
        if spec == "favor+":
            if key is None:
                raise ValueError('feature_map="favor+" draws random features and needs '
                                 "feature_key= (a PRNG key), got None")
            spec = FavorPlus.draw(key, head_dim=head_dim)
        else:
            raise ValueError(f"feature_map must be one of {sorted(FEATURE_MAPS) + list(RANDOM_FEATURE_MAPS)}, "
                             f"a FavorPlus, a callable or a (query_fn, key_fn) pair; got {spec!r}")
    if isinstance(spec, FavorPlus):
        fp = spec
        return (lambda x: fp(x, is_query=True)), (lambda x: fp(x, is_query=False))
    if isinstance(spec, tuple) and len(spec) == 2 and all(callable(f) for f in spec):
        return spec
    if callable(spec):
        return spec, spec
    raise ValueError(f"feature_map must be one of {sorted(FEATURE_MAPS) + list(RANDOM_FEATURE_MAPS)}, "
                     f"a FavorPlus, a callable or a (query_fn, key_fn) pair; got {spec!r}")
