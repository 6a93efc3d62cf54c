"""Residual connections and where the norm goes: the maths of post 8's "residual scaling" section.

Shape letters: ``...`` any leading axes, E width.

Su (kexue.fm/archives/8620, "残差连接") starts from ``Var(x + F(x)) = σ_x² + σ_F²`` for
independent terms, so every residual add inflates the second moment, and compares the fixes:

* **Post-Norm** (Transformer, BERT): ``x_{t+1} = Norm(x_t + F_t(x_t))``. At init this is about
  ``(x_t + F_t) / √2``, so ``x_l = x_0 / 2^{l/2} + ... + F_{l-1} / 2^{1/2}``: the identity path of
  early layers is damped exponentially and training needs warm-up (Xiong et al. 2020).
* **Pre-Norm**: ``x_{t+1} = x_t + F_t(Norm(x_t))``; every branch gets equal weight, the stream
  grows as ``E[x_l²] = E[x_0²] + Σ_t E[F_t²]`` (Su's 2025 comment: RMS ``√(t+1)`` for unit
  branches), and a final Norm is needed before the head.
* **ReZero / SkipInit** (Bachlechner et al. 2020; De & Smith 2020): ``x_{t+1} = x_t + α_t F_t(x_t)``
  with ``α_t = 0`` at init, so the network starts as the identity and needs no Norm. Su prefers
  not to learn α but to raise it by a fixed step until it reaches 1 and then freeze it
  (`rezero_ramp`; the post gives no step size, so it is a parameter here).
* **DeepNorm** (Wang et al. 2022, "DeepNet", arXiv 2203.00555, §2.3 and Fig. 2): Post-Norm with
  the residual up-weighted, ``x_{t+1} = LN(α x_t + G_t(x_t))``, and the FFN, value and output
  projections initialised ``β``-times smaller (`deepnorm_constants`).

Everything here is a pure function of arrays and numbers; `jaxformer.models.encoder.Block`
applies it.
"""

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

RESIDUAL_KINDS = ("standard", "rezero", "rezero_ramp", "deepnorm")


def deepnorm_constants(encoder_layers: int = 0, decoder_layers: int = 0) -> dict[str, float]:
    """DeepNorm's residual weight α and init gain β (DeepNet, Wang et al. 2022, Fig. 2 table).

    With N encoder and M decoder layers:

    * encoder-only (M = 0): ``α = (2N)^{1/4}``, ``β = (8N)^{-1/4}``;
    * decoder-only (N = 0): ``α = (2M)^{1/4}``, ``β = (8M)^{-1/4}``;
    * encoder-decoder: encoder ``α = 0.81 (N⁴M)^{1/16}``, ``β = 0.87 (N⁴M)^{-1/16}``; decoder
      ``α = (3M)^{1/4}``, ``β = (12M)^{-1/4}``.

    The encoder-decoder β is the paper's 0.87. torchscale's code divides by ``(N⁴M)^{1/16} / 1.15``
    instead, i.e. multiplies by ``1.15 (N⁴M)^{-1/16}`` (0.87 ≈ 1/1.15
    suggests an inverted constant in one of them); this kit pins the paper's table.

    Returns:
      ``{"encoder_alpha", "encoder_beta", "decoder_alpha", "decoder_beta"}``; the entries of an
      absent side are NaN.
    """
    for name, value in (("encoder_layers", encoder_layers), ("decoder_layers", decoder_layers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if encoder_layers == 0 and decoder_layers == 0:
        raise ValueError("deepnorm_constants needs encoder_layers > 0 or decoder_layers > 0, "
                         "got 0 and 0")
    n, m, nan = encoder_layers, decoder_layers, math.nan
    if m == 0:
        return dict(encoder_alpha=(2 * n) ** 0.25, encoder_beta=(8 * n) ** -0.25,
                    decoder_alpha=nan, decoder_beta=nan)
    if n == 0:
        return dict(encoder_alpha=nan, encoder_beta=nan,
                    decoder_alpha=(2 * m) ** 0.25, decoder_beta=(8 * m) ** -0.25)
    both = (n ** 4 * m) ** (1 / 16)
    return dict(encoder_alpha=0.81 * both, encoder_beta=0.87 / both,
                decoder_alpha=(3 * m) ** 0.25, decoder_beta=(12 * m) ** -0.25)


def rezero_ramp(step: int | Array, *, ramp_steps: int) -> Float[Array, ""]:
    """Su's schedule for the ReZero gate: ``α = min(1, step / ramp_steps)``, a fixed step of
    ``1 / ramp_steps`` per update, frozen at 1 (post 8: do not learn α with the large NTK
    learning rate; raise it step by step instead)."""
    if not isinstance(ramp_steps, int) or isinstance(ramp_steps, bool) or ramp_steps < 1:
        raise ValueError(f"ramp_steps must be a positive int, got {ramp_steps!r}")
    ratio = jnp.asarray(step, jnp.float32) / jnp.float32(ramp_steps)
    return jnp.minimum(ratio, jnp.float32(1.0))


def residual_add(
    x: Float[Array, "*batch E"], fx: Float[Array, "*batch E"], *, alpha: float | Array = 1.0,
    gate: float | Array = 1.0,
) -> Float[Array, "*batch E"]:
    """``alpha * x + gate * fx``: plain (1, 1), DeepNorm (α, 1) or ReZero (1, α_t).

    `alpha` and `gate` are Python floats or scalar arrays; they are cast to ``x.dtype`` so a
    bf16 stream stays bf16.
    """
    a = jnp.asarray(alpha, x.dtype)
    g = jnp.asarray(gate, x.dtype)
    return a * x + g * fx
