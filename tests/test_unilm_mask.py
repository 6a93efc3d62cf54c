"""UniLM's seq2seq mask: equal to explicit loops over (i, j) on random layouts with padding, never
an all-False row, and, through the encoder's attention plug-in point, prefix-LM causality.

Exactness: a masked key gets exactly zero attention weight (its score is finfo.min, whose exp
underflows to 0), so outputs that must not depend on a token are compared bit for bit; a padded
row against the same row unpadded (different shapes, so a different summation) to 1e-6.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxformer import Encoder, EncoderConfig
from jaxformer.models.attention_kernels import attention_path
from jaxformer.unilm import unilm_mask

pytestmark = pytest.mark.usefixtures("fast_compile")

# ------------------------------------------------------------------------ loop references


def loop_unilm(segment_ids, attention_mask):
    """UniLM's definition written out, for rows laid out source then target (padding anywhere):
    a real query sees every real source key, and a real target key only when the query is a
    target at or after it; a padding query sees itself only."""
    seg, real = np.asarray(segment_ids), np.asarray(attention_mask).astype(bool)
    b, t = seg.shape
    out = np.zeros((b, 1, t, t), bool)
    for r in range(b):
        for i in range(t):
            for j in range(t):
                if not real[r, i]:
                    out[r, 0, i, j] = i == j
                elif not real[r, j]:
                    out[r, 0, i, j] = False
                elif seg[r, j] == 0:
                    out[r, 0, i, j] = True
                else:
                    out[r, 0, i, j] = seg[r, i] == 1 and j <= i
    return out


def loop_blocks(segment_ids):
    """bert4keras' rule by hand: block number c = running count of target tokens; query i sees
    key j when c[j] <= c[i]."""
    seg = np.asarray(segment_ids)
    b, t = seg.shape
    out = np.zeros((b, 1, t, t), bool)
    for r in range(b):
        c, running = [], 0
        for s in seg[r]:
            running += int(s)
            c.append(running)
        for i in range(t):
            for j in range(t):
                out[r, 0, i, j] = c[j] <= c[i]
    return out


@st.composite
def layouts(draw):
    """A batch of 3 rows ``[source | target | padding]`` of length 10 (padding on the right or
    the left, with segment id 0 or 1); one shape, so the kernel compiles once."""
    t = 10
    rows_seg, rows_real = [], []
    for _ in range(3):
        real = draw(st.integers(0, t))
        source = draw(st.integers(0, real))
        seg = [0] * source + [1] * (real - source)
        pad_id = draw(st.sampled_from([0, 1]))
        left = draw(st.booleans())
        pad = [pad_id] * (t - real)
        rows_seg.append(pad + seg if left else seg + pad)
        mask = [1] * real
        rows_real.append([0] * (t - real) + mask if left else mask + [0] * (t - real))
    return np.asarray(rows_seg, np.int32), np.asarray(rows_real, np.int32)


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_equals_the_loop_with_padding(layout):
    seg, real = layout
    got = np.asarray(unilm_mask(jnp.asarray(seg), jnp.asarray(real)))
    np.testing.assert_array_equal(got, loop_unilm(seg, real))
    as_bool = unilm_mask(jnp.asarray(seg, bool), jnp.asarray(real, bool))
    np.testing.assert_array_equal(np.asarray(as_bool), got)
    assert got.any(axis=-1).all(), "a query row with no visible key"
    assert np.diagonal(got[:, 0], axis1=1, axis2=2).all()


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10).flatmap(
    lambda t: st.lists(st.lists(st.integers(0, 1), min_size=t, max_size=t),
                       min_size=2, max_size=2)))
def test_any_segment_pattern_is_bert4keras_block_rule(rows):
    """Any 0/1 pattern (not only source-then-target), T from 1 to 10."""
    seg = np.asarray(rows, np.int32)
    got = np.asarray(unilm_mask(jnp.asarray(seg)))
    np.testing.assert_array_equal(got, loop_blocks(seg))
    # bool segment ids are the same ids
    np.testing.assert_array_equal(np.asarray(unilm_mask(jnp.asarray(seg, bool))), got)


def test_all_source_is_bidirectional_and_all_target_is_causal():
    t = 6
    full = np.asarray(unilm_mask(jnp.zeros((1, t), jnp.int32)))
    causal = np.asarray(unilm_mask(jnp.ones((1, t), jnp.int32)))
    np.testing.assert_array_equal(full, np.ones((1, 1, t, t), bool))
    np.testing.assert_array_equal(causal, np.tril(np.ones((t, t), bool))[None, None])


def test_a_worked_row():
    # [CLS] s s [SEP] | t t [SEP] | pad: c = 0 0 0 0 1 2 3 (3 for the pad, removed by the mask)
    seg = jnp.asarray([[0, 0, 0, 0, 1, 1, 1, 0]], jnp.int32)
    real = jnp.asarray([[1, 1, 1, 1, 1, 1, 1, 0]], jnp.int32)
    expected = np.array([
        [1, 1, 1, 1, 0, 0, 0, 0],   # source queries: the source only
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0],   # first target token: source + itself
        [1, 1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 0],   # last target token: never the padding key
        [0, 0, 0, 0, 0, 0, 0, 1],   # padding query: itself only
    ], bool)
    np.testing.assert_array_equal(np.asarray(unilm_mask(seg, real))[0, 0], expected)


def test_jit_equals_eager():
    seg = jnp.asarray([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], jnp.int32)
    real = jnp.asarray([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], jnp.int32)
    np.testing.assert_array_equal(np.asarray(jax.jit(unilm_mask)(seg, real)),
                                  np.asarray(unilm_mask(seg, real)))


def test_bad_segment_values():
    with pytest.raises(ValueError, match=re.escape(
            "segment_ids must hold 0 (source) and 1 (target) only, got values [0, 2]")):
        unilm_mask(jnp.asarray([[0, 2, 2]], jnp.int32))


# ------------------------------------------------------------------------ through the encoder

T = 12
# Row 0: 5 source, 5 target, 2 padding; row 1: 3 source, 9 target.
SEG = np.array([[0] * 5 + [1] * 5 + [0] * 2, [0] * 3 + [1] * 9], np.int32)
REAL = np.array([[1] * 10 + [0] * 2, [1] * 12], np.int32)


def _encoder(**overrides):
    cfg = EncoderConfig.tiny(**overrides)
    return cfg, Encoder(cfg, rngs=nnx.Rngs(params=0))


def _ids(seed=0):
    return np.random.default_rng(seed).integers(5, 128, SEG.shape).astype(np.int32)


def _forward(model, ids):
    mask = unilm_mask(jnp.asarray(SEG), jnp.asarray(REAL))
    out = model(jnp.asarray(ids), attention_mask=mask, token_type_ids=jnp.asarray(SEG),
                deterministic=True)
    return np.asarray(out.last_hidden_state)


@pytest.mark.parametrize("overrides", [{}, {"attention_impl": "fused"}, {"scan_layers": True}],
                         ids=["xla", "fused", "scan"])
def test_prefix_lm_causality(overrides):
    _, model = _encoder(**overrides)
    ids = _ids()
    base = _forward(model, ids)

    # A later target token changes: source and earlier target positions keep their outputs.
    k = 7                                    # row 0's third target token
    later = ids.copy()
    later[0, k] = (later[0, k] + 1 - 5) % 123 + 5
    out = _forward(model, later)
    np.testing.assert_array_equal(out[0, :k], base[0, :k])
    assert (np.abs(out[0, k:10] - base[0, k:10]).max(axis=-1) > 1e-6).all()
    np.testing.assert_array_equal(out[0, 10:], base[0, 10:])   # padding sees itself only
    np.testing.assert_array_equal(out[1], base[1])             # the other row

    # A source token changes: every real position of its row changes.
    src = ids.copy()
    src[0, 2] = (src[0, 2] + 1 - 5) % 123 + 5
    out = _forward(model, src)
    assert (np.abs(out[0, :10] - base[0, :10]).max(axis=-1) > 1e-6).all()
    np.testing.assert_array_equal(out[0, 10:], base[0, 10:])


def test_padding_is_invisible():
    """A padded row's real positions equal the same row without its padding."""
    _, model = _encoder()
    ids = _ids()
    padded = _forward(model, ids)[0, :10]
    short = model(jnp.asarray(ids[:1, :10]), token_type_ids=jnp.asarray(SEG[:1, :10]),
                  attention_mask=unilm_mask(jnp.asarray(SEG[:1, :10])), deterministic=True)
    np.testing.assert_allclose(padded, np.asarray(short.last_hidden_state)[0], atol=1e-6, rtol=0)


def test_all_source_mask_equals_the_padding_mask_at_real_tokens():
    """All-zero segment ids with padding: the encoder's usual [B, T] path at every real token."""
    _, model = _encoder()
    ids, real = jnp.asarray(_ids()), jnp.asarray(REAL)
    full = model(ids, attention_mask=unilm_mask(jnp.zeros_like(ids), real), deterministic=True)
    usual = model(ids, attention_mask=real, deterministic=True)
    keep = REAL.astype(bool)
    np.testing.assert_array_equal(np.asarray(full.last_hidden_state)[keep],
                                  np.asarray(usual.last_hidden_state)[keep])


def test_rank3_mask_equals_rank4():
    _, model = _encoder()
    ids = jnp.asarray(_ids())
    mask = unilm_mask(jnp.asarray(SEG), jnp.asarray(REAL))
    a = model(ids, attention_mask=mask, deterministic=True).last_hidden_state
    b = model(ids, attention_mask=mask[:, 0], deterministic=True).last_hidden_state
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_encoder_rejects_bad_full_masks():
    _, model = _encoder()
    ids = jnp.asarray(_ids())
    with pytest.raises(ValueError, match=re.escape(
            "attention_mask has shape (2, 1, 12, 11); expected [B, T] = (2, 12) like input_ids, "
            "or a boolean attention mask [B|1, T, T] or [B|1, 1|H, T, T]")):
        model(ids, attention_mask=jnp.ones((2, 1, T, T - 1), bool), deterministic=True)
    with pytest.raises(TypeError, match=re.escape(
            "a rank-4 attention_mask must be boolean (True = may attend), got dtype float32")):
        model(ids, attention_mask=jnp.zeros((2, 1, T, T), jnp.float32), deterministic=True)


def test_flash_falls_back_for_a_full_mask():
    cfg = EncoderConfig.tiny(attention_impl="flash")
    path = attention_path(cfg, deterministic=False, backend="gpu", mask_shape=(2, 1, T, T))
    assert path.startswith("xla (flash takes key-padding masks")
