"""The precision policy: `EncoderConfig.dtype` / `param_dtype` / `matmul_precision`, the named
policies, and the train step's fp32 optimiser state and master weights.

References: the fp32 model (a bf16 model is its fp32 twin rounded, since parameters are drawn in
fp32 and then stored), and the lowered StableHLO for what precision each matmul asks for.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.attention import softmax_attention
from jaxformer.functional import dense, feed_forward, resolve_precision
from jaxformer.linear_attention import linear_attention
from jaxformer.models import PRECISION_POLICIES, Encoder, EncoderConfig, SequenceClassifier
from jaxformer.models.lm import MaskedLM
from jaxformer.train.finetune import classifier_loss
from jaxformer.train.optim import adamw
from jaxformer.train.step import init_train_state, make_train_step

BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)
POLICY_DTYPES = {"fp32": (F32, F32), "bf16": (BF16, BF16), "mixed_bf16": (BF16, F32)}


def _batch(cfg: EncoderConfig, b: int = 4, t: int = 16, seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    mask = np.ones((b, t), np.int32)
    mask[1, t // 2:] = 0  # one padded row
    return {"input_ids": jnp.asarray(rng.integers(1, cfg.vocab_size, (b, t)), jnp.int32),
            "attention_mask": jnp.asarray(mask),
            "labels": jnp.asarray(rng.integers(0, 2, (b,)), jnp.int32)}


def _classifier(cfg: EncoderConfig) -> SequenceClassifier:
    return SequenceClassifier(Encoder(cfg, rngs=nnx.Rngs(0)), 2, rngs=nnx.Rngs(1))


def _param_dtypes(model: nnx.Module) -> set[jnp.dtype]:
    return {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}


def test_policies_are_the_documented_pairs():
    assert set(PRECISION_POLICIES) == {"fp32", "bf16", "mixed_bf16"}
    for name, (compute, storage) in POLICY_DTYPES.items():
        cfg = EncoderConfig.tiny().with_precision(name)
        assert (jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)) == (compute, storage)
        assert cfg.precision_policy == name
    assert EncoderConfig.tiny(dtype="float16", param_dtype="float32").precision_policy == "custom"


@pytest.mark.parametrize("field, value", [("dtype", "float64"), ("param_dtype", "int8"),
                                          ("matmul_precision", "tf32"), ("attention_impl", "cuda"),
                                          ("remat", "all")])
def test_bad_policy_fields_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"EncoderConfig.{field} must be one of .* got '{value}'"):
        EncoderConfig.tiny(**{field: value})


def test_unknown_policy_name_is_refused():
    with pytest.raises(ValueError, match=r"precision policy must be one of \['fp32', 'bf16', "
                                         r"'mixed_bf16'\], got 'fp16'"):
        EncoderConfig.tiny().with_precision("fp16")


@pytest.mark.parametrize("policy", list(POLICY_DTYPES))
def test_parameter_and_output_dtypes(policy):
    compute, storage = POLICY_DTYPES[policy]
    cfg = EncoderConfig.tiny(norm="pre", residual="rezero").with_precision(policy)
    model = _classifier(cfg)
    assert _param_dtypes(model) == {storage}
    batch = _batch(cfg)
    out = model.encoder(batch["input_ids"], attention_mask=batch["attention_mask"],
                        deterministic=True)
    assert out.last_hidden_state.dtype == compute
    assert all(h.dtype == compute for h in out.hidden_states)
    assert out.pooled.dtype == compute
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"], deterministic=True)
    assert logits.dtype == compute
    loss, _ = classifier_loss(model, batch, key=None, deterministic=True)
    assert loss.dtype == F32  # the loss is taken in fp32 whatever the compute dtype


def test_mlm_head_follows_the_policy():
    cfg = EncoderConfig.tiny().with_precision("mixed_bf16")
    model = MaskedLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    assert _param_dtypes(model) == {F32}
    logits = model(_batch(cfg)["input_ids"], deterministic=True)
    assert logits.dtype == BF16


def test_bf16_parameters_are_the_fp32_ones_rounded():
    fp32 = nnx.state(_classifier(EncoderConfig.tiny()), nnx.Param)
    bf16 = nnx.state(_classifier(EncoderConfig.tiny().with_precision("bf16")), nnx.Param)
    for a, b in zip(jax.tree.leaves(fp32), jax.tree.leaves(bf16), strict=True):
        np.testing.assert_array_equal(np.asarray(a.astype(BF16)), np.asarray(b))


@pytest.mark.parametrize("policy", ["bf16", "mixed_bf16"])
def test_bf16_loss_is_close_to_fp32(policy):
    """Same weights (rounded for bf16), same batch: the forward loss agrees to bf16 accuracy.
    Tolerance: 2e-2 absolute on a loss of ~0.69 (bf16 has 8 mantissa bits, ~4e-3 relative per
    rounding; a 2-layer model compounds a few of them)."""
    base = EncoderConfig.tiny(hidden_dropout=0.0, attention_dropout=0.0)
    batch = _batch(base)
    ref, _ = classifier_loss(_classifier(base), batch, key=None, deterministic=True)
    low, _ = classifier_loss(_classifier(base.with_precision(policy)), batch, key=None,
                             deterministic=True)
    assert abs(float(low) - float(ref)) < 2e-2
    assert float(low) != float(ref)  # it did run in bf16


@pytest.mark.parametrize("policy", list(POLICY_DTYPES))
def test_train_step_keeps_fp32_optimiser_state(policy):
    compute, storage = POLICY_DTYPES[policy]
    cfg = EncoderConfig.tiny().with_precision(policy)
    tx = adamw(1e-3, total_steps=10, warmup_steps=0)
    graphdef, state = init_train_state(_classifier(cfg), tx)
    step = make_train_step(graphdef, tx, classifier_loss)
    losses = []
    for _ in range(3):
        state, metrics = step(state, _batch(cfg), key=jax.random.key(0))
        losses.append(float(metrics["loss"]))
        assert metrics["loss"].dtype == F32
    float_leaves = [x for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert float_leaves and {x.dtype for x in float_leaves} == {F32}
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {storage}
    assert all(np.isfinite(losses))


def test_mixed_keeps_updates_that_pure_bf16_loses():
    """The fp32 master weights of mixed_bf16 keep updates far below a bf16 ulp of the weight;
    pure bf16 rounds them away. Adam's first update is ~lr = 1e-5 per weight. A bf16 weight keeps
    it only where its half-ulp 2^(e-8) is below 1e-5, i.e. |w| < ~2^-8; for w ~ N(0, 0.02²)
    that is P(|z| < 0.2) ~ 16% of the weights. In fp32 every weight keeps it."""
    changed = {}
    for policy in ("bf16", "mixed_bf16"):
        cfg = EncoderConfig.tiny(hidden_dropout=0.0, attention_dropout=0.0).with_precision(policy)
        tx = adamw(1e-5, total_steps=10, warmup_steps=0)
        graphdef, state = init_train_state(_classifier(cfg), tx)
        before = state.params["encoder"]["blocks"][0]["ffn"]["intermediate"]["kernel"][...]
        before = np.asarray(jnp.copy(before).astype(F32))
        state, _ = make_train_step(graphdef, tx, classifier_loss)(state, _batch(cfg),
                                                                   key=jax.random.key(0))
        after = np.asarray(state.params["encoder"]["blocks"][0]["ffn"]["intermediate"]["kernel"][...]
                           .astype(F32))
        changed[policy] = float(np.mean(after != before))
    assert changed["mixed_bf16"] > 0.95
    assert changed["bf16"] < 0.3


# --- matmul precision: what each matmul asks the compiler for ---------------------------------

def _dot_precisions(fn, *args) -> list[str]:
    text = jax.jit(fn).lower(*args).as_text()
    dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
    assert dots, "no dot_general in the lowered function"
    return [m.group(1) if (m := re.search(r"precision = \[(\w+), \w+\]", line)) else "DEFAULT"
            for line in dots]


@pytest.mark.parametrize("setting, expected", [("highest", "HIGHEST"), ("high", "HIGH")])
def test_encoder_matmuls_carry_the_configured_precision(setting, expected):
    cfg = EncoderConfig.tiny(matmul_precision=setting)
    graphdef, state = nnx.split(Encoder(cfg, rngs=nnx.Rngs(0)))
    batch = _batch(cfg)

    def forward(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, attention_mask=mask, deterministic=True).pooled

    with jax.default_matmul_precision("default"):  # an explicit setting wins over jax's default
        precisions = _dot_precisions(forward, state, batch["input_ids"], batch["attention_mask"])
    # 2 layers x (q, k, v, out, scores, attention.V, ffn in, ffn out) + pooler = 17
    assert len(precisions) == 17
    assert set(precisions) == {expected}


def test_default_precision_defers_to_jax_config():
    cfg = EncoderConfig.tiny()  # matmul_precision="default"
    graphdef, state = nnx.split(Encoder(cfg, rngs=nnx.Rngs(0)))
    ids = _batch(cfg)["input_ids"]

    def forward(state, ids):
        return nnx.merge(graphdef, state)(ids, deterministic=True).pooled

    with jax.default_matmul_precision("highest"):
        assert set(_dot_precisions(forward, state, ids)) == {"HIGHEST"}
    with jax.default_matmul_precision("default"):
        assert set(_dot_precisions(forward, state, ids)) == {"DEFAULT"}


def test_kernels_take_an_explicit_precision():
    key = jax.random.key(3)
    q = jax.random.normal(key, (1, 8, 2, 4), jnp.float32)
    x = jax.random.normal(key, (3, 4), jnp.float32)
    w = jax.random.normal(key, (4, 4), jnp.float32)
    b = jnp.zeros((4,), jnp.float32)
    cases = {
        "softmax_attention": lambda q: softmax_attention(q, q, q, precision="highest"),
        "linear_attention": lambda q: linear_attention(q, q, q, causal=True, mode="chunked",
                                                       chunk_size=4, precision="highest"),
        "dense": lambda x: dense(x, w, b, precision="highest"),
        "feed_forward": lambda x: feed_forward(x, w, b, w, b, act=jax.nn.relu,
                                               precision="highest"),
    }
    with jax.default_matmul_precision("default"):
        for name, fn in cases.items():
            arg = q if "attention" in name else x
            assert set(_dot_precisions(fn, arg)) == {"HIGHEST"}, name


def test_resolve_precision_names_the_argument():
    assert resolve_precision("default") is None
    assert resolve_precision("highest") == jax.lax.Precision.HIGHEST
    with pytest.raises(ValueError, match=r"precision must be one of \['default', 'high', "
                                         r"'highest'\].*got 'tf32'"):
        resolve_precision("tf32")
