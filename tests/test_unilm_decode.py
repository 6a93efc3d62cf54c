"""Cached UniLM decoding (`jaxformer.models.unilm_decode`) on tiny random models.

Every reference is a full recompute: the unpadded row ``[CLS] source [SEP] target[:t]`` through
the whole `MaskedLM` under `unilm_mask`, the logits read at its last position. fp32 at
``highest`` matmul precision (conftest); the cached logits agree to 1e-5 (measured: < 1e-7).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.lm import MaskedLM
from jaxformer.models.unilm_decode import (DecodeConfig, check_decodable, decode, decode_jit,
                                           extend, prefill)
from jaxformer.unilm import unilm_mask

# XLA's optimisation passes dominate these tests' CPU compile time (conftest.fast_compile);
# the quantities checked do not depend on them.
pytestmark = pytest.mark.usefixtures("fast_compile")

EOS, PAD = 2, 0
SOURCES = np.array([[1, 5, 6, 7, 8, 2], [1, 9, 2, 0, 0, 0], [1, 10, 11, 2, 0, 0]], np.int32)
MASK = (np.arange(6)[None] < np.array([[6], [3], [4]])).astype(np.int32)


def _model(seed: int = 0, **overrides) -> MaskedLM:
    cfg = EncoderConfig.tiny(hidden_dropout=0.0, attention_dropout=0.0, **overrides)
    rngs = nnx.Rngs(seed)
    return MaskedLM(Encoder(cfg, rngs=rngs), rngs=rngs)


def _full_logits(model: MaskedLM, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Logits ``[V]`` of the token after ``target`` by a full forward pass of the unpadded row."""
    seq = np.concatenate([source, target]).astype(np.int32)[None]
    types = np.concatenate([np.zeros(len(source)), np.ones(len(target))]).astype(np.int32)[None]
    out = model(jnp.asarray(seq), attention_mask=unilm_mask(jnp.asarray(types)),
                token_type_ids=jnp.asarray(types), deterministic=True)
    return np.asarray(out[0, -1], np.float64)


def _log_prob(model: MaskedLM, source: np.ndarray, target: np.ndarray) -> float:
    """``log P(target | source)`` by full recomputes, float64 log-softmax."""
    total = 0.0
    for t, token in enumerate(target):
        z = _full_logits(model, source, target[:t])
        total += z[token] - (z.max() + np.log(np.exp(z - z.max()).sum()))
    return total


def _hypothesis(tokens: np.ndarray, length: int) -> np.ndarray:
    return np.asarray(tokens[:length])


@pytest.mark.parametrize("overrides", [{}, {"norm": "pre", "scan_layers": True},
                                       {"position": "rope"}],
                         ids=["post-absolute", "pre-absolute-scan", "post-rope"])
def test_cached_step_equals_full_recompute(overrides):
    model = _model(**overrides)
    target = np.array([[11, 12, 13, 14], [21, 22, 23, 24], [31, 32, 33, 34]], np.int32)
    graphdef, state = nnx.split(model)
    step = jax.jit(lambda st, c, tok, t: extend(nnx.merge(graphdef, st), c, tok, t))
    logits, cache = prefill(model, jnp.asarray(SOURCES), jnp.asarray(MASK), max_length=4)
    for t in range(4):
        # Every step of row 0, every row at the last step: each step reads all earlier slots,
        # so a bad write shows by then (and the recompute is what costs test time).
        for b in (range(3) if t == 3 else (0,)):
            ref = _full_logits(model, SOURCES[b, :MASK[b].sum()], target[b, :t])
            np.testing.assert_allclose(np.asarray(logits[b], np.float64), ref, atol=1e-5,
                                       err_msg=f"step {t}, row {b}")
        logits, cache = step(state, cache, jnp.asarray(target[:, t]), jnp.int32(t))


def test_cached_step_costs_a_fraction_of_a_re_encode():
    """XLA's FLOP count: one cached step over C = 48 slots is far cheaper than the encoder pass
    over 48 tokens it replaces (O(C) against O(C²) attention and C tokens through the FFNs)."""
    model = _model()
    graphdef, state = nnx.split(model)
    ids = jnp.ones((1, 40), jnp.int32)
    _, cache = prefill(model, ids, jnp.ones((1, 40), jnp.int32), max_length=8)

    def flops(fn, *args):
        return jax.jit(fn).lower(*args).compile().cost_analysis()["flops"]

    step = flops(lambda st, c: extend(nnx.merge(graphdef, st), c, jnp.ones((1,), jnp.int32),
                                      jnp.int32(3))[0], state, cache)
    full = flops(lambda st, x: nnx.merge(graphdef, st).encoder(x, deterministic=True)
                 .last_hidden_state, state, jnp.ones((1, 48), jnp.int32))
    assert step < full / 10, (step, full)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_one_equals_greedy(alpha):
    model = _model()
    args = (jnp.asarray(SOURCES), jnp.asarray(MASK))
    cfg = DecodeConfig(max_length=6, eos_id=EOS, beam_size=1, length_penalty=alpha)
    greedy = decode(model, *args, config=cfg)
    beam = decode(model, *args, config=cfg, greedy=False)
    np.testing.assert_array_equal(greedy.tokens, beam.tokens)
    np.testing.assert_allclose(greedy.scores, beam.scores, rtol=1e-6)
    np.testing.assert_array_equal(greedy.lengths, beam.lengths)


@pytest.mark.parametrize("alpha", [0.0, 0.7, 1.0])
def test_beams_sorted_and_scores_match_recompute(alpha):
    model = _model(seed=1)
    # EOS made likely enough that beams finish at different steps.
    model.head.bias[...] = model.head.bias[...].at[EOS].set(2.5)
    cfg = DecodeConfig(max_length=5, eos_id=EOS, beam_size=4, length_penalty=alpha)
    out = decode(model, jnp.asarray(SOURCES), jnp.asarray(MASK), config=cfg)
    assert out.tokens.shape == (3, 4, 5) and out.scores.shape == (3, 4)
    scores = np.asarray(out.scores)
    assert np.all(np.diff(scores, axis=1) <= 0), scores
    assert np.asarray(out.finished).any() and np.unique(np.asarray(out.lengths)).size > 1
    for b, j in itertools.product(range(3), range(4)):
        n = int(out.lengths[b, j])
        hyp = np.asarray(out.tokens[b, j])
        ref = _log_prob(model, SOURCES[b, :MASK[b].sum()], hyp[:n])
        np.testing.assert_allclose(float(out.log_probs[b, j]), ref, atol=1e-4)
        np.testing.assert_allclose(scores[b, j], ref / n ** alpha, atol=1e-4)
        # EOS handling: EOS only as the last token, padding after it.
        assert EOS not in hyp[:n - 1].tolist()
        assert bool(out.finished[b, j]) == (hyp[n - 1] == EOS)
        assert (hyp[n:] == PAD).all()


def test_forced_eos_stops_and_pads():
    model = _model()
    model.head.bias[...] = model.head.bias[...].at[EOS].set(100.0)
    for k in (1, 3):
        out = decode(model, jnp.asarray(SOURCES), jnp.asarray(MASK),
                     config=DecodeConfig(max_length=6, eos_id=EOS, pad_id=PAD, beam_size=k))
        best = np.asarray(out.tokens[:, 0])
        np.testing.assert_array_equal(best, np.tile([EOS, PAD, PAD, PAD, PAD, PAD], (3, 1)))
        np.testing.assert_array_equal(out.lengths[:, 0], 1)
        assert np.asarray(out.finished).all()  # every beam ended, so the loop stopped early
        if k == 3:  # the runners-up: one token, then the forced EOS
            np.testing.assert_array_equal(out.lengths[:, 1:], 2)
            np.testing.assert_array_equal(np.asarray(out.tokens)[:, 1:, 1], EOS)
            assert (np.asarray(out.tokens)[:, :, 2:] == PAD).all()


def test_compiled_once_per_shape(monkeypatch):
    import jaxformer.models.unilm_decode as ud

    # The search body runs once per trace of `decode_jit` (counted in Python: the C++ cache's
    # `_cache_size()` can read 0 after other tests in one process).
    traces = []
    search = ud._beam_search

    def counted(*args, **kwargs):
        traces.append(1)
        return search(*args, **kwargs)

    monkeypatch.setattr(ud, "_beam_search", counted)
    model = _model()
    cfg = DecodeConfig(max_length=3, eos_id=EOS, beam_size=2)
    ids = np.array([[1, 4, 5, 6, 7, 8, 9, 2]] * 2, np.int32)  # a shape no other test uses
    decode(model, ids, config=cfg)
    assert len(traces) == 1
    decode(model, ids[:, ::-1].copy(), config=cfg)  # new values, same shapes: no retrace
    decode(model, ids, config=cfg)
    assert len(traces) == 1
    decode(model, ids[:, :7], config=cfg)  # a new shape bucket compiles once more
    assert len(traces) == 2


def test_beam_covering_every_sequence_finds_the_best():
    """V = 5, T = 3: K = V³ beams hold every hypothesis (85 of them), so the search must return
    all of them, each with its exact score, best first."""
    v, t_max, alpha = 5, 3, 0.8
    model = _model(seed=3, vocab_size=v)
    source = np.array([1, 3, 4, 2], np.int32)
    cfg = DecodeConfig(max_length=t_max, eos_id=EOS, beam_size=v ** t_max, length_penalty=alpha)
    out = decode(model, source[None], config=cfg)
    others = [i for i in range(v) if i != EOS]
    hyps = [(EOS,)] + [(a, EOS) for a in others] + [(a, b, c) for a in others for b in others
                                                     for c in range(v)]
    ref = sorted(((_log_prob(model, source, np.array(h)) / len(h) ** alpha, h) for h in hyps),
                 reverse=True)
    found = [(float(s), tuple(np.asarray(tok)[:n].tolist()))
             for s, tok, n in zip(out.scores[0], out.tokens[0], out.lengths[0])
             if np.isfinite(s)]
    assert len(found) == len(hyps) == 85
    assert found[0][1] == ref[0][1]
    np.testing.assert_allclose([s for s, _ in found], [s for s, _ in ref], atol=1e-4)
    assert sorted(h for _, h in found) == sorted(hyps)


@pytest.mark.parametrize("overrides, field", [
    ({"attention": "linear"}, "attention='linear'"),
    ({"position": "rope_mixed"}, "position='rope_mixed'"),
    ({"type_vocab_size": 1}, "type_vocab_size=1"),
])
def test_unsupported_configs_are_refused(overrides, field):
    with pytest.raises(ValueError, match=field):
        check_decodable(EncoderConfig.tiny(**overrides))


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_length=0, eos_id=2), "max_length"),
    (dict(max_length=4, eos_id=2, beam_size=0), "beam_size"),
    (dict(max_length=4, eos_id=2, length_penalty=-1.0), "length_penalty"),
])
def test_decode_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DecodeConfig(**kwargs)


def test_suppressed_ids_never_appear():
    model = _model()
    banned = (1, 3, 4, 5)
    model.head.bias[...] = model.head.bias[...].at[jnp.asarray(banned)].set(50.0)
    for k in (1, 3):
        cfg = DecodeConfig(max_length=5, eos_id=EOS, beam_size=k, suppress_ids=banned)
        out = decode(model, jnp.asarray(SOURCES), jnp.asarray(MASK), config=cfg)
        assert not np.isin(np.asarray(out.tokens), banned).any()
        assert np.isfinite(np.asarray(out.scores)).all()


def test_bad_inputs_are_named():
    model = _model()
    cfg = DecodeConfig(max_length=4, eos_id=EOS)
    with pytest.raises(ValueError, match="right-padded"):
        decode(model, SOURCES, MASK[:, ::-1].copy(), config=cfg)
    with pytest.raises(ValueError, match="attention_mask: expected shape"):
        decode(model, SOURCES, MASK[:, :4], config=cfg)
    with pytest.raises(ValueError, match="eos_id"):
        decode(model, SOURCES, config=DecodeConfig(max_length=4, eos_id=500))
    with pytest.raises(ValueError, match="suppress_ids"):
        DecodeConfig(max_length=4, eos_id=EOS, suppress_ids=(EOS,))


def test_source_too_long_for_position_table():
    model = _model()
    with pytest.raises(ValueError, match="max_position_embeddings"):
        decode(model, np.ones((1, 60), np.int32), config=DecodeConfig(max_length=8, eos_id=EOS))
