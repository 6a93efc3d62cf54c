"""transfer_rows: WoBERT's mean-of-chars initialisation of new word embeddings (post 7758)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxformer.models.vocab_transfer import transfer_rows

OLD = ["[PAD]", "[UNK]", "[CLS]", "公", "园", "散", "步", "我", "们", "##们", "a"]
OLD_VOCAB = {t: i for i, t in enumerate(OLD)}


def _chars(word):
    return list(word)


def _loop(table, vocab, new_tokens, split, unk="[UNK]"):
    """The rule, one token at a time, in float64."""
    rows = []
    for token in new_tokens:
        if token in vocab:
            rows.append(table[vocab[token]].astype(np.float64))
            continue
        ids = [vocab[p] for p in split(token) if p in vocab]
        rows.append(np.mean([table[i].astype(np.float64) for i in ids], axis=0) if ids
                    else table[vocab[unk]].astype(np.float64))
    return np.stack(rows) if rows else np.zeros((0, *table.shape[1:]))


@pytest.mark.parametrize("shape", [(len(OLD), 6), (len(OLD),)], ids=["embedding", "bias"])
def test_matches_loop(shape):
    table = np.random.default_rng(0).normal(size=shape).astype(np.float64)
    new = ["[PAD]", "[UNK]", "[CLS]", "公园", "散步", "我们", "公", "x", "ab", "园公园", "??"]
    got, report = transfer_rows(table, OLD_VOCAB, new, split=_chars)
    assert got.shape == (len(new), *shape[1:]) and got.dtype == np.float64
    np.testing.assert_allclose(got, _loop(table, OLD_VOCAB, new, _chars), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(got[3], (table[3] + table[4]) / 2)
    np.testing.assert_array_equal(got[7], table[1])  # "x": no known piece -> [UNK]
    np.testing.assert_allclose(got[9], (2 * table[4] + table[3]) / 3, rtol=1e-12)  # repeats counted
    assert report == {"copied": 4, "averaged": 5, "unk": 2}


def test_float32_and_wordpiece_split():
    table = np.arange(len(OLD) * 4, dtype=np.float32).reshape(len(OLD), 4)

    def wordpiece(word):  # a char tokenizer's pieces, continuation marks included
        return [word[0]] + ["##" + c for c in word[1:]]

    got, report = transfer_rows(table, OLD_VOCAB, ["我们", "xy"], split=wordpiece)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[0], (table[7] + table[9]) / 2)
    np.testing.assert_array_equal(got[1], table[1])
    assert report == {"copied": 0, "averaged": 1, "unk": 1}


def test_errors():
    table = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"old_vocab: expected ids in \[0, 3\).*got 1 outside"):
        transfer_rows(table, {"a": 0, "b": 5}, ["a"], split=_chars)
    with pytest.raises(ValueError, match=r"unk_token: expected '\[UNK\]' in old_vocab"):
        transfer_rows(table, {"a": 0}, ["zz"], split=_chars)
    got, report = transfer_rows(table, {"a": 0}, [], split=_chars)
    assert got.shape == (0, 2) and report == {"copied": 0, "averaged": 0, "unk": 0}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(alphabet="公园散步我们ax?", min_size=1, max_size=4), max_size=12),
    st.integers(0, 2**31 - 1),
    st.sampled_from([(), (3,), (2, 2)]),
)
def test_property_matches_loop(new_tokens, seed, rest):
    table = np.random.default_rng(seed).normal(size=(len(OLD), *rest))
    got, report = transfer_rows(table, OLD_VOCAB, new_tokens, split=_chars)
    np.testing.assert_allclose(got, _loop(table, OLD_VOCAB, new_tokens, _chars), rtol=1e-12, atol=1e-15)
    assert sum(report.values()) == len(new_tokens)
