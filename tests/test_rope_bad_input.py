"""Bad RoPE input gets a clear error naming the argument, the expected value and the actual one."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.rope import (
    RopeScaling,
    apply_rope,
    layout_permutation,
    permute_qk_weights,
    rope_angles,
    rope_mixed_init,
    yarn_attention_factor,
)

X = jnp.zeros((2, 3, 2, 8), jnp.float32)
POS1 = jnp.zeros((2, 3), jnp.int32)
POS2 = jnp.zeros((2, 3, 2), jnp.int32)


def test_head_dim_not_divisible_into_sections():
    x = jnp.zeros((2, 3, 2, 6), jnp.float32)
    with pytest.raises(ValueError, match=re.escape(
            "rotary_dim=6 cannot be split into A=2 equal even sections (needs a multiple of "
            "2*A=4)")):
        apply_rope(x, POS2)


def test_odd_section_widths():
    with pytest.raises(ValueError, match=re.escape(
            "sections=(3, 5) must be positive even widths; got [3, 5]")):
        apply_rope(X, POS2, sections=(3, 5))


def test_sections_not_summing_to_rotary_dim():
    with pytest.raises(ValueError, match=re.escape(
            "sections=(2, 4) sum to 6; expected the rotary dim 8")):
        apply_rope(X, POS2, sections=[2, 4])


def test_positions_axes_do_not_match_sections():
    pos3 = jnp.zeros((2, 3, 3), jnp.int32)
    with pytest.raises(ValueError, match=re.escape(
            "positions have A=3 axes (last axis) but sections=(4, 4) has 2 entries")):
        apply_rope(X, pos3, sections=(4, 4))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions(bad):
    pos = jnp.asarray([[0.0, 1.0, bad]] * 2, jnp.float32)
    with pytest.raises(ValueError, match=r"positions must be finite; got 2 non-finite value\(s\), "
                                         r"the first (nan|inf) at index \(0, 2\)"):
        apply_rope(X, pos)


def test_non_finite_positions_unchecked_under_jit():
    """Values are unknown while tracing, so the check is skipped there (documented)."""
    pos = jnp.full((2, 3), jnp.nan, jnp.float32)
    out = jax.jit(lambda x, p: apply_rope(x, p))(X + 1.0, pos)
    assert np.isnan(np.asarray(out)).all()


def test_unknown_layout():
    with pytest.raises(ValueError, match=re.escape(
            "layout='neox' is not a known pair layout; expected one of ('interleaved', 'half')")):
        apply_rope(X, POS1, layout="neox")
    with pytest.raises(ValueError, match=r"dst='rotate_half' is not a known pair layout"):
        layout_permutation(8, src="half", dst="rotate_half")


def test_rotary_dim_larger_than_head_dim():
    with pytest.raises(ValueError, match=re.escape(
            "rotary_dim=10 exceeds the head dim D=8; expected an even rotary_dim <= 8")):
        apply_rope(X, POS1, rotary_dim=10)


def test_odd_rotary_dim():
    with pytest.raises(ValueError, match=r"rotary_dim must be even and > 0, got 5"):
        apply_rope(X, POS1, rotary_dim=5)


@pytest.mark.parametrize("shape", [(3, 2, 8), (1, 2, 3, 2, 8)])
def test_x_wrong_rank(shape):
    with pytest.raises(ValueError, match=re.escape(
            f"x must have rank 4 [B, T, H, D], got rank {len(shape)} with shape {shape}")):
        apply_rope(jnp.zeros(shape, jnp.float32), POS1)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.uint8, jnp.bool_, jnp.complex64])
def test_x_not_floating(dtype):
    """Integer x used to come back rotated and truncated to integers (the output is cast to
    x.dtype), complex x without its imaginary part: both are refused, naming x and the dtype."""
    x = jnp.ones((2, 3, 2, 8), dtype)
    with pytest.raises(TypeError, match=re.escape(
            "x must have a floating dtype (float32, bfloat16, float16, float64), got "
            f"{jnp.dtype(dtype)}; cast it first")):
        apply_rope(x, POS1)
    with pytest.raises(TypeError, match=r"x must have a floating dtype .* got int32"):
        jax.jit(apply_rope)(jnp.ones((2, 3, 2, 8), jnp.int32), POS1)  # a static check: also traced


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_x_floating_dtypes_accepted(dtype):
    assert apply_rope(jnp.ones((2, 3, 2, 8), dtype), POS1).dtype == dtype


@pytest.mark.parametrize("shape", [(3,), (2, 3, 2, 1)])
def test_positions_wrong_rank(shape):
    with pytest.raises(ValueError, match=re.escape(
            f"positions must have rank 2 [B, T] or 3 [B, T, A], got rank {len(shape)}")):
        apply_rope(X, jnp.zeros(shape, jnp.int32))


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 2)])
def test_positions_batch_or_length_mismatch(shape):
    with pytest.raises(ValueError, match=re.escape(
            f"positions have shape {shape}; expected [B|1, T] or [B|1, T, A] with B=2, T=3")):
        apply_rope(X, jnp.zeros(shape, jnp.int32))


def test_freqs_errors():
    with pytest.raises(ValueError, match=r"freqs='lang' is not a known family"):
        apply_rope(X, POS1, freqs="lang")
    with pytest.raises(ValueError, match=r"expected \{'kind': 'geometric'\}"):
        apply_rope(X, POS1, freqs={"kind": "pixel", "theta": 3.0})
    with pytest.raises(ValueError, match=re.escape(
            "freqs array has shape (2, 3); expected per-axis [A, r/2] = [2, 2]")):
        apply_rope(X, POS2, freqs=jnp.ones((2, 3), jnp.float32))
    with pytest.raises(ValueError, match=re.escape("expected [H, A, P] = [H, 2, 4]")):
        apply_rope(X, POS2, freqs=jnp.ones((2, 3, 4), jnp.float32))
    with pytest.raises(ValueError, match="freqs array has H=3 heads but x has H=2"):
        apply_rope(X, POS2, freqs=jnp.ones((3, 2, 4), jnp.float32))
    with pytest.raises(ValueError, match="sections= does not apply to a mixed frequency array"):
        apply_rope(X, POS2, freqs=jnp.ones((2, 2, 4), jnp.float32), sections=(4, 4))


def test_scaling_errors():
    with pytest.raises(ValueError, match=r"RopeScaling.kind='dynamic' is not supported"):
        RopeScaling("dynamic", 2.0)
    with pytest.raises(ValueError, match=r"RopeScaling.factor must be a finite number > 0, got 0"):
        RopeScaling("linear", 0)
    with pytest.raises(ValueError, match=r"RopeScaling\(kind='yarn'\) needs original_length > 0"):
        apply_rope(X, POS1, scaling={"kind": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match=r"scaling has 3 entries but positions have A=2 axes"):
        apply_rope(X, POS2, scaling=[None, None, None])
    with pytest.raises(ValueError, match=r"ntk scaling changes the base, so it needs "
                                         r"freqs='geometric'"):
        apply_rope(X, POS1, freqs="pixel", scaling=RopeScaling("ntk", 2.0))
    with pytest.raises(ValueError, match=r"with a frequency array use 'linear'"):
        apply_rope(X, POS1, freqs=jnp.ones((2, 4), jnp.float32), scaling=RopeScaling("ntk", 2.0))
    with pytest.raises(ValueError, match=r"yarn_attention_factor needs factor > 0, got -1"):
        yarn_attention_factor(-1)


def test_weight_and_init_errors():
    with pytest.raises(ValueError, match=re.escape(
            "w has shape (5, 12); expected axis 1 of size num_heads * head_dim = 2 * 8 = 16")):
        permute_qk_weights(np.zeros((5, 12)), num_heads=2, head_dim=8, src="interleaved",
                           dst="half", axis=-1)
    with pytest.raises(ValueError, match=r"rotary_dim/2 divisible by axes=3, got rotary_dim=8"):
        rope_mixed_init(jax.random.key(0), num_heads=2, axes=3, rotary_dim=8)
    with pytest.raises(ValueError, match=r"rotary_dim must be even and > 0, got 7"):
        rope_angles(POS1, rotary_dim=7)
