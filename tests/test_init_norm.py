"""Normalization, residual and parametrization variants of `EncoderConfig` (post 8).

References are independent of the code under test: closed forms (DeepNet's α/β table, T5's
fold, NTK's multiplier), float64 NumPy, HF's `T5LayerNorm` (an RMSNorm), and the identity of the
function computed by two parametrizations. Tolerances: fp32 forward passes of a 2-6 layer,
width-64 encoder agree to ~1e-6 relative; 1e-5 absolute covers it with margin.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers.models.t5.modeling_t5 import T5LayerNorm

from jaxformer import functional as F
from jaxformer.initializers import scale_leaves
from jaxformer.models import Encoder, EncoderConfig
from jaxformer.models.lm import MaskedLM
from jaxformer.models.parametrization import ResidualGate, residual_gates, set_residual_gates
from jaxformer.residual import deepnorm_constants, rezero_ramp
from jaxformer.train import adamw, init_train_state, make_train_step
from jaxformer.train.lm import make_mlm_loss
from jaxformer.train.optim import mup_lr_multipliers

ATOL = 1e-5


def tiny(**kw):
    base = dict(vocab_size=97, hidden_size=64, num_heads=4, intermediate_size=128,
                num_layers=3, hidden_dropout=0.0, attention_dropout=0.0)
    return EncoderConfig.tiny(**{**base, **kw})


def ids(b=2, t=12, seed=0, vocab=97):
    return jax.random.randint(jax.random.key(seed), (b, t), 1, vocab, dtype=jnp.int32)


def run(cfg, seed=0, x=None):
    model = Encoder(cfg, rngs=nnx.Rngs(seed))
    return model, model(ids() if x is None else x, deterministic=True)


# --- DeepNorm constants (DeepNet, Wang et al. 2022, Fig. 2) ----------------------------------

@pytest.mark.parametrize("n, alpha, beta", [
    # (2N)^(1/4), (8N)^(-1/4), evaluated to 10 digits with 30-digit decimal arithmetic.
    (6, 1.8612097182, 0.3799178428),
    (12, 2.2133638394, 0.3194715521),
    (24, 2.6321480259, 0.2686424830),
    (48, 3.1301691601, 0.2259005009),
])
def test_deepnorm_encoder_constants_pinned(n, alpha, beta):
    c = deepnorm_constants(encoder_layers=n)
    assert c["encoder_alpha"] == pytest.approx(alpha, abs=1e-8)
    assert c["encoder_beta"] == pytest.approx(beta, abs=1e-8)
    assert EncoderConfig.tiny(num_layers=n, residual="deepnorm").deepnorm_alpha_beta == (
        pytest.approx(alpha, abs=1e-8), pytest.approx(beta, abs=1e-8))


def test_deepnorm_decoder_and_encoder_decoder_constants_pinned():
    dec = deepnorm_constants(decoder_layers=12)
    assert dec["decoder_alpha"] == pytest.approx(24 ** 0.25)
    assert dec["decoder_beta"] == pytest.approx(96 ** -0.25)
    assert math.isnan(dec["encoder_alpha"])
    # N = M = 6: (N^4 M)^(1/16) = 6^(5/16) = 1.7505409144...; paper: α_enc = 0.81·that,
    # β_enc = 0.87/that; decoder α = (3M)^(1/4), β = (12M)^(-1/4).
    both = deepnorm_constants(encoder_layers=6, decoder_layers=6)
    assert both["encoder_alpha"] == pytest.approx(0.81 * 1.7505409144, abs=1e-6)
    assert both["encoder_beta"] == pytest.approx(0.87 / 1.7505409144, abs=1e-6)
    assert both["decoder_alpha"] == pytest.approx(18 ** 0.25)
    assert both["decoder_beta"] == pytest.approx(72 ** -0.25)
    with pytest.raises(ValueError, match="encoder_layers > 0 or decoder_layers > 0"):
        deepnorm_constants()


def test_deepnorm_block_is_layernorm_of_alpha_x_plus_branch_and_beta_scales_init():
    cfg = tiny(norm="post", residual="deepnorm", weight_init="xavier_normal", num_layers=6)
    alpha, beta = cfg.deepnorm_alpha_beta
    model = Encoder(cfg, rngs=nnx.Rngs(0))
    block = model.blocks[0]
    x = jax.random.normal(jax.random.key(1), (2, 12, 64), jnp.float32)
    y = block(x, mask=None, deterministic=True)
    # Recompose from the block's own sub-modules: LN(α x + Attn(x)), then LN(α h + FFN(h)).
    h = block.attention_norm(alpha * x + block.attention(x, mask=None, deterministic=True))
    want = block.ffn_norm(alpha * h + block.ffn(h))
    np.testing.assert_allclose(np.asarray(y), np.asarray(want), atol=ATOL)
    # Same seed without DeepNorm: q/k kernels identical, value/output/FFN exactly β times.
    plain = Encoder(tiny(norm="post", weight_init="xavier_normal", num_layers=6),
                    rngs=nnx.Rngs(0)).blocks[0]
    for name, factor in (("query", 1.0), ("key", 1.0), ("value", beta), ("output", beta)):
        np.testing.assert_allclose(getattr(block.attention, name).kernel[...],
                                   factor * getattr(plain.attention, name).kernel[...], rtol=1e-6)
    for name in ("intermediate", "output"):
        np.testing.assert_allclose(getattr(block.ffn, name).kernel[...],
                                   beta * getattr(plain.ffn, name).kernel[...], rtol=1e-6)


# --- T5's fold and the missing scale ---------------------------------------------------------

def test_t5_fold_is_the_same_function_at_init():
    """No 1/√D on the logits but q's init divided by √D: identical outputs (q bias is 0).
    LeCun init gives q, k unit-variance entries, so dropping both (post 8's bug) matters."""
    base_model, base = run(tiny(weight_init="lecun_normal"))
    t5_model, t5 = run(tiny(attention_scale="t5", weight_init="lecun_normal"))
    np.testing.assert_allclose(np.asarray(t5.last_hidden_state),
                               np.asarray(base.last_hidden_state), atol=ATOL)
    np.testing.assert_allclose(t5_model.blocks[1].attention.query.kernel[...],
                               base_model.blocks[1].attention.query.kernel[...] / 4.0, rtol=1e-6)
    _, bug = run(tiny(attention_scale="none", weight_init="lecun_normal"))
    assert float(jnp.max(jnp.abs(bug.last_hidden_state - base.last_hidden_state))) > 0.1


def test_logit_scales():
    assert tiny().logit_scale == pytest.approx(1 / 4.0)        # D = 16
    assert tiny(attention_scale="t5").logit_scale == 1.0
    assert tiny(attention_scale="none").logit_scale == 1.0
    mup = tiny(parametrization="mup", weight_init="lecun_normal", mup_base_width=32)
    assert mup.logit_scale == pytest.approx(math.sqrt(8) / 16)  # √D_base / D
    assert tiny(parametrization="mup", weight_init="lecun_normal",
                mup_base_width=64).logit_scale == pytest.approx(1 / 4.0)


# --- NTK and μP parametrizations --------------------------------------------------------------

def test_ntk_equals_standard_with_kernels_divided_by_sqrt_fan_in():
    ntk_model, ntk = run(tiny(parametrization="ntk"))
    kernels = [float(jnp.std(b.attention.query.kernel[...])) for b in ntk_model.blocks]
    assert all(0.9 < s < 1.1 for s in kernels), kernels  # N(0, 1), 4096 draws each
    std_model = Encoder(tiny(), rngs=nnx.Rngs(5))
    params = nnx.state(ntk_model, nnx.Param)

    def fold(name, leaf):
        if not name.endswith(".kernel"):
            return None
        return 1.0 / math.sqrt(leaf.shape[0])  # fan_in of an [in, out] kernel

    nnx.update(std_model, scale_leaves(params, fold))
    out = std_model(ids(), deterministic=True)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state),
                               np.asarray(ntk.last_hidden_state), atol=ATOL)


def test_mup_at_base_width_equals_standard_and_lr_multipliers():
    std_cfg = tiny(weight_init="lecun_normal")
    mup_cfg = tiny(weight_init="lecun_normal", parametrization="mup", mup_base_width=64)
    std_lm = MaskedLM(Encoder(std_cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    mup_lm = MaskedLM(Encoder(mup_cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    np.testing.assert_allclose(np.asarray(mup_lm(ids(), deterministic=True)),
                               np.asarray(std_lm(ids(), deterministic=True)), atol=1e-4)
    wide = tiny(hidden_size=128, weight_init="lecun_normal", parametrization="mup",
                mup_base_width=64)
    assert wide.width_mult == 2.0
    lm = MaskedLM(Encoder(wide, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    assert lm.head.readout_multiplier == 0.5
    mult = {k: v for k, v in
            __import__("jaxformer.pytree", fromlist=["x"]).named_leaves(
                mup_lr_multipliers(nnx.state(lm, nnx.Param), wide.width_mult)).items()}
    assert mult["encoder.blocks.0.attention.query.kernel"] == 0.5
    assert mult["encoder.blocks.2.ffn.output.kernel"] == 0.5
    assert mult["head.transform.kernel"] == 0.5
    assert mult["encoder.embed.word.embedding"] == 1.0
    assert mult["encoder.blocks.0.attention.query.bias"] == 1.0
    assert mult["encoder.blocks.0.attention_norm.scale"] == 1.0


# --- norms --------------------------------------------------------------------------------------

def test_rms_norm_matches_float64_and_hf_t5_layer_norm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 64)) * 3 + 1
    scale = rng.normal(size=(64,))
    got = np.asarray(F.rms_norm(jnp.asarray(x, jnp.float32), jnp.asarray(scale, jnp.float32),
                                eps=1e-6))
    want = x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + 1e-6) * scale
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    hf = T5LayerNorm(64, eps=1e-6)
    with torch.no_grad():
        hf.weight.copy_(torch.tensor(scale, dtype=torch.float32))
        ref = hf(torch.tensor(x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["post", "pre", "none"])
@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_every_norm_variant_runs_and_holds_the_right_parameters(norm, norm_type):
    cfg = tiny(norm=norm, norm_type=norm_type,
               residual="rezero" if norm == "none" else "standard")
    model, out = run(cfg)
    assert out.last_hidden_state.shape == (2, 12, 64)
    assert np.isfinite(np.asarray(out.last_hidden_state)).all()
    names = set(__import__("jaxformer.pytree", fromlist=["x"]).named_leaves(
        nnx.state(model, nnx.Param)))
    assert ("blocks.0.attention_norm.scale" in names) == (norm != "none")
    assert ("blocks.0.attention_norm.bias" in names) == (norm != "none" and norm_type == "layernorm")
    assert ("final_norm.scale" in names) == (norm == "pre")
    assert ("embed.norm.bias" in names) == (norm_type == "layernorm")


# --- ReZero and Su's ramp ----------------------------------------------------------------------

@pytest.mark.parametrize("residual", ["rezero", "rezero_ramp"])
def test_rezero_starts_as_the_identity(residual):
    _, out = run(tiny(norm="none", residual=residual, num_layers=4))
    for h in out.hidden_states[1:]:
        np.testing.assert_array_equal(np.asarray(h), np.asarray(out.hidden_states[0]))


def test_rezero_gate_kinds_and_ramp():
    learned = Encoder(tiny(norm="none", residual="rezero"), rngs=nnx.Rngs(0))
    assert isinstance(learned.blocks[0].attention_gate, nnx.Param)
    ramped = Encoder(tiny(norm="none", residual="rezero_ramp"), rngs=nnx.Rngs(0))
    gate = ramped.blocks[0].attention_gate
    assert isinstance(gate, ResidualGate) and not isinstance(gate, nnx.Param)
    assert "blocks.0.attention_gate" not in str(nnx.state(ramped, nnx.Param))
    # Su: a fixed step up to 1, then frozen.
    np.testing.assert_allclose([float(rezero_ramp(s, ramp_steps=4)) for s in range(7)],
                               [0, 0.25, 0.5, 0.75, 1, 1, 1])
    with pytest.raises(ValueError, match="ramp_steps must be a positive int, got 0"):
        rezero_ramp(1, ramp_steps=0)
    # α = 1 with no norm is a plain residual: x + Attn(x), then + FFN.
    state = set_residual_gates(nnx.state(ramped), 1.0)
    assert [float(g) for g in residual_gates(state)] == [1.0] * 6
    nnx.update(ramped, state)
    block = ramped.blocks[0]
    x = jax.random.normal(jax.random.key(1), (2, 12, 64), jnp.float32)
    h = x + block.attention(x, mask=None, deterministic=True)
    np.testing.assert_allclose(np.asarray(block(x, mask=None, deterministic=True)),
                               np.asarray(h + block.ffn(h)), atol=ATOL)


def test_ramp_gate_is_not_trained_and_learned_gate_is():
    """A train step moves the learned α (a Param) and leaves the ramped one (state) alone."""
    for residual, moves in (("rezero", True), ("rezero_ramp", False)):
        cfg = tiny(norm="none", residual=residual, num_layers=2)
        model = MaskedLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
        tx = adamw(1e-2, total_steps=10)
        graphdef, state = init_train_state(model, tx)
        if residual == "rezero_ramp":
            state = state._replace(rest=set_residual_gates(state.rest, 0.5))
        step = make_train_step(graphdef, tx, make_mlm_loss(mask_id=4, vocab_size=97,
                                                           special_ids=(2, 3)))
        batch = {"input_ids": ids(4, 16), "attention_mask": jnp.ones((4, 16), jnp.int32)}
        state, _ = step(state, batch, key=jax.random.key(0))
        after = nnx.merge(graphdef, state.params, state.rest).encoder.blocks[0].attention_gate[...]
        if moves:
            assert float(after) != 0.0
        else:
            assert float(after) == 0.5


# --- validation and export -----------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(norm="pre", residual="deepnorm"), "residual='deepnorm' is a Post-LN scheme.*got norm='pre'"),
    (dict(parametrization="ntk", weight_init="xavier_normal"), "weight_init must be 'normal', got 'xavier_normal'"),
    (dict(parametrization="mup", weight_init="normal", mup_base_width=32), "width-aware weight_init"),
    (dict(parametrization="mup", weight_init="lecun_normal"), "needs mup_base_width.*got None"),
    (dict(parametrization="mup", weight_init="lecun_normal", mup_base_width=30), "multiple of num_heads=4, got 30"),
    (dict(mup_base_width=32), "used only by parametrization='mup'"),
    (dict(attention_scale="mup"), "attention_scale='mup' needs parametrization='mup'"),
    (dict(attention="linear", attention_scale="t5"), "attention_scale must be 'auto', got 't5'"),
    (dict(norm_type="batchnorm"), r"norm_type must be one of \['layernorm', 'rmsnorm'\], got 'batchnorm'"),
    (dict(residual="highway"), "residual must be one of"),
    (dict(rezero_ramp_steps=0), "rezero_ramp_steps must be a positive int, got 0"),
    (dict(weight_init="orthogonal"), "weight_init must be one of"),
])
def test_bad_configs_are_refused_with_the_value(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


@pytest.mark.parametrize("kw, field", [
    (dict(norm_type="rmsnorm"), "norm_type"),
    (dict(residual="deepnorm"), "residual"),
    (dict(parametrization="ntk"), "parametrization"),
    (dict(attention_scale="t5"), "attention_scale"),
])
def test_variants_without_an_hf_equivalent_refuse_export(kw, field):
    with pytest.raises(ValueError, match=f"EncoderConfig.{field}=.*has no HF BertModel equivalent"):
        tiny(**kw).to_hf_dict()
    tiny(weight_init="xavier_normal").to_hf_dict()  # only the init differs: exports
