"""`jaxformer.linear_attention` against an independent float64 NumPy reference, plus invariants.

The reference below is written from the formula, not from the kernel:
``out_t = Σ_{s∈W(t)} (φq_t·φk_s) v_s / (Σ_{s∈W(t)} φq_t·φk_s + eps)``, W(t) = unmasked keys of
t's document (a maximal run of equal segment_ids), s ≤ t if causal; the initial state is added
for queries of the first document; RoPE rotates φq, φk in the numerator only (interleaved pairs,
angle p·10000^(-2i/w), [[cos, -sin], [sin, cos]] on (first, second)).

Tolerances (fp32 kernel; rel = max|got - want| / max|want|): 1e-5 against the reference and
between modes (fp32 summation order, T ≤ 70); 1e-6 for invariances, where the compared outputs
are mathematically independent of the perturbed tokens (masked by `where`/zero gates).
Gradients are checked against the quadratic mode in fp32, and by finite differences
(`jax.test_util.check_grads`) in float64, where the kernel accumulates in float64.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxformer.linear_attention import LinearState, linear_attention

REL = 1e-5
EXACT = 1e-6
MAX_ERR: dict[str, float] = {}
# Run time is XLA compile time (the arrays are tiny). One jitted kernel, cached per (static
# arguments, shapes), compiles each call once, 5-10x faster than eager dispatch (which compiles
# every small op for each new shape); LLVM optimisation level 0 halves the compile again. Both
# only change how fast the same fp32 HLO is compiled, not what it computes.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
STATIC = ("causal", "mode", "feature_map", "normalize", "eps", "chunk_size", "return_state")
LA = jax.jit(linear_attention, static_argnames=STATIC, compiler_options=FAST_COMPILE)


# --------------------------------------------------------------------------- float64 reference


def np_elu1(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


NP_MAPS = {"elu+1": np_elu1, "relu": lambda x: np.maximum(x, 0.0), "identity": lambda x: x}


def np_docs(segment_ids, b, t):
    """Document index per token: a new document starts wherever the id changes."""
    doc = np.zeros((b, t), np.int64)
    if segment_ids is not None:
        seg = np.asarray(segment_ids)
        for i in range(b):
            for j in range(1, t):
                doc[i, j] = doc[i, j - 1] + int(seg[i, j] != seg[i, j - 1])
    return doc


def np_rope_matrix(pos, f, base=10000.0):
    """[F, F] interleaved RoPE rotation of one token; A position axes own contiguous F/A dims."""
    pos = np.atleast_1d(np.asarray(pos, np.float64))
    width = f // len(pos)
    r = np.eye(f)
    for ax, p in enumerate(pos):
        for i in range(width // 2):
            c, s = np.cos(p * base ** (-2.0 * i / width)), np.sin(p * base ** (-2.0 * i / width))
            m, n = ax * width + 2 * i, ax * width + 2 * i + 1
            r[m, m], r[m, n], r[n, m], r[n, n] = c, -s, s, c
    return r


def ref_linear_attention(q, k, v, *, causal, phi="elu+1", normalize="divide", eps=None, mask=None,
                         segment_ids=None, initial_state=None, rope_positions=None,
                         rotate_den=False):
    """float64 loops over (batch, query); returns (out [B,T,H,K], (kv [B,H,F,K], z [B,H,F]))."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    pq, pk = (NP_MAPS[phi], NP_MAPS[phi]) if isinstance(phi, str) else phi
    fq, fk = pq(q), pk(k)
    b, t, h, f = fq.shape
    s_len, kd = k.shape[1], v.shape[-1]
    eps = {"divide": 1e-6, "rmsnorm": 1e-5, "none": 0.0}[normalize] if eps is None else eps
    keep = np.ones((b, s_len), bool) if mask is None else np.asarray(mask) != 0
    doc_q, doc_k = np_docs(segment_ids, b, t), np_docs(segment_ids, b, s_len)
    rq, rk = fq, fk
    if rope_positions is not None:
        pos = np.asarray(rope_positions, np.float64)
        pos = np.broadcast_to(pos if pos.ndim == 3 else pos[..., None], (b, t, pos.shape[-1] if pos.ndim == 3 else 1))
        rot = np.stack([np.stack([np_rope_matrix(pos[i, j], f) for j in range(t)]) for i in range(b)])
        rq, rk = np.einsum("btgf,bthf->bthg", rot, fq), np.einsum("btgf,bthf->bthg", rot, fk)
    dq, dk = (rq, rk) if rotate_den else (fq, fk)
    if initial_state is None:
        kv0, z0 = np.zeros((b, h, f, kd)), np.zeros((b, h, f))
    else:
        kv0, z0 = (np.asarray(x, np.float64) for x in initial_state)
    out = np.zeros((b, t, h, kd))
    for i in range(b):
        for j in range(t):
            w = [s for s in range(s_len)
                 if keep[i, s] and doc_k[i, s] == doc_q[i, j] and (not causal or s <= j)]
            num = np.einsum("hf,shf,shk->hk", rq[i, j], rk[i, w], v[i, w])
            den = np.einsum("hf,shf->h", dq[i, j], dk[i, w])
            if doc_q[i, j] == 0:
                num = num + np.einsum("hf,hfk->hk", rq[i, j], kv0[i])
                den = den + np.einsum("hf,hf->h", dq[i, j], z0[i])
            if normalize == "divide":
                out[i, j] = num / (den[:, None] + eps)
            elif normalize == "rmsnorm":
                out[i, j] = num / np.sqrt(np.mean(num * num, axis=-1, keepdims=True) + eps)
            else:
                out[i, j] = num
    kv, z = np.zeros((b, h, f, kd)), np.zeros((b, h, f))
    for i in range(b):  # the state of the last document
        w = [s for s in range(s_len) if keep[i, s] and doc_k[i, s] == doc_k[i, -1]]
        kv[i] = np.einsum("shf,shk->hfk", rk[i, w], v[i, w]) + (kv0[i] if doc_k[i, -1] == 0 else 0.0)
        z[i] = fk[i, w].sum(axis=0) + (z0[i] if doc_k[i, -1] == 0 else 0.0)
    return out, (kv, z)


# --------------------------------------------------------------------------- helpers


def rel_err(got, want, floor=1e-30):
    """max|got - want| / max(max|want|, floor)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.all(np.isfinite(got)), "non-finite output"
    return float(np.max(np.abs(got - want), initial=0.0) / max(np.max(np.abs(want), initial=0.0), floor))


def assert_close(name, got, want, tol=REL, floor=1e-30):
    err = rel_err(got, want, floor)
    MAX_ERR[name] = max(MAX_ERR.get(name, 0.0), err)
    assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


@pytest.fixture(scope="module", autouse=True)
def _print_max_errors():
    yield
    for name, err in sorted(MAX_ERR.items()):
        print(f"max rel err  {name:<40s} {err:.3g}")


def data(seed, b, t, h, d, kd, *, s=None, state=False):
    key = jax.random.key(seed)
    s = t if s is None else s

    def rnd(i, shape):  # one fixed-size draw, reshaped in NumPy: no compile per new shape
        flat = np.asarray(jax.random.normal(jax.random.fold_in(key, i), (4096,), jnp.float32))
        return jnp.asarray(flat[:int(np.prod(shape))].reshape(shape))
    q, k, v = rnd(0, (b, t, h, d)), rnd(1, (b, s, h, d)), rnd(2, (b, s, h, kd))
    if not state:
        return q, k, v
    z0 = jnp.abs(rnd(4, (b, h, d))) * 3.0  # a plausible Σ φ(k): positive
    return q, k, v, LinearState(rnd(3, (b, h, d, kd)), z0)


def causal_modes(causal):
    return ("chunked", "scan", "auto") if causal else ("parallel", "chunked", "scan", "auto")


SEG = np.array([[0, 0, 0, 1, 1, 7, 7, 7, 7, 0, 0, 2, 2], [5, 5, 5, 5, 5, 5, 5, 5, 3, 3, 3, 3, 3]])
MASK = np.ones((2, 13), bool)
MASK[0, [1, 6, 12]] = False
MASK[1, [0, 9]] = False


# --------------------------------------------------------------------------- 1. quadratic vs reference


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("normalize,phi", [("divide", "elu+1"), ("rmsnorm", "elu+1"),
                                           ("rmsnorm", "identity"), ("none", "relu")])
@pytest.mark.parametrize("extras", [False, True], ids=["plain", "mask-seg-state"])
def test_quadratic_matches_reference(causal, normalize, phi, extras):
    q, k, v, st0 = data(1, 2, 13, 2, 4, 3, state=True)
    kw = dict(mask=MASK, segment_ids=SEG, initial_state=st0) if extras else {}
    out, state = LA(q, k, v, causal=causal, mode="quadratic", feature_map=phi,
                                  normalize=normalize, return_state=True,
                                  **{n: jnp.asarray(x) if n != "initial_state" else x for n, x in kw.items()})
    want, (kv, z) = ref_linear_attention(q, k, v, causal=causal, phi=phi, normalize=normalize, **kw)
    assert_close("1 quadratic vs ref: out", out, want)
    assert_close("1 quadratic vs ref: state kv", state.kv, kv)
    assert_close("1 quadratic vs ref: state z", state.z, z)


@pytest.mark.parametrize("mode", ["quadratic", "parallel"])
def test_cross_attention_more_keys_than_queries(mode):
    q, k, v = data(2, 2, 5, 2, 4, 3, s=9)
    mask = np.arange(9)[None].repeat(2, 0) < np.array([[9], [6]])
    out = LA(q, k, v, causal=False, mode=mode, mask=jnp.asarray(mask))
    assert_close("1 cross-attention S != T", out, ref_linear_attention(q, k, v, causal=False, mask=mask)[0])
    # A 0/1 integer mask means the same as the bool one.
    assert_close("1 int 0/1 mask == bool mask", LA(q, k, v, causal=False, mode=mode, mask=jnp.asarray(mask, jnp.int32)), out, 0.0)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("normalize", ["divide", "rmsnorm"])
def test_quadratic_rope_matches_reference(causal, normalize):
    q, k, v, st0 = data(3, 2, 13, 2, 4, 3, state=True)
    pos = np.array([[3, 4, 5, 6, 7, 0, 1, 2, 3, 40, 41, 42, 43]])
    kw = dict(mask=MASK, segment_ids=SEG, initial_state=st0)
    out, state = LA(q, k, v, causal=causal, mode="quadratic", normalize=normalize,
                                  rope_positions=jnp.asarray(pos), return_state=True,
                                  mask=jnp.asarray(MASK), segment_ids=jnp.asarray(SEG), initial_state=st0)
    want, (kv, z) = ref_linear_attention(q, k, v, causal=causal, normalize=normalize,
                                         rope_positions=pos, **kw)
    assert_close("1 quadratic+rope vs ref: out", out, want)
    assert_close("1 quadratic+rope vs ref: state kv", state.kv, kv)
    assert_close("1 quadratic+rope vs ref: state z", state.z, z)


# --------------------------------------------------------------------------- 2. modes (hypothesis)


@st.composite
def cases(draw):
    normalize = draw(st.sampled_from(["divide", "rmsnorm", "none"]))
    return dict(
        b=draw(st.integers(1, 2)), t=draw(st.integers(1, 40)), h=draw(st.integers(1, 3)),
        d=draw(st.sampled_from([2, 4, 8])), kd=draw(st.sampled_from([1, 3, 5])),
        chunk=draw(st.integers(1, 17)), causal=draw(st.booleans()), normalize=normalize,
        phi="elu+1" if normalize == "divide" else draw(st.sampled_from(["elu+1", "relu", "identity"])),
        layout=draw(st.sampled_from(["none", "sorted", "runs"])), masked=draw(st.booleans()),
        state=draw(st.booleans()), rope=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def case_inputs(c):
    rng = np.random.default_rng(c["seed"])
    b, t = c["b"], c["t"]
    q, k, v, st0 = data(c["seed"], b, t, c["h"], c["d"], c["kd"], state=True)
    seg = {"none": None, "sorted": np.sort(rng.integers(0, 4, (b, t)), axis=1),
           "runs": rng.integers(0, 2, (b, t))}[c["layout"]]
    kw = dict(mask=rng.random((b, t)) > 0.3 if c["masked"] else None, segment_ids=seg,
              initial_state=st0 if c["state"] else None,
              rope_positions=np.arange(t)[None] + rng.integers(0, 9) if c["rope"] else None)
    jkw = {n: x if x is None or n == "initial_state" else jnp.asarray(x) for n, x in kw.items()}
    return (q, k, v), kw, jkw


@functools.partial(jax.jit, static_argnames=("modes", "static"), compiler_options=FAST_COMPILE)
def all_modes(q, k, v, arrays, *, modes, static):
    """Every mode in one compile (sharing the feature maps and RoPE)."""
    return {m: linear_attention(q, k, v, mode=m, return_state=True, **dict(static), **arrays)
            for m in modes}


# Errors here are max|diff| / max(max|want|, 1): unit-normal inputs give O(1) outputs, and an
# example whose output cancels exactly (T = 1 with relu features of disjoint support: 0 in exact
# arithmetic, 1e-10 after RoPE's rounding) has no meaningful relative error.
# rmsnorm runs with eps = 1 here: out = num / sqrt(mean(num²) + eps) amplifies fp32 rounding of
# num by up to 1/√eps (≈ 316 at the default 1e-5) on rows where num ≈ 0, which relu/identity
# features produce (a 150-example sweep at eps = 1e-5 saw 3e-5 between modes and 1.5e-5 between
# "quadratic" and the float64 reference; at eps = 1e-2 up to 7e-6, all with K = 1). The default
# eps is checked against the reference in test_quadratic_matches_reference.
@settings(max_examples=15, deadline=None)
@given(cases())
def test_modes_match_quadratic(c):
    (q, k, v), _, jkw = case_inputs(c)
    static = dict(causal=c["causal"], feature_map=c["phi"], normalize=c["normalize"], chunk_size=c["chunk"],
                  eps=1.0 if c["normalize"] == "rmsnorm" else None)
    modes = causal_modes(c["causal"])
    got = all_modes(q, k, v, jkw, modes=("quadratic",) + modes, static=tuple(sorted(static.items())))
    want, want_state = got["quadratic"]
    for mode in modes:
        out, state = got[mode]
        assert_close(f"2 {mode} vs quadratic: out", out, want, floor=1.0)
        assert_close(f"2 {mode} vs quadratic: state kv", state.kv, want_state.kv, floor=1.0)
        assert_close(f"2 {mode} vs quadratic: state z", state.z, want_state.z, floor=1.0)


# --------------------------------------------------------------------------- 3. gradients


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("segments", [False, True])
def test_gradients_match_quadratic(causal, segments):
    t = 70  # more than one chunk of 64
    q, k, v = data(4, 2, t, 2, 4, 3)
    w = jax.random.normal(jax.random.fold_in(jax.random.key(4), 9), (2, t, 2, 3), jnp.float32)
    seg = np.repeat(np.array([[0, 1, 2, 3], [0, 0, 5, 5]]), [20, 5, 30, 15], axis=1)
    kw = dict(segment_ids=jnp.asarray(seg), mask=jnp.asarray(np.arange(t) % 11 != 3)[None].repeat(2, 0)) if segments else {}

    def grads(mode):
        loss = lambda q, k, v: jnp.sum(w * linear_attention(q, k, v, causal=causal, mode=mode, chunk_size=16, **kw))  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)), compiler_options=FAST_COMPILE)(q, k, v)

    want = grads("quadratic")
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in want)
    for mode in causal_modes(causal):
        for name, g, gw in zip("qkv", grads(mode), want):
            assert_close(f"3 grad {mode} d{name}", g, gw)


# --------------------------------------------------------------------------- 4. masks, documents, causality


def _perturbed(x, where_tokens, seed):
    """x with the tokens where_tokens [B, T] replaced by large unrelated values."""
    noise = 10.0 * jax.random.normal(jax.random.key(seed), x.shape, jnp.float32)
    return jnp.where(jnp.asarray(where_tokens)[:, :, None, None], noise, x)


ALL_MODES = [(True, m) for m in ("quadratic", "chunked", "scan", "auto")] + \
            [(False, m) for m in ("quadratic", "parallel", "chunked", "scan", "auto")]


@pytest.mark.parametrize("causal,mode", ALL_MODES)
def test_masked_keys_and_other_documents_do_not_leak(causal, mode):
    b, t = 2, 23
    q, k, v = data(5, b, t, 2, 4, 3)
    run = lambda q, k, v, **kw: np.asarray(LA(q, k, v, causal=causal, mode=mode,  # noqa: E731
                                                            chunk_size=4, **kw))
    # Padding: perturbing q, k, v at masked positions leaves real positions unchanged.
    mask = np.arange(t)[None] < np.array([[23], [15]])
    mask[0, [2, 9]] = False
    kw = dict(mask=jnp.asarray(mask))
    base, pert = run(q, k, v, **kw), run(*(_perturbed(x, ~mask, 50 + i) for i, x in enumerate((q, k, v))), **kw)
    assert_close("4 masked keys: real outputs", pert[mask], base[mask], EXACT)
    assert rel_err(run(q, _perturbed(k, ~mask, 60), v), run(q, k, v)) > 1e-2  # the mask mattered
    # Documents: changing document 1 leaves documents 0 and 2 unchanged.
    seg = np.repeat([[3, 4, 5]], b, 0).repeat([7, 9, 7], axis=1)
    seg[1] = np.repeat([0, 1, 2], [5, 3, 15])
    kw = dict(segment_ids=jnp.asarray(seg))
    doc1 = seg == seg[:, :1] + 1
    base, pert = run(q, k, v, **kw), run(*(_perturbed(x, doc1, 70 + i) for i, x in enumerate((q, k, v))), **kw)
    assert_close("4 segments: other documents", pert[~doc1], base[~doc1], EXACT)
    assert rel_err(pert[doc1], base[doc1]) > 1e-2


@pytest.mark.parametrize("mode", ["quadratic", "chunked", "scan", "auto"])
@pytest.mark.parametrize("t0", [0, 6, 17])
def test_causality(mode, t0):
    t = 70 if mode == "auto" else 19  # "auto" (chunked here): more than one chunk of 64
    q, k, v = data(6, 2, t, 2, 4, 3)
    future = np.zeros((2, t), bool)
    future[:, t0:] = True
    run = lambda *x: np.asarray(LA(*x, causal=True, mode=mode, chunk_size=4))  # noqa: E731
    base = run(q, k, v)
    pert = run(*(_perturbed(x, future, 80 + i) for i, x in enumerate((q, k, v))))
    assert_close("4 causality: past outputs", pert[:, :t0], base[:, :t0], EXACT)
    assert rel_err(pert[:, t0:], base[:, t0:]) > 1e-2


# --------------------------------------------------------------------------- 8. RoPE


@pytest.mark.parametrize("mode", ["quadratic", "parallel", "chunked", "scan"])
def test_rope_relative_shift_invariance(mode):
    q, k, v = data(7, 2, 17, 2, 8, 3)
    pos = jnp.asarray(np.random.default_rng(7).integers(0, 30, (2, 17)))
    run = lambda p: LA(q, k, v, causal=False, mode=mode, chunk_size=5, rope_positions=p)  # noqa: E731
    base = run(pos)
    assert_close("8 rope shift +7 (non-causal)", run(pos + 7), base)
    assert rel_err(run(pos * 3), base) > 1e-3  # positions do matter


@pytest.mark.parametrize("mode", ["quadratic", "chunked", "scan"])
def test_rope_2d_positions(mode):
    q, k, v = data(8, 1, 12, 2, 8, 3)  # F = 8: two even sections of 4
    pos = np.stack(np.meshgrid(np.arange(3), np.arange(4), indexing="ij"), -1).reshape(1, 12, 2)
    out = LA(q, k, v, causal=True, mode=mode, chunk_size=5, rope_positions=jnp.asarray(pos))
    assert_close("8 rope 2D positions vs ref", out,
                 ref_linear_attention(q, k, v, causal=True, rope_positions=pos)[0])


@pytest.mark.parametrize("causal", [True, False])
def test_rope_denominator_is_unrotated(causal):
    q, k, v = data(9, 1, 16, 2, 4, 3)
    pos = np.arange(16)[None] * 5
    out = LA(q, k, v, causal=causal, mode="chunked", chunk_size=6, rope_positions=jnp.asarray(pos))
    assert_close("8 rope chunked vs ref (den unrotated)", out,
                 ref_linear_attention(q, k, v, causal=causal, rope_positions=pos)[0])
    rotated_den = ref_linear_attention(q, k, v, causal=causal, rope_positions=pos, rotate_den=True)[0]
    assert rel_err(out, rotated_den) > 1e-2


# --------------------------------------------------------------------------- 9. errors


def _odd_features(x):
    return jax.nn.relu(x[..., :3])


def _bad_state():
    return LinearState(jnp.zeros((1, 2, 4, 2)), jnp.zeros((1, 2, 4)))


Q = jnp.zeros((1, 5, 2, 4))
V = jnp.zeros((1, 5, 2, 3))
ERRORS = [
    ("rank", dict(q=jnp.zeros((5, 2, 4))), ValueError, r"q must have rank 4 \[B, T, H, D\], got shape \(5, 2, 4\)"),
    ("k-rank", dict(k=jnp.zeros((1, 5, 2, 4, 1))), ValueError, r"k must have rank 4 .*\(1, 5, 2, 4, 1\)"),
    ("k-D", dict(k=jnp.zeros((1, 5, 2, 3))), ValueError,
     r"k has shape \(1, 5, 2, 3\); expected \[B=1, S, H=2, D=4\]"),
    ("k-H", dict(k=jnp.zeros((1, 5, 3, 4))), ValueError, r"k has shape \(1, 5, 3, 4\); expected \[B=1, S, H=2"),
    ("v-B", dict(v=jnp.zeros((2, 5, 2, 3))), ValueError, r"v has shape \(2, 5, 2, 3\); expected \[B=1, S=5, H=2, Dv\]"),
    ("v-S", dict(v=jnp.zeros((1, 6, 2, 3))), ValueError, r"v has shape \(1, 6, 2, 3\); expected \[B=1, S=5, H=2, Dv\]"),
    ("v-H", dict(v=jnp.zeros((1, 5, 1, 3))), ValueError, r"v has shape \(1, 5, 1, 3\); expected \[B=1, S=5, H=2, Dv\]"),
    ("dtype", dict(v=jnp.zeros((1, 5, 2, 3), jnp.bfloat16)), TypeError,
     r"q, k and v must share a dtype, got float32, float32, bfloat16"),
    ("int", dict(q=jnp.zeros((1, 5, 2, 4), jnp.int32)), TypeError, r"q must be a floating array, got dtype int32"),
    ("mode", dict(mode="fast"), ValueError, r"mode must be one of .*'parallel'.*got 'fast'"),
    ("normalize", dict(normalize="softmax"), ValueError, r"normalize must be one of .*got 'softmax'"),
    ("feature-map", dict(feature_map="gelu"), ValueError, r"feature_map must be one of .*'elu\+1'.*got 'gelu'"),
    ("favor-key", dict(feature_map="favor+"), ValueError, r'feature_map="favor\+" .*needs feature_key=.*got None'),
    ("causal-parallel", dict(mode="parallel", causal=True), ValueError, r'mode="parallel" is the non-causal form'),
    ("chunk0", dict(chunk_size=0), ValueError, r"chunk_size must be a positive int, got 0"),
    ("causal-S!=T", dict(k=jnp.zeros((1, 7, 2, 4)), v=jnp.zeros((1, 7, 2, 3)), causal=True), ValueError,
     r"need S == T, got T=5 queries and S=7 keys"),
    ("chunked-S!=T", dict(k=jnp.zeros((1, 7, 2, 4)), v=jnp.zeros((1, 7, 2, 3)), mode="chunked"), ValueError,
     r"need S == T, got T=5 queries and S=7 keys \(mode='chunked'\)"),
    ("mask", dict(mask=jnp.ones((1, 4), bool)), ValueError, r"mask has shape \(1, 4\); expected \[B, S\] = \(1, 5\)"),
    ("seg-shape", dict(segment_ids=jnp.zeros((1, 6), jnp.int32)), ValueError,
     r"segment_ids has shape \(1, 6\); expected \[B, T\] = \(1, 5\)"),
    ("seg-dtype", dict(segment_ids=jnp.zeros((1, 5))), TypeError,
     r"segment_ids must be an integer array, got dtype float32"),
    ("state-Dv", dict(initial_state="bad"), ValueError,
     r"initial_state has kv \(1, 2, 4, 2\).*expected kv \[B, H, M, Dv\] = \(1, 2, 4, 3\)"),
    # With the test suite's jaxtyping hook, beartype names the parameter before the kernel does.
    ("state-type", dict(initial_state=(jnp.zeros((1, 2, 4, 3)), jnp.zeros((1, 2, 4)))), TypeError,
     r"initial_state[\s\S]*LinearState"),
    ("rope-odd-F", dict(feature_map=_odd_features, rope_positions=jnp.zeros((1, 5), jnp.int32)), ValueError,
     r"RoPE on linear-attention features needs an even feature dim M, got M=3"),
]


@pytest.mark.parametrize("kw,exc,match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_clear_errors(kw, exc, match):
    kw = dict(kw)
    if kw.get("initial_state") == "bad":
        kw["initial_state"] = _bad_state()
    args = {n: kw.pop(n, x) for n, x in (("q", Q), ("k", Q), ("v", V))}
    kw.setdefault("causal", False)
    with pytest.raises(exc, match=match):
        linear_attention(args["q"], args["k"], args["v"], **kw)


@pytest.mark.parametrize("mode", ["chunked", "scan", "quadratic"])
@pytest.mark.parametrize("causal", [True, False])
def test_float64_gradients_match_finite_differences(mode, causal):
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        q, k, v = jax.random.normal(jax.random.key(5), (3, 1, 11, 2, 4), dtype=jnp.float64)
        seg = jnp.array([[0] * 4 + [1] * 7], jnp.int32)
        mask = jnp.array([[1] * 9 + [0] * 2], jnp.int32)

        def f(q, k, v):  # check_grads perturbs with NumPy arrays
            q, k, v = (jnp.asarray(x) for x in (q, k, v))
            return linear_attention(q, k, v, causal=causal, mode=mode, chunk_size=3,
                                    segment_ids=seg, mask=mask)

        assert f(q, k, v).dtype == jnp.float64
        check_grads(f, (q, k, v), order=1, modes=["rev"], eps=1e-6, atol=1e-7, rtol=1e-7)


def test_auto_mode_rule():
    from jaxformer.linear_attention import auto_mode

    assert auto_mode(causal=False, length=100_000, platform="cpu") == "parallel"
    assert auto_mode(causal=True, length=4095, platform="cpu") == "chunked"
    assert auto_mode(causal=True, length=4096, platform="cpu") == "scan"
    assert auto_mode(causal=True, length=1 << 20, platform="gpu") == "chunked"
    assert auto_mode(causal=True, length=1 << 20, platform="tpu") == "chunked"
