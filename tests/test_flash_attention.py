"""`jaxformer.flash_attention` against the XLA path `softmax_attention` (same dropout mask), a
float64 NumPy reference, and bad input. On CPU the kernels run in Pallas' interpreter; the
`gpu` test runs the Triton kernels (skipped without an accelerator)."""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.attention import softmax_attention
from jaxformer.flash_attention import (default_blocks, flash_attention,
                                       flash_attention_supported)
from jaxformer.random_bits import hash_bits, keep_threshold

B, H, D = 2, 2, 16
BLOCKS = {"block_q": 16, "block_k": 32}  # several blocks along both axes at T, S = 64


@dataclasses.dataclass(frozen=True)
class Case:
    t: int = 64
    s: int = 64
    mask: str | None = None  # None | "random" (batch 1 fully padded) | "left" (batch 0 left-padded)
    causal: bool = False
    rate: float = 0.0


CASES = {
    "plain": Case(),
    "mask": Case(mask="random"),
    "causal": Case(causal=True),  # skips the key blocks above the diagonal
    # With a key mask, queries whose past keys are all padded average *all* S values; the
    # kernel must then visit every key block.
    "causal_mask": Case(mask="left", causal=True),
    "dropout": Case(mask="random", rate=0.1),
    # T, S not multiples of the blocks: padded queries and keys, a fully padded batch element.
    "ragged_dropout": Case(t=40, s=72, mask="random", rate=0.3),
    "ragged_causal_dropout": Case(t=40, s=40, causal=True, rate=0.1),
}


def make_inputs(case: Case, dtype=jnp.float32, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 5)
    q = jax.random.normal(keys[0], (B, case.t, H, D), jnp.float32).astype(dtype)
    k = jax.random.normal(keys[1], (B, case.s, H, D), jnp.float32).astype(dtype)
    v = jax.random.normal(keys[2], (B, case.s, H, D), jnp.float32).astype(dtype)
    key_mask = None
    if case.mask == "random":
        keep = jax.random.bernoulli(keys[3], 0.7, (B, case.s))
        key_mask = keep.at[1].set(False)  # batch 1: every key padded (uniform rows, no NaN)
    elif case.mask == "left":
        keep = jax.random.bernoulli(keys[3], 0.7, (B, case.s))
        key_mask = keep.at[0].set(jnp.arange(case.s) >= 10)  # queries 0..9 see no real key
    return q, k, v, key_mask, keys[4]


def xla_mask(case: Case, key_mask):
    mask = None if key_mask is None else key_mask[:, None, None, :]
    if case.causal:
        tril = jnp.tril(jnp.ones((case.t, case.s), jnp.bool_))[None, None]
        mask = tril if mask is None else mask & tril
    return mask


def run_flash(case: Case, q, k, v, key_mask, key, **options):
    return flash_attention(q, k, v, key_mask=key_mask, causal=case.causal,
                           dropout_rate=case.rate, key=key, deterministic=case.rate == 0.0,
                           **(BLOCKS | options))


def run_xla(case: Case, q, k, v, key_mask, key):
    return softmax_attention(q, k, v, mask=xla_mask(case, key_mask), dropout_rate=case.rate,
                             key=key, deterministic=case.rate == 0.0)


def weighted_sum(out):
    """A scalar whose gradient gives every output element its own weight."""
    w = jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)
    return jnp.sum(out.astype(jnp.float32) * w)


def quick_jit(fn, *args):
    """`fn` compiled for `args` at XLA's lowest optimisation level on CPU: the interpreted
    kernels are while loops that XLA:CPU otherwise spends seconds optimising, for no use here."""
    options = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    lowered = jax.jit(fn).trace(*args).lower()
    return lowered.compile(options if jax.default_backend() == "cpu" else None)


def value_and_grads(fn, q, k, v):
    """The output and the gradients of `weighted_sum` wrt q, k, v, from one compilation."""

    def run(q, k, v):
        out, pullback = jax.vjp(fn, q, k, v)
        return out, pullback(jax.grad(weighted_sum)(out))

    return quick_jit(run, q, k, v)(q, k, v)


def assert_close(got, want, rel):
    """Max abs error <= rel * max |want| (plus a float32 floor)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.all(np.isfinite(got))
    err, size = np.max(np.abs(got - want)), np.max(np.abs(want))
    assert err <= rel * size + 1e-7, f"max abs error {err:.3g} vs max |want| {size:.3g}"


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_match_xla(name):
    case = CASES[name]
    q, k, v, key_mask, key = make_inputs(case)
    got, got_g = value_and_grads(lambda q, k, v: run_flash(case, q, k, v, key_mask, key), q, k, v)
    want, want_g = value_and_grads(lambda q, k, v: run_xla(case, q, k, v, key_mask, key), q, k, v)
    assert got.shape == want.shape and got.dtype == jnp.float32
    assert_close(got, want, 1e-5)
    for g, w in zip(got_g, want_g):  # gradients wrt q, k, v
        assert g.shape == w.shape
        assert_close(g, w, 2e-5)


def test_dropout_mask_is_the_counter_hash():
    """With q = 0 every probability is 1/S, and v = one-hot rows read the kept weights out:
    ``out[b, t, h, s] = Z[b, h, t, s] / (S (1 - rate))``. The mask must be the one `hash_bits`
    draws for [B, H, T, S] (so the XLA path's), keep about 1 - rate, and change with the key."""
    t, s, rate = 32, 64, 0.25
    q = jnp.zeros((B, t, H, D), jnp.float32)
    v = jnp.broadcast_to(jnp.eye(s, dtype=jnp.float32)[None, :, None, :], (B, s, H, s))
    key = jax.random.key(3)

    def mask_of(key):
        out = flash_attention(q, q[:, :1].repeat(s, axis=1), v, dropout_rate=rate, key=key,
                              deterministic=False, **BLOCKS)
        return jnp.transpose(out, (0, 2, 1, 3)) * jnp.float32(s * (1 - rate))  # [B, H, T, S]

    mask_of = quick_jit(mask_of, key)
    got = np.asarray(mask_of(key))
    want = np.asarray(hash_bits(key, (B, H, t, s)) >= keep_threshold(rate), np.float64)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert abs(want.mean() - (1 - rate)) < 0.02
    assert np.mean(np.asarray(mask_of(jax.random.key(4))) != got) > 0.2


def test_no_dropout_when_deterministic():
    case = Case(mask="random")
    q, k, v, key_mask, key = make_inputs(case)
    both = lambda q, k, v: (flash_attention(q, k, v, key_mask=key_mask, **BLOCKS),  # noqa: E731
                            flash_attention(q, k, v, key_mask=key_mask, dropout_rate=0.1, key=key,
                                            deterministic=True, **BLOCKS))
    plain, evaluated = quick_jit(both, q, k, v)(q, k, v)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(evaluated))


def test_bf16_within_bf16_tolerance_of_fp32():
    case = CASES["dropout"]
    q, k, v, key_mask, key = make_inputs(case, jnp.bfloat16)
    q32, k32, v32 = (a.astype(jnp.float32) for a in (q, k, v))
    got, got_g = value_and_grads(lambda q, k, v: run_flash(case, q, k, v, key_mask, key), q, k, v)
    want, want_g = value_and_grads(lambda q, k, v: run_xla(case, q, k, v, key_mask, key),
                                   q32, k32, v32)
    assert got.dtype == jnp.bfloat16
    assert_close(got, want, 2e-2)
    for g, w in zip(got_g, want_g):
        assert g.dtype == jnp.bfloat16
        assert_close(g, w, 3e-2)


def test_forward_matches_float64_numpy():
    rng = np.random.default_rng(0)
    t, s = 48, 80
    q, k, v = (rng.normal(size=(B, n, H, D)) for n in (t, s, s))
    key_mask = rng.random((B, s)) < 0.6
    key_mask[0, :3] = True
    scale = 0.3
    scores = np.einsum("bthd,bshd->bhts", q, k) * scale
    scores = np.where(key_mask[:, None, None, :], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    want = np.einsum("bhts,bshd->bthd", p / p.sum(-1, keepdims=True), v)
    args = tuple(jnp.asarray(a, jnp.float32) for a in (q, k, v))
    flash = lambda q, k, v: flash_attention(q, k, v, key_mask=jnp.asarray(key_mask), scale=scale,  # noqa: E731
                                            **BLOCKS)
    got = quick_jit(flash, *args)(*args)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=1e-5)


def test_default_blocks_run():
    """No block options: the defaults (clamped to the short sequence) and padding to them."""
    assert default_blocks(64, 512, 512) == {"fwd": (128, 64), "bwd": (64, 64)}
    assert default_blocks(64, 20, 20) == {"fwd": (32, 32), "bwd": (32, 32)}
    case = Case(t=20, s=20)
    q, k, v, _, _ = make_inputs(case)
    assert_close(quick_jit(flash_attention, q, k, v)(q, k, v), softmax_attention(q, k, v), 1e-5)


def test_supported():
    assert flash_attention_supported((32, 512, 12, 64), jnp.bfloat16, "gpu") == (True, "")
    ok, why = flash_attention_supported((32, 512, 12, 64), jnp.bfloat16, "cpu")
    assert not ok and "GPU" in why
    ok, why = flash_attention_supported((32, 512, 12, 80), jnp.bfloat16, "gpu")
    assert not ok and "D=80" in why
    ok, why = flash_attention_supported((32, 512, 12, 64), jnp.float64, "gpu")
    assert not ok and "float64" in why


# The checks of `flash_attention` itself, without the jaxtyping/beartype wrapper the test
# suite installs (which names the parameter first, see `test_annotations_checked`).
unchecked = inspect.unwrap(flash_attention)


@pytest.mark.parametrize("change, error, message", [
    ({"q": (2, 64, 16)}, ValueError, r"q must have rank 4 \[B, T, H, D\], got shape \(2, 64, 16\)"),
    ({"k": (2, 64, 3, 16)}, ValueError, r"k has shape \(2, 64, 3, 16\); expected \[B=2, S, H=2, D=16\]"),
    ({"v": (2, 60, 2, 16)}, ValueError, r"v has shape \(2, 60, 2, 16\); expected \[B=2, S=64, H=2, K\]"),
    ({"v_dtype": jnp.bfloat16}, TypeError, r"q, k and v must share one dtype.*v.dtype=bfloat16"),
    ({"key_mask": (2, 63)}, ValueError, r"key_mask must be a bool \[B, S\] = \(2, 64\) array, got bool of shape \(2, 63\)"),
    ({"block_q": 24}, ValueError, r"block_q must be a power of two >= 16.*got 24"),
    ({"block_k": 8}, ValueError, r"block_k must be a power of two >= 16.*got 8"),
    ({"dropout_rate": 0.1}, ValueError, r"dropout_rate > 0 with deterministic=False needs key="),
    ({"dropout_rate": 1.0, "key": True}, ValueError, r"dropout_rate must be in \[0, 1\), got 1.0"),
])
def test_bad_input_names_the_argument(change, error, message):
    q = jnp.ones(change.pop("q", (2, 64, 2, 16)), jnp.float32)
    k = jnp.ones(change.pop("k", (2, 64, 2, 16)), jnp.float32)
    v = jnp.ones(change.pop("v", (2, 64, 2, 16)), change.pop("v_dtype", jnp.float32))
    if "key_mask" in change:
        change["key_mask"] = jnp.ones(change["key_mask"], jnp.bool_)
    if change.pop("key", False):
        change["key"] = jax.random.key(0)
    deterministic = "dropout_rate" not in change
    with pytest.raises(error, match=message):
        unchecked(q, k, v, deterministic=deterministic, **change)


def test_annotations_checked():
    """Under the suite's jaxtyping hook the annotation catches a head mismatch first, and its
    message names the parameter too."""
    q = jnp.ones((2, 64, 2, 16), jnp.float32)
    with pytest.raises((TypeError, ValueError), match=r"parameter 'k'|^k has shape"):
        flash_attention(q, jnp.ones((2, 64, 3, 16), jnp.float32), q)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, rel, case", [
    (jnp.bfloat16, 2e-2, Case(t=256, s=256, mask="random", rate=0.1)),
    (jnp.float32, 1e-4, Case(t=256, s=256, mask="random", rate=0.1)),
    (jnp.bfloat16, 2e-2, Case(t=200, s=200, causal=True, rate=0.1)),  # padded, causal skipping
], ids=["bf16", "fp32", "bf16-causal-padded"])
def test_triton_kernels_match_xla_on_gpu(dtype, rel, case):
    """The compiled Triton kernels (not the interpreter) at the default blocks, D=64, against
    the XLA path at full fp32 matmul precision on the same (bf16-rounded) inputs."""
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(kk, (4, n, 4, 64), jnp.float32).astype(dtype)
               for kk, n in zip(keys[:3], (case.t, case.s, case.s)))
    key_mask = None
    if case.mask:
        key_mask = jax.random.bernoulli(keys[3], 0.8, (4, case.s)).at[1].set(False)
    flash = lambda q, k, v: flash_attention(q, k, v, key_mask=key_mask, causal=case.causal,  # noqa: E731
                                            dropout_rate=case.rate, key=keys[3],
                                            deterministic=False, interpret=False)
    q32, k32, v32 = (a.astype(jnp.float32) for a in (q, k, v))
    with jax.default_matmul_precision("highest"):
        want, want_g = value_and_grads(lambda q, k, v: run_xla(case, q, k, v, key_mask, keys[3]),
                                       q32, k32, v32)
    got, got_g = value_and_grads(flash, q, k, v)
    assert got.dtype == dtype
    assert_close(got, want, rel)
    for g, w in zip(got_g, want_g):
        assert_close(g, w, 1.5 * rel)
