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
# # Counting a Transformer layer's FLOPs with Su Jianlin (kexue.fm post 8610), and with the kit
#
# Run: `.venv/bin/python notebooks/flops.py` (about 5 s on 2 CPU cores), or open it in
# Jupyter via jupytext. It prints, step by step: the per-layer multiplication count of post
# 8610 derived with sympy ($12nD^2 + 2n^2D$, i.e. $24nD^2 + 4n^2D$ FLOPs); the two crossovers
# solved symbolically (attention > FFN for n > 2hd = 1536, the n² term dominates for
# n > 6hd = 4608 at BERT-base) and checked against `jaxformer.flops.crossover_lengths`, also at
# a shape whose attention width differs from the model width; the exact (integer) agreement of
# the symbolic count with `layer_flops(..., convention="su")` (multiplications) and
# `convention="kit"` (FLOPs = 2×) for n = 128 ... 8192; a table of XLA's compiled FLOPs of one
# BERT-base encoder layer built from the kit's pure functions at n = 128, 512, 1024 against the
# analytic count (1.0003 of matmul + elementwise, 1.0156 of the matmuls alone); the exact
# break-even lengths of linear attention (65 for M = 64, 260 for M = 256, 1024 for Su's 4d
# heads); and the softmax / linear-attention FLOP ratio of a whole BERT-base layer over n (1.10
# at n = 512, 1.31 at 1536, 1.97 at 4608 for M = 64, under the bound 1 + n/(6E)), with one
# figure shown inline (nothing is written to disk). The same per-op numbers for any shape:
# `jaxformer flops --d-model 768 --heads 12 --ffn 3072 --seq-len 512`.
#
# Post 8610 ("线性Transformer应该不是你要等的那个模型", Linear Transformer is probably not the
# model you are waiting for) counts the multiplications of a *whole* layer, not of attention
# alone, and concludes that the $O(n^2)$ term only matters for thousands of tokens.
#
# **Notation.** The post writes n for the sequence length, h for the heads, d for the head size
# and D = hd for the hidden size. The kit (README shape glossary, `jaxformer/flops.py`) writes
# T for tokens, H for heads, **D for the head dim** and **E for the model width**: the post's
# D = h·d is the kit's E (= H·D), and the post's d is the kit's D. Below, sympy symbols follow
# the post (n, h, d); code and comments use the kit's letters (T, E, H, D, F, M, K). BERT-base:
# H = 12, D = 64, E = 768, F = 3072 = 4E.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import sympy as sp

from jaxformer.attention import softmax_attention
from jaxformer.flops import LayerShape, crossover_lengths, layer_flops, xla_flops
from jaxformer.functional import dense, feed_forward, gelu_erf, layer_norm

t_start = time.perf_counter()
H_BERT, D_BERT = 12, 64            # H heads, D head dim (post: h, d)
E_BERT = H_BERT * D_BERT           # E = 768 model width (post: D = hd)
F_BERT = 4 * E_BERT                # F = 3072 FFN width

# %% [markdown]
# ## 1. Multiplications per layer
#
# Post 8610 counts only the multiplications of the matmuls (an a×b by b×c product costs abc)
# and leaves out softmax, LayerNorm, biases, residuals and the activation:
#
# * Q, K, V projections: $3 \cdot n (hd)^2$; output projection $n (hd)^2$: together $4nD^2$;
# * per head, $QK^\top$ costs $n^2 d$ and $AV$ costs $n^2 d$: $2n^2hd = 2n^2D$ over h heads;
# * self-attention $\mathrm{SA} = 4nh^2d^2 + 2n^2hd$;
# * FFN of width 4hd: $n\cdot hd\cdot 4hd + n\cdot 4hd\cdot hd = 8nh^2d^2 = 8nD^2$;
# * per layer $12nD^2 + 2n^2D$ multiplications. XLA (and the kit's default `"kit"`
#   convention) counts 2 FLOPs per multiply-add, so that is $24nD^2 + 4n^2D$ FLOPs.

# %%
n, h, d = sp.symbols("n h d", positive=True)   # post: T tokens, H heads, D head dim
D_post = h * d                                   # post's D = hd = kit's E
mults = {
    "qkv": 3 * n * D_post**2,                    # [T,E]x[E,3E]
    "scores": h * n**2 * d,                      # QKᵀ per head: [T,D]x[D,T]
    "attention_v": h * n**2 * d,                 # AV per head: [T,T]x[T,D]
    "out_proj": n * D_post**2,                   # [T,E]x[E,E]
    "ffn": n * D_post * (4 * D_post) + n * (4 * D_post) * D_post,  # [T,E]x[E,F], [T,F]x[F,E]
}
SA = mults["qkv"] + mults["scores"] + mults["attention_v"] + mults["out_proj"]
FFN = mults["ffn"]
layer_mults = sp.expand(SA + FFN)
Dp = sp.Symbol("D", positive=True)               # to print in the post's D = hd
print("SA    =", sp.expand(SA), "=", sp.expand(SA).subs(h, Dp / d))
print("FFN   =", sp.expand(FFN), "=", sp.expand(FFN).subs(h, Dp / d))
print("layer =", layer_mults, "=", sp.expand(layer_mults.subs(h, Dp / d)), "multiplications")
layer_flops_sym = 2 * layer_mults
print("FLOPs =", sp.expand(layer_flops_sym.subs(h, Dp / d)))
# The post's closed form, 12nD² + 2n²D with D = hd:
assert sp.expand(layer_mults - (12 * n * D_post**2 + 2 * n**2 * D_post)) == 0

# %% [markdown]
# ## 2. The two crossovers
#
# The post compares SA with the FFN, and the quadratic term with everything linear in n:
#
# * $4nD^2 + 2n^2D > 8nD^2 \iff n > 2D = 2hd$ (1536 for BERT-base): below it the FFN costs more
#   than attention;
# * $2n^2D > 12nD^2 \iff n > 6D = 6hd$ (4608): only beyond it is the layer "truly quadratic".
#
# `crossover_lengths` implements the general form of the same inequalities, with an FFN width F
# and an attention width P = H·D that need not equal E (its docstring: attention exceeds the FFN
# for $T > E(F-2P)/P$, the quadratic term dominates for $T > 2E + EF/P$). We solve both forms
# with sympy: the BERT-shaped one must give the post's 2hd and 6hd, and the general one is
# checked against the kit at BERT-base and at a shape with P ≠ E and F ≠ 4E.

# %%
# The post's form, F = 4E, P = E.
x_sa_ffn = sp.solve(sp.Eq(SA, FFN), n)
x_quad = sp.solve(sp.Eq(mults["scores"] + mults["attention_v"],
                        layer_mults - mults["scores"] - mults["attention_v"]), n)
print("SA = FFN at n =", x_sa_ffn, "| n² term = linear terms at n =", x_quad)
assert x_sa_ffn == [2 * h * d] and x_quad == [6 * h * d]
bert = {h: H_BERT, d: D_BERT}
post = {"attention_exceeds_ffn": int(x_sa_ffn[0].subs(bert)),
        "quadratic_dominates": int(x_quad[0].subs(bert))}
kit = crossover_lengths(E_BERT, H_BERT, F_BERT)
print(f"BERT-base: post {post}, crossover_lengths {kit}")
assert post == {"attention_exceeds_ffn": 1536, "quadratic_dominates": 4608}
assert kit == post  # 1536.0 == 1536: the kit's floats are these integers exactly

# The general form: model width E, FFN width F, H heads of dim D (P = H·D), value dim = D.
T, E, F, H, D = sp.symbols("T E F H D", positive=True)
P = H * D
attn_g = 4 * T * E * P + 2 * T**2 * P            # q, k, v, out projections + QKᵀ, AV
ffn_g = 2 * T * E * F
lin_g = 4 * T * E * P + 2 * T * E * F            # every term linear in T
x1 = sp.solve(sp.Eq(attn_g, ffn_g), T)
x2 = sp.solve(sp.Eq(2 * T**2 * P, lin_g), T)
print("general: attention = FFN at T =", x1, "| quadratic = linear at T =", x2)
assert sp.simplify(x1[0] - E * (F - 2 * P) / P) == 0
assert sp.simplify(x2[0] - (2 * E + E * F / P)) == 0
for e_, h_, f_, d_ in ((E_BERT, H_BERT, F_BERT, None), (512, 8, 1536, 32), (1024, 8, 4096, 64)):
    sub = {E: e_, H: h_, F: f_, D: e_ // h_ if d_ is None else d_}
    want = {"attention_exceeds_ffn": x1[0].subs(sub), "quadratic_dominates": x2[0].subs(sub)}
    got = crossover_lengths(e_, h_, f_, head_dim=d_)
    print(f"  E={e_:>4} H={h_:>2} F={f_:>4} D={sub[D]:>3}: sympy "
          f"{ {k: str(v) for k, v in want.items()} }, kit {got}")
    assert all(sp.Rational(got[k]) == v for k, v in want.items())  # exact (dyadic) equality

# %% [markdown]
# ## 3. The symbolic count against `layer_flops`, exactly
#
# `layer_flops(shape, convention="su")` is documented as post 8610's count of
# **multiplications** (the kit's FLOPs halved); the default `"kit"` convention counts FLOPs,
# 2 per multiply-add. The sympy expression of §1 is an independent reference for both: for
# BERT-base at several n, and for every op separately, the kit's numbers (floats holding
# integers far below 2⁵³) must equal it exactly. The FLOPs matching means the "kit" convention
# counts *all* of $QK^\top$ and $AV$ (non-causal here; the kit only halves them for a causal
# kernel that skips the masked half).

# %%
print(f"{'n':>5} {'12nD²+2n²D':>16} {'su total':>16} {'kit FLOPs':>16} {'n² share':>9}")
for T_ in (128, 512, 1536, 4608, 8192):
    sym_ops = {op: int(expr.subs({n: T_, **bert})) for op, expr in mults.items()}
    sym_total = int(layer_mults.subs({n: T_, **bert}))
    shape = LayerShape(E_BERT, H_BERT, F_BERT, T_)
    su, ft = layer_flops(shape, convention="su"), layer_flops(shape, convention="kit")
    su_ops = {op: v for op, v in su["matmul"].items() if op != "embedding"}
    assert su["matmul"]["embedding"] == 0  # a gather, no matmul
    assert su_ops == sym_ops, (su_ops, sym_ops)                    # per op, multiplications
    assert su["matmul_total"] == sym_total                         # 12nD² + 2n²D
    assert ft["matmul_total"] == int(layer_flops_sym.subs({n: T_, **bert})) == 2 * sym_total
    quad_share = (sym_ops["scores"] + sym_ops["attention_v"]) / sym_total
    print(f"{T_:>5} {sym_total:>16,} {int(su['matmul_total']):>16,} "
          f"{int(ft['matmul_total']):>16,} {quad_share:>9.1%}")

# %% [markdown]
# ## 4. What XLA counts: one BERT-base encoder layer, compiled
#
# The post's count omits the elementwise work. To see how much that is, we build BERT's
# post-LN layer, $\mathrm{LN}(x + \mathrm{Attn}(x))$ then $\mathrm{LN}(h + \mathrm{FFN}(h))$,
# from the kit's pure functions (`dense`, `softmax_attention`, `feed_forward` with exact GELU,
# `layer_norm`), and read `xla_flops` of its jitted forward at B = 1. The arguments are
# `jax.ShapeDtypeStruct`s, so the layer is only compiled, never run, and nothing big is
# allocated. `xla_flops` also flags `while` loops, whose bodies `cost_analysis()` counts once;
# there are none here, so the count is `reliable`.
#
# As in `tests/test_flops.py`, XLA is compared with the analytic matmul total plus the kit's
# elementwise lines (LayerNorm, softmax, GELU, biases and residuals: what XLA also counts), within
# ±2%. The ratio to the matmuls alone shows how much Su leaves out by ignoring them.

# %%
def bert_layer(p: dict, x: jax.Array, *, heads: int) -> jax.Array:
    """Post-LN encoder layer, x: [B, T, E] -> [B, T, E]."""
    b, t, e = x.shape
    split = lambda y: y.reshape(b, t, heads, e // heads)  # noqa: E731  [B,T,E] -> [B,T,H,D]
    q, k, v = (split(dense(x, p["w" + s], p["b" + s])) for s in "qkv")
    a = dense(softmax_attention(q, k, v).reshape(b, t, e), p["wo"], p["bo"])  # [B,T,H,K] -> [B,T,E]
    hid = layer_norm(x + a, p["ln1_scale"], p["ln1_bias"], eps=1e-12)
    f = feed_forward(hid, p["w1"], p["b1"], p["w2"], p["b2"], act=gelu_erf)  # E -> F -> E
    return layer_norm(hid + f, p["ln2_scale"], p["ln2_bias"], eps=1e-12)


def abstract_params(e: int, f: int) -> dict:
    spec = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
    p = {f"w{s}": spec(e, e) for s in "qkvo"} | {f"b{s}": spec(e) for s in "qkvo"}
    p |= {"w1": spec(e, f), "b1": spec(f), "w2": spec(f, e), "b2": spec(e)}
    p |= {f"ln{i}_{s}": spec(e) for i in (1, 2) for s in ("scale", "bias")}
    return p


params = abstract_params(E_BERT, F_BERT)
print(f"{'n':>5} {'XLA FLOPs':>14} {'matmul':>14} {'+elementwise':>14} {'XLA/(mm+elem)':>13} "
      f"{'XLA/mm':>7}")
xla_ratio = {}
for T_ in (128, 512, 1024):
    x = jax.ShapeDtypeStruct((1, T_, E_BERT), jnp.float32)  # [B, T, E]
    cost = xla_flops(lambda p, x: bert_layer(p, x, heads=H_BERT), params, x)
    assert cost.reliable, cost.reason
    lines = layer_flops(LayerShape(E_BERT, H_BERT, F_BERT, T_))
    mm, total = lines["matmul_total"], lines["matmul_total"] + lines["elementwise_total"]
    assert mm == 24 * T_ * E_BERT**2 + 4 * T_**2 * E_BERT  # §1 in FLOPs
    xla_ratio[T_] = (cost.flops / total, cost.flops / mm)
    print(f"{T_:>5} {cost.flops:>14.5e} {mm:>14.5e} {total:>14.5e} {cost.flops / total:>13.4f} "
          f"{cost.flops / mm:>7.4f}")
    assert abs(cost.flops / total - 1) <= 0.02         # the kit's band (tests/test_flops.py)
    assert 0 < cost.flops / mm - 1 <= 0.03             # Su's omissions: a few percent, not zero
elem = layer_flops(LayerShape(E_BERT, H_BERT, F_BERT, 512))["elementwise"]
print("elementwise lines at n = 512:", {k: f"{v:.3e}" for k, v in elem.items()},
      "(exact GELU's erf is 64 FLOPs per element of the [T, F] activation)")

# %% [markdown]
# ## 5. How much can linear attention save on a whole layer?
#
# Linear attention replaces $QK^\top$ and $AV$ ($4HT^2D$ FLOPs) by $\varphi(Q)(\varphi(K)^\top V)$:
# in the kit, state and read-out $4HTMK$ plus the denominator $\varphi(Q)\cdot\sum\varphi(K)$,
# $4HTM$ (M the feature dim, K the value dim). Everything else in the layer, $24TE^2$ FLOPs of
# projections and FFN, stays. So however cheap the attention core, a BERT-base layer can get at
# most $(24TE^2 + 4T^2E)/(24TE^2) = 1 + T/(6E)$ times cheaper: 4/3 at the post's first
# crossover T = 2E = 1536 and 2 at the second, T = 6E = 4608. That is the post's point: the saving
# is small unless sequences run to thousands of tokens.
#
# Below: the full-layer FLOP ratio softmax / linear from `layer_flops` (non-causal, matmuls,
# kit convention) for elu+1 features (M = D = 64) and for a 4× wider feature map (M = 4D = 256,
# the FAVOR+ default; values keep K = D). The exact break-even, denominator included, is
# $4HT^2D = 4HTMK + 4HTM \iff T = M(K+1)/D$: 65 and 260, a hair above `crossover_lengths`'s
# $MK/D$ (64 and 256), which leaves the denominator out. The post's own remedy for linear
# attention's low-rank bottleneck is a 4× wider head, M = K = 4D: per head $2n(4d)^2$ against
# $2n^2d$ multiplications, cheaper only for n > 16d = 1024 (`crossover_lengths` with
# `feature_dim=4D`, whose value dim defaults to M).

# %%
bound = 1 + n / (6 * h * d)  # 1 + T/(6E)
linear_terms = layer_mults - mults["scores"] - mults["attention_v"]  # 12nD²
bound_sym = sp.simplify(layer_mults / linear_terms)
assert sp.simplify(bound_sym - bound) == 0


def layer_ratio(T_: int, m: int) -> float:
    soft = layer_flops(LayerShape(E_BERT, H_BERT, F_BERT, T_))["matmul_total"]
    lin = layer_flops(LayerShape(E_BERT, H_BERT, F_BERT, T_, attention="linear",
                                 feature_dim=m))["matmul_total"]
    return soft / lin


for m in (D_BERT, 4 * D_BERT):
    T_even = sp.Rational(m * (D_BERT + 1), D_BERT)  # M(K+1)/D, K = D
    assert T_even.q == 1 and layer_ratio(int(T_even), m) == 1.0  # exact break-even
    assert layer_ratio(int(T_even) - 1, m) < 1 < layer_ratio(int(T_even) + 1, m)
    kit_x = crossover_lengths(E_BERT, H_BERT, F_BERT, feature_dim=m, value_dim=D_BERT)
    assert kit_x["linear_cheaper_than_softmax"] == m * D_BERT / D_BERT  # M·K/D, K = D
    print(f"M = {m:>3}, K = D = {D_BERT}: break-even at T = {T_even}; crossover_lengths "
          f"(no denominator): T > {kit_x['linear_cheaper_than_softmax']:g}")

# Su's remedy for the low-rank bottleneck, a 4x wider head (M = K = 4D), per head
# 2·T·(4D)² vs 2·T²·D multiplications: cheaper only for T > 16D = 1024 at BERT-base.
x_4d = sp.solve(sp.Eq(2 * n**2 * d, 2 * n * (4 * d) ** 2), n)
su_4d = crossover_lengths(E_BERT, H_BERT, F_BERT, feature_dim=4 * D_BERT)
print("Su's 4d linear attention cheaper for n >", x_4d, "=", x_4d[0].subs(bert),
      "| crossover_lengths(feature_dim=4D):", su_4d["linear_cheaper_than_softmax"])
assert x_4d == [16 * d] and su_4d["linear_cheaper_than_softmax"] == 16 * D_BERT == 1024

print(f"\n{'n':>6} {'softmax/linear M=64':>20} {'M=256':>7} {'bound 1+n/6E':>13}")
for T_ in (128, 512, 1024, 1536, 2048, 4608, 8192, 16384):
    r64, r256, b = layer_ratio(T_, 64), layer_ratio(T_, 256), float(bound.subs({n: T_, **bert}))
    print(f"{T_:>6} {r64:>20.3f} {r256:>7.3f} {b:>13.3f}")
    assert r256 < r64 < b  # a real attention core costs something; the bound is never reached
assert float(bound.subs({n: 1536, **bert})) == 4 / 3 and float(bound.subs({n: 4608, **bert})) == 2

grid = np.unique(np.geomspace(32, 32768, 160).astype(int))
fig, ax = plt.subplots(figsize=(7, 4))
ax.semilogx(grid, 1 + grid / (6 * E_BERT), "k--", lw=1, label="bound 1 + n/(6E) (free attention)")
for m in (64, 256):
    ax.semilogx(grid, [layer_ratio(int(t), m) for t in grid], label=f"linear attention, M = {m}")
ax.axhline(1, color="gray", lw=0.8)
for x_, txt, offset in ((1536, "n = 2E = 1536\nSA = FFN", (-95, 10)),
                       (4608, "n = 6E = 4608\nn² = rest", (10, -30))):
    ax.axvline(x_, color="gray", ls=":")
    ax.plot([x_], [layer_ratio(x_, 64)], "o", color="C0", ms=4)
    ax.annotate(f"{txt}\nratio {layer_ratio(x_, 64):.2f}", (x_, layer_ratio(x_, 64)),
                xytext=offset, textcoords="offset points", fontsize=8)
ax.set_xlabel("sequence length n (T)")
ax.set_ylabel("layer FLOPs: softmax / linear")
ax.set_title("BERT-base layer, forward (jaxformer.flops, post 8610)", fontsize=10)
ax.legend(fontsize=8, loc="upper left")
fig.tight_layout()
plt.show()
print(f"total run time {time.perf_counter() - t_start:.1f} s")

# %% [markdown]
# ## 6. Summary
#
# * Per layer, post 8610 counts $12nD^2 + 2n^2D$ multiplications with D = hd (the kit's E),
#   i.e. $24TE^2 + 4T^2E$ FLOPs; sympy derives it from the per-op terms, and
#   `layer_flops(..., convention="su")` (multiplications) and `convention="kit"` (FLOPs) equal
#   it exactly, op by op, from n = 128 to 8192.
# * Attention outweighs the FFN only for n > 2hd = 1536, and the n² term outweighs everything
#   else only for n > 6hd = 4608 at BERT-base (at n = 512 it is 10% of the multiplications);
#   `crossover_lengths` returns exactly these, and its general formulas match sympy at shapes
#   with P ≠ E.
# * XLA's compiled count of a BERT-base layer built from the kit's functions (n = 128, 512,
#   1024) is 1.0003 of the kit's matmul + elementwise lines and 1.0156 of Su's matmul-only
#   count (the excess is mostly exact GELU's erf polynomial, 64 FLOPs per element): leaving the
#   elementwise work out is harmless.
# * Even free attention would make a BERT-base layer only $1 + n/(6E)$ times cheaper: 1.11× at
#   n = 512, 4/3 at 1536, 2× at 4608; a real linear attention gets a little less (1.10, 1.31,
#   1.97 with M = 64), and it breaks even with softmax attention at n = 65 (M = 64), 260
#   (M = 256) or, with Su's 4× wider heads and the post's per-head count, 1024.
# * In the post's words: "BERT之所以慢，主要是因为它真的大，而不是因为Attention的平方复杂度"
#   (BERT is slow mainly because it is big, not because of attention's quadratic cost).
# * Any other shape: `jaxformer flops --d-model E --heads H --ffn F --seq-len T [--attention
#   linear]` prints the per-op table, XLA's count of the kit's own encoder block and the
#   crossovers.
