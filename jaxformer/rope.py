"""Rotary position embedding (RoPE) for 1D, 2D and N-D positions, as one pure kernel.

Shape letters: B batch, T tokens, H heads, D head dim, A position axes (1 text, 2 image rows and
columns, 3 video t/h/w), R rotary dims (``rotary_dim``, default D), P = R/2 rotated pairs.

RoPE turns each feature pair of a query or key by an angle proportional to the token's position,
so ``<R(p) q, R(p') k> = <q, R(p' - p) k>`` (Su et al. 2021, RoFormer §3; kexue.fm post 8265).
Su's post 8397 ("2D RoPE") derives ``R(x, y) = block-diag(R_x, R_y)`` as the simplest relative
and invertible 2D solution; this module generalises it to A axes.

Conventions (they differ between sources, so they are named here and tested):

* **Head-dim split between axes.** Dims ``[0, R)`` are cut into A *contiguous* sections in the
  order of the positions' last axis: axis a owns ``[o_a, o_a + r_a)`` with
  ``o_a = r_0 + ... + r_{a-1}``. By default ``r_a = R / A`` (halves for 2D: Su's post 8397,
  lucidrains' axial split), not big_vision's sincos quarters ``[sin x, cos x, sin y, cos y]``;
  ``sections=(r_0, ..., r_{A-1})`` (each even, summing to R) overrides it, e.g. M-RoPE widths.
  Dims ``[R, D)`` are never rotated (partial rotary, GPT-NeoX ``rotary_pct``).
* **Pair layout inside a section** of width r at offset o, for i = 0 .. r/2 - 1:
  ``"interleaved"`` pairs ``(o + 2i, o + 2i + 1)`` (RoFormer, bert4keras, HF RoFormer,
  lucidrains, RoPE-ViT's complex form); ``"half"`` pairs ``(o + i, o + i + r/2)`` (GPT-NeoX,
  HF LLaMA, gemma). The two differ by a fixed permutation of the head dim
  (:func:`layout_permutation`, :func:`permute_qk_weights`).
* **Frequencies are per section**: pair i of axis a turns by ``p_a * theta_{a,i}`` with
  ``theta_{a,i} = base^(-2i / r_a)`` (Su's post 8397 leaves the 2D frequencies open; this is
  the natural "1D RoPE of width r_a per axis"). Note that Qwen2-VL's M-RoPE is *not* this
  convention: its sections slice the frequency index of one whole-width half layout.
* **Pair order** (the last axis of :func:`rope_angles`) is section-major: pair ``o_a/2 + i``.
* The rotation matrix of a pair is ``[[cos, -sin], [sin, cos]]`` acting on (first, second).

Numerics: angles are ``float32(positions) * float32(theta)``, computed elementwise (never as a
matmul, whose default precision on GPU/TPU may use bf16/TF32 passes: the diffusers #13920
collapse) and never in the input dtype (GPT-NeoX #1003: fp16 angles off by 0.78 at position
1857). Frequencies are built in float64 NumPy and rounded once. The rotation itself runs in
fp32 and the result is cast back to ``x.dtype``. fp32 positions are exact integers only below
2^24, and an fp32 angle near p radians carries an absolute error up to ~p * 2^-24.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, Real, Shaped

from jaxformer.rope_layouts import (  # noqa: F401  (re-exported: part of the rope API)
    LAYOUTS,
    _check_layout,
    _resolve_rotary_dim,
    layout_permutation,
    permute_qk_weights,
    resolve_sections,
)

FREQ_FAMILIES = ("geometric", "pixel")
SCALING_KINDS = ("linear", "ntk", "yarn")
DEFAULT_MAX_FREQ = 10.0  # lucidrains' pixel default

Positions = Real[Array, "..."] | Real[np.ndarray, "..."]
FreqsArg = str | Mapping[str, Any] | Float[Array, "..."] | Float[np.ndarray, "..."]


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """How one position axis is stretched to reach beyond its trained length.

    Attributes:
      kind: ``"linear"`` (position interpolation), ``"ntk"`` (NTK-aware base change) or
        ``"yarn"`` (NTK-by-parts ramp; pair it with :func:`yarn_attention_factor`).
      factor: the scale s, the new length over the trained length.
      original_length: YaRN only: the trained length L along this axis, in position units.
      alpha, beta: YaRN only: the ramp's ends in rotations per trained length (paper: 1, 32).
    """

    kind: str
    factor: float | int
    original_length: float | int | None = None
    alpha: float | int = 1.0
    beta: float | int = 32.0

    def __post_init__(self) -> None:
        if self.kind not in SCALING_KINDS:
            raise ValueError(f"RopeScaling.kind={self.kind!r} is not supported; "
                             f"expected one of {SCALING_KINDS}")
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"RopeScaling.factor must be a finite number > 0, got {self.factor!r}")
        if self.kind == "yarn" and (self.original_length is None or not self.original_length > 0):
            raise ValueError("RopeScaling(kind='yarn') needs original_length > 0 (the trained "
                             f"length along this axis), got {self.original_length!r}")
        if self.kind == "yarn" and not 0 <= self.alpha < self.beta:
            raise ValueError(f"RopeScaling(kind='yarn') needs 0 <= alpha < beta, got "
                             f"alpha={self.alpha!r}, beta={self.beta!r}")


def yarn_attention_factor(factor: float | int) -> float:
    """YaRN's ``sqrt(1/t) = 0.1 ln(s) + 1`` (Peng et al. 2023, §3.4); 1 for ``s <= 1``.

    It scales logits, not angles: multiply both q and k by it (as HF folds it into cos and
    sin), which multiplies the attention logits by its square, ``1/t``.
    """
    if not factor > 0:
        raise ValueError(f"yarn_attention_factor needs factor > 0, got {factor!r}")
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def _parse_freqs(freqs: Any) -> tuple[str, float, Any]:
    """``(family, max_freq, array)`` with family in geometric/pixel/array."""
    if isinstance(freqs, str):
        if freqs not in FREQ_FAMILIES:
            raise ValueError(f"freqs={freqs!r} is not a known family; expected one of "
                             f"{FREQ_FAMILIES}, a dict like {{'kind': 'pixel', 'max_freq': 10.0}}, "
                             "or an array [A, r/2], [H, P] or [H, A, P]")
        return freqs, DEFAULT_MAX_FREQ, None
    if isinstance(freqs, Mapping):
        opts = dict(freqs)
        kind = opts.pop("kind", None)
        max_freq = opts.pop("max_freq", DEFAULT_MAX_FREQ) if kind == "pixel" else DEFAULT_MAX_FREQ
        if kind not in FREQ_FAMILIES or opts:
            raise ValueError(f"freqs={freqs!r}: expected {{'kind': 'geometric'}} or "
                             "{'kind': 'pixel', 'max_freq': float}")
        if not max_freq > 0:
            raise ValueError(f"freqs max_freq must be > 0, got {max_freq!r}")
        return kind, float(max_freq), None
    return "array", DEFAULT_MAX_FREQ, jnp.asarray(freqs, jnp.float32)


def _one_scaling(s: Any) -> RopeScaling | None:
    if s is None or isinstance(s, RopeScaling):
        return s
    if isinstance(s, Mapping):
        return RopeScaling(**s)
    raise TypeError(f"scaling entries must be RopeScaling, dict or None, got {type(s).__name__}")


def _parse_scaling(scaling: Any, axes: int) -> tuple[RopeScaling | None, ...]:
    if scaling is None or isinstance(scaling, (RopeScaling, Mapping)):
        return (_one_scaling(scaling),) * axes
    scaling = tuple(scaling)
    if len(scaling) != axes:
        raise ValueError(f"scaling has {len(scaling)} entries but positions have A={axes} axes; "
                         "pass one RopeScaling (or None) per axis, or a single one for all")
    return tuple(_one_scaling(s) for s in scaling)


def _check_finite(positions: Any) -> None:
    """Refuse NaN/inf positions when their values are known (eager); skipped under tracing."""
    if isinstance(positions, jax.core.Tracer) or not jnp.issubdtype(positions.dtype, jnp.floating):
        return
    values = np.asarray(positions).astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"positions must be finite; got {int(bad.sum())} non-finite value(s), "
                         f"the first {values[where]} at index {where}")


def _check_x(x: Any) -> None:
    """`x` must be ``[B, T, H, D]`` floats: the rotation is cast back to ``x.dtype``, so integer
    (or bool) queries would come back with their cos/sin products truncated, and complex ones
    without their imaginary part."""
    if x.ndim != 4:
        raise ValueError(f"x must have rank 4 [B, T, H, D], got rank {x.ndim} with shape "
                         f"{tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must have a floating dtype (float32, bfloat16, float16, float64), got "
                        f"{x.dtype}; cast it first, e.g. x.astype(jnp.float32)")


def _positions_3d(positions: Any) -> Array:
    if positions.ndim not in (2, 3):
        raise ValueError(f"positions must have rank 2 [B, T] or 3 [B, T, A], got rank "
                         f"{positions.ndim} with shape {tuple(positions.shape)}")
    _check_finite(positions)
    # Cast to fp32 first, whatever came in: bf16 positions would already be lossy above 256.
    pos = jnp.asarray(positions).astype(jnp.float32)
    return pos if pos.ndim == 3 else pos[:, :, None]


def _section_thetas(width: int, family: str, base: float, max_freq: float,
                    scale: RopeScaling | None) -> np.ndarray:
    """float64 ``theta_i`` for one axis's section of ``width`` dims, scaling applied."""
    half = width // 2
    i = np.arange(half, dtype=np.float64)
    if family == "geometric":
        b = float(base)
        if scale is not None and scale.kind == "ntk":
            # NTK-aware (bloc97 2023; Peng et al. 2023 §3.1): b' = b * s^(d / (d - 2)), so the
            # lowest frequency is interpolated by exactly s while theta_0 = 1 stays put.
            if width <= 2:
                raise ValueError(f"ntk scaling needs a section width > 2, got {width}")
            b = b * float(scale.factor) ** (width / (width - 2))
        # RoFormer §3.2 / Su post 8265: theta_i = b^(-2i/d), with d the section width.
        theta = b ** (-2.0 * i / width)
    else:
        # Vision "pixel" frequencies (lucidrains `freqs_for="pixel"`): linspace(1, max_freq/2)*pi
        # for positions the caller has normalised to [-1, 1].
        if scale is not None and scale.kind == "ntk":
            raise ValueError("ntk scaling changes the base, so it needs freqs='geometric'")
        theta = np.linspace(1.0, max_freq / 2.0, half, dtype=np.float64) * np.pi
    if scale is not None and scale.kind == "linear":
        # Position interpolation (Chen et al. 2023, §2.2): f'(x, p) = f(x, p / s) = theta / s.
        theta = theta / float(scale.factor)
    elif scale is not None and scale.kind == "yarn":
        # YaRN / NTK-by-parts (Peng et al. 2023, §3.2): r_i = L / lambda_i with wavelength
        # lambda_i = 2 pi / theta_i; ramp gamma = clip((r - alpha) / (beta - alpha), 0, 1);
        # theta'_i = (1 - gamma) theta_i / s + gamma theta_i. Fast pairs (r > beta) keep their
        # frequency (extrapolate), slow ones (r < alpha) are interpolated like "linear".
        r = float(scale.original_length) * theta / (2.0 * np.pi)
        gamma = np.clip((r - scale.alpha) / (scale.beta - scale.alpha), 0.0, 1.0)
        theta = (1.0 - gamma) * theta / float(scale.factor) + gamma * theta
    return theta


def _plan(pos_axes: int, rotary_dim: int, sections: Sequence[int] | None, freqs: Any,
          scaling: Any) -> tuple[tuple[int, ...], str, Any, tuple[RopeScaling | None, ...], float]:
    family, max_freq, farr = _parse_freqs(freqs)
    scales = _parse_scaling(scaling, pos_axes)
    if family == "array":
        if any(s is not None and s.kind != "linear" for s in scales):
            raise ValueError("ntk and yarn scaling rebuild the frequencies, so they need "
                             "freqs='geometric' or 'pixel'; with a frequency array use 'linear'")
        p = rotary_dim // 2
        if farr.ndim == 3 or (farr.ndim == 2 and pos_axes == 1 and farr.shape[1] == p
                              and farr.shape[0] != 1):
            # RoPE-Mixed [H, A, P] (or per-head 1D [H, P]): one section over the rotary dims.
            if sections is not None:
                raise ValueError("sections= does not apply to a mixed frequency array [H, A, P]: "
                                 "every pair mixes all axes; pass sections=None")
            want = (farr.shape[0], pos_axes, p)
            got = farr.shape if farr.ndim == 3 else (farr.shape[0], 1, farr.shape[1])
            if got != want:
                raise ValueError(f"freqs array has shape {tuple(farr.shape)}; expected [H, A, P] "
                                 f"= [H, {pos_axes}, {p}] (A from positions, P = rotary_dim/2)")
            return (rotary_dim,), "mixed", farr.reshape(got), scales, max_freq
        secs = resolve_sections(rotary_dim, pos_axes, sections)
        if farr.ndim != 2 or len(set(secs)) != 1 or farr.shape != (pos_axes, secs[0] // 2):
            raise ValueError(
                f"freqs array has shape {tuple(farr.shape)}; expected per-axis [A, r/2] = "
                f"[{pos_axes}, {secs[0] // 2}] with equal sections (got sections={secs}), "
                f"[H, A, P] = [H, {pos_axes}, {rotary_dim // 2}] or, for 1D, [H, P]")
        return secs, "axial", farr, scales, max_freq
    secs = resolve_sections(rotary_dim, pos_axes, sections)
    return secs, family, None, scales, max_freq


def _angles_from_plan(pos: Float[Array, "b T A"], secs: tuple[int, ...], family: str, farr: Any,
                      scales: tuple[RopeScaling | None, ...], base: float,
                      max_freq: float) -> Float[Array, "b T P"] | Float[Array, "b T H P"]:
    if family in ("axial", "mixed"):
        div = np.array([1.0 if s is None else float(s.factor) for s in scales], np.float32)
        if np.any(div != 1.0):
            pos = pos / jnp.asarray(div)[None, None, :]  # linear: p -> p / s per axis
        if family == "axial":  # [A, Q]: axis a's pairs turn by p_a * F[a, i]
            b, t, a = pos.shape
            return (pos[:, :, :, None] * farr[None, None, :, :]).reshape(b, t, a * farr.shape[1])
        # RoPE-Mixed (Heo et al. 2024): angle_{h,i} = sum_a p_a F[h, a, i]; an elementwise
        # product and sum rather than an einsum, to keep full fp32 on every backend.
        return jnp.sum(pos[:, :, None, :, None] * farr[None, None, :, :, :], axis=3)
    parts = []
    for a, (width, scale) in enumerate(zip(secs, scales)):
        theta = jnp.asarray(_section_thetas(width, family, base, max_freq, scale), jnp.float32)
        parts.append(pos[:, :, a, None] * theta[None, None, :])
    return jnp.concatenate(parts, axis=-1)


def rope_angles(
    positions: Positions,
    *,
    rotary_dim: int,
    sections: Sequence[int] | None = None,
    base: float | int = 10000.0,
    freqs: FreqsArg = "geometric",
    scaling: Any = None,
) -> Float[Array, "b T P"] | Float[Array, "b T H P"]:
    """The fp32 rotation angle of every pair, in pair order (section-major; see module doc).

    Args:
      positions: ``[B, T]`` or ``[B, T, A]``, integer or float (B may be 1).
      rotary_dim: R, the number of rotated dims (P = R/2 pairs).
      sections, base, freqs, scaling: as in :func:`apply_rope`.

    Returns:
      ``[B, T, P]`` fp32, or ``[B, T, H, P]`` for a per-head frequency array.
    """
    pos = _positions_3d(positions)
    if rotary_dim <= 0 or rotary_dim % 2:
        raise ValueError(f"rotary_dim must be even and > 0, got {rotary_dim}")
    secs, family, farr, scales, max_freq = _plan(pos.shape[-1], rotary_dim, sections, freqs,
                                                 scaling)
    return _angles_from_plan(pos, secs, family, farr, scales, float(base), max_freq)


def _cos_sin(angles: Array) -> tuple[Array, Array]:
    """cos and sin of the angle table, each computed once per (token, pair).

    XLA:CPU fuses elementwise producers into every consumer, so plain ``jnp.cos(angles)``
    is recomputed for each (batch, head) element of x: 7x slower on [8, 1024, 12, 64] (2026-11,
    jax 0.10.2; `benchmarks/bench_rope.py`). `optimization_barrier` is dropped on CPU, but a
    `lax.cond` with identical branches is a fusion boundary, so the table is built once. On
    GPU/TPU the trig hides under memory traffic and a conditional would cost a host sync.
    """
    if jax.default_backend() != "cpu":
        return jnp.cos(angles), jnp.sin(angles)
    both = lambda a: (jnp.cos(a), jnp.sin(a))  # noqa: E731
    return jax.lax.cond(jnp.isnan(angles.reshape(-1)[0]), both, both, angles)


def _rotate(x: Float[Array, "B T H D"], angles: Float[Array, "#B T #H P"], *, layout: str,
            sections: tuple[int, ...]) -> Float[Array, "B T H D"]:
    """Turn each pair of ``x[..., :R]`` by its angle; fp32 inside, ``x.dtype`` out."""
    rot_dim = sum(sections)
    xf = x.astype(jnp.float32)
    rot, tail = xf[..., :rot_dim], xf[..., rot_dim:]
    cos, sin = _cos_sin(angles)
    if layout == "interleaved":
        # Section-major pair order equals the order of consecutive (2j, 2j+1) pairs.
        pairs = rot.reshape(rot.shape[:-1] + (rot_dim // 2, 2))
        x1, x2 = pairs[..., 0], pairs[..., 1]
    elif len(set(sections)) == 1:
        # Equal sections (the default split): one reshape to [..., A, 2, r/2] instead of
        # 2A slices and concatenates, which XLA:CPU ran 2.7x slower than 1D (bench_rope.py).
        halves = rot.reshape(rot.shape[:-1] + (len(sections), 2, sections[0] // 2))
        x1 = halves[..., 0, :].reshape(rot.shape[:-1] + (rot_dim // 2,))
        x2 = halves[..., 1, :].reshape(rot.shape[:-1] + (rot_dim // 2,))
    else:
        offs = np.cumsum((0,) + sections)
        x1 = jnp.concatenate([rot[..., o:o + w // 2] for o, w in zip(offs, sections)], axis=-1)
        x2 = jnp.concatenate([rot[..., o + w // 2:o + w] for o, w in zip(offs, sections)], axis=-1)
    # [[cos, -sin], [sin, cos]] @ (x1, x2): the efficient form of Su's post 8265.
    y1 = x1 * cos - x2 * sin
    y2 = x1 * sin + x2 * cos
    if layout == "interleaved":
        out = jnp.stack([y1, y2], axis=-1).reshape(rot.shape)
    elif len(set(sections)) == 1:
        grid = rot.shape[:-1] + (len(sections), 1, sections[0] // 2)
        out = jnp.concatenate([y1.reshape(grid), y2.reshape(grid)], axis=-2).reshape(rot.shape)
    else:  # section by section: its y1 half, then its y2 half
        out = jnp.concatenate([y[..., o // 2:o // 2 + w // 2] for o, w in zip(offs, sections)
                               for y in (y1, y2)], axis=-1)
    return jnp.concatenate([out, tail], axis=-1).astype(x.dtype)


def apply_rope(
    x: Shaped[Array, "..."],
    positions: Positions,
    *,
    layout: str = "interleaved",
    sections: Sequence[int] | None = None,
    rotary_dim: int | None = None,
    base: float | int = 10000.0,
    freqs: FreqsArg = "geometric",
    scaling: Any = None,
) -> Float[Array, "..."]:
    """Rotate queries or keys ``x`` by their tokens' positions (1D, 2D or N-D RoPE).

    Args:
      x: ``[B, T, H, D]`` queries or keys, any float dtype; the output has the same dtype
        (integer, bool or complex x is refused: the cast back would truncate it).
      positions: ``[B, T]`` (1D) or ``[B, T, A]`` (A axes, e.g. (row, col) or (t, h, w)),
        integer or float, per token, so packed sequences (positions restarting mid-row) and
        variable-resolution batches need nothing special. B may be 1 (broadcast over x's B).
      layout: ``"interleaved"`` (pairs (2i, 2i+1)) or ``"half"`` (pairs (i, i + r/2) inside each
        section); see the module doc.
      sections: per-axis rotary widths ``(r_0, ..., r_{A-1})``, each even, summing to R;
        default R/A each. Contiguous, in the order of the positions' last axis.
      rotary_dim: R, even, <= D; dims ``[R, D)`` pass through unrotated. Default D.
      base: b of ``theta_i = b^(-2i/r_a)`` for ``freqs="geometric"`` (RoFormer 10000; 100 is
        common for ViT axial RoPE).
      freqs: ``"geometric"``; ``"pixel"`` or ``{"kind": "pixel", "max_freq": m}`` for
        ``theta_i = linspace(1, m/2, r_a/2)[i] * pi``, with positions the caller has normalised
        to [-1, 1] (default m = 10); or a float array (differentiable, e.g. a learned
        parameter): ``[A, r_a/2]`` per-axis frequencies (equal sections), or ``[H, A, P]``
        RoPE-Mixed frequencies where pair i of head h turns by ``sum_a p_a F[h, a, i]`` and
        the layout spans all R dims as one section (``[H, P]`` for 1D per-head frequencies).
      scaling: None, one :class:`RopeScaling` (or its dict) for every axis, or a sequence with
        one entry (or None) per axis. ntk/yarn need a built-in family; arrays take "linear".

    Returns:
      ``[B, T, H, D]``, ``x.dtype``.
    """
    _check_layout(layout, "layout")
    _check_x(x)  # annotated Shaped, not Float, so that this error, not jaxtyping's, names x
    batch, tokens, heads, head_dim = x.shape
    if positions.ndim in (2, 3) and (positions.shape[0] not in (1, batch)
                                     or positions.shape[1] != tokens):
        raise ValueError(f"positions have shape {tuple(positions.shape)}; expected [B|1, T] or "
                         f"[B|1, T, A] with B={batch}, T={tokens} (from x)")
    pos = _positions_3d(positions)
    rot_dim = _resolve_rotary_dim(rotary_dim, head_dim)
    secs, family, farr, scales, max_freq = _plan(pos.shape[-1], rot_dim, sections, freqs,
                                                 scaling)
    if family == "mixed" and farr.shape[0] != heads:
        raise ValueError(f"freqs array has H={farr.shape[0]} heads but x has H={heads}")
    angles = _angles_from_plan(pos, secs, family, farr, scales, float(base), max_freq)
    if angles.ndim == 3:
        angles = angles[:, :, None, :]
    return _rotate(x, angles, layout=layout, sections=secs)


def rope_mixed_init(
    key: PRNGKeyArray, *, num_heads: int, axes: int, rotary_dim: int, base: float | int = 10.0
) -> Float[Array, "H A P"]:
    """Initial RoPE-Mixed frequencies ``F [H, A, P]`` (Heo et al. 2024, RoPE-ViT).

    As in the paper's ``init_random_2d_freqs``: the P = R/2 pairs form A groups of P/A, with
    magnitudes ``base^(-2A k / R)``, k = 0 .. P/A - 1 (theta 10 by default); each head draws a
    random rotation U_h in SO(A) and group g points along its column g, so
    ``F[h, :, g P/A + k] = U_h[:, g] * mag_k``. For A = 2 this is the paper's random angle phi
    with directions phi and phi + pi/2. Train F as a parameter (it is differentiable in
    :func:`apply_rope`).
    """
    pairs = rotary_dim // 2
    if rotary_dim <= 0 or rotary_dim % 2 or pairs % axes:
        raise ValueError(f"rope_mixed_init needs an even rotary_dim with rotary_dim/2 divisible "
                         f"by axes={axes}, got rotary_dim={rotary_dim}")
    per = pairs // axes
    mag = jnp.asarray(float(base) ** (-2.0 * axes * np.arange(per) / rotary_dim), jnp.float32)
    # Haar-random rotations: QR of a Gaussian with the sign fix, then det forced to +1.
    g = jax.random.normal(key, (num_heads, axes, axes), jnp.float32)
    q, r = jnp.linalg.qr(g)
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    flip = jnp.where(jnp.linalg.det(q) < 0, jnp.float32(-1.0), jnp.float32(1.0))
    q = q.at[:, :, -1].multiply(flip[:, None])
    # [H, A, G] x [P/A] -> [H, A, G, P/A] -> [H, A, P]
    return (q[:, :, :, None] * mag[None, None, None, :]).reshape(num_heads, axes, pairs)
