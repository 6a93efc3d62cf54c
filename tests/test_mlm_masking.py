"""BERT's masked-LM corruption: exact per-row counts, never a special token, whole words, and the
80/10/10 shares against their closed-form expectations.

Statistical checks use binomial tolerances: 6 standard deviations of the estimated share (a
false failure has probability < 1e-8 per check)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxformer.train.lm import corrupt_selected, select_for_prediction, word_first_index


def _maskable(lengths, t):
    """Rows of [CLS] x... [SEP] pad...: maskable are positions 1..len-2."""
    m = np.zeros((len(lengths), t), bool)
    for i, n in enumerate(lengths):
        m[i, 1:n - 1] = True
    return m


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(2, 40), min_size=1, max_size=6), seed=st.integers(0, 2**16),
       rate=st.sampled_from([0.15, 0.3, 0.5]))
def test_exact_count_and_positions(lengths, seed, rate):
    t = 40
    maskable = _maskable(lengths, t)
    p = math.ceil(rate * t)
    selected, positions = select_for_prediction(jnp.asarray(maskable), key=jax.random.key(seed),
                                                rate=rate, max_predictions=p)
    selected, positions = np.asarray(selected), np.asarray(positions)
    for i, n_tokens in enumerate(lengths):
        n = n_tokens - 2
        want = 0 if n <= 0 else min(max(1, round(rate * n)), p)
        # jnp.round and Python's round both round half to even.
        assert selected[i].sum() == want
        assert not (selected[i] & ~maskable[i]).any()
        picked = np.flatnonzero(selected[i])
        np.testing.assert_array_equal(positions[i, :want], picked)
        assert not selected[i, positions[i, want:]].any()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), data=st.data())
def test_whole_word_selection_takes_whole_words(seed, data):
    t = 32
    n = data.draw(st.integers(4, t))
    maskable = _maskable([n], t)
    starts = np.zeros((1, t), bool)
    starts[0, 0] = True
    starts[0, 1:] = data.draw(st.lists(st.booleans(), min_size=t - 1, max_size=t - 1))
    selected, _ = select_for_prediction(jnp.asarray(maskable), key=jax.random.key(seed),
                                        rate=0.3, max_predictions=t,
                                        word_starts=jnp.asarray(starts))
    selected = np.asarray(selected)[0]
    # Words as the selection must see them: a start flag, or the token after [CLS].
    word = np.asarray(word_first_index(jnp.asarray(starts | ~maskable |
                                                   np.r_[True, ~maskable[0, :-1]][None])))[0]
    for w in np.unique(word[maskable[0]]):
        members = selected[(word == w) & maskable[0]]
        assert members.all() or not members.any()
    assert selected.sum() <= max(1, round(0.3 * (n - 2)))
    assert not (selected & ~maskable[0]).any()


def test_selection_is_uniform_over_positions():
    # 4000 rows of 20 maskable tokens, 3 picked each: every position's share is 3/20.
    rows, t = 4000, 22
    maskable = jnp.asarray(_maskable([t] * rows, t))
    selected, _ = select_for_prediction(maskable, key=jax.random.key(0), rate=0.15,
                                        max_predictions=4)
    share = np.asarray(selected)[:, 1:-1].mean(axis=0)
    sd = math.sqrt(0.15 * 0.85 / rows)
    assert np.abs(share - 0.15).max() < 6 * sd


def test_80_10_10_shares():
    vocab, n = 50, 200_000
    ids = jnp.asarray(np.random.default_rng(0).integers(5, vocab, (1, n)), jnp.int32)
    selected = jnp.ones((1, n), bool)
    out = np.asarray(corrupt_selected(ids, selected, key=jax.random.key(1), mask_id=3,
                                      vocab_size=vocab))[0]
    ids = np.asarray(ids)[0]
    # Closed form: [MASK] 0.8; a random id equals the original w.p. 1/V, so "unchanged" is
    # 0.1 + 0.1/V and "another token" 0.1 (1 - 1/V) (the mask id 3 is never an original id here,
    # but a random draw can hit it: 0.1/V of the tokens become [MASK] that way).
    shares = {"mask": (out == 3).mean(), "same": (out == ids).mean(),
              "other": ((out != 3) & (out != ids)).mean()}
    want = {"mask": 0.8 + 0.1 / vocab, "same": 0.1 + 0.1 / vocab,
            "other": 0.1 * (1 - 2 / vocab)}
    for name, p in want.items():
        assert abs(shares[name] - p) < 6 * math.sqrt(p * (1 - p) / n), (name, shares[name], p)


def test_unselected_tokens_never_change():
    ids = jnp.arange(40, dtype=jnp.int32).reshape(2, 20)
    selected = jnp.zeros((2, 20), bool).at[:, 3].set(True)
    out = np.asarray(corrupt_selected(ids, selected, key=jax.random.key(2), mask_id=0,
                                      vocab_size=40))
    keep = np.ones((2, 20), bool)
    keep[:, 3] = False
    np.testing.assert_array_equal(out[keep], np.asarray(ids)[keep])


def test_bad_arguments():
    m = jnp.ones((1, 8), bool)
    with pytest.raises(ValueError, match=r"rate: expected a float in \(0, 1\), got 1.5"):
        select_for_prediction(m, key=jax.random.key(0), rate=1.5, max_predictions=2)
    with pytest.raises(ValueError, match=r"max_predictions: expected an int in \[1, T=8\], got 9"):
        select_for_prediction(m, key=jax.random.key(0), rate=0.15, max_predictions=9)
    with pytest.raises(ValueError, match="mask_prob, random_prob"):
        corrupt_selected(jnp.zeros((1, 8), jnp.int32), m, key=jax.random.key(0), mask_id=1,
                         vocab_size=9, mask_prob=0.95, random_prob=0.1)
