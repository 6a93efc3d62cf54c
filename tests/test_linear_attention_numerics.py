"""Linear attention numerics: bf16 at T = 8192, O(1) decoding and state chaining, feature maps.

References are closed forms (Taylor: 1 + s + s²/2; FAVOR+: exp(qᵀk/√D) in expectation) or the
kernel's own causal form, which `test_linear_attention.py` checks against a float64 reference.
Tolerances: 1e-5 relative (max abs diff / max abs reference) for fp32 vs fp32 computations in a
different order; 1e-2 relative Frobenius for bf16 vs fp32; 5% for a FAVOR+ Monte-Carlo estimate
with M = 8192 features (its standard deviation here is < 1.5%, so 5% is > 3σ).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.feature_maps import (
    FavorPlus,
    elu_plus_one,
    identity,
    orthogonal_gaussian,
    relu,
    taylor,
    taylor_dim,
)
from jaxformer.linear_attention import init_state, linear_attention, step

REL = 1e-5
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
STATIC = ("causal", "mode", "feature_map", "normalize", "eps", "chunk_size", "return_state")
LA = jax.jit(linear_attention, static_argnames=STATIC, compiler_options=FAST_COMPILE)
# A FavorPlus holds an array, so it cannot be static: it goes through jit as a pytree argument.
LA_FAVOR = jax.jit(linear_attention, static_argnames=tuple(n for n in STATIC if n != "feature_map"),
                   compiler_options=FAST_COMPILE)
STEP = {True: jax.jit(step, static_argnames=("feature_map", "normalize"), compiler_options=FAST_COMPILE),
        False: jax.jit(step, static_argnames=("normalize",), compiler_options=FAST_COMPILE)}


def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.all(np.isfinite(got)), "non-finite output"
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def assert_close(name, got, want, tol=REL):
    err = rel_err(got, want)
    print(f"max rel err  {name:<40s} {err:.3g}")
    assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


def normal(seed, i, shape, scale=1.0, dtype=jnp.float32):
    x = jax.random.normal(jax.random.fold_in(jax.random.key(seed), i), shape, jnp.float32)
    return (scale * x).astype(dtype)


# --------------------------------------------------------------------------- 5. bf16 at T = 8192


@pytest.mark.parametrize("causal,mode", [(True, "chunked"), (True, "scan"), (False, "parallel")])
def test_bf16_long_sequence(causal, mode):
    shape = (1, 8192, 2, 32)
    q32, k32, v32 = (normal(5, i, shape, 16.0) for i in range(3))
    qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q32, k32, v32))
    run = functools.partial(LA, causal=causal, mode=mode)
    out = run(qb, kb, vb)
    assert out.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(out)))
    got = np.asarray(out.astype(jnp.float32), np.float64)
    # The same values in fp32 (the kernel's bf16 error), and the unrounded fp32 inputs.
    for name, ref in (("bf16-valued fp32 inputs", run(*(x.astype(jnp.float32) for x in (qb, kb, vb)))),
                      ("original fp32 inputs", run(q32, k32, v32))):
        ref = np.asarray(ref, np.float64)
        fro = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        worst = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
        print(f"bf16 {mode} causal={causal} vs {name}: rel Frobenius {fro:.3g}, rel max {worst:.3g}")
        assert fro <= 1e-2, f"{name}: relative Frobenius error {fro:.3g} > 1e-2"


# --------------------------------------------------------------------------- 6. decoding


def decode(q, k, v, *, feature_map, normalize="divide", rope=False):
    """init_state + a Python loop of jitted `step`; returns ([B, T, H, K], final state)."""
    b, t, h, _ = q.shape
    f = int(feature_map(q[:, :1]).shape[-1]) if callable(feature_map) else q.shape[-1]
    state = init_state(b, h, f, v.shape[-1])
    one = functools.partial(STEP[isinstance(feature_map, str)], feature_map=feature_map, normalize=normalize)
    outs = []
    for i in range(t):
        pos = {"position": jnp.full((b,), i, jnp.int32)} if rope else {}
        out, new = one(state, q[:, i], k[:, i], v[:, i], **pos)
        assert [x.shape for x in new] == [x.shape for x in state]  # O(1): the state never grows
        outs.append(out)
        state = new
    return jnp.stack(outs, axis=1), state


@pytest.mark.parametrize("fmap", ["elu+1", "favor"])
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("normalize", ["divide", "rmsnorm"])
def test_step_loop_equals_causal_kernel(fmap, rope, normalize):
    b, t, h, d, kd = 2, 21, 2, 4, 3
    q, k, v = (normal(6, i, (b, t, h, n)) for i, n in enumerate((d, d, kd)))
    feature_map = FavorPlus.draw(jax.random.key(60), head_dim=d, num_features=10) if fmap == "favor" else fmap
    got, state = decode(q, k, v, feature_map=feature_map, normalize=normalize, rope=rope)
    kw = dict(rope_positions=jnp.arange(t)[None]) if rope else {}
    for mode in ("quadratic", "chunked", "scan"):
        run = LA_FAVOR if fmap == "favor" else LA
        want, want_state = run(q, k, v, causal=True, mode=mode, feature_map=feature_map,
                               normalize=normalize, chunk_size=5, return_state=True, **kw)
        assert_close(f"6 step loop vs {mode}", got, want)
        assert_close("6 step loop state kv", state.kv, want_state.kv)
        assert_close("6 step loop state z", state.z, want_state.z)


def test_decode_state_is_constant_size():
    b, h, d, kd = 2, 3, 4, 5
    state = init_state(b, h, d, kd)
    assert state.kv.shape == (b, h, d, kd) and state.z.shape == (b, h, d)
    assert state.kv.dtype == state.z.dtype == jnp.float32
    x, vt = jax.ShapeDtypeStruct((b, h, d), jnp.float32), jax.ShapeDtypeStruct((b, h, kd), jnp.float32)
    out, new = jax.eval_shape(functools.partial(step, feature_map="taylor"),
                              init_state(b, h, taylor_dim(d), kd), x, x, vt)
    assert out.shape == (b, h, kd)
    assert new.kv.shape == (b, h, taylor_dim(d), kd) and new.z.shape == (b, h, taylor_dim(d))
    q, k, v = (normal(61, i, (b, 40, h, n)) for i, n in enumerate((d, d, kd)))
    _, short = decode(q[:, :2], k[:, :2], v[:, :2], feature_map="elu+1")
    _, long = decode(q, k, v, feature_map="elu+1")
    assert [x.shape for x in short] == [x.shape for x in long] == [(b, h, d, kd), (b, h, d)]


@pytest.mark.parametrize("mode", ["quadratic", "chunked", "scan", "auto"])
@pytest.mark.parametrize("rope", [False, True])
def test_initial_state_chaining(mode, rope):
    b, t, h, d, kd, cut = 2, 150, 2, 4, 3, 77  # halves longer than one chunk
    q, k, v = (normal(7, i, (b, t, h, n)) for i, n in enumerate((d, d, kd)))
    seg = np.repeat(np.array([[0, 1, 2], [4, 4, 9]]), [30, 60, 60], axis=1)  # a document spans the cut
    mask = jnp.asarray(np.arange(t) % 13 != 5)[None].repeat(b, 0)
    pos = jnp.arange(t)[None] + 3
    run = lambda sl, **kw: LA(q[:, sl], k[:, sl], v[:, sl], causal=True, mode=mode, chunk_size=16,  # noqa: E731
                              return_state=True, segment_ids=jnp.asarray(seg[:, sl]), mask=mask[:, sl],
                              rope_positions=pos[:, sl] if rope else None, **kw)
    full, full_state = run(slice(None))
    first, mid_state = run(slice(0, cut))
    second, end_state = run(slice(cut, None), initial_state=mid_state)
    assert_close(f"6 chaining {mode}: out", jnp.concatenate([first, second], axis=1), full)
    assert_close(f"6 chaining {mode}: state kv", end_state.kv, full_state.kv)
    assert_close(f"6 chaining {mode}: state z", end_state.z, full_state.z)
    assert rel_err(run(slice(cut, None))[0], full[:, cut:]) > 1e-3  # the carried state matters


# --------------------------------------------------------------------------- 7. feature maps


@pytest.mark.parametrize("d", [1, 2, 5, 8])
def test_taylor_closed_form(d):
    q, k = normal(8, 0, (64, d)), normal(8, 1, (64, d))
    fq, fk = taylor(q), taylor(k)
    assert fq.shape == (64, 1 + d + d * (d + 1) // 2) and taylor_dim(d) == fq.shape[-1]
    got = np.sum(np.asarray(fq, np.float64) * np.asarray(fk, np.float64), axis=-1)
    s = np.sum(np.asarray(q, np.float64) * np.asarray(k, np.float64), axis=-1) / math.sqrt(d)
    want = 1.0 + s + s * s / 2.0
    err = float(np.max(np.abs(got - want) / np.abs(want)))
    print(f"max rel err  7 taylor phi(q).phi(k) D={d}: {err:.3g}")
    assert err <= REL


def test_favor_projection_rows_are_standard_normal():
    """Performer's estimator is unbiased only if every row of ω is marginally N(0, I)."""
    d, m = 8, 8192
    omega = np.asarray(orthogonal_gaussian(jax.random.key(9), m, d), np.float64)
    block = omega[:d] / np.linalg.norm(omega[:d], axis=1, keepdims=True)
    np.testing.assert_allclose(block @ block.T, np.eye(d), atol=1e-5)  # orthogonal within a block
    se = 1.0 / math.sqrt(m)
    mean = omega.mean(axis=0)
    print(f"omega coordinate means / standard error: max {np.max(np.abs(mean)) / se:.2f}")
    assert np.all(np.abs(mean) < 5 * se), f"ω coordinate means {mean} are not ~0 (se {se:.3g})"
    first = omega[::d]  # the first row of every block
    assert np.all(np.abs(first.mean(axis=0)) < 5 * math.sqrt(d) * se)
    np.testing.assert_allclose(np.mean(np.sum(omega ** 2, axis=1)), d, rtol=0.05)


def test_favor_monte_carlo_estimates_softmax_kernel():
    d, m = 8, 8192
    fp = FavorPlus.draw(jax.random.key(10), head_dim=d, num_features=m)
    dirs = np.concatenate([np.eye(d)[:2], -np.eye(d)[:1], np.asarray(normal(10, 0, (5, d)))])
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    other = np.asarray(normal(10, 1, (8, d)))
    other = 0.5 * dirs + 0.5 * other / np.linalg.norm(other, axis=1, keepdims=True)
    scale = 0.5 * d ** 0.25  # ‖q / D^¼‖ = 0.5: small norms keep the estimator's variance low
    q, k = jnp.asarray(scale * dirs, jnp.float32), jnp.asarray(scale * other, jnp.float32)
    phi_q, phi_k = fp(q), fp(k)
    assert bool(jnp.all(phi_q > 0)) and bool(jnp.all(phi_k > 0)) and bool(jnp.all(fp(q * 4.0, is_query=True) > 0))
    est = np.sum(np.asarray(phi_q, np.float64) * np.asarray(phi_k, np.float64), axis=-1)
    want = np.exp(np.sum(np.asarray(q, np.float64) * np.asarray(k, np.float64), axis=-1) / math.sqrt(d))
    err = float(np.max(np.abs(est / want - 1.0)))
    print(f"max rel err  7 favor+ MC estimate (M={m}): {err:.3g}")
    assert err <= 0.05, f"FAVOR+ estimate off by {err:.3g} (> 5%): {est} vs {want}"


def test_favor_redraw_and_feature_key():
    d = 4
    a, a2 = FavorPlus.draw(jax.random.key(11), head_dim=d), FavorPlus.draw(jax.random.key(11), head_dim=d)
    b = FavorPlus.draw(jax.random.fold_in(jax.random.key(11), 1), head_dim=d)
    assert a.omega.shape == (4 * d, d) and a.num_features == 4 * d
    np.testing.assert_array_equal(np.asarray(a.omega), np.asarray(a2.omega))
    assert float(jnp.max(jnp.abs(a.omega - b.omega))) > 0.1
    q, k, v = (normal(11, i, (1, 9, 2, d)) for i in range(3))
    by_key = linear_attention(q, k, v, causal=False, feature_map="favor+", feature_key=jax.random.key(11))
    assert_close("7 favor+ by key == drawn FavorPlus", by_key, linear_attention(q, k, v, causal=False, feature_map=a))
    other = linear_attention(q, k, v, causal=False, feature_map="favor+", feature_key=jax.random.key(12))
    assert rel_err(other, by_key) > 1e-3
    with pytest.raises(ValueError, match=r'feature_map="favor\+" draws random features and needs feature_key='):
        linear_attention(q, k, v, causal=False, feature_map="favor+")
    with pytest.raises(ValueError, match=r"FavorPlus was drawn for head_dim=4, got inputs with D=3"):
        a(jnp.zeros((2, 3)))


def test_callable_and_pair_feature_maps_are_used():
    q, k, v = (normal(12, i, (2, 11, 2, 4)) for i in range(3))

    def split_relu(x):  # F = 2D
        return jnp.concatenate([jax.nn.relu(x), jax.nn.relu(-x)], axis=-1)

    def squares(x):
        return jnp.concatenate([x * x, jnp.abs(x)], axis=-1)

    for causal in (True, False):
        kw = dict(causal=causal, mode="chunked", chunk_size=4, normalize="rmsnorm")
        got = linear_attention(q, k, v, feature_map=split_relu, **kw)
        assert_close("7 callable == precomputed features", got,
                     linear_attention(split_relu(q), split_relu(k), v, feature_map="identity", **kw))
        pair = linear_attention(q, k, v, feature_map=(split_relu, squares), **kw)
        assert_close("7 (query_fn, key_fn) pair", pair,
                     linear_attention(split_relu(q), squares(k), v, feature_map="identity", **kw))
        swapped = linear_attention(q, k, v, feature_map=(squares, split_relu), **kw)
        assert rel_err(swapped, pair) > 1e-2 and rel_err(got, pair) > 1e-2


@pytest.mark.parametrize("fn", [elu_plus_one, relu, identity, taylor,
                                FavorPlus.draw(jax.random.key(13), head_dim=4)],
                         ids=["elu+1", "relu", "identity", "taylor", "favor"])
def test_feature_maps_keep_bf16(fn):
    x = normal(13, 0, (3, 5, 2, 4), 2.0)
    got = fn(x.astype(jnp.bfloat16))
    assert got.dtype == jnp.bfloat16
    want = np.asarray(fn(x.astype(jnp.bfloat16).astype(jnp.float32)), np.float64)  # fp32 inside
    np.testing.assert_allclose(np.asarray(got.astype(jnp.float32)), want, rtol=2 ** -8, atol=1e-6)
    assert linear_attention(*(x.astype(jnp.bfloat16),) * 3, causal=True, feature_map=fn).dtype == jnp.bfloat16


@pytest.mark.parametrize("causal,mode", [(True, "chunked"), (True, "scan"), (True, "quadratic"),
                                         (False, "parallel"), (False, "chunked")])
def test_float16_scores_beyond_its_range_stay_finite(causal, mode):
    # φ(q)ᵀφ(k) = 64 · 41² = 107584 > 65504, float16's largest finite value: a kernel that
    # multiplied the intra-chunk scores in fp16 would return inf/NaN (fast-transformers #32).
    t, h, d = 96, 2, 64
    q = jnp.full((1, t, h, d), 40.0, jnp.float32)
    v = jax.random.normal(jax.random.key(11), (1, t, h, 8), jnp.float32)
    want = linear_attention(q, q, v, causal=causal, mode=mode)
    got = linear_attention(*(x.astype(jnp.float16) for x in (q, q, v)), causal=causal, mode=mode)
    assert got.dtype == jnp.float16
    assert bool(jnp.all(jnp.isfinite(got)))
    err = float(jnp.linalg.norm(got.astype(jnp.float32) - want) / jnp.linalg.norm(want))
    assert err < 1e-2, err
