"""`jaxformer.flops`: the analytic model against post 8610's closed forms and the other
conventions, and against XLA's compiled count (±2%), with loops flagged rather than miscounted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer import functional as F
from jaxformer.attention import softmax_attention
from jaxformer.flops import (LayerShape, crossover_lengths, hlo_while_loops, layer_flops,
                             parse_cost_analysis, xla_flops)
from jaxformer.linear_attention import linear_attention

BAND = 0.02  # goal P3: analytic and measured FLOPs agree within ±2%


def test_crossovers_reproduce_post_8610():
    # BERT-base: E = 768, H = 12, F = 3072 (post 8610: n > 2hd = 1536 and n > 6hd = 4608).
    out = crossover_lengths(768, 12, 3072)
    assert out == {"attention_exceeds_ffn": 1536.0, "quadratic_dominates": 4608.0}
    assert crossover_lengths(768, 12, 3072, feature_dim=64)["linear_cheaper_than_softmax"] == 64.0
    # Su's low-rank fix, a 4x wider head for linear attention: n > 16 d = 1024.
    assert crossover_lengths(768, 12, 3072, feature_dim=256)["linear_cheaper_than_softmax"] == 1024.0
    # At each crossover the two sides of the inequality are equal in the analytic model.
    for n, (lhs, rhs) in ((1536, (("qkv", "out_proj", "scores", "attention_v"), ("ffn",))),
                          (4608, (("scores", "attention_v"), ("qkv", "out_proj", "ffn")))):
        mm = layer_flops(LayerShape(768, 12, 3072, n), convention="su")["matmul"]
        assert sum(mm[o] for o in lhs) == pytest.approx(sum(mm[o] for o in rhs), rel=1e-12)


@pytest.mark.parametrize("n", [128, 512, 4096])
def test_su_convention_is_12nD2_plus_2n2D_multiplications(n):
    d_model = 768
    got = layer_flops(LayerShape(d_model, 12, 4 * d_model, n), convention="su")["matmul_total"]
    assert got == 12 * n * d_model**2 + 2 * n**2 * d_model
    kit = layer_flops(LayerShape(d_model, 12, 4 * d_model, n))["matmul_total"]
    assert kit == 2 * got  # FLOPs are two per multiplication


def test_palm_maxtext_and_causal_halving():
    shape = LayerShape(512, 8, 2048, 1024, batch=2, causal=True)
    kit = layer_flops(shape)["matmul"]
    maxtext = layer_flops(shape, convention="maxtext")["matmul"]
    skip = layer_flops(LayerShape(512, 8, 2048, 1024, batch=2, causal=True, causal_skip=True))["matmul"]
    full_attn = 2 * 2 * 8 * 1024**2 * 64 * 2
    assert kit["scores"] + kit["attention_v"] == full_attn  # XLA's kernel does not skip
    assert maxtext["scores"] + maxtext["attention_v"] == full_attn / 2
    assert skip["scores"] + skip["attention_v"] == full_attn / 2
    palm = layer_flops(shape, convention="palm", training=True)["matmul_total"]
    n_params = 4 * 512 * 512 + 2 * 512 * 2048
    assert palm == 2 * 1024 * (6 * n_params + 12 * 8 * 64 * 1024)  # 6N + 12 L H Q T per token
    assert layer_flops(shape, training=True)["matmul_total"] == 3 * sum(kit.values())
    elem = layer_flops(shape)["elementwise_total"]
    assert layer_flops(shape, training=True)["elementwise_total"] == 2 * elem
    with pytest.raises(ValueError, match="convention must be one of"):
        layer_flops(shape, convention="flash")
    with pytest.raises(ValueError, match="LayerShape.d_model=100 is not divisible by heads=12"):
        LayerShape(100, 12, 400, 8)


def test_parse_cost_analysis_every_form():
    assert parse_cost_analysis({"flops": 12.0}) == 12.0
    assert parse_cost_analysis([{"flops": 7.0, "bytes accessed": 1.0}]) == 7.0  # older JAX
    assert parse_cost_analysis(None) is None
    assert parse_cost_analysis([]) is None
    assert parse_cost_analysis({"flops": -1.0}) is None  # some GPU backends
    assert parse_cost_analysis({"bytes accessed": 3.0}) is None


def _loss(y):
    # Quadratic, so the backward pass needs y itself: with a loss linear in y (a plain sum) XLA
    # drops the last forward matmul as dead code and "training" counts 2.5x, not 3x.
    return 0.5 * jnp.sum(y * y)


def _within(measured, analytic):
    assert measured.reliable, measured.reason
    assert abs(measured.flops / analytic - 1) <= BAND, (measured.flops, analytic)
    return measured.flops / analytic


def test_xla_matches_matmul():
    a, b = jnp.ones((96, 200)), jnp.ones((200, 56))
    _within(xla_flops(jnp.matmul, a, b), 2 * 96 * 200 * 56)


@pytest.mark.parametrize("training", [False, True])
def test_xla_matches_softmax_attention(training):
    b, t, h, d = 2, 128, 4, 64
    q, k, v = jax.random.normal(jax.random.key(0), (3, b, t, h, d))
    shape = LayerShape(h * d, h, 4 * h * d, t, batch=b)
    lines = layer_flops(shape, training=training)
    want = lines["matmul"]["scores"] + lines["matmul"]["attention_v"] + lines["elementwise"]["softmax"]
    fn = lambda q, k, v: softmax_attention(q, k, v)  # noqa: E731
    if training:
        fn = jax.grad(lambda q, k, v: _loss(softmax_attention(q, k, v)), argnums=(0, 1, 2))
    _within(xla_flops(fn, q, k, v), want)


@pytest.mark.parametrize("training", [False, True])
def test_xla_matches_ffn(training):
    t, e, f = 256, 128, 512
    x = jax.random.normal(jax.random.key(1), (1, t, e))
    w1, w2 = jnp.ones((e, f)) * 0.01, jnp.ones((f, e)) * 0.01
    b1, b2 = jnp.zeros((f,)), jnp.zeros((e,))
    lines = layer_flops(LayerShape(e, 4, f, t, activation="gelu_new"), training=training)
    want = lines["matmul"]["ffn"] + lines["elementwise"]["activation"] + (2 if training else 1) * t * (e + f)

    def ffn(x, w1, b1, w2, b2):
        return F.feed_forward(x, w1, b1, w2, b2, act=F.activation("gelu_new"))

    fn = jax.grad(lambda *a: _loss(ffn(*a)), argnums=(0, 1, 2, 3, 4)) if training else ffn
    _within(xla_flops(fn, x, w1, b1, w2, b2), want)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_xla_matches_a_full_encoder_layer(training, attention):
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Block

    e, h, f, t, b = 256, 4, 1024, 128, 2
    cfg = EncoderConfig(hidden_size=e, num_heads=h, intermediate_size=f, num_layers=1,
                        attention=attention, attention_dropout=0.0, linear_mode="parallel")
    block = Block(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(block)
    x = jax.random.normal(jax.random.key(2), (b, t, e))

    def forward(params, x):
        return nnx.merge(graphdef, params)(x, mask=None, deterministic=True)

    fn = forward
    if training:
        fn = jax.grad(lambda p, x: _loss(forward(p, x)), argnums=(0, 1))
    lines = layer_flops(LayerShape(e, h, f, t, batch=b, attention=attention,
                                   linear_mode="parallel"), training=training)
    ratio = _within(xla_flops(fn, params, x), lines["matmul_total"] + lines["elementwise_total"])
    # The matmuls alone are within the band too, so the check is not carried by the guesses.
    assert abs(xla_flops(fn, params, x).flops / lines["matmul_total"] - 1) <= 0.06, ratio


def test_scan_loops_are_flagged_not_miscounted():
    def f(x, w):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=7)[0]

    cost = xla_flops(f, jnp.ones((4, 32)), jnp.ones((32, 32)))
    assert not cost.reliable and cost.loops and cost.loops[0][1] == 7
    assert "counted once" in cost.reason and "x7" in cost.reason
    # The count is one body's, which is why it must not be used unflagged.
    assert cost.flops < 2 * 2 * 4 * 32 * 32
    q = jnp.ones((1, 256, 2, 16))
    assert not xla_flops(lambda q: linear_attention(q, q, q, causal=True, mode="scan"), q).reliable
    chunked = xla_flops(lambda q: linear_attention(q, q, q, causal=True, mode="chunked"), q)
    assert chunked.reliable, chunked.reason  # prefix sums, no loop
    assert hlo_while_loops("%w = (s32[]) while(%t), body=%b") == (("w", None),)


def test_cli_flops_json_for_bert_base(capsys):
    import json

    from jaxformer.cli import main

    n, d_model = 256, 768
    assert main(["flops", "--d-model", "768", "--heads", "12", "--ffn", "3072", "--seq-len",
                 str(n), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["analytic_flops"] == 2 * (12 * n * d_model**2 + 2 * n**2 * d_model)
    assert out["crossover"] == {"attention_exceeds_ffn": 1536.0, "quadratic_dominates": 4608.0}
    assert out["xla_reliable"] is True
    assert abs(out["xla_flops"] / out["analytic_with_elementwise"] - 1) <= BAND
    # The lowered program's matmuls are exactly the analytic table's (tests/test_hlo_flops.py).
    assert out["hlo_flops"] == out["analytic_flops"] and out["hlo_ratio"] == 1.0
    assert out["hlo_reliable"] is True and out["hlo_note"] == ""
    assert main(["flops", "--d-model", "64", "--heads", "4", "--ffn", "256", "--seq-len", "32",
                 "--attention", "linear", "--no-xla"]) == 0
    text = capsys.readouterr().out
    assert "linear_state" in text and "linear_cheaper_than_softmax: n > 16" in text
    assert "StableHLO matmuls" in text and "(1.0000 of matmul total)" in text
    assert "XLA cost_analysis" not in text  # --no-xla: lowered, not compiled


def test_cli_flops_bad_shape(capsys):
    from jaxformer.cli import main

    assert main(["flops", "--d-model", "100", "--heads", "12", "--ffn", "400", "--seq-len", "8"]) == 2
    assert "--d-model 100 must be divisible by --heads 12" in capsys.readouterr().err
    assert main(["flops", "--d-model", "64", "--heads", "4", "--ffn", "256", "--seq-len", "0"]) == 2
    assert "--seq-len must be >= 1, got 0" in capsys.readouterr().err
