"""`Seq2SeqLMTask` and `encode_pairs`: UniLM's layout, a loss checked in float64 against
full-sequence logits under an explicit-loop mask, and the source and padding scoring nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.io import WordPieceTokenizer
from jaxformer.models.config import EncoderConfig
from jaxformer.tasks import Task
from jaxformer.models.unilm_decode import DecodeConfig
from jaxformer.tasks.seq2seq import (Seq2SeqLMTask, encode_pairs, generate_texts,
                                     smoothed_cross_entropy, target_positions)
from jaxformer.train.loop import LoopConfig
from jaxformer.train.optim import adamw

V = 40
CHARS = "我爱自然语言处理今天气很好生成模型"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, CLS, SEP = 0, 2, 3


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> WordPieceTokenizer:
    d = tmp_path_factory.mktemp("zh_vocab")
    (d / "vocab.txt").write_text("\n".join(SPECIALS + list(CHARS)) + "\n", encoding="utf-8")
    return WordPieceTokenizer.from_directory(d)


def _id(ch: str) -> int:
    return len(SPECIALS) + CHARS.index(ch)


def _task(**kw) -> Seq2SeqLMTask:
    cfg = EncoderConfig.tiny(vocab_size=V, use_pooler=False, hidden_dropout=0.0,
                             attention_dropout=0.0)
    return Seq2SeqLMTask(encoder_config=cfg, **kw)


def _data(n: int = 5, width: int = 14, seed: int = 0) -> dict[str, np.ndarray]:
    """Random UniLM rows: [CLS] s [SEP] t [SEP], source 1-5 and target 1-4 tokens, padded."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, width), np.int32)
    types = np.zeros_like(ids)
    real = np.zeros_like(ids)
    for i in range(n):
        s, t = rng.integers(1, 6), rng.integers(1, 5)
        src = [CLS, *rng.integers(5, V, s), SEP]
        tgt = [*rng.integers(5, V, t), SEP]
        ids[i, :len(src) + len(tgt)] = src + tgt
        types[i, len(src):len(src) + len(tgt)] = 1
        real[i, :len(src) + len(tgt)] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": real}


def _loop_mask(types: np.ndarray, real: np.ndarray) -> np.ndarray:
    """UniLM's mask by its definition, one query and key at a time ``[B, 1, T, T]``."""
    b, t = types.shape
    mask = np.zeros((b, 1, t, t), bool)
    for r in range(b):
        for i in range(t):
            for j in range(t):
                if not real[r, i]:
                    mask[r, 0, i, j] = i == j
                elif real[r, j]:
                    # source query: source keys; target query: source + target up to itself
                    mask[r, 0, i, j] = (types[r, j] == 0) if types[r, i] == 0 else (
                        types[r, j] == 0 or j <= i)
    return mask


def _reference_loss(model, data, smoothing: float) -> tuple[float, float, float]:
    """float64 NumPy loss and accuracy over every (t -> t + 1) with a real target token at t + 1."""
    ids, types, real = data["input_ids"], data["token_type_ids"], data["attention_mask"]
    logits = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(_loop_mask(types, real)),
                              token_type_ids=jnp.asarray(types), deterministic=True), np.float64)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    total = correct = count = 0.0
    for r in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if types[r, t + 1] == 1 and real[r, t + 1]:
                y = ids[r, t + 1]
                total += (1 - smoothing) * -logp[r, t, y] + smoothing * -logp[r, t].mean()
                correct += float(np.argmax(logits[r, t]) == y)
                count += 1
    return total / count, correct / count, count


def test_encode_pairs_layout_and_truncation(tokenizer):
    out = encode_pairs(tokenizer, ["我爱自然语言", "今天"], ["处理", "天气很好生成"],
                       max_source=5, max_target=4)
    assert set(out) == {"input_ids", "token_type_ids", "attention_mask"}
    assert all(a.shape == (2, 9) and a.dtype == np.int32 for a in out.values())
    row0 = [CLS, *map(_id, "我爱自"), SEP, *map(_id, "处理"), SEP, PAD]  # source cut to 3
    row1 = [CLS, *map(_id, "今天"), SEP, *map(_id, "天气很"), SEP, PAD]  # target cut to 3 + [SEP]
    np.testing.assert_array_equal(out["input_ids"], [row0, row1])
    np.testing.assert_array_equal(out["token_type_ids"], [[0, 0, 0, 0, 0, 1, 1, 1, 0],
                                                          [0, 0, 0, 0, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(out["attention_mask"], [[1] * 8 + [0], [1] * 8 + [0]])
    longest = encode_pairs(tokenizer, ["我爱自然语言", "今天"], ["处理", "天气很好生成"],
                           max_source=5, max_target=4, padding="longest")
    np.testing.assert_array_equal(longest["input_ids"], out["input_ids"][:, :8])


def test_encode_pairs_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="targets: expected 2"):
        encode_pairs(tokenizer, ["我", "爱"], ["好"], max_source=4, max_target=2)
    with pytest.raises(ValueError, match="max_source: expected an int >= 2"):
        encode_pairs(tokenizer, ["我"], ["好"], max_source=1, max_target=2)
    with pytest.raises(ValueError, match="padding"):
        encode_pairs(tokenizer, ["我"], ["好"], max_source=4, max_target=2, padding="right")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_matches_float64_reference(smoothing):
    task = _task(label_smoothing=smoothing)
    assert isinstance(task, Task)
    model = task.build_model(rngs=nnx.Rngs(0))
    data = _data()
    loss, metrics = task.loss_fn(model, {k: jnp.asarray(v) for k, v in data.items()}, key=None,
                                 deterministic=True)
    ref_loss, ref_acc, count = _reference_loss(model, data, smoothing)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["accuracy"]), ref_acc, atol=1e-6)
    assert float(metrics["target_tokens"]) == count == data["token_type_ids"].sum()


def test_source_and_padding_contribute_nothing():
    task = _task()
    model = task.build_model(rngs=nnx.Rngs(1))
    data = _data(seed=2)

    def loss_of(d, t=task):
        return float(t.loss_fn(model, {k: jnp.asarray(v) for k, v in d.items()}, key=None,
                               deterministic=True)[0])

    base = loss_of(data)
    # Every scored position: a predictor of a real target token, nothing else.
    positions, weights = target_positions(jnp.asarray(data["token_type_ids"]),
                                          jnp.asarray(data["attention_mask"]), num_positions=13)
    nxt = np.take_along_axis(data["token_type_ids"], np.asarray(positions) + 1, axis=1)
    assert (nxt[np.asarray(weights) > 0] == 1).all()
    # Scoring only the first P = 5 positions (the longest `target [SEP]`) changes nothing.
    np.testing.assert_allclose(loss_of(data, _task(max_target=5)), base, rtol=1e-6)
    # Other ids and segment ids on padding, and more padding: the same loss.
    noisy = {k: v.copy() for k, v in data.items()}
    pad = data["attention_mask"] == 0
    noisy["input_ids"][pad] = np.random.default_rng(0).integers(5, V, pad.sum())
    noisy["token_type_ids"][pad] = 1
    np.testing.assert_allclose(loss_of(noisy), base, rtol=1e-5)
    wider = {k: np.pad(v, ((0, 0), (0, 3))) for k, v in data.items()}
    np.testing.assert_allclose(loss_of(wider), base, rtol=1e-5)
    # The gradient of the loss wrt the logits is zero on the source (but its [SEP]) and padding.
    ids, types = jnp.asarray(data["input_ids"]), jnp.asarray(data["token_type_ids"])
    real = jnp.asarray(data["attention_mask"])
    p, w = target_positions(types, real, num_positions=13)
    labels = jnp.take_along_axis(ids, p + 1, axis=1)
    full = jax.random.normal(jax.random.key(0), (5, 14, V))
    grad = jax.grad(lambda z: smoothed_cross_entropy(jnp.take_along_axis(
        z, p[..., None], axis=1), labels, w)[0])(full)
    scored = np.abs(np.asarray(grad)).sum(-1) > 0  # [B, T]
    expect = np.zeros((5, 14), bool)
    expect[:, :-1] = (data["token_type_ids"][:, 1:] == 1) & (data["attention_mask"][:, 1:] == 1)
    np.testing.assert_array_equal(scored, expect)


def test_token_type_ids_reach_the_encoder():
    model = _task().build_model(rngs=nnx.Rngs(0))
    ids = jnp.asarray(_data()["input_ids"])
    plain = model(ids, deterministic=True)
    np.testing.assert_array_equal(model(ids, token_type_ids=jnp.zeros_like(ids),
                                        deterministic=True), plain)
    assert not np.allclose(model(ids, token_type_ids=jnp.ones_like(ids), deterministic=True),
                           plain)


@pytest.mark.parametrize("kwargs, match", [
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(max_target=0), "max_target"),
])
def test_bad_fields_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _task(**kwargs)
    with pytest.raises(ValueError, match="type_vocab_size"):
        Seq2SeqLMTask(encoder_config=EncoderConfig.tiny(type_vocab_size=1))
    with pytest.raises(ValueError, match="causal"):
        Seq2SeqLMTask(encoder_config=EncoderConfig.tiny(causal=True))


def test_fit_learns_a_copy_task():
    """30 steps of `fit` on 'the target is the source': the held-out loss falls."""
    from jaxformer.tasks.base import fit

    rng = np.random.default_rng(0)
    src = rng.integers(5, V, (64, 3))
    ids = np.concatenate([np.full((64, 1), CLS), src, np.full((64, 1), SEP), src,
                          np.full((64, 1), SEP)], axis=1).astype(np.int32)
    types = np.zeros_like(ids)
    types[:, 5:] = 1
    data = {"input_ids": ids, "token_type_ids": types, "attention_mask": np.ones_like(ids)}
    task = _task(max_target=4, label_smoothing=0.1)
    model = task.build_model(rngs=nnx.Rngs(0))
    tx = adamw(3e-3, total_steps=30)
    result = fit(task, model, data, tx=tx, eval_data=data,
                 config=LoopConfig(total_steps=30, batch_size=16), progress=False)
    assert result.history[-1] < result.history[0] - 0.3
    assert result.eval_metrics["target_tokens"] == 64 * 4


def test_generate_texts_decodes_the_best_hypothesis(tokenizer):
    """A model biased towards 气 then [SEP]: every source gives '气 气' within max_length 3."""
    model = _task().build_model(rngs=nnx.Rngs(0))
    model.head.bias[...] = model.head.bias[...].at[_id("气")].set(30.0).at[SEP].set(29.0)
    cfg = DecodeConfig(max_length=3, eos_id=SEP, pad_id=PAD, beam_size=2)
    texts = generate_texts(model, tokenizer, ["我爱", "今天很好", "生成"], config=cfg,
                           max_source=6, batch_size=2)
    assert len(texts) == 3
    assert all(set(t.replace(" ", "")) <= {"气"} for t in texts), texts
