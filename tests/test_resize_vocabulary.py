"""WoBERT's initialisation (post 7758): a char model moved to a word vocabulary keeps every
weight, copies the rows of tokens it knows, and starts each new word's embedding and output
bias as the mean of its characters' — checked against a direct per-token float64 computation."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.lm import MaskedLM
from jaxformer.models.modules import named_leaves
from jaxformer.models.vocab_transfer import resize_vocabulary

OLD = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "今", "天", "气", "公", "园", "好"]
NEW = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "今天", "天气", "公园", "好", "今",
       "园子", "ζ"]


def _split(word):
    return [c if c in OLD else "[UNK]" for c in word]


@pytest.fixture
def char_model():
    cfg = EncoderConfig.tiny(vocab_size=len(OLD), use_pooler=False)
    model = MaskedLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    bias = np.random.default_rng(0).normal(size=len(OLD)).astype(np.float32)
    model.head.bias[...] = jnp.asarray(bias)
    return model


def test_rows_are_copies_or_means_of_chars(char_model):
    word_model, report = resize_vocabulary(char_model, OLD, NEW, split=_split)
    emb = np.asarray(char_model.encoder.embed.word.embedding[...], np.float64)
    bias = np.asarray(char_model.head.bias[...], np.float64)
    new_emb = np.asarray(word_model.encoder.embed.word.embedding[...], np.float64)
    new_bias = np.asarray(word_model.head.bias[...], np.float64)
    assert new_emb.shape == (len(NEW), emb.shape[1]) and new_bias.shape == (len(NEW),)
    for i, token in enumerate(NEW):
        rows = [OLD.index(token)] if token in OLD else [OLD.index(p) for p in _split(token)]
        np.testing.assert_allclose(new_emb[i], emb[rows].mean(axis=0), atol=1e-6, rtol=0)
        np.testing.assert_allclose(new_bias[i], bias[rows].mean(), atol=1e-6, rtol=0)
    # 今天, 天气, 公园 and 园子 (园 + [UNK] for 子) are averaged; ζ is all-[UNK] (a mean of one).
    assert report == {"copied": 7, "averaged": 5, "unk": 0}
    assert word_model.encoder.config.vocab_size == len(NEW)


def test_every_other_weight_is_kept(char_model):
    word_model, _ = resize_vocabulary(char_model, OLD, NEW, split=_split)
    old = named_leaves(nnx.state(char_model, nnx.Param))
    new = named_leaves(nnx.state(word_model, nnx.Param))
    assert set(old) == set(new)
    for name in old:
        if name in ("encoder.embed.word.embedding", "head.bias"):
            continue
        np.testing.assert_array_equal(np.asarray(new[name]), np.asarray(old[name]), err_msg=name)


def test_known_tokens_give_the_same_logits(char_model):
    # A text of tokens both vocabularies share reads the same: same hidden states, and the
    # logits of shared tokens match column for column.
    word_model, _ = resize_vocabulary(char_model, OLD, NEW, split=_split)
    text = ["[CLS]", "今", "好", "[SEP]"]
    old_ids = jnp.asarray([[OLD.index(t) for t in text]], jnp.int32)
    new_ids = jnp.asarray([[NEW.index(t) for t in text]], jnp.int32)
    a = np.asarray(char_model(old_ids, deterministic=True))
    b = np.asarray(word_model(new_ids, deterministic=True))
    shared = [t for t in NEW if t in OLD]
    np.testing.assert_allclose(b[..., [NEW.index(t) for t in shared]],
                               a[..., [OLD.index(t) for t in shared]], atol=1e-5, rtol=0)


def test_bad_input(char_model):
    with pytest.raises(ValueError, match=r"old_vocab: expected 11 tokens .* got 3"):
        resize_vocabulary(char_model, OLD[:3], NEW, split=_split)
    with pytest.raises(TypeError, match="model: expected an Encoder or a MaskedLM, got int"):
        resize_vocabulary(3, OLD, NEW, split=_split)
