"""`jaxformer.random_bits` (the counter hash behind dropout masks) and `functional.dropout`.

References are independent: fmix32 is recomputed with Python integers from MurmurHash3's
published constants; keep rates are checked against the binomial distribution (5 standard
deviations, so a correct generator fails with probability < 1e-6 per check); uniformity with a
chi-square test from scipy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from jaxformer import functional as F
from jaxformer.random_bits import MAX_ELEMENTS, fmix32, hash_bits, keep_threshold

MASK32 = 0xFFFFFFFF


def fmix32_reference(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    return h ^ (h >> 16)


def hash_reference(key_words: list[int], index: int) -> int:
    h = fmix32_reference(index ^ key_words[0])
    for w in key_words[1:]:
        h = fmix32_reference((h + w) & MASK32)
    return h


def test_fmix32_matches_python_integers():
    xs = np.array([0, 1, 2, 0xDEADBEEF, MASK32, 12345678], np.uint32)
    got = np.asarray(fmix32(jnp.asarray(xs)))
    assert [int(v) for v in got] == [fmix32_reference(int(x)) for x in xs]


def test_hash_bits_is_the_documented_hash_of_key_and_index():
    key = jax.random.key(7)
    words = [int(w) for w in np.asarray(jax.random.key_data(key))]
    got = np.asarray(hash_bits(key, (3, 5)))
    assert got.dtype == np.uint32 and got.shape == (3, 5)
    want = np.array([hash_reference(words, i) for i in range(15)], np.uint64).reshape(3, 5)
    np.testing.assert_array_equal(got.astype(np.uint64), want)
    # Raw uint32 key data (jax.random.PRNGKey) is the same key.
    np.testing.assert_array_equal(np.asarray(hash_bits(jax.random.PRNGKey(7), (3, 5))), got)


def test_bits_are_uniform_and_a_permutation_for_one_key():
    bits = np.asarray(hash_bits(jax.random.key(0), (1 << 16,)))
    assert len(np.unique(bits)) == bits.size  # fmix32 is a bijection: no repeats within a key
    top = (bits >> 24).astype(np.int64)  # 256 bins
    counts = np.bincount(top, minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    low = (bits & 0xFF).astype(np.int64)  # the low byte too
    assert stats.chisquare(np.bincount(low, minlength=256)).pvalue > 1e-4
    u = bits / 2.0**32
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(u.size)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rate=st.sampled_from([0.01, 0.1, 0.25, 0.5, 0.9]))
def test_keep_rate_is_binomial(seed, rate):
    n = 1 << 14
    x = jnp.ones((n,), jnp.float32)
    y = np.asarray(F.dropout(x, rate, key=jax.random.key(seed), deterministic=False))
    kept = int(np.count_nonzero(y))
    p = 1 - rate
    assert abs(kept - n * p) <= 5 * np.sqrt(n * p * (1 - p)), (kept, n * p)
    # Survivors are scaled by 1/(1-rate): inverted dropout keeps E[y] = x.
    np.testing.assert_allclose(y[y != 0], np.float32(1) / np.float32(p), rtol=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), step=st.integers(0, 10_000))
def test_masks_of_folded_keys_are_independent(seed, step):
    n, rate = 1 << 14, 0.5
    root = jax.random.key(seed)
    a = np.asarray(F.dropout(jnp.ones((n,)), rate, key=jax.random.fold_in(root, step),
                             deterministic=False)) != 0
    b = np.asarray(F.dropout(jnp.ones((n,)), rate, key=jax.random.fold_in(root, step + 1),
                             deterministic=False)) != 0
    agree = int(np.count_nonzero(a == b))  # independent masks agree with probability 1/2
    assert abs(agree - n / 2) <= 5 * np.sqrt(n / 4)


def test_dropout_rngs_and_their_errors():
    x = jnp.ones((256, 256))
    key = jax.random.key(3)
    for rng in ("hash", "threefry"):
        y = F.dropout(x, 0.2, key=key, deterministic=False, rng=rng)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(
            F.dropout(x, 0.2, key=key, deterministic=False, rng=rng)))  # a pure function of key
        assert abs(float(jnp.mean(y != 0)) - 0.8) < 0.01
    with pytest.raises(ValueError, match=r"rng must be one of \('hash', 'threefry'\), got 'philox'"):
        F.dropout(x, 0.2, key=key, deterministic=False, rng="philox")
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        hash_bits(jnp.zeros((2,), jnp.float32), (4,))


def test_threshold_and_size_limit():
    assert int(keep_threshold(0.0)) == 0
    assert int(keep_threshold(0.5)) == 1 << 31
    assert int(keep_threshold(1.0)) == MAX_ELEMENTS - 1
    # Checked at trace time from the shape alone: nothing of this size is allocated.
    with pytest.raises(ValueError, match=r"at most 2\^32 .* got shape \(65536, 65537\)"):
        jax.eval_shape(lambda k: hash_bits(k, (1 << 16, (1 << 16) + 1)), jax.random.key(0))
