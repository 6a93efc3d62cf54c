"""`embed_poolings`: several poolings from one encoder pass, length sorting, progress, dtype."""

import jax
import numpy as np
import pytest

SENTENCES = ["a", "", "A man is playing a guitar on the street corner tonight.", "short one",
             "Ein Mann spielt Gitarre.", "猫がいます。猫がいます。", "x y z w v u t s r q p o n m"]


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from jaxformer.io import WordPieceTokenizer

    return WordPieceTokenizer.from_directory(minilm_dir)


def _tiny(tokenizer, **overrides):
    from flax import nnx

    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Encoder

    cfg = EncoderConfig.tiny(vocab_size=tokenizer.vocab_size, hidden_dropout=0.0,
                             attention_dropout=0.0, **overrides)
    return Encoder(cfg, rngs=nnx.Rngs(params=0))


@pytest.fixture(scope="module")
def model(tokenizer):
    return _tiny(tokenizer)


def test_one_encoder_pass_per_batch_for_four_poolings(model, tokenizer, monkeypatch):
    from jaxformer.models.encoder import Encoder
    from jaxformer.models.sentence import embed_poolings

    calls = []
    real = Encoder.__call__

    def counting(self, *args, **kwargs):
        calls.append(args[0].shape)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Encoder, "__call__", counting)
    with jax.disable_jit():  # eager: every batch runs the Python, so calls counts forward passes
        got = embed_poolings(model, tokenizer, SENTENCES[:3], batch_size=2)
    assert list(got) == ["cls", "mean", "first-last-avg", "pooler"]
    assert len(calls) == 2  # ceil(3 / 2) batches, not 4 poolings x 2
    calls.clear()
    embed_poolings(model, tokenizer, SENTENCES[:5], batch_size=8)  # a [5, 16] batch: a new shape
    assert len(calls) == 1  # jitted: one trace, whose one encoder call feeds all four poolings


def test_each_pooling_equals_its_single_pooling_run(model, tokenizer):
    from jaxformer.models.sentence import embed_poolings, embed_sentences

    many = embed_poolings(model, tokenizer, SENTENCES, poolings=("mean", "cls", "pooler", "first-last-avg"),
                          normalize=True, batch_size=8)
    assert list(many) == ["mean", "cls", "pooler", "first-last-avg"]
    for name, vectors in many.items():
        assert vectors.dtype == np.float32 and vectors.shape == (len(SENTENCES), 32)
        one = embed_sentences(model, tokenizer, SENTENCES, pooling=name, normalize=True, batch_size=8)
        np.testing.assert_allclose(vectors, one, atol=1e-6, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_sorting_by_length_restores_input_order(model, tokenizer):
    from jaxformer.models.sentence import embed_poolings, length_order

    order = length_order(SENTENCES)
    assert [len(SENTENCES[i]) for i in order] == sorted(map(len, SENTENCES), reverse=True)
    one_by_one = embed_poolings(model, tokenizer, SENTENCES, batch_size=1, sort_by_length=False)
    unsorted = embed_poolings(model, tokenizer, SENTENCES, batch_size=3, sort_by_length=False)
    ordered = embed_poolings(model, tokenizer, SENTENCES, batch_size=3)
    for name in ordered:
        np.testing.assert_allclose(ordered[name], one_by_one[name], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(unsorted[name], one_by_one[name], atol=1e-5, rtol=1e-5)
    # Distinct rows, so a permutation could not pass the comparison above by accident.
    assert len({tuple(np.round(r, 4)) for r in ordered["mean"]}) == len(SENTENCES)


def test_progress_counts_sentences(model, tokenizer, monkeypatch):
    import tqdm.auto

    from jaxformer.models.sentence import embed_sentences

    bars = []

    class Bar:
        def __init__(self, *, total, **kwargs):
            self.total, self.kwargs, self.updates, self.closed = total, kwargs, [], False
            bars.append(self)

        def update(self, n):
            self.updates.append(n)

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    embed_sentences(model, tokenizer, SENTENCES, batch_size=3, progress=True)
    (bar,) = bars
    assert bar.total == 7 and bar.updates == [3, 3, 1] and bar.closed
    assert bar.kwargs["unit"] == "sentence"
    embed_sentences(model, tokenizer, SENTENCES, batch_size=3)
    assert len(bars) == 1  # progress=False makes no bar


def test_bfloat16_compute_gives_float32_output_close_to_float32(model, tokenizer):
    from jaxformer.models.sentence import embed_sentences, with_compute_dtype

    fp32 = embed_sentences(model, tokenizer, SENTENCES, normalize=True)
    bf16 = embed_sentences(model, tokenizer, SENTENCES, normalize=True, dtype="bfloat16")
    assert bf16.dtype == np.float32
    assert not np.array_equal(bf16, fp32)  # it did run in bfloat16
    np.testing.assert_allclose(bf16, fp32, atol=5e-2)
    assert model.config.dtype == "float32"  # the model itself is unchanged
    assert with_compute_dtype(model, "float32") is model


def test_pooler_is_skipped_by_default_and_refused_when_asked_without_one(tokenizer):
    from jaxformer.models.sentence import available_poolings, embed_poolings, embed_sentences

    bare = _tiny(tokenizer, use_pooler=False)
    assert available_poolings(bare) == ("cls", "mean", "first-last-avg")
    assert list(embed_poolings(bare, tokenizer, ["hi"])) == ["cls", "mean", "first-last-avg"]
    with pytest.raises(ValueError, match="pooling 'pooler' needs a model with a pooler"):
        embed_poolings(bare, tokenizer, ["hi"], poolings=("mean", "pooler"))
    with pytest.raises(ValueError, match="pooling 'pooler'"):
        embed_sentences(bare, tokenizer, ["hi"], pooling="pooler")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(max_length=0), ValueError, r"max_length must be in \[2, max_position_embeddings=64\], got 0"),
        (dict(max_length=1), ValueError, r"got 1"),
        (dict(max_length=65), ValueError, r"got 65"),
        (dict(batch_size=0), ValueError, r"batch_size must be an int >= 1, got 0"),
        (dict(poolings="mean"), TypeError, r"poolings: expected a sequence of names"),
        (dict(poolings=()), ValueError, r"at least one"),
        (dict(poolings=("max",)), ValueError, r"pooling must be one of"),
        (dict(poolings=("cls", "cls")), ValueError, r"each name at most once"),
    ],
)
def test_bad_arguments(model, tokenizer, kwargs, error, match):
    from jaxformer.models.sentence import embed_poolings

    with pytest.raises(error, match=match):
        embed_poolings(model, tokenizer, ["hi"], **kwargs)


def test_no_sentences_gives_empty_arrays(model, tokenizer):
    from jaxformer.models.sentence import embed_poolings

    got = embed_poolings(model, tokenizer, [], poolings=("cls", "mean"))
    assert {k: v.shape for k, v in got.items()} == {"cls": (0, 32), "mean": (0, 32)}
