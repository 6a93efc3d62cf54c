"""python -m benchmarks.bench_logreg [--quick] [--out results]   (goal P6, Su's post 8578)

The closed-form classifier of `jaxformer.logreg` against the iterative fits it replaces, on
data where it is the Bayes-optimal linear model, in two sections:

1. fit: C=10 Gaussian classes with one shared random covariance (eigenvalues log-uniform in
   [0.1, 10], random rotation; class means at Mahalanobis distance ~SEPARATION so the Bayes
   accuracy is ~87%, not 100%), float32, drawn with NumPy from a seed. n training
   rows in {1e3, 1e4, 2e4 (d=768 only: the issue's scale reference), 1e5} and d in {64, 768}, one
   test set of N_TEST rows per d. Contenders, timed round-robin (`_time_rounds`):

   - ``xtx``: jitted ``x.T @ x`` on the device array, the one product no fit can avoid;
   - ``analytic``: jitted ``fit_stats(batch_stats(x, y))``, the pure path (no validation);
   - ``fit_analytic``: the user-facing call on NumPy arrays (transfer, finite and label checks,
     eager dispatch);
   - ``lr``: scikit-learn ``LogisticRegression(solver="lbfgs", C=1.0, tol=1e-4, max_iter=1000)``;
   - ``lda``: scikit-learn ``LinearDiscriminantAnalysis(solver="lsqr")`` (no shrinkage: the same
     model as the analytic one);
   - ``gd``: the kit's `fit_gradient_descent` (Su's probe: Adam 1e-3, batch 32, 10 epochs).

   Every fit is scored on the test set; per row: speedups of ``analytic`` over LR and LDA, its
   time over XᵀX's, accuracy gaps in points, and whether P6 holds for the row. All contenders of
   the run share one BLAS thread limit (`probe_blas_threads`: see NOTES);
2. memory: `stream_stats` over batches drawn on the fly (X is never materialised) for n in
   {1e4, 1e5, 1e6} at d=768, each n in a fresh Python process so that its peak RSS is its own:
   bytes of the statistics (constant), the compiled update's temp bytes (per batch), peak-RSS
   growth over the stream next to the size X would have, and time per row.

--quick (part of `jaxformer bench`, about a minute on 2 CPU cores): n ≤ 2e4 (Adam descent only
up to 1e4) and memory n ≤ 1e5.

Goal P6 (issue item 6; reported, not asserted): ``analytic`` ≥ 5× faster than LR and ≥ 3×
faster than LDA at accuracy within 1 point, and at most 1.5× the time of XᵀX.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import (REPO_ROOT, Column, Prepared, Timing, bench_main, prepare_jax,
                                save_figure, temp_bytes, write_report)

NAME = "logreg_analytic_vs_iterative"
TITLE = ("Analytic softmax regression (post 8578) vs scikit-learn LR(lbfgs) / LDA(lsqr) and Adam "
         "descent: fit time, accuracy, XᵀX bound; streaming memory")
SECTIONS = ("fit", "memory")
CLASSES = 10
QUICK_CASES = ((1_000, 64), (10_000, 64), (1_000, 768), (10_000, 768), (20_000, 768))
FULL_CASES = (*QUICK_CASES, (100_000, 64), (100_000, 768))
N_TEST = 10_000
SEPARATION = 4.0  # Mahalanobis scale of the class means: Bayes accuracy ~86-88% at C=10
EIGEN_RANGE = (0.1, 10.0)  # shared covariance spectrum, log-uniform
MEMORY_NS = (10_000, 100_000, 1_000_000)
QUICK_MEMORY_NS = (10_000, 100_000)
MEMORY_DIM = 768
MEMORY_BATCH = 5_000
WARM_BATCHES = 2  # batches streamed before the 'before' reading (compile, allocator warm-up)
LR_KWARGS = {"solver": "lbfgs", "C": 1.0, "tol": 1e-4, "max_iter": 1000}
# Every contender runs under one BLAS/OpenMP thread limit (threadpoolctl), the faster of 1 and
# the libraries' default on one PROBE_N-row probe at the largest d (LR capped at PROBE_LR_ITERS
# iterations, LDA, the jitted analytic fit). It governs scikit-learn and also JAX's CPU LAPACK calls
# (Cholesky, triangular solves), which jaxlib runs through SciPy's OpenBLAS; XLA's own matmuls
# use its Eigen pool either way. On a loaded 2-core machine 2 OpenBLAS threads made LR 10-70x
# and a 768² Cholesky ~100x slower (threads spinning for a descheduled peer).
PROBE_N, PROBE_LR_ITERS = 2_000, 5
GD_EPOCHS = 10
QUICK_GD_MAX_N = 10_000  # quick leaves Adam descent (not part of P6) out of the n=2e4 row
# Timing: every contender runs MIN_REPEATS times (SLOW_REPEATS if its warm-up call took more
# than SLOW_S), interleaved; fast ones go on until BUDGET_S timed seconds or MAX_REPEATS.
MIN_REPEATS, SLOW_REPEATS, SLOW_S, MAX_REPEATS = 5, 3, 2.0, 25
BUDGET_S, QUICK_BUDGET_S = 4.0, 1.0
# P6 targets.
TARGET_LR, TARGET_LDA, TARGET_XTX, ACC_POINTS = 5.0, 3.0, 1.5, 1.0
CONTENDERS = ("xtx", "analytic", "fit_analytic", "lr", "lda", "gd")

COLUMNS: tuple[Column, ...] = (
    ("section", "section"),
    ("n", "n"),
    ("d", "d"),
    ("xtx_ms", "XᵀX ms"),
    ("analytic_ms", "analytic ms"),
    ("fit_analytic_ms", "fit_analytic ms"),
    ("lr_ms", "LR ms"),
    ("lda_ms", "LDA ms"),
    ("gd_ms", "GD ms"),
    ("speedup_lr", "×LR"),
    ("speedup_lda", "×LDA"),
    ("xtx_ratio", "analytic/XᵀX"),
    ("speedup_lr_min", "×LR (min)"),
    ("speedup_lda_min", "×LDA (min)"),
    ("xtx_ratio_min", "analytic/XᵀX (min)"),
    ("fit_analytic_xtx_ratio", "fit_analytic/XᵀX"),
    ("acc_bayes", "Bayes %"),
    ("acc_analytic", "analytic %"),
    ("acc_lr", "LR %"),
    ("acc_lda", "LDA %"),
    ("acc_gd", "GD %"),
    ("acc_analytic_lw", "analytic LW %"),
    ("gap_lr_pts", "gap LR pt"),
    ("gap_lda_pts", "gap LDA pt"),
    ("p6_met", "P6 met"),
    ("lr_iters", "LR iters"),
    ("blas_threads", "BLAS threads"),
    ("spread_pct", "max IQR %"),
    ("stats_kib", "stats KiB"),
    ("update_temp_kib", "update temp KiB"),
    ("x_mib", "X would be MiB"),
    ("rss_growth_mib", "peak RSS growth MiB"),
    ("us_per_row", "µs/row"),
)

NOTES = (
    "Data: x = (m_y + z) M (centred features) with z ~ N(0, I), M = diag(√λ) Qᵀ (λ log-uniform in "
    f"[{EIGEN_RANGE[0]}, {EIGEN_RANGE[1]}], Q a random rotation), so every class has covariance "
    "MᵀM and the analytic model is the Bayes-optimal linear rule; 'Bayes %' scores the true "
    f"rule on the same {N_TEST:,}-row test set. Labels uniform over C=10 classes; float32.",
    "Timed: 'analytic' = jax.jit(lambda x, y: fit_stats(batch_stats(x, y, num_classes=10))) on "
    "device arrays (compile excluded, reported in the JSON); 'fit_analytic' = "
    "fit_analytic(X, y, num_classes=10) on the NumPy arrays, with its transfer, validation "
    "(finite X, labels, class counts) and eager dispatch; 'XᵀX' = jax.jit(lambda x: x.T @ x) in "
    "float32, the physical limit. LR, LDA and GD also get the NumPy arrays. The speedups, "
    "analytic/XᵀX and P6 use 'analytic'; the JSON has the same figures for fit_analytic.",
    "LR = LogisticRegression(solver='lbfgs', C=1.0, tol=1e-4, max_iter=1000) (sklearn's "
    "defaults but max_iter; 'LR iters' shows it converges well before); LDA = "
    "LinearDiscriminantAnalysis(solver='lsqr'), no shrinkage; GD = fit_gradient_descent (Adam "
    "1e-3, batch 32, 10 epochs, one compile per shape, not timed).",
    "Threads: every contender runs under one BLAS/OpenMP limit ('BLAS threads', via "
    "threadpoolctl), the faster of 1 and the libraries' default on one probe at the largest d "
    f"({PROBE_N:,} rows: LR capped at {PROBE_LR_ITERS} iterations + LDA + the analytic fit). It "
    "governs scikit-learn and JAX's CPU LAPACK calls (the Cholesky and triangular solves, which "
    "jaxlib runs through SciPy's OpenBLAS); XLA's matmuls, XᵀX included, use its own pool (all "
    "cores) regardless. On a loaded 2-core machine 2 OpenBLAS threads made LR 10-70× and a "
    "768² Cholesky ~100× slower than 1 (threads spinning for a descheduled peer).",
    f"Each contender runs ≥ {MIN_REPEATS} times, interleaved with the others after one warm-up "
    f"call; one whose warm-up took > {SLOW_S:g} s runs {SLOW_REPEATS} times (n=1e5, d=768). "
    "Times are medians; the ratios (×LR = LR time / analytic time, analytic/XᵀX, P6) are "
    "medians of per-round ratios over the rounds both contenders ran, so that a round slowed by "
    "background load cancels; '(min)' columns divide the fastest runs instead, an estimate for "
    "an idle machine. The two differ where the load changed mid-row, and the load weighs on "
    "the JAX contenders (all cores) more than on 1-thread scikit-learn. 'max IQR %' is the "
    "largest IQR / median over the row's contenders (the JSON holds every time).",
    "gap = analytic accuracy − the other's, in points; P6 met = ×LR ≥ 5 and ×LDA ≥ 3 with "
    "analytic accuracy at most 1 point below each, and analytic/XᵀX ≤ 1.5. LR's lower "
    "accuracy at d=768 is not early stopping (at n=1e4, tol=1e-6 took 115 iterations instead of "
    "37 for 76.0% instead of 75.8%): the discriminative fit of 7,690 parameters needs more rows "
    "than LDA, whose Gaussian model is true here. At n=1e3, d=768 (n ≈ d) the unshrunk "
    "covariance is poor; 'analytic LW %' (fit_analytic with shrinkage='ledoit-wolf', not timed) "
    "shows the remedy.",
    "memory rows: stream_stats over float32 batches of "
    f"{MEMORY_BATCH:,} rows drawn on the fly (the same kind of classes with a diagonal shared "
    "covariance, to spare the generator a d×d product per batch), each n in its own Python "
    "process; 'peak RSS growth' = the peak RSS after the stream − before it (after imports, the "
    "test set and a 2-batch warm-up stream), read from VmHWM: ru_maxrss, in the JSON too, "
    "inherits the parent's peak through fork + exec on Linux, which would hide any growth; "
    "'X would be' = n·d·4 bytes; 'stats' = the ClassStats leaves, "
    "4·(C + C·d + d² + 1 + d) bytes; 'update temp' = memory_analysis() of the jitted "
    "merge_stats ∘ batch_stats update (per batch, independent of n); µs/row includes drawing "
    "the batch (the JSON splits off the generator's time).",
    "The statistics are constant in n. Before stream_stats waited for each update, the "
    "process's peak RSS grew ~0, 25-95 and ~230 MiB at n = 1e4, 1e5, 1e6 (X would be 29, 293 "
    "and 2,930 MiB): the producer ran ahead and several batches' device copies were alive at "
    "once. Since the wait, growth from 1e5 to 1e6 is within a few MiB (the last line of these "
    "notes has this run's numbers); what remains at small n is glibc's dynamic mmap threshold "
    "keeping freed batch-sized buffers in the heap (MALLOC_MMAP_THRESHOLD_=1000000 removes "
    "it). VmHWM can read ~0.2 MiB lower after than before (the kernel updates it lazily).",
)


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Problem:
    """C Gaussian classes with a shared covariance: ``x = (means[y] + z) @ mixing``."""

    mixing: np.ndarray  # [d, d] float32, or [d] per-feature scales (diagonal covariance)
    means: np.ndarray  # [C, d] float32, whitened coordinates

    @property
    def dim(self) -> int:
        return self.mixing.shape[0]

    @property
    def classes(self) -> int:
        return self.means.shape[0]

    def sample(self, n: int, rng: np.random.Generator, *, bayes: bool = False
               ) -> tuple[np.ndarray, ...]:
        """``(x [n, d] float32, y [n] int32)``, plus the Bayes rule's predictions if `bayes`."""
        y = rng.integers(0, self.classes, n).astype(np.int32)
        u = rng.standard_normal((n, self.dim), dtype=np.float32)
        u += self.means[y]
        x = u @ self.mixing if self.mixing.ndim == 2 else u * self.mixing
        if not bayes:
            return x, y
        # Equal priors, identity covariance in u: argmax_c u·m_c − ½‖m_c‖².
        pred = np.argmax(u @ self.means.T - 0.5 * np.sum(self.means ** 2, axis=1), axis=1)
        return x, y, pred


def make_problem(dim: int, classes: int = CLASSES, seed: int = 0,
                 separation: float = SEPARATION, *, rotate: bool = True) -> Problem:
    """Covariance ``Q Λ Qᵀ`` (Λ log-uniform in EIGEN_RANGE, Q a random rotation; ``rotate=False``
    keeps Λ diagonal, which the memory section streams without a d×d product per batch)."""
    rng = np.random.default_rng([seed, dim, classes])
    lam = np.exp(rng.uniform(np.log(EIGEN_RANGE[0]), np.log(EIGEN_RANGE[1]), dim))
    if rotate:
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        mixing = (np.sqrt(lam)[:, None] * q.T).astype(np.float32)
    else:
        mixing = np.sqrt(lam).astype(np.float32)
    # ‖m_a − m_b‖ ≈ separation for every pair: iid N(0, s²) coordinates with s² = Δ² / (2d).
    means = (rng.standard_normal((classes, dim)) * separation / np.sqrt(2 * dim)).astype(np.float32)
    return Problem(mixing, means)


# --------------------------------------------------------------------------- timing


def _time_rounds(calls: Mapping[str, Prepared], *, budget_s: float,
                 min_repeats: int = MIN_REPEATS, slow_repeats: int = SLOW_REPEATS,
                 slow_s: float = SLOW_S, max_repeats: int = MAX_REPEATS
                 ) -> tuple[dict[str, Timing], dict[str, float]]:
    """Round-robin timing with a per-contender repeat count (unlike `time_interleaved`, whose
    rounds are all-or-nothing: a 10 s LR fit must not force 25 runs, nor a 50 µs XᵀX stop at 3).

    One warm-up call each (its seconds are returned: compile for GD and fit_analytic's eager
    ops); then round i runs contender c if i < its minimum (`slow_repeats` when the warm-up took
    more than `slow_s`, else `min_repeats`), or, for the fast ones, while the timed total is
    below `budget_s` and i < `max_repeats`.
    """
    first: dict[str, float] = {}
    for name, p in calls.items():
        t0 = time.perf_counter()
        p.call()
        first[name] = time.perf_counter() - t0
    need = {name: slow_repeats if first[name] > slow_s else min_repeats for name in calls}
    times: dict[str, list[float]] = {name: [] for name in calls}
    outs: dict[str, Any] = {}
    total = 0.0
    for i in range(max_repeats):
        ran = False
        more = total < budget_s  # decided per round: the fast contenders stay paired
        for name, p in calls.items():
            if i < need[name] or (more and first[name] <= slow_s):
                t0 = time.perf_counter()
                outs[name] = p.call()
                dt = time.perf_counter() - t0
                times[name].append(dt)
                total += dt
                ran = True
        if not ran:
            break
    timings = {name: Timing(times_s=tuple(times[name]), lower_s=p.lower_s,
                            compile_s=p.compile_s, temp_bytes=p.temp_bytes, output=outs[name])
               for name, p in calls.items()}
    return timings, first


# --------------------------------------------------------------------------- fit section


_CONTROLLER: list[Any] = []


def _blas() -> Any:
    """One `threadpoolctl.ThreadpoolController` (building one scans the loaded libraries, ~2 ms;
    its `limit` context is ~20 µs, cheap enough to wrap every timed sklearn call)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def _quiet(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` with warnings silenced (LR's ConvergenceWarning: its iteration count is in the
    row)."""
    def call() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()

    return call


def _sklearn_fits(x: np.ndarray, y: np.ndarray, *, lr_max_iter: int = LR_KWARGS["max_iter"]
                  ) -> dict[str, Callable[[], Any]]:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression

    return {"lr": lambda: LogisticRegression(**{**LR_KWARGS, "max_iter": lr_max_iter}).fit(x, y),
            "lda": lambda: LinearDiscriminantAnalysis(solver="lsqr").fit(x, y)}


def _analytic_jit(classes: int) -> Callable[..., Any]:
    from jaxformer.logreg import batch_stats, fit_stats

    return lambda a, b: fit_stats(batch_stats(a, b, num_classes=classes))


def probe_blas_threads(problem: Problem, *, seed: int = 0, rows: int = PROBE_N
                       ) -> tuple[int, dict[int, float]]:
    """The faster BLAS/OpenMP thread limit, 1 or the libraries' default, for LR (capped at
    PROBE_LR_ITERS iterations) + LDA + the jitted analytic fit on `rows` fresh rows; and the
    probe's seconds per setting (best of two alternations)."""
    x, y = problem.sample(rows, np.random.default_rng([seed, problem.dim, 4]))
    fits = [_quiet(f) for f in _sklearn_fits(x, y, lr_max_iter=PROBE_LR_ITERS).values()]
    fits.append(prepare_jax(_analytic_jit(problem.classes), jnp.asarray(x), jnp.asarray(y)).call)
    default = max((int(i["num_threads"]) for i in _blas().info()), default=1)
    options = tuple(dict.fromkeys((1, default)))
    probes = {threads: math.inf for threads in options}
    for fit in fits:  # warm-up: the first calls pay for imports and caches
        fit()
    for _ in range(2):  # alternate, keep each setting's best
        for threads in options:
            with _blas().limit(limits=threads):
                t0 = time.perf_counter()
                for fit in fits:
                    fit()
                probes[threads] = min(probes[threads], time.perf_counter() - t0)
    return min(probes, key=probes.get), probes


def fit_case(n: int, dim: int, *, classes: int = CLASSES, n_test: int = N_TEST,
             budget_s: float = BUDGET_S, gd_epochs: int = GD_EPOCHS, gd: bool = True,
             seed: int = 0, problem: Problem | None = None,
             test: tuple[np.ndarray, ...] | None = None, blas_threads: int | None = None
             ) -> dict[str, Any]:
    """One (n, d) row of the fit section, every contender under `blas_threads` (from
    `probe_blas_threads`, which runs here when None); ``gd=False`` leaves out Adam descent."""
    from jaxformer.logreg import fit_analytic
    from jaxformer.train.linear_probe import accuracy, fit_gradient_descent

    problem = make_problem(dim, classes, seed) if problem is None else problem
    if test is None:
        test = problem.sample(n_test, np.random.default_rng([seed, dim, 1]), bayes=True)
    x_test, y_test, bayes_pred = test
    x, y = problem.sample(n, np.random.default_rng([seed, dim, 2, n]))
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    key = jax.random.key(seed)
    probes = None
    if blas_threads is None:
        blas_threads, probes = probe_blas_threads(problem, seed=seed)
    sk = _sklearn_fits(x, y)

    calls = {
        "xtx": prepare_jax(lambda a: a.T @ a, xj),
        "analytic": prepare_jax(_analytic_jit(classes), xj, yj),
        "fit_analytic": Prepared(lambda: jax.block_until_ready(
            fit_analytic(x, y, num_classes=classes))),
        "lr": Prepared(_quiet(sk["lr"])),
        "lda": Prepared(sk["lda"]),
    }
    if gd:
        calls["gd"] = Prepared(lambda: jax.block_until_ready(fit_gradient_descent(
            x, y, num_classes=classes, key=key, epochs=gd_epochs)))
    with _blas().limit(limits=blas_threads):
        t, first = _time_rounds(calls, budget_s=budget_s)
        # Not timed: Ledoit-Wolf shrinkage, the remedy where n is not >> d.
        shrunk = fit_analytic(x, y, num_classes=classes, shrinkage="ledoit-wolf")

    def pct(v: Any) -> float:  # fp32 means of 0/1: rounded, so that equal models show gap 0
        return round(100.0 * float(v), 4)

    acc = {
        "analytic": pct(accuracy(t["analytic"].output, x_test, y_test)),
        "fit_analytic": pct(accuracy(t["fit_analytic"].output, x_test, y_test)),
        "lr": pct(t["lr"].output.score(x_test, y_test)),
        "lda": pct(t["lda"].output.score(x_test, y_test)),
        "gd": pct(accuracy(t["gd"].output, x_test, y_test)) if gd else None,
        "analytic_lw": pct(accuracy(shrunk, x_test, y_test)),
    }
    row: dict[str, Any] = {
        "section": SECTIONS[0], "n": n, "d": dim, "classes": classes, "dtype": "float32",
        "n_test": len(y_test), "gd_epochs": gd_epochs if gd else None,
        "blas_threads": blas_threads, "blas_probe_s": probes,
    }
    for name in CONTENDERS:
        timed = t.get(name)
        row[f"{name}_ms"] = None if timed is None else 1e3 * timed.median_s
        row[f"{name}_iqr_ms"] = None if timed is None else 1e3 * timed.iqr_s
        row[f"{name}_repeats"] = None if timed is None else len(timed.times_s)
        row[f"{name}_first_s"] = first.get(name)
        row[f"{name}_timing"] = None if timed is None else timed.as_dict()
    def ratio(a: str, b: str) -> float | None:
        return None if a not in t or b not in t else paired_ratio(t[a], t[b])

    def ratio_min(a: str, b: str) -> float | None:
        return None if a not in t or b not in t else t[a].min_s / t[b].min_s

    row.update({
        "analytic_compile_s": t["analytic"].compile_s,
        "analytic_temp_bytes": t["analytic"].temp_bytes,
        "speedup_lr": ratio("lr", "analytic"),
        "speedup_lda": ratio("lda", "analytic"),
        "speedup_gd": ratio("gd", "analytic"),
        "fit_analytic_speedup_lr": ratio("lr", "fit_analytic"),
        "fit_analytic_speedup_lda": ratio("lda", "fit_analytic"),
        "xtx_ratio": ratio("analytic", "xtx"),
        "fit_analytic_xtx_ratio": ratio("fit_analytic", "xtx"),
        "speedup_lr_min": ratio_min("lr", "analytic"),
        "speedup_lda_min": ratio_min("lda", "analytic"),
        "xtx_ratio_min": ratio_min("analytic", "xtx"),
        "acc_bayes": pct(np.mean(bayes_pred == y_test)),
        **{f"acc_{name}": v for name, v in acc.items()},
        "gap_lr_pts": round(acc["analytic"] - acc["lr"], 4),
        "gap_lda_pts": round(acc["analytic"] - acc["lda"], 4),
        "gap_gd_pts": round(acc["analytic"] - acc["gd"], 4) if gd else None,
        "lr_iters": int(np.max(t["lr"].output.n_iter_)),
        "lr_converged": bool(np.max(t["lr"].output.n_iter_) < LR_KWARGS["max_iter"]),
        "spread_pct": max(100.0 * v.iqr_s / v.median_s for v in t.values()),
    })
    row["p6_met"] = p6_met(row)
    return row


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over the rounds both ran of ``a_i / b_i``. `_time_rounds` gives every contender
    its runs in rounds 0, 1, ...: a slow one runs only in the first rounds, and comparing its
    median with a fast one's over more rounds would mix different background loads."""
    k = min(len(a.times_s), len(b.times_s))
    return float(np.median(np.asarray(a.times_s[:k]) / np.asarray(b.times_s[:k])))


def p6_met(row: Mapping[str, Any]) -> bool:
    """Goal P6 for one fit row (see the module docstring)."""
    return bool(row["speedup_lr"] >= TARGET_LR and row["speedup_lda"] >= TARGET_LDA
                and row["gap_lr_pts"] >= -ACC_POINTS and row["gap_lda_pts"] >= -ACC_POINTS
                and row["xtx_ratio"] <= TARGET_XTX)


# --------------------------------------------------------------------------- memory section


def _ru_maxrss_mib() -> float:
    # Linux reports KiB (macOS bytes; the kit's benchmarks run on Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_rss_mib() -> float:
    """This process image's peak RSS: VmHWM from /proc/self/status, else ru_maxrss. On Linux
    ru_maxrss survives fork + exec, so a child spawned by a big parent (the suite, after the
    model section) starts at the parent's peak and could never show growth; VmHWM belongs to
    the new address space."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return _ru_maxrss_mib()


def stream_case(n: int, dim: int = MEMORY_DIM, *, classes: int = CLASSES,
                batch: int = MEMORY_BATCH, n_test: int = N_TEST, seed: int = 0,
                warm_batches: int = WARM_BATCHES) -> dict[str, Any]:
    """One memory row, measured in this process (`run` calls it in a fresh one): stream n rows
    drawn batch by batch through `stream_stats`, never holding more than one batch of X."""
    from jaxformer.logreg import fit_stats, init_stats, stream_stats, stream_update
    from jaxformer.train.linear_probe import accuracy

    problem = make_problem(dim, classes, seed, rotate=False)
    x_test, y_test = problem.sample(n_test, np.random.default_rng([seed, dim, 1]))
    batch = min(batch, n)
    ragged = n % batch != 0  # then every batch carries 0/1 weights: one compiled shape
    gen_s = [0.0]

    def batches(rows: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, ...]]:
        for start in range(0, rows, batch):
            t0 = time.perf_counter()
            x, y = problem.sample(batch, rng)
            item: tuple[np.ndarray, ...] = (x, y)
            if ragged:
                item = (x, y, (np.arange(batch) < rows - start).astype(np.float32))
            gen_s[0] += time.perf_counter() - t0
            yield item

    # stream_stats' own jitted update, lowered for the batch shape to read its temp bytes.
    spec = [jax.ShapeDtypeStruct((batch, dim), jnp.float32),
            jax.ShapeDtypeStruct((batch,), jnp.int32),
            jax.ShapeDtypeStruct((batch,), jnp.float32) if ragged else None]
    compiled = stream_update.lower(init_stats(classes, dim), *spec, num_classes=classes).compile()

    # Warm-up: compile stream_stats' own update and let the allocator reach its steady state.
    warm_rows = warm_batches * batch - (1 if ragged else 0)
    jax.block_until_ready(stream_stats(batches(warm_rows, np.random.default_rng([seed, 9])),
                                       num_classes=classes, dim=dim))
    gen_s[0] = 0.0
    before, ru_before = _peak_rss_mib(), _ru_maxrss_mib()
    t0 = time.perf_counter()
    stats = jax.block_until_ready(stream_stats(
        batches(n, np.random.default_rng([seed, dim, 3, n])), num_classes=classes, dim=dim))
    stream_s = time.perf_counter() - t0
    after, ru_after = _peak_rss_mib(), _ru_maxrss_mib()
    model = fit_stats(stats)
    stats_bytes = int(sum(leaf.nbytes for leaf in stats))
    update_temp = temp_bytes(compiled)
    return {
        "section": SECTIONS[1], "n": n, "d": dim, "classes": classes, "dtype": "float32",
        "batch": batch, "batches": -(-n // batch),
        "stats_bytes": stats_bytes, "stats_kib": stats_bytes / 1024,
        "update_temp_bytes": update_temp,
        "update_temp_kib": None if update_temp is None else update_temp / 1024,
        "x_mib": n * dim * 4 / 2**20,
        "rss_before_mib": before, "rss_after_mib": after, "rss_growth_mib": after - before,
        "ru_maxrss_before_mib": ru_before, "ru_maxrss_after_mib": ru_after,
        "stream_s": stream_s, "gen_s": gen_s[0],
        "us_per_row": 1e6 * stream_s / n, "stats_us_per_row": 1e6 * (stream_s - gen_s[0]) / n,
        "count": float(jnp.sum(stats.count)),
        "acc_analytic": 100.0 * float(accuracy(model, x_test, y_test)),
    }


def stream_case_subprocess(n: int, dim: int = MEMORY_DIM, *, blas_threads: int | None = None,
                           **kwargs: Any) -> dict[str, Any]:
    """`stream_case` in a fresh interpreter, so that the peak RSS is this stream's alone (in
    the suite the process has already peaked on other sections, which would hide any growth).
    `blas_threads` caps OpenBLAS/OpenMP there (only the final Cholesky uses them)."""
    args = json.dumps({"n": n, "dim": dim, **kwargs})
    code = ("import json, sys; from benchmarks.bench_logreg import stream_case; "
            "print(json.dumps(stream_case(**json.loads(sys.argv[1]))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    if blas_threads is not None:
        env.update({k: str(blas_threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                   "MKL_NUM_THREADS")})
    done = subprocess.run([sys.executable, "-c", code, args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"stream_case(n={n}, dim={dim}) failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- run / report


def run(quick: bool = False, *, cases: Sequence[tuple[int, int]] | None = None,
        classes: int = CLASSES, n_test: int = N_TEST, budget_s: float | None = None,
        gd_epochs: int = GD_EPOCHS, gd_max_n: int | None = None,
        memory_ns: Sequence[int] | None = None,
        memory_dim: int = MEMORY_DIM, memory_batch: int = MEMORY_BATCH, seed: int = 0
        ) -> list[dict[str, Any]]:
    """Both sections: fit rows for `cases` ((n, d) pairs; Adam descent up to `gd_max_n` rows),
    then memory rows for `memory_ns` (each in a subprocess; ``memory_ns=()`` skips them)."""
    cases = (QUICK_CASES if quick else FULL_CASES) if cases is None else cases
    memory_ns = (QUICK_MEMORY_NS if quick else MEMORY_NS) if memory_ns is None else memory_ns
    budget_s = (QUICK_BUDGET_S if quick else BUDGET_S) if budget_s is None else budget_s
    if gd_max_n is None:
        gd_max_n = QUICK_GD_MAX_N if quick else max(n for n, _ in cases)
    rows = []
    threads, probes = None, None
    if cases:
        probe = make_problem(max(d for _, d in cases), classes, seed)
        threads, probes = probe_blas_threads(probe, seed=seed)
    for dim in sorted({d for _, d in cases}):
        problem = make_problem(dim, classes, seed)
        test = problem.sample(n_test, np.random.default_rng([seed, dim, 1]), bayes=True)
        for n in sorted(n for n, d in cases if d == dim):
            rows.append(fit_case(n, dim, classes=classes, n_test=n_test, budget_s=budget_s,
                                 gd_epochs=gd_epochs, gd=n <= gd_max_n, seed=seed,
                                 problem=problem, test=test,
                                 blas_threads=threads))
            rows[-1]["blas_probe_s"] = probes
    for n in memory_ns:
        rows.append(stream_case_subprocess(n, memory_dim, classes=classes, batch=memory_batch,
                                           n_test=min(n_test, 2_000), seed=seed,
                                           blas_threads=threads))
    return rows


def summary(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per d (largest n) for the report's notes, and one for the memory section."""
    fits = [r for r in rows if r["section"] == SECTIONS[0]]
    lines = []
    for dim in sorted({r["d"] for r in fits}):
        r = max((r for r in fits if r["d"] == dim), key=lambda r: r["n"])
        lines.append(
            f"P6 at n={r['n']:,}, d={dim}: {r['speedup_lr']:.1f}× LR (target ≥ {TARGET_LR:g}×), "
            f"{r['speedup_lda']:.1f}× LDA (≥ {TARGET_LDA:g}×), accuracy gaps "
            f"{r['gap_lr_pts']:+.1f} / {r['gap_lda_pts']:+.1f} pt, analytic/XᵀX "
            f"{r['xtx_ratio']:.2f} (≤ {TARGET_XTX:g}): {'met' if r['p6_met'] else 'not met'}; "
            f"fit_analytic: {r['fit_analytic_speedup_lr']:.1f}× LR, "
            f"{r['fit_analytic_speedup_lda']:.1f}× LDA, {r['fit_analytic_xtx_ratio']:.2f}× XᵀX.")
    mem = sorted((r for r in rows if r["section"] == SECTIONS[1]), key=lambda r: r["n"])
    if mem:
        growth = ", ".join(f"{r['rss_growth_mib']:.1f}" for r in mem)
        lines.append(
            f"Streaming: n {mem[0]['n']:,} → {mem[-1]['n']:,} (X would be {mem[0]['x_mib']:,.0f} → "
            f"{mem[-1]['x_mib']:,.0f} MiB): statistics {mem[0]['stats_kib']:,.0f} KiB throughout, "
            f"peak-RSS growth {growth} MiB.")
    return lines


def write(rows: Sequence[dict[str, Any]], *, out_dir: str | os.PathLike[str], command: str
          ) -> tuple[Path, ...]:
    json_path, md_path = write_report(NAME, rows, columns=COLUMNS, title=TITLE, command=command,
                                      notes=(*NOTES, *summary(rows)), out_dir=out_dir)
    return json_path, md_path, plot(rows, json_path.with_suffix(".png"))


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Fit time vs n per contender for each d (log-log, IQR bars), and the memory section."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fits = [r for r in rows if r["section"] == SECTIONS[0]]
    mem = sorted((r for r in rows if r["section"] == SECTIONS[1]), key=lambda r: r["n"])
    dims = sorted({r["d"] for r in fits})
    panels = len(dims) + (1 if mem else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(5.2 * max(panels, 1), 4.4), squeeze=False)
    labels = {"xtx": "XᵀX alone (jit)", "analytic": "analytic (jit, pure)",
              "fit_analytic": "fit_analytic (validated)", "lr": "sklearn LR lbfgs",
              "lda": "sklearn LDA lsqr", "gd": f"Adam descent ({GD_EPOCHS} ep)"}
    styles = {"xtx": "k--", "analytic": "o-", "fit_analytic": "s-", "lr": "^-", "lda": "v-",
              "gd": "d-"}
    for ax, dim in zip(axes[0], dims, strict=False):
        sub = sorted((r for r in fits if r["d"] == dim), key=lambda r: r["n"])
        for name in CONTENDERS:
            have = [r for r in sub if r.get(f"{name}_timing")]
            if not have:
                continue
            med = np.array([r[f"{name}_ms"] for r in have])
            lo = np.array([1e3 * r[f"{name}_timing"]["p25_s"] for r in have])
            hi = np.array([1e3 * r[f"{name}_timing"]["p75_s"] for r in have])
            label = labels[name]
            if name != "xtx":
                label += f" ({have[-1][f'acc_{name}']:.1f}% at n={have[-1]['n']:,})"
            ax.errorbar([r["n"] for r in have], med,
                        yerr=[np.maximum(med - lo, 0), np.maximum(hi - med, 0)],
                        fmt=styles[name], capsize=2, markersize=4, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (training rows)")
        ax.set_ylabel("fit time, ms (median, IQR bars)")
        ax.set_title(f"fit time, d={dim}, C={sub[0]['classes']} (test accuracy in the legend)",
                     fontsize=9)
        ax.legend(fontsize=7)
    if mem:
        ax = axes[0][len(dims)]
        ns = [r["n"] for r in mem]
        ax.plot(ns, [r["x_mib"] for r in mem], "k--", label="X if materialised (n·d·4)")
        ax.plot(ns, [max(r["rss_growth_mib"], 1e-2) for r in mem], "o-",
                label="peak RSS growth while streaming")
        ax.plot(ns, [r["stats_kib"] / 1024 for r in mem], "s-", label="ClassStats")
        if all(r["update_temp_kib"] is not None for r in mem):
            ax.plot(ns, [r["update_temp_kib"] / 1024 for r in mem], "^-",
                    label=f"update temp ({mem[0]['batch']:,}-row batch)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (rows streamed)")
        ax.set_ylabel("MiB (growth floored at 0.01)")
        ax.set_title(f"stream_stats memory, d={mem[0]['d']}", fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, path, title=TITLE)


def main(argv: Sequence[str] | None = None) -> None:
    bench_main("benchmarks.bench_logreg", doc=__doc__, run=run, write=write, columns=COLUMNS,
               quick_help="n ≤ 2e4 (fit), n ≤ 1e5 (memory), 1 s timing budget per case",
               argv=argv)


if __name__ == "__main__":
    main()
