"""JiebaWordPieceTokenizer with segmenter="jieba" (WoBERT's rule), and offsets into the original text.

The reference for the words is written out here from the rule of post 7758 / bert4keras'
``pre_tokenize``: normalise, ``jieba.cut(HMM=False)``, keep in-vocab words, BERT-tokenize the rest
(transformers' BertTokenizer on the same vocab.txt).
"""

import json
import unicodedata

import numpy as np
import pytest
from conftest import require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxformer.io import JiebaWordPieceTokenizer, RoFormerTokenizer, load_tokenizer

jieba = require("jieba")

SENTENCES = [
    "今天天气不错，我们去公园散步吧",
    "自然语言处理是人工智能的一个重要方向。",
    "他说：“明天我们去公园散步吧！”",
    "这部电影的票房超过了10亿元人民币",
    "机器学习(Machine Learning)和深度学习有什么区别？",
    "我用iPhone 14 Pro拍了一张照片",
    "Hello 世界, this is a TEST of mixed text.",
    "价格是3.14元，折扣50%，数量1234件",
    "  前后有空格   中间也有  ",
    "Ünïcödé accents café naïve 北京大学",
    "邮箱是xiaoming@example.com，电话13800138000",
    "标点符号：；、？！……——《》【】",
    "",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
EN_PIECES = ["hello", "this", "is", "a", "test", "of", "mixed", "text", "machine", "learn", "##ing", "pro",
             "ip", "##hone", "cafe", "na", "##ive", "acc", "##ents", "example", "com", "xiao", "##ming",
             "un", "##ic", "##ode", "14", "50", "10", "3", "##4", "1", "##2", "##3", "13", "##8", "##0", "@"]


def _bert_norm(text: str) -> str:
    """BERT's uncased normalisation (clean text, lower-case, strip accents), from unicodedata."""
    out = []
    for ch in text:
        if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif ord(ch) in (0, 0xFFFD) or unicodedata.category(ch).startswith("C"):
            continue
        else:
            nfd = unicodedata.normalize("NFD", ch.lower())
            out.append("".join(c for c in nfd if unicodedata.category(c) != "Mn"))
    return "".join(out)


def _cut(text: str) -> list[str]:
    return list(jieba.cut(text, HMM=False))


def _build_vocab() -> list[str]:
    chars, words = set(), set()
    for text in SENTENCES:
        norm = _bert_norm(text)
        chars.update(c for c in norm if not c.isspace())
        words.update(w for w in _cut(norm) if len(w) > 1 and not w.isascii())
    words -= {"人工智能", "票房"}  # some jieba words left out: the char fallback runs too
    return SPECIALS + sorted(chars - set(SPECIALS)) + sorted(words) + [p for p in EN_PIECES if p not in chars]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("wobert_tok")
    vocab = _build_vocab()
    (d / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    config = {"tokenizer_class": "RoFormerTokenizer", "do_lower_case": True, "jaxformer_segmenter": "jieba"}
    (d / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def tok(tok_dir):
    got = load_tokenizer(tok_dir)
    assert isinstance(got, JiebaWordPieceTokenizer) and got.segmenter == "jieba" and got.split_punctuation
    return got


@pytest.fixture(scope="module")
def bert_ref(tok_dir, tmp_path_factory):
    transformers = require("transformers")
    d = tmp_path_factory.mktemp("bert_ref")
    (d / "vocab.txt").write_text((tok_dir / "vocab.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                         "do_lower_case": True}), encoding="utf-8")
    return transformers.AutoTokenizer.from_pretrained(d)


def _reference_tokens(text: str, vocab: set[str], bert) -> list[str]:
    out = []
    for word in _cut(_bert_norm(text)):
        out.extend([word] if word in vocab else bert.tokenize(word))
    return out


def test_tokens_follow_wobert_rule(tok, tok_dir, bert_ref):
    vocab = set((tok_dir / "vocab.txt").read_text(encoding="utf-8").split("\n"))
    for text in SENTENCES:
        assert tok.tokenize(text) == _reference_tokens(text, vocab, bert_ref), text
    toks = tok.tokenize("今天天气不错，我们去公园散步吧")
    assert "我们" in toks and "公园" in toks and "，" in toks
    # A jieba word out of the vocab falls back to chars; punctuation in it is split (bert4keras).
    assert tok.tokenize("人工智能") == ["人", "工", "智", "能"]
    # "c++" is one word of jieba's dictionary, not in this vocab: "+" splits off (bert4keras).
    assert tok.tokenize("用C++") == ["用", "c", "[UNK]", "[UNK]"]


def test_rjieba_default_keeps_hf_punctuation_rule(tok_dir):
    hf_like = JiebaWordPieceTokenizer.from_directory(tok_dir, segmenter="rjieba")
    assert hf_like.segmenter == "rjieba" and not hf_like.split_punctuation
    assert RoFormerTokenizer is JiebaWordPieceTokenizer
    # HF's JiebaPreTokenizer hands the whole out-of-vocab word "c++" to WordPiece.
    assert hf_like.tokenize("用C++") == ["用", "[UNK]"]


def test_encode_matches_tokenize_and_is_shorter_than_chars(tok):
    out = tok.encode_batch(SENTENCES, max_length=64)
    for row, text in enumerate(SENTENCES):
        n = int(out["attention_mask"][row].sum())
        ids = out["input_ids"][row, 1 : n - 1].tolist()
        assert [tok.backend.id_to_token(i) for i in ids] == tok.tokenize(text)
    lengths = out["attention_mask"].sum(1) - 2
    chars = np.array([len(t.replace(" ", "")) for t in SENTENCES])
    assert lengths[:3].sum() < chars[:3].sum()


def test_save_round_trip_and_transformers_loads_it(tok, tmp_path):
    tok.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "RoFormerTokenizer" and config["jaxformer_segmenter"] == "jieba"
    again = load_tokenizer(tmp_path)
    assert again.segmenter == "jieba" and again.split_punctuation
    a = again.encode_batch(SENTENCES, pairs=SENTENCES[::-1], max_length=40, return_offsets=True)
    b = tok.encode_batch(SENTENCES, pairs=SENTENCES[::-1], max_length=40, return_offsets=True)
    for key in b:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    transformers = require("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(hf).__name__.startswith("RoFormerTokenizer")
    assert hf.convert_tokens_to_ids(["[CLS]", "[SEP]"]) == [tok.cls_id, tok.sep_id]


def test_bad_segmenter(tok_dir, tmp_path):
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    with pytest.raises(ValueError, match=r"segmenter: expected one of \('rjieba', 'jieba'\), got 'pkuseg'"):
        JiebaWordPieceTokenizer(vocab, segmenter="pkuseg")
    (tmp_path / "vocab.txt").write_text((tok_dir / "vocab.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RoFormerTokenizer",
                                                                "jaxformer_segmenter": "thulac"}))
    with pytest.raises(Exception, match=r"expected jaxformer_segmenter in .*got 'thulac'"):
        load_tokenizer(tmp_path)


# ------------------------------------------------------------------ offsets
def _check_offsets(tok, texts, enc, *, pairs=None):
    ids, mask, types, offsets = (enc[k] for k in ("input_ids", "attention_mask", "token_type_ids",
                                                  "offset_mapping"))
    assert offsets.dtype == np.int32 and offsets.shape == (*ids.shape, 2)
    specials = {tok.backend.token_to_id(t) for t in SPECIALS}
    for row in range(ids.shape[0]):
        n = int(mask[row].sum())
        assert (offsets[row, n:] == 0).all()  # padding
        last_start = {0: 0, 1: 0}
        for t in range(n):
            token = tok.backend.id_to_token(int(ids[row, t]))
            start, end = (int(v) for v in offsets[row, t])
            side = int(types[row, t])
            text = texts[row] if side == 0 else pairs[row]
            if t == 0 or (token == "[SEP]" and (start, end) == (0, 0)):
                assert (start, end) == (0, 0)  # the added [CLS] / [SEP]
                continue
            assert 0 <= start < end <= len(text), (text, token, start, end)
            assert start >= last_start[side], (text, token, start, last_start[side])
            last_start[side] = start
            if int(ids[row, t]) in specials:
                if token != "[UNK]":
                    assert text[start:end] == token  # a literal [MASK] in the text
                continue
            stem = token[2:] if token.startswith("##") else token
            normed = tok.normalize(text[start:end])
            if any(len(tok.normalize(c)) > 1 for c in text[start:end]):
                # One original char normalised to several (e.g. a ligature lower-cased): pieces
                # inside it can only point at the whole char.
                assert stem in normed or token in normed, (text, token, normed)
            else:
                assert normed in (stem, token), (text, token, start, end, normed)


def test_offsets_on_sentences(tok):
    enc = tok.encode_batch(SENTENCES, max_length=64, return_offsets=True)
    _check_offsets(tok, SENTENCES, enc)
    # Accents stripped: "Ünïcödé" is one word of 7 original chars whatever NFD does.
    text = "e\u0301te\u0301 CAFÉ [MASK] 北京大学"
    out = tok.encode_batch([text], max_length=32, return_offsets=True)
    toks = [tok.backend.id_to_token(int(i)) for i in out["input_ids"][0]]
    spans = [text[s:e] for s, e in out["offset_mapping"][0].tolist()]
    assert toks[toks.index("[MASK]")] == spans[toks.index("[MASK]")]
    assert spans[toks.index("cafe")] == "CAFÉ"
    _check_offsets(tok, [text], out)


def test_offsets_with_pairs_and_truncation(tok):
    enc = tok.encode_batch(SENTENCES, pairs=SENTENCES[::-1], max_length=20, padding="max_length",
                           return_offsets=True)
    _check_offsets(tok, SENTENCES, enc, pairs=SENTENCES[::-1])
    empty = tok.encode_batch([], max_length=8, padding="max_length", return_offsets=True)
    assert empty["offset_mapping"].shape == (0, 8, 2)


PIECES = ["今天", "天气", "不错", "公园", "北京", "大学", "我们", "[MASK]", "[SEP]", "CAFÉ", "é", "e\u0301",
          "Machine", "Learning", "iPhone", "##", "3.14", "，", "。", "“", " ", "  ", "\t", "\n", "\x00",
          "\u200b",
          "ﬁ", "İ", "ß", "Σ", "😀", "\u3000", "中", "人工智能"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.sampled_from(PIECES), st.characters(codec="utf-8")), max_size=25)
                .map("".join), min_size=1, max_size=3))
def test_property_offsets_point_at_the_tokens(tok, texts):
    enc = tok.encode_batch(texts, max_length=48, return_offsets=True)
    _check_offsets(tok, texts, enc)
