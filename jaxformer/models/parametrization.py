"""Which initializer and which constant multiplier each weight of an encoder gets.

The config names a scheme (`EncoderConfig.weight_init`, ``parametrization``,
``attention_scale``, ``residual``); this module turns it into ``(init, multiplier)`` per weight
*role*, so the blocks stay free of parametrization logic. The rules, with their sources:

* ``weight_init``: N(0, σ²) (HF BERT), variance-corrected ±2σ truncated normal (bert4keras draws
  ``TruncatedNormal(σ)`` uncorrected, i.e. std 0.88σ: post 8), LeCun / Xavier / He
  (`jaxformer.initializers`).
* ``parametrization="ntk"``: kernels N(0, 1) and the layer output times ``1/√fan_in`` (post 8,
  "NTK参数化"; Jacot et al. 2018). Same function at init, O(1) parameters for any width.
* ``attention_scale="t5"``: no 1/√D on the logits; the q kernel's init std is divided by √D
  instead (HF T5 ``_init_weights``: q std ``(d_model·d_kv)^{-1/2}``, after Mesh TF), so
  ``q·k`` again starts with variance ~1 (post 8, "为什么要除以√d").
* ``residual="deepnorm"``: the FFN, value and output projections drawn β-times smaller (DeepNet
  Fig. 2: ``xavier_normal_(w, gain=β)`` for ``ffn``, ``v_proj``, ``out_proj``; q and k gain 1).
* ``parametrization="mup"`` (Yang et al. 2022, Table 3, Adam column): hidden kernels keep their
  fan-in init; the tied LM readout is multiplied by ``1/width_mult``; logits by √D_base/D
  (`EncoderConfig.logit_scale`); Adam's learning rate of hidden kernels is divided by
  ``width_mult`` (`jaxformer.train.mup_lr_multipliers`).

`ResidualGate` is the ReZero α of ``residual="rezero_ramp"``: an NNX Variable that is *not* a
`nnx.Param`, so optimizers never touch it; `set_residual_gates` sets it (Su's fixed-step ramp,
`jaxformer.residual.rezero_ramp`).
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array

from jaxformer import initializers as I
from jaxformer.models.config import EncoderConfig
from jaxformer.models.modules import Dense, Init, norm_layer

# Weight roles: which Dense a kernel belongs to.
ROLES = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out", "pooler",
         "lm_transform", "embedding_project")
# DeepNet scales these by β (Fig. 2); q and k keep gain 1.
DEEPNORM_SCALED = ("value", "attention_output", "ffn_in", "ffn_out")


def _base_init(cfg: EncoderConfig) -> Init:
    if cfg.parametrization == "ntk":
        return I.normal(1.0)
    kind = cfg.weight_init
    if kind == "normal":
        return I.normal(cfg.initializer_range)
    if kind == "truncated_normal":
        return I.truncated_normal(cfg.initializer_range, corrected=True)
    if kind == "lecun_normal":
        return I.lecun()
    if kind == "xavier_normal":
        return I.xavier()
    return I.he()


def _scaled(init: Init, factor: float) -> Init:
    if factor == 1.0:
        return init

    def scaled(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return init(key, shape, dtype) * jnp.asarray(factor, dtype)

    return scaled


def kernel_init(cfg: EncoderConfig, role: str) -> Init:
    """The ``(key, shape, dtype) -> Array`` initializer of the Dense kernel playing `role`."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
    factor = 1.0
    if role == "query" and cfg.resolved_attention_scale == "t5":
        factor /= math.sqrt(cfg.head_dim)
    if role in DEEPNORM_SCALED:
        factor *= cfg.deepnorm_alpha_beta[1]
    return _scaled(_base_init(cfg), factor)


def kernel_multiplier(cfg: EncoderConfig, fan_in: int) -> float:
    """The constant on a Dense output: ``1/√fan_in`` under NTK, else 1."""
    return 1.0 / math.sqrt(fan_in) if cfg.parametrization == "ntk" else 1.0


def dense(cfg: EncoderConfig, in_features: int, out_features: int, role: str, *,
          rngs: nnx.Rngs) -> Dense:
    """A `Dense` for weight `role` of `cfg`: its init and multiplier (this parametrization),
    stored in ``cfg.param_dtype``, multiplied at ``cfg.matmul_precision``."""
    return Dense(in_features, out_features, init=kernel_init(cfg, role),
                 multiplier=kernel_multiplier(cfg, in_features), rngs=rngs,
                 param_dtype=jnp.dtype(cfg.param_dtype), precision=cfg.matmul_precision)


def norm(cfg: EncoderConfig, features: int) -> nnx.Module:
    """The config's norm layer (LayerNorm or RMSNorm) over `features`, in ``cfg.param_dtype``."""
    return norm_layer(cfg.norm_type, features, eps=cfg.layer_norm_eps,
                      param_dtype=jnp.dtype(cfg.param_dtype))


def embedding_init(cfg: EncoderConfig) -> Init:
    """Embedding tables: N(0, initializer_range²) (HF BERT), or the corrected truncated normal
    with ``weight_init="truncated_normal"`` (bert4keras' ``TruncatedNormal``, made exact)."""
    if cfg.weight_init == "truncated_normal":
        return I.truncated_normal(cfg.initializer_range, corrected=True)
    return I.normal(cfg.initializer_range)


def readout_multiplier(cfg: EncoderConfig) -> float:
    """μP's constant on the tied LM logits, ``1/width_mult`` (``MuSharedReadout``); else 1."""
    return 1.0 / cfg.width_mult


class ResidualGate(nnx.Variable):
    """The α of ``x + α F(x)`` under ``residual="rezero_ramp"``: state, not a trained Param."""


def set_residual_gates(state: Any, value: float | Array) -> Any:
    """A copy of `state` (an ``nnx.State``, e.g. `TrainState.rest`) with every `ResidualGate`
    set to `value` (a scalar, cast to each gate's dtype). Pure: nothing is mutated."""

    def put(v: Any) -> Any:
        if isinstance(v, ResidualGate):
            # A fresh buffer per gate: one shared array would be donated twice by a train step.
            return v.replace(jnp.array(value, v[...].dtype, copy=True))
        return v

    return jax.tree.map(put, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def residual_gates(state: Any) -> list[Array]:
    """The values of every `ResidualGate` in `state`, in tree order."""
    leaves = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return [v[...] for v in leaves if isinstance(v, ResidualGate)]
