"""The attention plug-in point: an `EncoderConfig` becomes one bound `AttentionKernel`.

Shape letters: B batch, T queries, S keys, H heads, D head dim, K value head dim, A position
axes.

`bind_attention(cfg)` returns ``kernel(q, k, v, *, mask, positions, freqs, key, deterministic)``
(`jaxformer.attention.AttentionKernel`) with every option of the config bound once: the logit
scale, dropout rate, causality, RoPE (layout, base, which of q/k/v rotate), the matmul precision
and the implementation. The block calls it without knowing which kernel it is, so a new kernel
is one factory in `ATTENTION_KERNELS` plus a config value, never a new block class.

Kernels by ``(attention, attention_impl)``:

| attention | impl | kernel | RoPE |
|---|---|---|---|
| softmax | xla | `jaxformer.attention.softmax_attention` | rotates q, k |
| softmax | fused | `jaxformer.attention.fused_attention` (cuDNN on NVIDIA GPUs) | rotates q, k |
| softmax | flash | `jaxformer.flash_attention.flash_attention` (Pallas) | rotates q, k |
| linear | (auto) | `jaxformer.linear_attention.linear_attention` | rotates φ(q), φ(k) in the numerator |

``"auto"`` and the fallbacks are decided per call from static facts only (backend, dtype,
whether dropout is on, the mask's shape), so `jit` compiles one path; `attention_path` names
it, and a fallback is logged once per reason.
"""

import functools
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from jaxformer.attention import (AttentionKernel, causal_mask, fused_attention,
                                 fused_implementation, softmax_attention)
from jaxformer.flash_attention import flash_attention, flash_attention_supported
from jaxformer.linear_attention import linear_attention
from jaxformer.models import config as config_module
from jaxformer.models.config import ROTARY_POSITIONS, EncoderConfig
from jaxformer.rope import apply_rope

LOG = logging.getLogger("jaxformer.attention")

# config.attention -> factory (cfg) -> bound kernel. Register a new kernel here.
AttentionFactory = Callable[[EncoderConfig], AttentionKernel]


def attention_path(cfg: EncoderConfig, *, deterministic: bool, dtype: object | None = None,
                   backend: str | None = None, mask_shape: tuple[int, ...] | None = None) -> str:
    """The kernel a call with these static facts runs: ``"xla"``, ``"fused:cudnn"``,
    ``"fused:xla"``, ``"flash"`` or ``"linear"``, followed by `` (reason)`` when the config's
    choice fell back.

    Args:
      cfg: the encoder config.
      deterministic: False for a training pass (dropout on when ``attention_dropout > 0``).
      dtype: the compute dtype of q (default ``cfg.dtype``).
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"`` (default: jax's default backend).
      mask_shape: the mask's shape, when there is one: flash takes key-padding masks
        ``[B, 1, 1, S]`` only.
    """
    if cfg.attention != "softmax":
        return cfg.attention
    backend = jax.default_backend() if backend is None else backend
    dtype = jnp.dtype(cfg.dtype if dtype is None else dtype)
    dropping = not deterministic and cfg.attention_dropout > 0
    padding_only = mask_shape is None or tuple(mask_shape[1:3]) == (1, 1)
    impl = cfg.attention_impl
    if impl == "auto":
        impl = _auto_impl(cfg, backend=backend, dtype=dtype, dropping=dropping,
                          padding_only=padding_only)
    if impl == "fused":
        if dropping:
            return "xla (fused attention cannot drop attention weights)"
        return "fused:" + fused_implementation(dtype, cfg.head_dim, backend=backend)
    if impl == "flash" and not padding_only:
        return f"xla (flash takes key-padding masks [B, 1, 1, S], got {tuple(mask_shape)})"
    return impl


def _auto_impl(cfg: EncoderConfig, *, backend: str, dtype: jnp.dtype, dropping: bool,
               padding_only: bool) -> str:
    """``"auto"``: XLA on CPU and TPU (the CPU kernel is tuned; TPU fuses the XLA path
    itself); on a GPU, cuDNN's fused kernel when nothing is dropped and it supports the dtype,
    and the Pallas flash kernel when attention dropout is on."""
    if backend != "gpu":
        return "xla"
    if not dropping and fused_implementation(dtype, cfg.head_dim, backend=backend) == "cudnn":
        return "fused"
    if dropping and padding_only and flash_attention_supported(
            (1, 1, cfg.num_heads, cfg.head_dim), dtype, backend)[0]:
        return "flash"
    return "xla"


@functools.lru_cache(maxsize=None)
def _log_once(message: str) -> None:
    LOG.info(message)


def _rotary(cfg: EncoderConfig) -> Callable[..., Array] | None:
    """``rotate(x, positions, freqs)`` for RoPE configs (positions default to ``0..T-1``), or
    None."""
    if cfg.position not in ROTARY_POSITIONS:
        return None
    axes = cfg.rope_axes

    def rotate(x: Array, positions: Array | None, freqs: Array | None) -> Array:
        if positions is None:
            if axes != 1:
                raise ValueError(
                    f"positions must be given as [B|1, T, A={axes}] for rope_axes={axes} (e.g. "
                    "the (row, col) of each patch), got None")
            positions = jnp.arange(x.shape[1], dtype=jnp.int32)[None, :]
        want_axes = 1 if positions.ndim == 2 else positions.shape[-1]
        if want_axes != axes:
            raise ValueError(
                f"positions have shape {tuple(positions.shape)} (A={want_axes} axes); expected "
                f"[B|1, T{'' if axes == 1 else f', {axes}'}] for rope_axes={axes}")
        return apply_rope(x, positions, layout=cfg.rope_layout, base=cfg.rope_base,
                          freqs="geometric" if freqs is None else freqs)

    return rotate


def _softmax(cfg: EncoderConfig) -> AttentionKernel:
    rotate = _rotary(cfg)

    def kernel(
        q: Float[Array, "B T H D"],
        k: Float[Array, "B S H D"],
        v: Float[Array, "B S H K"],
        *,
        mask: Bool[Array, "b h t S"] | None,
        positions: Array | None,
        freqs: Array | None,
        key: PRNGKeyArray | None,
        deterministic: bool,
    ) -> Float[Array, "B T H K"]:
        if rotate is not None:
            q, k = rotate(q, positions, freqs), rotate(k, positions, freqs)
            if cfg.rotary_value:
                v = rotate(v, positions, freqs)
        path = attention_path(cfg, deterministic=deterministic, dtype=q.dtype,
                              mask_shape=None if mask is None else tuple(mask.shape))
        if " (" in path:
            _log_once(f"attention_impl={cfg.attention_impl!r}: running {path}")
        t = q.shape[1]
        if path.startswith("fused:"):
            return fused_attention(q, k, v, mask=mask, scale=cfg.logit_scale, causal=cfg.causal,
                                   implementation=path.split(":", 1)[1],
                                   precision=cfg.matmul_precision)
        if path == "flash":
            key_mask = (None if mask is None else
                        jnp.broadcast_to(mask[:, 0, 0, :], (q.shape[0], k.shape[1])))
            return flash_attention(q, k, v, key_mask=key_mask, causal=cfg.causal,
                                   scale=cfg.logit_scale, dropout_rate=cfg.attention_dropout,
                                   key=key, deterministic=deterministic)
        if cfg.causal:
            mask = causal_mask(t) if mask is None else mask & causal_mask(t)
        return softmax_attention(q, k, v, mask=mask, dropout_rate=cfg.attention_dropout, key=key,
                                 deterministic=deterministic, scale=cfg.logit_scale,
                                 precision=cfg.matmul_precision)

    return kernel


def _linear(cfg: EncoderConfig) -> AttentionKernel:
    """Linear attention (`jaxformer.linear_attention`): RoPE rotates the numerator's features
    φ(q), φ(k) only (Su's recipe, RoFormer §3.3), so positions go to the kernel itself; the mask
    must be a key-padding mask ``[B, 1, 1, S]`` (causality is ``cfg.causal``)."""
    rotate = _rotary(cfg)
    rope_options = (None if rotate is None else
                    dict(layout=cfg.rope_layout, base=cfg.rope_base))

    def kernel(
        q: Float[Array, "B T H D"],
        k: Float[Array, "B S H D"],
        v: Float[Array, "B S H K"],
        *,
        mask: Bool[Array, "b h t S"] | None,
        positions: Array | None,
        freqs: Array | None,
        key: PRNGKeyArray | None,
        deterministic: bool,
    ) -> Float[Array, "B T H K"]:
        del key, deterministic  # no attention probabilities to drop (the config refuses a rate)
        key_mask = None
        if mask is not None:
            if mask.ndim != 4 or mask.shape[1:3] != (1, 1):
                raise ValueError(
                    f"attention='linear' takes a key-padding mask [B, 1, 1, S], got shape "
                    f"{tuple(mask.shape)}; use causal=True in the config for causal attention")
            key_mask = jnp.broadcast_to(mask[:, 0, 0, :], (q.shape[0], k.shape[1]))
        options = None
        if rotate is not None:
            if cfg.rotary_value:
                v = rotate(v, positions, freqs)
            if positions is None:
                positions = jnp.arange(q.shape[1], dtype=jnp.int32)[None, :]
            options = {**rope_options, "freqs": "geometric" if freqs is None else freqs}
        return linear_attention(q, k, v, causal=cfg.causal, mask=key_mask,
                                rope_positions=None if rotate is None else positions,
                                rope_options=options, feature_map=cfg.linear_feature_map,
                                normalize=cfg.linear_normalize, mode=cfg.linear_mode,
                                chunk_size=cfg.linear_chunk_size,
                                precision=cfg.matmul_precision)

    return kernel


ATTENTION_KERNELS: dict[str, AttentionFactory] = {"softmax": _softmax, "linear": _linear}


def register_attention(name: str, factory: AttentionFactory) -> None:
    """Plug in a new attention kernel: ``EncoderConfig(attention=name)`` then builds blocks that
    call ``factory(cfg)`` (which must return an `AttentionKernel`); nothing else changes."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable (cfg) -> AttentionKernel, got "
                        f"{type(factory).__name__}")
    ATTENTION_KERNELS[name] = factory
    config_module.ATTENTION_KINDS = tuple(dict.fromkeys((*config_module.ATTENTION_KINDS, name)))
    bind_attention.cache_clear()


@functools.lru_cache(maxsize=None)
def bind_attention(cfg: EncoderConfig) -> AttentionKernel:
    """The `AttentionKernel` for ``cfg.attention`` with the config's options bound (cached per
    config, so every block and every trace shares one function)."""
    try:
        factory = ATTENTION_KERNELS[cfg.attention]
    except KeyError:
        raise ValueError(f"EncoderConfig.attention={cfg.attention!r} has no kernel; expected one "
                         f"of {list(ATTENTION_KERNELS)}") from None
    return factory(cfg)
