"""python -m benchmarks.bench_rope [--quick] [--out results]

Times `jaxformer.rope.apply_rope` (jitted) in 1D and 2D (Su's post 8397: the head dim split in
two halves, rotated by the row and the column of a patch grid) against two baselines written
here, all three jitted with the positions as inputs (so cos/sin are computed inside jit):

- dense: build the per-token D x D block-diagonal rotation matrix R[t] from the angles and
  apply it with an einsum -- the textbook definition, O(D^2) per vector;
- elementwise: the fused `x * cos + rotate(x) * sin` of the same layout, O(D) per vector.

It reports milliseconds, the ratios dense/kit (goal >= 5) and kit/elementwise (goal <= 1.3),
the per-element cost of 2D relative to 1D on a tensor of identical shape (goal <= 1.1), the
analytic FLOP ratio dense/elementwise, compile seconds, and the max abs error of the kit
against a float64 NumPy reference (plus how far each baseline is from the kit, so that the
comparison is known to be apples to apples). Goals are reported, never asserted.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import (Column, Prepared, bench_main, prepare_jax, save_figure,
                                time_interleaved, write_report)

NAME = "rope_apply"
TITLE = ("RoPE apply (1D and 2D): jaxformer.rope vs dense rotation matrices and a fused "
         "elementwise baseline")
BASE = 10000.0
GOAL_DENSE = 5.0  # dense ms / kit ms >= 5
GOAL_ELEMENTWISE = 1.3  # kit ms / elementwise ms <= 1.3
GOAL_2D_1D = 1.1  # per-element cost of 2D / 1D <= 1.1
LAYOUTS = ("interleaved", "half")
# Total timed seconds per group of contenders (never fewer than 3 rounds, at most REPEATS).
BUDGET_S = 2.0
QUICK_BUDGET_S = 0.3
REPEATS = 25


@dataclasses.dataclass(frozen=True)
class Case:
    """One tensor geometry: x is [batch, prod(grid), heads, head_dim]; len(grid) axes."""

    batch: int
    grid: tuple[int, ...]
    heads: int
    head_dim: int = 64

    @property
    def axes(self) -> int:
        return len(self.grid)

    @property
    def seq(self) -> int:
        return int(np.prod(self.grid))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.seq, self.heads, self.head_dim)

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape))

    def matched_1d(self) -> Case:
        """The 1D case with exactly the same x shape (positions 0..T-1 along the flattened grid)."""
        return Case(self.batch, (self.seq,), self.heads, self.head_dim)

    def label(self) -> str:
        return ("2d " + "x".join(map(str, self.grid))) if self.axes == 2 else f"1d {self.seq}"


# Each entry is a group of cases timed round-robin together; a 2D case always brings the 1D
# case of identical shape, so that the 2D/1D per-element ratio compares equal tensors timed
# side by side. `--quick` keeps the small groups.
CPU_CASES: tuple[Case, ...] = (
    Case(1, (2048,), 8),  # B1's 1D shape
    Case(8, (14, 14), 12),  # B1's 2D shape (ViT-B/16 at 224 px)
    Case(8, (32, 32), 12),  # a larger grid (512 px)
)
QUICK_CASES: tuple[Case, ...] = (Case(8, (14, 14), 12),)  # with its 1D twin
# Run instead of the CPU list when jax's default device is an accelerator.
GPU_CASES: tuple[Case, ...] = (Case(1, (2048,), 8), Case(64, (32, 32), 16))
DTYPES = ("float32", "bfloat16")

COLUMNS: tuple[Column, ...] = (
    ("case", "case"),
    ("shape", "B×T×H×D"),
    ("layout", "layout"),
    ("dtype", "dtype"),
    ("kit_ms", "kit ms"),
    ("elementwise_ms", "elementwise ms"),
    ("dense_ms", "dense ms"),
    ("apply_only_ms", "apply-only ms"),
    ("ratio_dense_kit", "dense/kit"),
    ("ratio_kit_elementwise", "kit/elementwise"),
    ("ratio_kit_apply_only", "kit/apply-only"),
    ("ratio_2d_1d", "2D/1D per element"),
    ("flop_ratio", "FLOP ratio dense/elem"),
    ("kit_ns_per_elem", "kit ns/element"),
    ("table_cost_pct", "tables in jit %"),
    ("max_err", "kit max err vs fp64"),
    ("max_err_bound", "fp32-angle bound"),
    ("max_err_fp32_angles", "kit max err at fp32 angles"),
    ("max_diff_elementwise", "|elem-kit|"),
    ("max_diff_dense", "|dense-kit|"),
    ("kit_compile_s", "kit compile s"),
    ("spread_pct", "max IQR %"),
    ("goals_met", "goals met"),
)

NOTES = (
    f"Goals (reported, not asserted): dense/kit ≥ {GOAL_DENSE}, kit/elementwise ≤ "
    f"{GOAL_ELEMENTWISE}, 2D/1D per element ≤ {GOAL_2D_1D}; 'goals met' checks those defined "
    "for the row.",
    "All three contenders are jitted functions of (x, positions): the angles, cos and sin (and "
    "for dense the [1, T, D, D] matrices) are computed inside jit on every call. Positions are "
    "[1, T] (1D) or [1, T, 2] (row, column) shared by the batch, so dense builds T matrices and "
    "applies them with einsum('tij,bthj->bthi') -- the cheapest form of the dense baseline.",
    "2D (post 8397): the head dim splits into two contiguous halves of width d/2, rotated by "
    "the row and by the column with θ_i = base^(−2i/(d/2)); 1D rotates the whole head dim "
    "with θ_i = base^(−2i/d). base = 10000.",
    "2D/1D per element compares the 2D case with a 1D case of identical shape [B, T, H, D] "
    "(positions 0..T−1 along the flattened grid), timed in the same round-robin; the 1D "
    "companion rows are labelled '1d T (=2d)'.",
    "FLOP ratio is analytic for the apply only (tables excluded): dense 2·D² per vector "
    "(einsum), elementwise 3·D (two multiplies and an add), so 2D/3 ≈ 42.7 at D = 64.",
    "tables in jit % = (kit ms − kit ms with the positions baked in as constants) / kit ms: the "
    "share of the time spent computing cos/sin tables (~0 when XLA fuses "
    "or folds them).",
    "max err is against float64 NumPy (θ and angles in float64, the input upcast). fp32 angles "
    "are rounded to ~max_angle·2^-24, so the error grows with the largest position (≈ 3e-4 at "
    "T = 2048); 'fp32-angle bound' = 2·max|x|·max_angle·2^-23 + 1e-5 (fp32) or 2^-7·max|out| + "
    "1e-5 (bf16) is the size that rounding alone allows. |elem-kit| and |dense-kit| show that "
    "the baselines compute the same function as the kit.",
    "'at fp32 angles' is the same float64 reference evaluated at the angles rounded as the kit "
    "documents them (float32(p) * float32(θ)): the error of the rotation itself.",
    "bf16 rows feed bf16 x to all three contenders, which (like the kit) rotate in fp32 and cast "
    "the result back to bf16. Times are medians (IQR and samples in the JSON); compile time "
    "excluded; ratios with the fastest call of each are in the JSON (*_min).",
    "apply-only is the elementwise apply with cos/sin tables computed before the timed call: "
    "the floor for any in-jit kernel. kit/apply-only ≫ 1 means computing the tables costs more "
    "than rotating; on XLA:CPU a plain kernel's sin/cos get fused into the per-element loop "
    "and recomputed for every batch row and head (B·H times), which the dense baseline suffers "
    "too (it evaluates them per matrix entry).",
)


# --------------------------------------------------------------------------- layout description


def _sections(case: Case) -> list[tuple[int, int, int]]:
    """(axis, offset, width) of each contiguous chunk of the head dim: one chunk per axis."""
    width = case.head_dim // case.axes
    return [(a, a * width, width) for a in range(case.axes)]


def rotation_pairs(case: Case, layout: str, base: float = BASE
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(p, q, axis, theta): pair k rotates dims (p[k], q[k]) by positions[..., axis[k]] * theta[k].

    Written pair by pair, independently of the vectorised baselines, for the float64 reference.
    """
    p, q, axis, theta = [], [], [], []
    for a, off, w in _sections(case):
        half = w // 2
        for i in range(half):
            p.append(off + (2 * i if layout == "interleaved" else i))
            q.append(off + (2 * i + 1 if layout == "interleaved" else i + half))
            axis.append(a)
            theta.append(base ** (-2.0 * i / w))
    return np.array(p), np.array(q), np.array(axis), np.array(theta, dtype=np.float64)


def positions_for(case: Case) -> np.ndarray:
    """[1, T] (1D) or [1, T, 2] (row, column of the row-major flattened grid), int32."""
    if case.axes == 1:
        return np.arange(case.seq, dtype=np.int32)[None]
    grids = np.meshgrid(*(np.arange(n) for n in case.grid), indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=-1).astype(np.int32)[None]


def reference(x: np.ndarray, positions: np.ndarray, case: Case, layout: str, *,
              fp32_angles: bool = False) -> np.ndarray:
    """RoPE in float64 NumPy: the 2x2 rotation of each pair, written out.

    With `fp32_angles` the angles are first rounded as the kit documents it computes them,
    float32(position) * float32(theta) (one IEEE fp32 multiply), and everything after that is
    float64: this isolates the error of the rotation from the unavoidable fp32 angle rounding.
    """
    x = np.asarray(x, dtype=np.float64)
    pos = positions.astype(np.float64)
    if pos.ndim == 2:
        pos = pos[..., None]
    p, q, axis, theta = rotation_pairs(case, layout)
    if fp32_angles:
        ang = (pos[:, :, axis].astype(np.float32) * theta.astype(np.float32)).astype(np.float64)
    else:
        ang = pos[:, :, axis] * theta  # [1, T, K]
    c, s = np.cos(ang)[:, :, None, :], np.sin(ang)[:, :, None, :]
    out = np.empty_like(x)
    out[..., p] = x[..., p] * c - x[..., q] * s
    out[..., q] = x[..., p] * s + x[..., q] * c
    return out


# --------------------------------------------------------------------------- baselines


def _half_angles(positions: jax.Array, case: Case) -> list[jax.Array]:
    """Per axis chunk, the [1, T, w/2] angles in float32 (θ as float32 constants)."""
    pos = positions.astype(jnp.float32)
    if pos.ndim == 2:
        pos = pos[..., None]
    out = []
    for a, _, w in _sections(case):
        theta = jnp.asarray(BASE ** (-2.0 * np.arange(w // 2) / w), dtype=jnp.float32)
        out.append(pos[:, :, a:a + 1] * theta[None, None, :])
    return out


def _expand(half: jax.Array, layout: str) -> jax.Array:
    """[..., w/2] per-pair values -> [..., w] per-feature values in the layout's pair order."""
    if layout == "interleaved":
        return jnp.repeat(half, 2, axis=-1)
    return jnp.concatenate([half, half], axis=-1)


def _feature_tables(positions: jax.Array, case: Case, layout: str) -> tuple[jax.Array, jax.Array]:
    """cos and sin per feature, [1, T, D] float32."""
    halves = _half_angles(positions, case)
    cos = jnp.concatenate([_expand(jnp.cos(h), layout) for h in halves], axis=-1)
    sin = jnp.concatenate([_expand(jnp.sin(h), layout) for h in halves], axis=-1)
    return cos, sin


def _rotate(x: jax.Array, case: Case, layout: str) -> jax.Array:
    """The signed pair swap: (x_p, x_q) -> (-x_q, x_p) for every pair, by reshapes and slices."""
    chunks = []
    for _, off, w in _sections(case):
        c = x[..., off:off + w]
        if layout == "interleaved":
            pairs = c.reshape(*c.shape[:-1], w // 2, 2)
            chunks.append(jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(c.shape))
        else:
            chunks.append(jnp.concatenate([-c[..., w // 2:], c[..., :w // 2]], axis=-1))
    return chunks[0] if len(chunks) == 1 else jnp.concatenate(chunks, axis=-1)


def _apply_tables(x: jax.Array, cos: jax.Array, sin: jax.Array, case: Case, layout: str
                  ) -> jax.Array:
    """x * cos + rotate(x) * sin with [1, T, D] fp32 tables; fp32 inside, x.dtype out."""
    xf = x.astype(jnp.float32)
    out = xf * cos[:, :, None, :] + _rotate(xf, case, layout) * sin[:, :, None, :]
    return out.astype(x.dtype)


def make_elementwise(case: Case, layout: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    def elementwise(x: jax.Array, positions: jax.Array) -> jax.Array:
        cos, sin = _feature_tables(positions, case, layout)
        return _apply_tables(x, cos, sin, case, layout)

    return elementwise


def make_apply_only(case: Case, layout: str
                    ) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """The elementwise apply alone, cos/sin tables passed in (computed before the timed call)."""
    def apply_only(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        return _apply_tables(x, cos, sin, case, layout)

    return apply_only


def _swap_matrix(case: Case, layout: str) -> np.ndarray:
    """S with S @ v == rotate(v): S[p, q] = -1, S[q, p] = +1 for every pair (p, q)."""
    p, q, _, _ = rotation_pairs(case, layout)
    s = np.zeros((case.head_dim, case.head_dim), dtype=np.float32)
    s[p, q], s[q, p] = -1.0, 1.0
    return s


def make_dense(case: Case, layout: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    eye = np.eye(case.head_dim, dtype=np.float32)[None, None]
    swap = _swap_matrix(case, layout)[None, None]

    def dense(x: jax.Array, positions: jax.Array) -> jax.Array:
        cos, sin = _feature_tables(positions, case, layout)
        # R[t] = diag(cos) + diag(sin) @ S: the block-diagonal matrix of 2x2 rotations, [T, D, D].
        r = cos[..., :, None] * jnp.asarray(eye) + sin[..., :, None] * jnp.asarray(swap)
        out = jnp.einsum("tij,bthj->bthi", r[0], x.astype(jnp.float32),
                         precision=jax.lax.Precision.HIGHEST)
        return out.astype(x.dtype)

    return dense


def make_kit(case: Case, layout: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    from jaxformer.rope import apply_rope

    def kit(x: jax.Array, positions: jax.Array) -> jax.Array:
        return apply_rope(x, positions, layout=layout, base=BASE)

    return kit


def flop_ratio(head_dim: int) -> float:
    """Analytic FLOPs per vector, apply only: dense 2·D² (matvec) over elementwise 3·D."""
    return (2.0 * head_dim * head_dim) / (3.0 * head_dim)


# --------------------------------------------------------------------------- running


def _inputs(case: Case, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(case.shape).astype(np.float32)


def _max_abs(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def _error_bound(x: np.ndarray, ref: np.ndarray, positions: np.ndarray, dtype: str) -> float:
    """What fp32 angle rounding (fp32) or bf16 output rounding (bf16) alone can explain."""
    if dtype == "bfloat16":
        return float(2.0 ** -7 * np.max(np.abs(ref)) + 1e-5)
    max_angle = float(np.max(positions))  # θ_0 = 1
    return float(2.0 * np.max(np.abs(x)) * max_angle * 2.0 ** -23 + 1e-5)


def _jax_dtype(dtype: str) -> Any:
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]


def _run_group(cases: Sequence[Case], layout: str, dtypes: Sequence[str], *, warmup: int,
               budget_s: float, seed: int) -> list[dict[str, Any]]:
    """Time every (case, dtype, contender) of one group round-robin; one row per (case, dtype)."""
    calls: dict[str, Prepared] = {}
    data: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, jax.Array, jax.Array]] = {}
    for ci, case in enumerate(cases):
        x32 = _inputs(case, seed + ci)
        pos_np = positions_for(case)
        pos = jnp.asarray(pos_np)
        makers = {"kit": make_kit, "elementwise": make_elementwise, "dense": make_dense}
        for dtype in dtypes:
            x = jnp.asarray(x32, dtype=_jax_dtype(dtype))
            data[ci, dtype] = (x32, pos_np, x, pos)
            for who, make in makers.items():
                calls[f"{ci}/{dtype}/{who}"] = prepare_jax(make(case, layout), x, pos)
            if dtype == "float32":
                # B2: the same kernel with the positions baked in, so XLA may fold the tables.
                kit = make_kit(case, layout)
                calls[f"{ci}/{dtype}/kit_const"] = prepare_jax(
                    lambda x, kit=kit, p=pos: kit(x, p), x)
                # The floor: the elementwise apply with cos/sin computed outside the timed call.
                cos, sin = jax.jit(lambda p: _feature_tables(p, case, layout))(pos)
                calls[f"{ci}/{dtype}/apply_only"] = prepare_jax(make_apply_only(case, layout),
                                                                 x, cos, sin)
    timings = time_interleaved(calls, warmup=warmup, repeats=REPEATS, budget_s=budget_s)

    rows: list[dict[str, Any]] = []
    for ci, case in enumerate(cases):
        for dtype in dtypes:
            x32, pos_np, x, _ = data[ci, dtype]
            t = {who: timings[f"{ci}/{dtype}/{who}"] for who in ("kit", "elementwise", "dense")}
            tc = timings.get(f"{ci}/{dtype}/kit_const")
            ta = timings.get(f"{ci}/{dtype}/apply_only")
            x_in = np.asarray(x, dtype=np.float64)  # the values the contenders saw (bf16-rounded)
            ref = reference(x_in, pos_np, case, layout)
            kit_out = t["kit"].output
            kit_ms = 1e3 * t["kit"].median_s
            rows.append({
                "case": f"1d {case.seq} (=2d)" if case.axes == 1 and len(cases) > 1
                else case.label(),
                "axes": case.axes,
                "grid": case.grid,
                "shape": case.shape,
                "batch": case.batch, "seq": case.seq, "heads": case.heads,
                "head_dim": case.head_dim,
                "elements": case.elements,
                "layout": layout,
                "dtype": dtype,
                "kit_ms": kit_ms,
                "elementwise_ms": 1e3 * t["elementwise"].median_s,
                "dense_ms": 1e3 * t["dense"].median_s,
                "kit_const_ms": None if tc is None else 1e3 * tc.median_s,
                "apply_only_ms": None if ta is None else 1e3 * ta.median_s,
                "ratio_kit_apply_only": None if ta is None else t["kit"].median_s / ta.median_s,
                "table_cost_pct": None if tc is None else 100 * (t["kit"].median_s - tc.median_s)
                / t["kit"].median_s,
                "ratio_dense_kit": t["dense"].median_s / t["kit"].median_s,
                "ratio_kit_elementwise": t["kit"].median_s / t["elementwise"].median_s,
                "ratio_dense_kit_min": t["dense"].min_s / t["kit"].min_s,
                "ratio_kit_elementwise_min": t["kit"].min_s / t["elementwise"].min_s,
                "ratio_2d_1d": None,
                "flop_ratio": flop_ratio(case.head_dim),
                "kit_ns_per_elem": 1e6 * kit_ms / case.elements,
                "max_err": _max_abs(kit_out, ref),
                "max_err_fp32_angles": _max_abs(kit_out, reference(x_in, pos_np, case, layout,
                                                                   fp32_angles=True)),
                "max_err_elementwise": _max_abs(t["elementwise"].output, ref),
                "max_err_dense": _max_abs(t["dense"].output, ref),
                "max_err_bound": _error_bound(x_in, ref, pos_np, dtype),
                "max_diff_elementwise": _max_abs(t["elementwise"].output, kit_out),
                "max_diff_dense": _max_abs(t["dense"].output, kit_out),
                "out_dtype": str(np.asarray(kit_out).dtype),
                "kit_lower_s": t["kit"].lower_s,
                "kit_compile_s": t["kit"].compile_s,
                "elementwise_compile_s": t["elementwise"].compile_s,
                "dense_compile_s": t["dense"].compile_s,
                "spread_pct": 100 * max(v.iqr_s / v.median_s for v in t.values()),
                "timing": {**t, **({"kit_const": tc, "apply_only": ta} if tc is not None else {})},
            })
    # 2D rows: per-element kit cost relative to the 1D companion of identical shape and dtype.
    by_key = {(r["shape"], r["dtype"], r["axes"]): r for r in rows}
    for r in rows:
        one_d = by_key.get((r["shape"], r["dtype"], 1))
        if r["axes"] == 2 and one_d is not None:
            r["ratio_2d_1d"] = r["kit_ns_per_elem"] / one_d["kit_ns_per_elem"]
    for r in rows:
        checks = [r["ratio_dense_kit"] >= GOAL_DENSE,
                  r["ratio_kit_elementwise"] <= GOAL_ELEMENTWISE]
        if r["ratio_2d_1d"] is not None:
            checks.append(r["ratio_2d_1d"] <= GOAL_2D_1D)
        r["goals_met"] = all(checks)
    return rows


def _on_accelerator() -> bool:
    return jax.devices()[0].platform in ("gpu", "tpu")


def run(quick: bool = False, *, cases: Sequence[Case] | None = None,
        layouts: Sequence[str] = LAYOUTS, dtypes: Sequence[str] = DTYPES,
        budget_s: float | None = None) -> list[dict[str, Any]]:
    """Benchmark every case x layout; a 2D case is timed together with its 1D twin."""
    if cases is None:
        cases = GPU_CASES if _on_accelerator() else (QUICK_CASES if quick else CPU_CASES)
    if budget_s is None:
        budget_s = QUICK_BUDGET_S if quick else BUDGET_S
    rows: list[dict[str, Any]] = []
    for gi, case in enumerate(cases):
        group = [case, case.matched_1d()] if case.axes == 2 else [case]
        for layout in layouts:
            rows.extend(_run_group(group, layout, dtypes, warmup=1 if quick else 2,
                                   budget_s=budget_s, seed=10 * gi))
    return rows


def write(rows: Sequence[dict[str, Any]], *, out_dir: str | os.PathLike[str], command: str
          ) -> tuple[Path, ...]:
    json_path, md_path = write_report(NAME, rows, columns=COLUMNS, title=TITLE, command=command,
                                      notes=NOTES, out_dir=out_dir)
    return json_path, md_path, plot(rows, json_path.with_suffix(".png"))


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Milliseconds per contender and case (log scale), one panel per dtype."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    dtypes = [d for d in DTYPES if any(r["dtype"] == d for r in rows)] or ["float32"]
    fig, axes = plt.subplots(1, len(dtypes), figsize=(max(6.0, 0.9 * len(rows)), 4.2),
                             squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        sub = [r for r in rows if r["dtype"] == dtype]
        x = np.arange(len(sub))
        series = [(key, label) for key, label in (("kit_ms", "jaxformer.rope"),
                                                  ("elementwise_ms", "elementwise"),
                                                  ("dense_ms", "dense R einsum"),
                                                  ("apply_only_ms", "apply-only (tables given)"))
                  if all(r.get(key) is not None for r in sub)]
        w = 0.8 / len(series)
        for k, (key, label) in enumerate(series):
            ax.bar(x + (k - (len(series) - 1) / 2) * w, [r[key] for r in sub], w, label=label)
        for xi, r in zip(x, sub, strict=True):
            ax.annotate(f"{r['ratio_dense_kit']:.1f}×", (xi + (2 - (len(series) - 1) / 2) * w,
                                                         r["dense_ms"]),
                        fontsize=6, ha="center", va="bottom")
        ax.set_yscale("log")
        ax.set_xticks(x, [f"{r['case']}\n{r['layout']}" for r in sub], fontsize=6)
        ax.set_ylabel("ms (median, log scale)")
        ax.set_title(f"{dtype}: dense/kit labelled", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(TITLE, fontsize=8)
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    bench_main("benchmarks.bench_rope", doc=__doc__, run=run, write=write, columns=COLUMNS,
               quick_help='small shapes only', argv=argv)


if __name__ == "__main__":
    main()
