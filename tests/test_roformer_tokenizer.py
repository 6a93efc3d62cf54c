"""RoFormerTokenizer (rjieba words + WordPiece): ids identical to HF's RoFormerTokenizer."""

import io
import json
import sys

import numpy as np
import pytest
from conftest import require

from jaxformer.io import RoFormerTokenizer, WordPieceTokenizer, load_tokenizer

rjieba = require("rjieba")

SENTENCES = [
    "今天天气非常好。",
    "我爱北京天安门，天安门上太阳升。",
    "自然语言处理是人工智能的一个重要方向",
    "他说：“明天我们去公园散步吧！”",
    "这部电影的票房超过了10亿元人民币。",
    "2023年12月31日，新年快乐！",
    "机器学习（Machine Learning）和深度学习有什么区别？",
    "我用iPhone 14 Pro拍了一张照片",
    "Hello 世界, this is a TEST of mixed text.",
    "北京大学和清华大学都是中国著名的高等学府。",
    "价格是3.14元，折扣50%，数量1234件",
    "请问去火车站怎么走？",
    "中华人民共和国成立于1949年",
    "我们正在研究Transformer模型的位置编码，比如旋转位置编码RoPE。",
    "  前后有空格   中间也有  ",
    "标点符号：；、？！……——《》【】",
    "Ünïcödé accents café naïve 北京",
    "数学公式 a+b=c，x^2 + y^2 = z^2",
    "这是一个[MASK]的例子[SEP]后面还有",
    "上海浦东新区的房价越来越高了，年轻人买不起房子。",
    "苹果公司发布了新款MacBook，搭载M3芯片，性能提升明显。",
    "小明的电话是13800138000，邮箱是xiaoming@example.com",
    "emoji 😀 也会出现在文本中 👍",
    "",
    "长句子" * 40 + "结束。",
    "研究生命的起源是一项非常有意义的工作，需要长期坚持不懈的努力和大量的实验数据支持。" * 3,
]

PAIRS = [
    "天气怎么样？",
    "北京的天安门",
    "人工智能",
    "公园",
    "电影票房",
    "新年",
    "deep learning",
    "照片",
    "world",
    "大学",
    "价格",
    "火车站在哪里",
    "中国",
    "位置编码",
    "空格",
    "符号",
    "café",
    "公式",
    "例子",
    "房价" * 30,
    "芯片",
    "电话",
    "表情",
    "空",
    "短",
    "长期努力",
]

EN_PIECES = ["hello", "this", "is", "a", "test", "of", "mixed", "text", "machine", "learning", "deep",
             "transform", "##er", "model", "pro", "ip", "##hone", "mac", "##book", "ro", "##pe", "cafe",
             "na", "##ive", "acc", "##ents", "world", "example", "com", "##m", "m", "##3", "14", "50", "10",
             "xiao", "##ming", "un", "##ic", "##ode", "le", "##arning"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _build_vocab() -> list[str]:
    words: set[str] = set()
    chars: set[str] = set()
    for text in SENTENCES + PAIRS:
        chars.update(c for c in text.lower() if not c.isspace())
        for word, _, _ in rjieba.tokenize(text.lower(), hmm=False):
            if len(word) > 1 and not word.isascii():
                words.add(word)
    # Leave a few multi-char jieba words out, so the char fallback is exercised too.
    dropped = {"天安门", "人工智能", "火车站"}
    words -= dropped
    extra = ["中国人", "天气预报", "研究生"]  # in vocab, but jieba might split differently
    vocab = list(SPECIALS) + sorted(chars) + sorted(words | set(extra)) + EN_PIECES
    seen: set[str] = set()
    return [t for t in vocab if not (t in seen or seen.add(t))]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("roformer_tok")
    vocab = _build_vocab()
    (d / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    config = {"tokenizer_class": "RoFormerTokenizer", "do_lower_case": True, "model_max_length": 512}
    (d / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return d


def _hf_reference(directory):
    # transformers 5.x's from_pretrained hands JiebaPreTokenizer the vocab *file path*
    # instead of the vocab dict (so `word in vocab` is a substring test on the path and
    # every Chinese word is split into chars). The reference is therefore HF's
    # RoFormerTokenizer built from the vocab dict, the behaviour the class documents
    # ("今天天气非常好。" -> [..., '非常', ...]) and that transformers 4.x loaded.
    transformers = pytest.importorskip("transformers")
    lines = (directory / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    vocab = {t: i for i, t in enumerate(lines)}
    config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    return transformers.RoFormerTokenizer(vocab=vocab, do_lower_case=config["do_lower_case"],
                                          model_max_length=config.get("model_max_length", 512))


@pytest.fixture(scope="module")
def hf_tok(tok_dir):
    return _hf_reference(tok_dir)


def _hf(hf_tok, texts, pairs=None, max_length=64, padding="longest"):
    enc = hf_tok(list(texts), list(pairs) if pairs is not None else None, max_length=max_length,
                 truncation=True, padding=padding, return_tensors="np", return_token_type_ids=True)
    return {k: np.asarray(enc[k], dtype=np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}


def _assert_same(got, want):
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_vocab_has_multichar_words(tok_dir):
    tok = RoFormerTokenizer.from_directory(tok_dir)
    toks = tok.tokenize("今天天气非常好。")
    assert any(len(t) > 1 for t in toks), toks
    assert tok.lowercase


@pytest.mark.parametrize("max_length", [512, 24, 7])
def test_single_sentences_match_hf(tok_dir, hf_tok, max_length):
    tok = RoFormerTokenizer.from_directory(tok_dir)
    for text in SENTENCES:  # one at a time: a mismatch names its sentence
        got = tok.encode_batch([text], max_length=max_length)
        _assert_same(got, _hf(hf_tok, [text], max_length=max_length))
    # and as one padded batch
    _assert_same(tok.encode_batch(SENTENCES, max_length=max_length), _hf(hf_tok, SENTENCES, max_length=max_length))


def test_tokens_match_hf(tok_dir, hf_tok):
    tok = RoFormerTokenizer.from_directory(tok_dir)
    for text in SENTENCES:
        assert tok.tokenize(text) == hf_tok.tokenize(text), text


def test_word_level_differs_from_char_level(tok_dir):
    jieba = RoFormerTokenizer.from_directory(tok_dir)
    chars = WordPieceTokenizer.from_directory(tok_dir)
    a = jieba.encode_batch(SENTENCES[:4], max_length=64)
    b = chars.encode_batch(SENTENCES[:4], max_length=64)
    assert a["input_ids"].shape[1] < b["input_ids"].shape[1]


@pytest.mark.parametrize(("max_length", "padding"), [(512, "longest"), (40, "max_length"), (9, "longest")])
def test_pairs_match_hf(tok_dir, hf_tok, max_length, padding):
    tok = RoFormerTokenizer.from_directory(tok_dir)
    got = tok.encode_batch(SENTENCES, pairs=PAIRS, max_length=max_length, padding=padding)
    _assert_same(got, _hf(hf_tok, SENTENCES, PAIRS, max_length=max_length, padding=padding))
    assert got["token_type_ids"].max() == 1


def test_save_round_trip(tok_dir, hf_tok, tmp_path):
    tok = RoFormerTokenizer.from_directory(tok_dir)
    tok.save(tmp_path / "saved")
    assert not (tmp_path / "saved" / "tokenizer.json").exists()
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "RoFormerTokenizer"
    again = load_tokenizer(tmp_path / "saved")
    assert isinstance(again, RoFormerTokenizer)
    assert again.model_max_length == 512 and again.pad_id == tok.pad_id
    _assert_same(again.encode_batch(SENTENCES, max_length=48), tok.encode_batch(SENTENCES, max_length=48))
    hf_again = _hf_reference(tmp_path / "saved")
    _assert_same(again.encode_batch(SENTENCES, max_length=48), _hf(hf_again, SENTENCES, max_length=48))


def test_interface_and_errors(tok_dir):
    tok = RoFormerTokenizer.from_directory(tok_dir)
    empty = tok.encode_batch([], max_length=8, padding="max_length")
    assert empty["input_ids"].shape == (0, 8)
    out = tok.encode_batch(["你好"], max_length=8, padding="max_length")
    assert out["input_ids"].dtype == np.int32 and out["input_ids"].shape == (1, 8)
    assert out["input_ids"][0, 0] == tok.cls_id and out["input_ids"][0, -1] == tok.pad_id
    with pytest.raises(TypeError, match="list of str"):
        tok.encode_batch("你好", max_length=8)
    with pytest.raises(ValueError, match="max_length"):
        tok.encode_batch(["你好"], pairs=["好"], max_length=2)
    with pytest.raises(ValueError, match="pairs"):
        tok.encode_batch(["你好"], pairs=[], max_length=8)
    with pytest.raises(ValueError, match="padding"):
        tok.encode_batch(["你好"], max_length=8, padding="nope")


def test_load_tokenizer_picks_by_config(tok_dir, tmp_path):
    assert isinstance(load_tokenizer(tok_dir), RoFormerTokenizer)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "vocab.txt").write_text((tok_dir / "vocab.txt").read_text(encoding="utf-8"), encoding="utf-8")
    got = load_tokenizer(plain)
    assert type(got) is WordPieceTokenizer


def test_cli_embed_uses_jieba_tokenizer(tok_dir, tmp_path, monkeypatch):
    from flax import nnx

    from jaxformer.cli import main
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Encoder
    from jaxformer.models.pretrained import save_pretrained

    tok = RoFormerTokenizer.from_directory(tok_dir)
    cfg = EncoderConfig.tiny(vocab_size=tok.vocab_size, position="rope", use_pooler=False)
    model_dir = tmp_path / "model"
    save_pretrained(Encoder(cfg, rngs=nnx.Rngs(params=0)), model_dir, tokenizer=tok)
    chosen = load_tokenizer(model_dir)
    assert isinstance(chosen, RoFormerTokenizer)
    sents = ["今天天气非常好。", "我爱北京天安门"]
    _assert_same(chosen.encode_batch(sents, max_length=32), tok.encode_batch(sents, max_length=32))

    seen = []
    import jaxformer.io as jio

    real = jio.load_tokenizer

    def spy(directory):
        t = real(directory)
        seen.append(t)
        return t

    monkeypatch.setattr(jio, "load_tokenizer", spy)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(sents).encode("utf-8") + b"\n")))
    out = tmp_path / "e.npy"
    assert main(["embed", "--model", str(model_dir), "--pooling", "mean", "--out", str(out)]) == 0
    assert len(seen) == 1 and isinstance(seen[0], RoFormerTokenizer)
    got = np.load(out)
    assert got.shape == (2, cfg.hidden_size) and np.all(np.isfinite(got))
