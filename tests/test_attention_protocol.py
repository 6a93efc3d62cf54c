"""The attention plug-in point: one bound kernel per config, every implementation through it.

References: the XLA softmax kernel (`softmax_attention`) for the fused path (tested here through
its XLA fallback, as CPUs have no cuDNN) and for the flash kernel (Pallas' interpreter on CPU),
within the dtype's tolerance; the documented `attention_path` rules for the dispatch.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.attention import AttentionKernel, fused_attention, softmax_attention
from jaxformer.models import (ATTENTION_KERNELS, Encoder, EncoderConfig, attention_path,
                              bind_attention, register_attention)
from jaxformer.models import config as config_module

TOL = {jnp.dtype(jnp.float32): 2e-5, jnp.dtype(jnp.bfloat16): 3e-2}


def _inputs(b=2, t=16, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((b, t), np.int32)
    mask[0, t // 2:] = 0
    return (jnp.asarray(rng.integers(1, 128, (b, t)), jnp.int32), jnp.asarray(mask))


def _forward(cfg, ids, mask, *, deterministic=True, key=None):
    model = Encoder(cfg, rngs=nnx.Rngs(0))
    return model(ids, attention_mask=mask, deterministic=deterministic, key=key).last_hidden_state


def test_bind_attention_returns_one_cached_kernel_per_config():
    cfg = EncoderConfig.tiny()
    kernel = bind_attention(cfg)
    assert isinstance(kernel, AttentionKernel)
    assert bind_attention(EncoderConfig.tiny()) is kernel  # equal configs share the function
    assert bind_attention(cfg.replace(attention="linear", attention_dropout=0.0)) is not kernel


@pytest.mark.parametrize("position", ["absolute", "rope"])
@pytest.mark.parametrize("impl", ["fused", "flash"])
@pytest.mark.parametrize("policy", ["fp32", "bf16"])
def test_every_softmax_implementation_equals_the_xla_kernel(position, impl, policy):
    """Same weights, padded batch; fp32 within 2e-5 relative to the output's scale, bf16 within
    3e-2 (the two paths round the probabilities at different points)."""
    base = EncoderConfig.tiny(position=position, max_position_embeddings=64).with_precision(policy)
    ids, mask = _inputs()
    ref = _forward(base.replace(attention_impl="xla"), ids, mask)
    out = _forward(base.replace(attention_impl=impl), ids, mask)
    assert out.dtype == ref.dtype
    scale = float(jnp.max(jnp.abs(ref.astype(jnp.float32))))
    err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref.astype(jnp.float32))))
    assert err <= TOL[jnp.dtype(ref.dtype)] * scale


def test_flash_trains_with_the_same_dropout_masks_as_xla():
    """With attention dropout on, flash draws the kit's counter-hash masks: the training forward
    pass equals the XLA kernel's, not just in distribution."""
    base = EncoderConfig.tiny(attention_dropout=0.2, hidden_dropout=0.1)
    ids, mask = _inputs()
    key = jax.random.key(7)
    ref = _forward(base.replace(attention_impl="xla"), ids, mask, deterministic=False, key=key)
    out = _forward(base.replace(attention_impl="flash"), ids, mask, deterministic=False, key=key)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-5, rtol=2e-5)
    no_drop = _forward(base.replace(attention_impl="xla"), ids, mask)
    assert float(jnp.max(jnp.abs(ref - no_drop))) > 1e-2  # dropout did act


def test_fused_falls_back_to_xla_when_dropping_and_says_so(caplog):
    cfg = EncoderConfig.tiny(attention_impl="fused", attention_dropout=0.1)
    assert attention_path(cfg, deterministic=False) == "xla (fused attention cannot drop attention weights)"
    assert attention_path(cfg, deterministic=True, backend="cpu") == "fused:xla"
    ids, mask = _inputs()
    key = jax.random.key(3)
    with caplog.at_level(logging.INFO, logger="jaxformer.attention"):
        out = _forward(cfg.replace(hidden_dropout=0.05), ids, mask, deterministic=False, key=key)
    ref = _forward(cfg.replace(attention_impl="xla", hidden_dropout=0.05), ids, mask,
                   deterministic=False, key=key)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))  # the very same kernel ran
    assert any("cannot drop" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("impl, backend, dtype, deterministic, want", [
    ("auto", "cpu", "bfloat16", True, "xla"),
    ("auto", "cpu", "float32", False, "xla"),
    ("auto", "tpu", "bfloat16", True, "xla"),
    ("auto", "gpu", "bfloat16", True, "fused:cudnn"),
    ("auto", "gpu", "float16", True, "fused:cudnn"),
    ("auto", "gpu", "float32", True, "xla"),        # cuDNN has no fp32 flash kernel
    ("auto", "gpu", "bfloat16", False, "flash"),    # dropout on: the kernel that can drop
    ("fused", "gpu", "float32", True, "fused:xla"),
    ("fused", "gpu", "bfloat16", False, "xla (fused attention cannot drop attention weights)"),
    ("xla", "gpu", "bfloat16", True, "xla"),
    ("flash", "cpu", "float32", False, "flash"),
    ("auto", "gpu", "bfloat16", True, "fused:cudnn"),
])
def test_attention_path_rules(impl, backend, dtype, deterministic, want):
    # D = 64: a head dim both cuDNN and the flash kernel take.
    cfg = EncoderConfig.tiny(hidden_size=128, num_heads=2, attention_impl=impl,
                             attention_dropout=0.1)
    assert attention_path(cfg, deterministic=deterministic, dtype=dtype, backend=backend) == want


def test_flash_refuses_general_masks_by_falling_back():
    cfg = EncoderConfig.tiny(attention_impl="flash")
    got = attention_path(cfg, deterministic=True, mask_shape=(2, 1, 16, 16))
    assert got.startswith("xla (flash takes key-padding masks")


def test_linear_and_registered_kernels_go_through_the_same_point():
    cfg = EncoderConfig.tiny(attention="linear", attention_dropout=0.0)
    assert attention_path(cfg, deterministic=False) == "linear"
    calls = []

    def probe_factory(cfg):
        inner = ATTENTION_KERNELS["softmax"](cfg.replace(attention="softmax"))

        def kernel(q, k, v, *, mask, positions, freqs, key, deterministic):
            calls.append((q.shape, None if mask is None else mask.shape))
            return inner(q, k, v, mask=mask, positions=positions, freqs=freqs, key=key,
                         deterministic=deterministic)

        return kernel

    saved_kinds, saved_kernels = config_module.ATTENTION_KINDS, dict(ATTENTION_KERNELS)
    try:
        register_attention("probe", probe_factory)
        probe = EncoderConfig.tiny(attention="probe", attention_dropout=0.0)
        ids, mask = _inputs()
        out = _forward(probe, ids, mask)
        ref = _forward(probe.replace(attention="softmax"), ids, mask)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
        assert len(calls) == probe.num_layers
        assert calls[0] == ((2, 16, 4, 8), (2, 1, 1, 16))
    finally:
        config_module.ATTENTION_KINDS = saved_kinds
        ATTENTION_KERNELS.clear()
        ATTENTION_KERNELS.update(saved_kernels)
        bind_attention.cache_clear()
    with pytest.raises(ValueError, match=r"EncoderConfig.attention must be one of .* got 'probe'"):
        EncoderConfig.tiny(attention="probe")


def test_register_attention_checks_its_arguments():
    with pytest.raises(ValueError, match="name must be a non-empty str, got ''"):
        register_attention("", lambda cfg: None)
    with pytest.raises(TypeError, match="factory"):  # ours, or the test hook's type check
        register_attention("x", 3)


def test_fused_attention_kernel_equals_softmax_attention_with_masks_and_causality():
    key = jax.random.key(0)
    q, k, v = (jax.random.normal(kk, (2, 12, 3, 8), jnp.float32) for kk in jax.random.split(key, 3))
    mask = jnp.asarray(np.random.default_rng(0).random((2, 1, 1, 12)) > 0.3)
    mask = mask.at[:, :, :, 0].set(True)
    causal = jnp.tril(jnp.ones((12, 12), jnp.bool_))[None, None]
    for m, is_causal in ((None, False), (mask, False), (mask, True)):
        want_mask = m if not is_causal else (m & causal)
        ref = softmax_attention(q, k, v, mask=want_mask, precision="highest")
        out = fused_attention(q, k, v, mask=m, causal=is_causal, implementation="xla",
                              precision="highest")
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-6, rtol=2e-5)
    with pytest.raises(ValueError, match=r"implementation must be one of \['cudnn', 'xla'\] or "
                                         r"None, got 'triton'"):
        fused_attention(q, k, v, implementation="triton")


def test_linear_attention_refuses_general_masks_naming_the_shape():
    cfg = EncoderConfig.tiny(attention="linear", attention_dropout=0.0)
    kernel = bind_attention(cfg)
    q = jnp.ones((1, 4, 4, 8), jnp.float32)
    with pytest.raises(ValueError, match=r"attention='linear' takes a key-padding mask "
                                         r"\[B, 1, 1, S\], got shape \(1, 1, 4, 4\)"):
        kernel(q, q, q, mask=jnp.ones((1, 1, 4, 4), jnp.bool_), positions=None, freqs=None,
               key=None, deterministic=True)
