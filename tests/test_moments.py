"""Post 8's second-moment claims at init, measured with `moment_report`, and μP's coordinate
check (`coord_check`).

Theory (kexue.fm/archives/8620 and `jaxformer.residual`) and what each test asserts, 12 blocks
(``DEPTH``; they also hold at 24, which triples the fixture's time), width 64, Xavier-normal
kernels (for the square E×E kernels that is LeCun's Var = 1/m):

* ReZero (α = 0): the network is the identity, so every forward and backward moment is that of
  the embeddings' output (1, a LayerNorm) and of the probe gradient (1): within 10% (exactly).
* DeepNorm: ``LN(α x + G)`` keeps the forward moment at 1 and, with α = (2N)^{1/4} and β-scaled
  branches, passes the gradient down almost unchanged: within 10% of 1 at every layer.
* Pre-LN: the stream is *not* renormalised; Su's ``Var(x + F) = Var(x) + Var(F)`` says its moment
  grows by what each block adds (his 2025 comment: RMS √(t+1) for unit branches). The test
  checks that additivity within 10% per block, the growth itself, and that the final norm
  brings the output back to 1.
* Post-LN: forward moment 1 by construction, but the gradient reaching early layers is damped
  (each ``LN(x + F)`` divides the identity path by ~√2): the test shows the drift, ≥ 3× between
  the top and the bottom, where DeepNorm's stays within 10%.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxformer.models import Encoder, EncoderConfig
from jaxformer.models.config import RESIDUAL_SCHEMES
from jaxformer.models.lm import MaskedLM
from jaxformer.train.diagnostics import coord_check, moment_report, plot_coord_check, plot_moments
from jaxformer.train.lm import make_mlm_loss
from jaxformer.train.optim import mup_lr_multipliers, scale_updates, standard_promotion

# XLA's optimisation passes dominate these tests' CPU compile time (conftest.fast_compile);
# the quantities checked do not depend on them.
pytestmark = pytest.mark.usefixtures("fast_compile")

DEPTH = 12
SCHEMES = RESIDUAL_SCHEMES


def deep_cfg(**kw):
    base = dict(vocab_size=211, hidden_size=64, num_heads=4, intermediate_size=256,
                num_layers=DEPTH, max_position_embeddings=64, hidden_dropout=0.0,
                attention_dropout=0.0, weight_init="xavier_normal", use_pooler=False)
    return EncoderConfig(**{**base, **kw})


def batch(b=8, t=32, pad=0):
    ids = jax.random.randint(jax.random.key(7), (b, t), 5, 211, dtype=jnp.int32)
    mask = jnp.ones((b, t), jnp.int32)
    if pad:
        mask = mask.at[:, t - pad:].set(0)
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def reports():
    return {name: moment_report(Encoder(deep_cfg(**kw), rngs=nnx.Rngs(0)), batch())
            for name, kw in SCHEMES.items()}


def within(values, target, rel):
    values = np.asarray(values)
    return np.all(np.abs(values - target) <= rel * target), values


@pytest.mark.parametrize("name", ["rezero", "rezero_ramp", "deepnorm"])
def test_forward_and_gradient_moments_stay_at_one(reports, name):
    rep = reports[name]
    ok, v = within(rep.forward, 1.0, 0.10)
    assert ok, f"{name} forward moments {v}"
    ok, v = within(rep.grad, 1.0, 0.10)
    assert ok, f"{name} gradient moments {v}"
    assert rep.output == pytest.approx(1.0, rel=0.10)


def test_pre_ln_stream_adds_branch_moments_and_final_norm_restores_one(reports):
    rep = reports["pre_ln"]
    # Var(x + F) = Var(x) + Var(F) per block; the cross term 2E[x·F] is zero in expectation
    # but one batch of 256 tokens leaves it at up to ~13% of a block's sum (measured), so per
    # block 20%, and over all the blocks, where the cross terms average out, 10%.
    predicted = rep.forward[:-1] + rep.update
    np.testing.assert_allclose(rep.forward[1:], predicted, rtol=0.20)
    total = rep.forward[0] + rep.update.sum()
    assert rep.forward[-1] == pytest.approx(total, rel=0.10)
    assert rep.forward[-1] > 5 * rep.forward[0]       # grows with depth, as Su's comment says
    assert rep.output == pytest.approx(1.0, rel=0.10)


def test_post_ln_gradient_drifts_where_deepnorm_does_not(reports):
    post, deep = reports["post_ln"].grad, reports["deepnorm"].grad
    assert post[-1] == pytest.approx(1.0, rel=1e-5)   # ∂ℓ/∂h_L = r: no norm above the top block
    lower = post[: DEPTH // 2]
    assert lower.max() < post[-1] / 3, f"Post-LN gradient moments, bottom half: {lower}"
    assert deep.min() > 0.9 and deep.max() < 1.1


def test_report_matches_a_direct_computation():
    """forward[l] is the masked mean square of `Encoder(...).hidden_states[l]`; for a Pre-LN
    model grad[L] is the vjp of the final norm at h_L against the probe."""
    cfg = deep_cfg(norm="pre", num_layers=3)
    model = Encoder(cfg, rngs=nnx.Rngs(1))
    data = batch(pad=5)
    key = jax.random.key(3)
    rep = moment_report(model, data, key=key)
    out = model(data["input_ids"], attention_mask=data["attention_mask"], deterministic=True)
    w = np.asarray(data["attention_mask"], np.float64)[..., None]
    want = [float((np.asarray(h, np.float64) ** 2 * w).sum() / (w.sum() * 64))
            for h in out.hidden_states]
    np.testing.assert_allclose(rep.forward, want, rtol=1e-5)
    probe = jax.random.normal(key, (8, 32, 64), jnp.float32)
    probe = probe * data["attention_mask"][..., None].astype(jnp.float32)
    _, vjp = jax.vjp(model.final_norm, out.hidden_states[-1])
    (g,) = vjp(probe)
    g64, p64 = np.asarray(g, np.float64), np.asarray(probe, np.float64)
    expected = (g64 ** 2 * w).sum() / (p64 ** 2 * w).sum()
    assert rep.grad[-1] == pytest.approx(expected, rel=1e-4)


def test_moment_report_accepts_lm_and_refuses_bad_input():
    lm = MaskedLM(Encoder(deep_cfg(num_layers=2), rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    rep = moment_report(lm, batch())
    assert rep.forward.shape == (3,) and rep.grad.shape == (3,) and rep.update.shape == (2,)
    with pytest.raises(TypeError, match="model must be an Encoder or have an .encoder"):
        moment_report(object(), batch())
    with pytest.raises(ValueError, match="must hold 'input_ids'"):
        moment_report(lm, {"ids": batch()["input_ids"]})
    with pytest.raises(ValueError, match=r"must be \[B, T\], got shape \(32,\)"):
        moment_report(lm, {"input_ids": batch()["input_ids"][0]})


def test_plot_moments_writes_a_png(reports, tmp_path):
    path = plot_moments(reports, tmp_path / "moments.png", title=f"{DEPTH} blocks")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- why QKᵀ/√d (post 8) ---------------------------------------------------------------------

def logits_and_probs(scale_kind, d=64, heads=4, t=64):
    """Attention logits of a fresh SelfAttention (LeCun init) on unit-moment inputs."""
    cfg = EncoderConfig.tiny(hidden_size=heads * d, num_heads=heads, intermediate_size=64,
                             num_layers=1, attention_scale=scale_kind, weight_init="lecun_normal",
                             hidden_dropout=0.0, attention_dropout=0.0)
    attn = Encoder(cfg, rngs=nnx.Rngs(0)).blocks[0].attention
    x = jax.random.normal(jax.random.key(1), (8, t, heads * d), jnp.float32)
    q = attn.query(x).reshape(8, t, heads, d)
    k = attn.key(x).reshape(8, t, heads, d)
    logits = jnp.einsum("bthd,bshd->bhts", q, k) * jnp.float32(cfg.logit_scale)
    return np.asarray(logits, np.float64), np.asarray(jax.nn.softmax(logits, axis=-1))


@pytest.mark.parametrize("kind, target", [("sqrt", 1.0), ("t5", 1.0), ("none", 64.0)])
def test_logit_variance_is_one_with_the_scale_or_the_t5_fold_and_d_without(kind, target):
    # 8·4·64·64 = 131k logits, but one draw of Wq, Wk per head: the variance of q·k over x is
    # |Wq Wkᵀ|_F² summed, which fluctuates by ~1/√(heads·d) ≈ 6% around its mean; 20% is ~3σ.
    logits, _ = logits_and_probs(kind)
    assert np.var(logits) == pytest.approx(target, rel=0.20)


def test_without_the_scale_softmax_is_nearly_one_hot():
    """Post 8's bug at d = 64: logits with std √d = 8 span ±24 and the softmax collapses.

    Over T = 64 keys the mean max probability is 0.78 and the median 0.84 (iid Gaussian logits
    of std 8 give 0.79; the issue's "> 0.9" holds only for T <= 4 keys), against < 0.2 with the
    scale; the mean entropy falls from ~3.7 nats (ln 64 = 4.16) to under 0.7.
    """
    _, bug = logits_and_probs("none")
    _, ok = logits_and_probs("sqrt")
    top_bug, top_ok = bug.max(-1), ok.max(-1)
    assert top_bug.mean() > 0.75 and np.median(top_bug) > 0.8
    assert top_ok.mean() < 0.2
    entropy = lambda p: float(np.mean(-np.sum(p * np.log(np.maximum(p, 1e-30)), -1)))  # noqa: E731
    assert entropy(bug) < 0.7 < 3.0 < entropy(ok)
    _, short = logits_and_probs("none", t=4)
    assert short.max(-1).mean() > 0.9


# --- μP's coordinate check --------------------------------------------------------------------

def _coord(parametrization, widths=(32, 64, 128), steps=4):
    vocab = 200
    data = {"input_ids": jax.random.randint(jax.random.key(1), (16, 32), 5, vocab),
            "attention_mask": jnp.ones((16, 32), jnp.int32)}
    mup = parametrization == "mup"

    def make(width):
        cfg = EncoderConfig(vocab_size=vocab, hidden_size=width, num_layers=2, num_heads=4,
                            intermediate_size=4 * width, max_position_embeddings=32,
                            type_vocab_size=0, hidden_dropout=0.0, attention_dropout=0.0,
                            use_pooler=False, norm="pre", weight_init="lecun_normal",
                            **(dict(parametrization="mup", mup_base_width=32) if mup else {}))
        return MaskedLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))

    def tx(model):
        parts = [optax.adam(1e-2)]
        if mup:
            mult = mup_lr_multipliers(nnx.state(model, nnx.Param),
                                      model.encoder.config.width_mult)
            parts.append(scale_updates(mult))
        return standard_promotion(optax.chain(*parts))

    return coord_check(make, widths, batch=data, steps=steps, key=jax.random.key(0),
                       loss_fn=make_mlm_loss(mask_id=4, vocab_size=vocab, special_ids=(2, 3)),
                       make_tx=tx)


@pytest.fixture(scope="module")
def coords():
    return {"standard": _coord("standard"), "mup": _coord("mup")}


def _slope(res, layer, step=-1):
    """d log mean|x| / d log width, least squares over the widths."""
    c = res.layers.index(layer)
    return float(np.polyfit(np.log(res.widths), np.log(res.l1[:, step, c]), 1)[0])


def test_coord_check_shapes(coords):
    res = coords["mup"]
    assert res.widths == (32, 64, 128)
    assert res.layers == ("embed", "block_0", "block_1", "logits")
    assert res.l1.shape == (3, 5, 4) and np.isfinite(res.l1).all()


def test_mup_activations_stay_flat_in_width_where_standard_ones_grow(coords):
    """After 4 Adam steps at lr 1e-2: under SP the last block's mean |h| grows like
    width^0.6 (measured); under μP (hidden lr / width_mult, logits √D_base/D, readout
    1/width_mult) its slope is within ±0.3 of 0. At init (step 0) both are flat."""
    for name in ("standard", "mup"):
        assert abs(_slope(coords[name], "block_1", step=0)) < 0.1
    assert _slope(coords["standard"], "block_1") > 0.4
    assert abs(_slope(coords["mup"], "block_1")) < 0.3
    assert abs(_slope(coords["mup"], "block_0")) < 0.3


def test_coord_check_plot_and_errors(coords, tmp_path):
    path = plot_coord_check(coords, tmp_path / "coord.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    args = dict(batch={}, loss_fn=make_mlm_loss(mask_id=4, vocab_size=8, special_ids=()),
                make_tx=lambda model: optax.sgd(0.1), key=jax.random.key(0))
    with pytest.raises(ValueError, match="at least 2 widths"):
        coord_check(lambda w: nnx.Linear(w, w, rngs=nnx.Rngs(0)), (32,), **args)
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        coord_check(lambda w: nnx.Linear(w, w, rngs=nnx.Rngs(0)), (32, 64), steps=0, **args)
    assert math.isfinite(_slope(coords["standard"], "logits"))
