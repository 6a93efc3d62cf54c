"""RoPE against an explicit float64 NumPy rotation matrix, plus its invariants (hypothesis).

The reference below is written from the definitions in Su's posts 8265/8397 and the module
doc (pairs, theta_i = b^(-2i/r_a), contiguous axis sections), not from `jaxformer.rope`.
Tolerances: fp32 outputs vs float64 within ATOL = 2e-5 for |positions| <= ~100 and unit-scale
x (fp32 angle error ~ p * 2^-24 rad); bf16 outputs within BF16_ATOL (see the bf16 tests).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxformer.rope import (
    RopeScaling,
    apply_rope,
    layout_permutation,
    permute_qk_weights,
    rope_angles,
    rope_mixed_init,
    yarn_attention_factor,
)

ATOL = 2e-5
# bf16 output: rounding to 8 significant bits costs <= 2^-9 |y| <= 0.003 for |x| <= 1; fp32
# angles near p = 65540 rad carry <= ~0.004 rad error (fp32 spacing there is 2^-7), i.e.
# <= 0.006 on a unit pair. 1.5e-2 covers both with margin; naive bf16 angles miss it by 10-100x.
BF16_ATOL = 1.5e-2
FAST = settings(max_examples=15, deadline=None)
LAYOUTS = ["interleaved", "half"]


def np_pairs(widths, layout):
    """(first, second) dims of every pair, section by section."""
    pairs, off = [], 0
    for w in widths:
        for i in range(w // 2):
            pairs.append((off + 2 * i, off + 2 * i + 1) if layout == "interleaved"
                         else (off + i, off + w // 2 + i))
        off += w
    return pairs


def np_axial_angles(pos, widths, base=10000.0):
    """pos [B, T, A] float64 -> angles [B, T, P]: pair i of axis a turns by p_a b^(-2i/w_a)."""
    return np.concatenate([pos[..., a, None] * base ** (-2.0 * np.arange(w // 2) / w)
                           for a, w in enumerate(widths)], axis=-1)


def np_rotation(angles, pairs, d):
    """The D x D block-diagonal (up to the pair layout) rotation matrix."""
    m = np.eye(d)
    for (f, s), a in zip(pairs, angles):
        m[f, f], m[f, s], m[s, f], m[s, s] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    return m


def np_rope(x, angles, pairs):
    """x [B, T, H, D] float64; angles [B|1, T, P] or [B|1, T, H, P]."""
    out = np.empty_like(x)
    for b, t, h in np.ndindex(x.shape[:3]):
        ang = angles[min(b, angles.shape[0] - 1), t]
        out[b, t, h] = np_rotation(ang if ang.ndim == 1 else ang[h], pairs, x.shape[3]) @ x[b, t, h]
    return out


def np_mixed_angles(pos, f):
    """RoPE-Mixed: angle[b, t, h, i] = sum_a pos[b, t, a] F[h, a, i]."""
    return np.einsum("bta,hai->bthi", pos, f)


# (A, widths, explicit sections?): equal default splits and uneven explicit ones. A short list,
# with fixed B, T, H, keeps the number of distinct compiles (the bulk of the run time) small.
GEOMETRIES = [(1, (4,), False), (1, (6,), False), (2, (4, 4), False), (2, (2, 6), True),
              (3, (2, 2, 2), False), (3, (2, 4, 2), True)]


@st.composite
def cases(draw, axes=(1, 2, 3), mixed=False):
    a, widths, explicit = draw(st.sampled_from([g for g in GEOMETRIES if g[0] in axes]))
    if mixed:  # one section over R dims, R/2 divisible by A
        widths, explicit = (2 * a,), False
    rot = sum(widths)
    tail = draw(st.sampled_from([0, 2]))
    return dict(axes=a, widths=widths, sections=widths if explicit else None, rot=rot,
                d=rot + tail, partial=tail > 0, layout=draw(st.sampled_from(LAYOUTS)),
                b=2, t=3, h=2, seed=draw(st.integers(0, 2**16)))


@functools.lru_cache(maxsize=None)
def _jitted(static):
    kw = dict(static)
    return jax.jit(lambda x, pos, *freqs: apply_rope(x, pos, **kw, **dict(zip(["freqs"], freqs))))


def rope(c, x, pos, freqs=None, **kw):
    """`apply_rope` with the case's settings, jitted once per static configuration: eager
    dispatch compiles every small op afresh for each new shape (~0.3 s a call), jit ~0.07 s."""
    kw.setdefault("layout", c["layout"])
    kw.update(sections=c["sections"], rotary_dim=c["rot"] if c["partial"] else None)
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
    return _jitted(tuple(sorted(kw.items())))(x, pos, *([] if freqs is None else [freqs]))


def random_mixed_freqs(c):
    """A RoPE-Mixed array [H, A, P], random like a trained one (rope_mixed_init: see below)."""
    rng = np.random.default_rng(c["seed"] + 1)
    return f32(rng.normal(size=(c["h"], c["axes"], c["rot"] // 2)))


def draw_arrays(c, lo=-40, hi=40):
    rng = np.random.default_rng(c["seed"])
    x = rng.normal(size=(c["b"], c["t"], c["h"], c["d"]))
    pos = rng.integers(lo, hi, size=(c["b"], c["t"], c["axes"]))
    return rng, x, pos


def as_pos(pos, axes):
    """[B, T, A] int -> jnp positions, [B, T] when A = 1 (the 1D form)."""
    return jnp.asarray(pos[..., 0] if axes == 1 else pos, jnp.int32)


def f32(a):
    return jnp.asarray(a, jnp.float32)


def f64(a):
    return np.asarray(a, np.float64)


def scores(q, k):
    return np.einsum("bthd,bshd->bhts", f64(q), f64(k))


@FAST
@given(c=cases())
def test_matches_explicit_rotation_matrix(c):
    _, x, pos = draw_arrays(c)
    got = rope(c, f32(x), as_pos(pos, c["axes"]))
    x32 = f64(f32(x))
    want = np_rope(x32, np_axial_angles(pos.astype(np.float64), c["widths"]),
                   np_pairs(c["widths"], c["layout"]))
    np.testing.assert_allclose(f64(got), want, atol=ATOL)


@FAST
@given(c=cases(mixed=True))
def test_mixed_matches_explicit_rotation_matrix(c):
    _, x, pos = draw_arrays(c)
    freqs = random_mixed_freqs(c)
    got = rope(c, f32(x), as_pos(pos, c["axes"]), freqs=freqs)
    want = np_rope(f64(f32(x)), np_mixed_angles(pos.astype(np.float64), f64(freqs)),
                   np_pairs((c["rot"],), c["layout"]))
    np.testing.assert_allclose(f64(got), want, atol=mixed_atol(c, x, pos, freqs))


def mixed_atol(c, x, pos, freqs):
    """Mixed angles sum A products p_a F[h, a, i] with F ~ N(0, 1), so they reach hundreds of
    radians where ATOL's derivation assumed |angle| <= ~100. First-order fp32 rounding of an
    A-term dot product is <= (A + 1) 2^-24 sum_a |p_a F_a|, and a rotation error of e rad moves
    a pair by <= e |pair|; the bound takes the worst angle and the largest entry (|pair| <=
    sqrt(2) max|x|)."""
    worst = np.einsum("bta,hai->bthi", np.abs(pos.astype(np.float64)), np.abs(f64(freqs))).max()
    return ATOL + (c["axes"] + 1) * 2.0**-24 * worst * np.sqrt(2.0) * np.abs(x).max()


@FAST
@given(c=cases(), mixed=st.booleans(), offset=st.integers(-1000, 1000))
def test_scores_depend_only_on_relative_position(c, mixed, offset):
    """<R(p) q, R(p') k> is unchanged when every position moves by the same offset per axis."""
    if mixed:
        c = {**c, "sections": None, "widths": (2 * c["axes"],), "rot": 2 * c["axes"],
             "d": 2 * c["axes"] + 2 * c["partial"]}
    rng, q, pos = draw_arrays(c)
    q = rng.normal(size=(c["b"], c["t"], c["h"], c["d"]))
    k = rng.normal(size=q.shape)
    kw = {}
    if mixed:
        kw["freqs"] = random_mixed_freqs(c)
    shift = offset + 7 * np.arange(c["axes"])  # a different offset on each axis
    base = scores(rope(c, f32(q), as_pos(pos, c["axes"]), **kw),
                  rope(c, f32(k), as_pos(pos, c["axes"]), **kw))
    moved = scores(rope(c, f32(q), as_pos(pos + shift, c["axes"]), **kw),
                   rope(c, f32(k), as_pos(pos + shift, c["axes"]), **kw))
    # fp32 angles near 1000 rad are good to ~1e-4 rad; |q||k| <= ~20 here.
    np.testing.assert_allclose(moved, base, atol=5e-3)


@FAST
@given(c=cases(), scale=st.sampled_from([1.0, 1e3]))
def test_rotation_preserves_norm_per_head(c, scale):
    _, x, pos = draw_arrays(c)
    got = rope(c, f32(x * scale), as_pos(pos, c["axes"]))
    np.testing.assert_allclose(np.linalg.norm(f64(got), axis=-1),
                               np.linalg.norm(f64(f32(x * scale)), axis=-1), rtol=1e-5)


@FAST
@given(c=cases())
def test_layouts_agree_through_the_permutation(c):
    _, x, pos = draw_arrays(c)
    p = as_pos(pos, c["axes"])
    kw = dict(rotary_dim=c["rot"], sections=c["sections"], axes=c["axes"])
    for src, dst in [("interleaved", "half"), ("half", "interleaved")]:
        perm = layout_permutation(c["d"], src=src, dst=dst, **kw)
        assert sorted(perm.tolist()) == list(range(c["d"]))
        a = np.asarray(rope(c, f32(x), p, layout=src))[..., perm]
        b = np.asarray(rope(c, f32(x[..., perm]), p, layout=dst))
        np.testing.assert_allclose(a, b, atol=1e-6)
    # Round trip: the two permutations are inverse to each other.
    fwd = layout_permutation(c["d"], src="interleaved", dst="half", **kw)
    back = layout_permutation(c["d"], src="half", dst="interleaved", **kw)
    np.testing.assert_array_equal(np.arange(c["d"])[fwd][back], np.arange(c["d"]))


def test_llama_permutation_golden():
    """interleaved -> half on one section is Meta -> HF LLaMA's q/k `permute`."""
    np.testing.assert_array_equal(layout_permutation(8, src="interleaved", dst="half"),
                                  [0, 2, 4, 6, 1, 3, 5, 7])
    # 2D, halves per axis: the permutation acts inside each section.
    np.testing.assert_array_equal(layout_permutation(8, src="interleaved", dst="half", axes=2),
                                  [0, 2, 1, 3, 4, 6, 5, 7])


@FAST
@given(c=cases(), hf=st.booleans())
def test_permuted_qk_weights_keep_scores(c, hf):
    rng, _, pos = draw_arrays(c)
    e = 5
    h, d = c["h"], c["d"]
    xs = rng.normal(size=(c["b"], c["t"], e))
    wq, wk = rng.normal(size=(2, e, h * d)) / np.sqrt(e)  # ours: [in, out]
    kw = dict(num_heads=h, head_dim=d, rotary_dim=c["rot"], sections=c["sections"], axes=c["axes"])
    p = as_pos(pos, c["axes"])

    def attn_scores(wq_, wk_, layout):
        q = f32(np.einsum("bte,eo->bto", xs, wq_).reshape(c["b"], c["t"], h, d))
        k = f32(np.einsum("bte,eo->bto", xs, wk_).reshape(c["b"], c["t"], h, d))
        return scores(rope(c, q, p, layout=layout), rope(c, k, p, layout=layout))

    want = attn_scores(wq, wk, "interleaved")
    if hf:  # HF/PyTorch [out, in]: permute axis 0, then transpose back for our einsum
        nq, nk = (permute_qk_weights(w.T, src="interleaved", dst="half", axis=0, **kw).T
                  for w in (wq, wk))
    else:
        nq, nk = (np.asarray(permute_qk_weights(f32(w), src="interleaved", dst="half", axis=-1,
                                                **kw)) for w in (wq, wk))
    assert isinstance(nq, np.ndarray)
    np.testing.assert_allclose(attn_scores(nq, nk, "half"), want, atol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("w", [2, 8])
def test_2d_with_second_coordinate_zero_is_1d_on_first_half(w, layout):
    rng = np.random.default_rng(w)
    x = f32(rng.normal(size=(2, 5, 2, 2 * w)))
    px = rng.integers(-30, 30, size=(2, 5))
    pos2 = jnp.asarray(np.stack([px, np.zeros_like(px)], -1), jnp.int32)
    got = np.asarray(apply_rope(x, pos2, layout=layout))
    first = np.asarray(apply_rope(x[..., :w], jnp.asarray(px, jnp.int32), layout=layout))
    np.testing.assert_allclose(got[..., :w], first, atol=1e-6)  # 1D RoPE, d_a = D/2 freqs
    np.testing.assert_array_equal(got[..., w:], np.asarray(x[..., w:]))  # identity


def rotation_matrices(pos, d, layout, axes):
    """R(p) for each position, read off by rotating the basis: head h holds e_h, so column h."""
    t = pos.shape[0]
    x = jnp.broadcast_to(jnp.eye(d, dtype=jnp.float32)[None, None], (1, t, d, d))
    out = apply_rope(x, as_pos(pos[None], axes), layout=layout)
    return np.swapaxes(f64(out[0]), -1, -2)  # [T, D, D], R[:, h] = R e_h


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("axes", [1, 2])
def test_positions_are_recoverable_within_the_period(layout, axes):
    """Invertibility (post 8397): distinct positions give distinct R, and p is decodable."""
    w = 4  # per axis: theta = (1, 0.01), longest period 2 pi / 0.01 ~ 628
    grid = (np.arange(0, 600, 7)[:, None] if axes == 1
            else np.stack(np.meshgrid(np.arange(0, 600, 97), np.arange(0, 600, 89),
                                      indexing="ij"), -1).reshape(-1, 2))
    mats = rotation_matrices(grid, w * axes, layout, axes)
    flat = mats.reshape(len(grid), -1)
    dist = np.linalg.norm(flat[:, None] - flat[None], axis=-1) + np.eye(len(grid)) * 1e9
    assert dist.min() > 1e-2
    for a in range(axes):  # decode each coordinate from its slowest pair's angle
        f, s = np_pairs((w,) * axes, layout)[a * (w // 2) + w // 2 - 1]
        ang = np.arctan2(mats[:, s, f], mats[:, f, f])
        decoded = np.mod(ang, 2 * np.pi) / 0.01
        np.testing.assert_array_equal(np.round(decoded), grid[:, a])


@FAST
@given(c=cases())
def test_partial_rotary_rotates_head_only(c):
    c = {**c, "partial": True, "d": c["rot"] + 4}
    _, x, pos = draw_arrays(c)
    p = as_pos(pos, c["axes"])
    got = np.asarray(rope(c, f32(x), p))
    np.testing.assert_array_equal(got[..., c["rot"]:], np.asarray(f32(x[..., c["rot"]:])))
    full = rope({**c, "partial": False}, f32(x[..., :c["rot"]]), p)
    np.testing.assert_allclose(got[..., :c["rot"]], np.asarray(full), atol=1e-6)


def naive_bf16_rope(x, pos, widths, base=10000.0):
    """What the bugs did: positions, frequencies and angles in the activation dtype (bf16)."""
    p = pos.astype(jnp.bfloat16).reshape(pos.shape[:2] + (-1,))
    ang = jnp.concatenate([p[:, :, a, None] * jnp.asarray(base ** (-2.0 * np.arange(w // 2) / w),
                                                          jnp.bfloat16)[None, None, :]
                           for a, w in enumerate(widths)], axis=-1)[:, :, None, :]
    pairs = x.reshape(x.shape[:-1] + (-1, 2))
    x1, x2 = pairs[..., 0], pairs[..., 1]
    c, s = jnp.cos(ang), jnp.sin(ang)
    return jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1).reshape(x.shape)


def bf16_case(pos, widths, seed=0):
    rng = np.random.default_rng(seed)
    t = pos.shape[1]
    x = jnp.asarray(rng.uniform(-1, 1, size=(1, t, 2, sum(widths))), jnp.bfloat16)
    want = np_rope(f64(x), np_axial_angles(f64(pos if pos.ndim == 3 else pos[..., None]), widths),
                   np_pairs(widths, "interleaved"))
    return x, want


def test_bf16_position_1857_keeps_fp32_angles():
    """GPT-NeoX #1003: half-precision cos/sin were off by up to 0.78 at position 1857 (D=32)."""
    pos = np.arange(1850, 1862)[None]
    x, want = bf16_case(pos, (32,))
    got = apply_rope(x, jnp.asarray(pos, jnp.int32))
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(f64(got), want, atol=BF16_ATOL)
    naive = f64(naive_bf16_rope(x, jnp.asarray(pos, jnp.int32), (32,)))
    assert np.abs(naive - want).max() > 10 * BF16_ATOL  # the test would catch the bug


def test_bf16_grid_offset_65536_does_not_collapse():
    """diffusers #13920: bf16 spacing at 65536 is 512, so a 4x4 grid at that offset collapsed."""
    ij = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(1, 16, 2)
    pos = 65536 + ij
    x, want = bf16_case(pos, (8, 8))
    got = apply_rope(x, jnp.asarray(pos, jnp.int32))
    np.testing.assert_allclose(f64(got), want, atol=BF16_ATOL)
    naive = f64(naive_bf16_rope(x, jnp.asarray(pos, jnp.int32), (8, 8)))
    assert np.abs(naive - want).max() > 10 * BF16_ATOL
    # Float positions take the same fp32 path (never bf16).
    got_f = apply_rope(x, jnp.asarray(pos, jnp.float32))
    np.testing.assert_array_equal(f64(got_f), f64(got))


def test_angles_are_fp32_and_shaped():
    pos = jnp.asarray([[[0, 1], [2, 3]]], jnp.int32)
    ang = rope_angles(pos, rotary_dim=8)
    assert ang.dtype == jnp.float32 and ang.shape == (1, 2, 4)
    np.testing.assert_allclose(f64(ang), np_axial_angles(f64(pos), (4, 4)), rtol=1e-6)
    f = rope_mixed_init(jax.random.key(0), num_heads=3, axes=2, rotary_dim=8)
    assert rope_angles(pos, rotary_dim=8, freqs=f).shape == (1, 2, 3, 4)


def test_pixel_frequencies():
    """lucidrains pixel family: theta = linspace(1, max_freq/2, r/2) * pi on [-1, 1] coords."""
    pos = jnp.asarray(np.linspace(-1, 1, 5)[None], jnp.float32)
    ang = f64(rope_angles(pos, rotary_dim=8, freqs={"kind": "pixel", "max_freq": 16.0}))
    want = np.linspace(-1, 1, 5)[None, :, None] * np.linspace(1, 8, 4) * np.pi
    np.testing.assert_allclose(ang, want, rtol=1e-6)
    default = f64(rope_angles(pos, rotary_dim=8, freqs="pixel"))
    np.testing.assert_allclose(default, np.linspace(-1, 1, 5)[None, :, None]
                               * np.linspace(1, 5, 4) * np.pi, rtol=1e-6)


@settings(max_examples=8, deadline=None)
@given(c=cases(axes=(1, 2)), s=st.sampled_from([4.0, 0.5]), which=st.sampled_from([0, -1]))
def test_linear_scaling_divides_positions(c, s, which):
    _, x, pos = draw_arrays(c)
    scaling = [None] * c["axes"]
    scaling[which] = RopeScaling("linear", s)
    got = rope(c, f32(x), as_pos(pos, c["axes"]), scaling=scaling)
    scaled = pos.astype(np.float64)
    scaled[..., which] /= s
    sp = jnp.asarray(scaled[..., 0] if c["axes"] == 1 else scaled, jnp.float32)
    np.testing.assert_allclose(f64(got), f64(rope(c, f32(x), sp)), atol=1e-5)


@pytest.mark.parametrize("axes", [1, 2])
def test_ntk_scaling_changes_the_base(axes):
    rng = np.random.default_rng(0)
    x, d, s = f32(rng.normal(size=(1, 6, 2, 16))), 16 // axes, 8.0
    pos = jnp.asarray(rng.integers(0, 500, size=(1, 6, axes))[..., 0 if axes == 1 else slice(None)],
                      jnp.int32)
    got = apply_rope(x, pos, scaling={"kind": "ntk", "factor": s})
    want = apply_rope(x, pos, base=10000.0 * s ** (d / (d - 2)))
    np.testing.assert_allclose(f64(got), f64(want), atol=1e-5)
    # The slowest pair is interpolated by exactly s; the fastest is unchanged.
    ang = f64(rope_angles(jnp.ones((1, 1), jnp.int32), rotary_dim=d, scaling=RopeScaling("ntk", s)))
    ref = 10000.0 ** (-2.0 * np.arange(d // 2) / d)
    np.testing.assert_allclose(ang[0, 0, [0, -1]], [1.0, ref[-1] / s], rtol=1e-5)


def test_yarn_ramp_closed_form():
    """Peng et al. 2023: r = L theta / 2 pi; r > beta keeps theta, r < alpha gives theta / s."""
    d, s, length = 64, 4.0, 4096
    theta = 10000.0 ** (-2.0 * np.arange(d // 2) / d)
    r = length * theta / (2 * np.pi)
    ang = f64(rope_angles(jnp.ones((1, 1), jnp.int32), rotary_dim=d,
                          scaling=RopeScaling("yarn", s, original_length=length)))[0, 0]
    fast, slow, mid = r > 32, r < 1, (r >= 1) & (r <= 32)
    assert fast.any() and slow.any() and mid.any()
    np.testing.assert_allclose(ang[fast], theta[fast], rtol=1e-6)
    np.testing.assert_allclose(ang[slow], theta[slow] / s, rtol=1e-6)
    gamma = (r[mid] - 1) / 31
    np.testing.assert_allclose(ang[mid], (1 - gamma) * theta[mid] / s + gamma * theta[mid],
                               rtol=1e-6)


@pytest.mark.parametrize("s", [1.0, 2.0, 8.0, 32.0])
def test_yarn_attention_factor(s):
    assert yarn_attention_factor(s) == pytest.approx(0.1 * math.log(s) + 1)
    assert yarn_attention_factor(0.5) == 1.0


@pytest.mark.parametrize("layout,want", [
    # x = (1, 2, 3, 4), p = 1, theta = (1, 10000^(-1/2) = 0.01).
    # interleaved: pairs (0, 1) by 1 rad, (2, 3) by 0.01 rad:
    #   (cos1 - 2 sin1, sin1 + 2 cos1, 3 cos.01 - 4 sin.01, 3 sin.01 + 4 cos.01)
    ("interleaved", [-1.1426396637, 1.9220755965, 2.9598506679, 4.0297995017]),
    # half: pairs (0, 2) by 1 rad, (1, 3) by 0.01 rad:
    #   (cos1 - 3 sin1, 2 cos.01 - 4 sin.01, sin1 + 3 cos1, 2 sin.01 + 4 cos.01)
    ("half", [-1.9841106486, 1.9599006675, 2.4623779024, 4.0197996683]),
])
def test_golden_d4_position_1(layout, want):
    x = jnp.asarray([1.0, 2.0, 3.0, 4.0], jnp.float32).reshape(1, 1, 1, 4)
    got = apply_rope(x, jnp.ones((1, 1), jnp.int32), layout=layout, base=10000.0)
    np.testing.assert_allclose(f64(got).ravel(), want, atol=1e-6)


def test_batch_one_positions_broadcast():
    rng = np.random.default_rng(1)
    x = f32(rng.normal(size=(3, 5, 2, 8)))
    pos = rng.integers(0, 50, size=(1, 5, 2))
    got = apply_rope(x, jnp.asarray(pos, jnp.int32))
    tiled = apply_rope(x, jnp.asarray(np.repeat(pos, 3, 0), jnp.int32))
    np.testing.assert_array_equal(f64(got), f64(tiled))


def test_packed_sequences_restart_positions():
    """Two documents packed in one row: each equals RoPE on the document alone."""
    rng = np.random.default_rng(2)
    x = f32(rng.normal(size=(1, 7, 2, 8)))
    packed = apply_rope(x, jnp.asarray([[0, 1, 2, 0, 1, 2, 3]], jnp.int32), layout="half")
    first = apply_rope(x[:, :3], jnp.arange(3, dtype=jnp.int32)[None], layout="half")
    second = apply_rope(x[:, 3:], jnp.arange(4, dtype=jnp.int32)[None], layout="half")
    np.testing.assert_array_equal(f64(packed), np.concatenate([f64(first), f64(second)], 1))


def test_jit_matches_eager():
    rng = np.random.default_rng(3)
    x = f32(rng.normal(size=(2, 4, 3, 12)))
    pos = jnp.asarray(rng.integers(0, 30, size=(2, 4, 3)), jnp.int32)
    kw = dict(layout="half", sections=(4, 4, 2), rotary_dim=10,
              scaling=[RopeScaling("yarn", 2.0, original_length=16), RopeScaling("ntk", 2.0), None])
    eager = apply_rope(x, pos, **kw)
    jitted = jax.jit(lambda a, p: apply_rope(a, p, **kw))(x, pos)
    np.testing.assert_allclose(f64(jitted), f64(eager), atol=1e-6)


def test_grad_wrt_mixed_frequencies_matches_numpy_finite_difference():
    rng = np.random.default_rng(4)
    h, a, r = 2, 2, 8
    x = rng.normal(size=(1, 5, h, r + 2))
    pos = rng.uniform(-2, 2, size=(1, 5, a)).astype(np.float32)
    weight = rng.normal(size=x.shape)
    freqs = rope_mixed_init(jax.random.key(5), num_heads=h, axes=a, rotary_dim=r)
    pairs = np_pairs((r,), "half")

    def loss(f):
        return jnp.sum(f32(weight) * apply_rope(f32(x), jnp.asarray(pos), layout="half",
                                                rotary_dim=r, freqs=f))

    def np_loss(f):
        return np.sum(weight * np_rope(f64(f32(x)), np_mixed_angles(f64(pos), f), pairs))

    got = f64(jax.jit(jax.grad(loss))(freqs))
    f0, eps = f64(freqs), 1e-6
    fd = np.zeros_like(f0)
    for idx in np.ndindex(f0.shape):
        d = np.zeros_like(f0)
        d[idx] = eps
        fd[idx] = (np_loss(f0 + d) - np_loss(f0 - d)) / (2 * eps)
    np.testing.assert_allclose(got, fd, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("axes", [1, 2, 3])
def test_rope_mixed_init_directions(axes):
    h, r = 4, 12
    f = f64(rope_mixed_init(jax.random.key(7), num_heads=h, axes=axes, rotary_dim=r))
    per = r // 2 // axes
    mag = 10.0 ** (-2.0 * axes * np.arange(per) / r)
    dirs = f.reshape(h, axes, axes, per) / mag  # [H, A, G, P/A]: column g repeated over k
    np.testing.assert_allclose(dirs, np.repeat(dirs[..., :1], per, -1), atol=1e-6)
    u = dirs[..., 0]  # [H, A, A] must be a rotation per head
    np.testing.assert_allclose(np.einsum("hag,hak->hgk", u, u), np.broadcast_to(np.eye(axes),
                               u.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(u), 1.0, atol=1e-5)
