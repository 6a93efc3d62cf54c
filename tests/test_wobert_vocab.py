"""WoBERT's vocabulary (post 7758): simplify a BERT vocab.txt, add jieba words; `jaxformer wobert-vocab`."""

import json

import pytest

from jaxformer.io import build_wobert_vocab, jieba_word_freqs, load_tokenizer, save_wobert_vocab
from jaxformer.io.wobert_vocab import WOBERT_SPECIALS, is_redundant_token

BASE = ["[PAD]", "[unused1]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "!", "...", "a", "ab", "##ab", "##b",
        "##的", "中", "的", "中国", "##", "a.b", "##,", "é", "ｱ", "我们"]
FREQS = {"我们": 50, "中国": 40, "公园": 40, "散步": 30, "不错": 30, "a.b": 20, "今天": 10, "天气": 10}


@pytest.fixture
def base_path(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in BASE), encoding="utf-8")
    return path


def test_redundant_tokens():
    assert [t for t in BASE if is_redundant_token(t)] == [
        "[PAD]", "[unused1]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "...", "##的", "中国", "a.b", "##,", "我们"]
    assert not any(is_redundant_token(t) for t in ["!", "a", "##ab", "##", "中", "ｱ", "é"])


def test_build_small(base_path):
    tokens, stats = build_wobert_vocab(base_path, num_words=4, word_freqs=FREQS)
    kept = list(WOBERT_SPECIALS) + ["!", "a", "ab", "##ab", "##b", "中", "的", "##", "é", "ｱ"]
    # Most frequent first; "中国" (40) before "公园" (40): ties keep dictionary order. Dropped
    # base tokens ("我们", "中国") come back as dictionary words, as in WoBERT's train.py.
    assert tokens == kept + ["我们", "中国", "公园", "散步"]
    assert stats == {"base": len(BASE), "dropped": 7, "kept": len(kept), "added": 4, "final": len(kept) + 4}
    with pytest.raises(ValueError, match=r"num_words: expected at most 8 .*got 9"):
        build_wobert_vocab(base_path, num_words=9, word_freqs=FREQS)


def test_bad_inputs(tmp_path, base_path):
    with pytest.raises(FileNotFoundError, match=r"base_vocab_path .*nope.txt: expected an existing vocab.txt"):
        build_wobert_vocab(tmp_path / "nope.txt", num_words=3)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"base_vocab_path .*empty.txt: expected one token per line, got an empty"):
        build_wobert_vocab(tmp_path / "empty.txt", num_words=3)
    for bad in (0, -5):  # (a non-int is refused by the type checker in tests, by our check elsewhere)
        with pytest.raises(ValueError, match=r"num_words: expected an int >= 1, got"):
            build_wobert_vocab(base_path, num_words=bad)
    (tmp_path / "nospecial.txt").write_text("[PAD]\n[UNK]\na\n")
    with pytest.raises(ValueError, match=r"expected the special tokens .*without \['\[CLS\]', '\[SEP\]', '\[MASK\]'\]"):
        build_wobert_vocab(tmp_path / "nospecial.txt", num_words=1)


def test_jieba_dictionary():
    freqs = jieba_word_freqs()
    assert len(freqs) > 300_000 and all(isinstance(v, int) for v in list(freqs.values())[:100])
    # The same words and order as WoBERT's `sorted(jieba.dt.FREQ.items(), key=lambda s: -s[1])`.
    from jaxformer.io.jieba_tokenizer import _new_jieba

    FREQ = _new_jieba().FREQ
    theirs = [w for w, _ in sorted(FREQ.items(), key=lambda s: -s[1])[:25000]]
    assert sorted(freqs, key=lambda w: -freqs[w])[:25000] == theirs


def test_cli_writes_loadable_tokenizer(base_path, tmp_path, capsys):
    from jaxformer.cli import main

    out = tmp_path / "wobert"
    assert main(["wobert-vocab", "--base-vocab", str(base_path), "--num-words", "30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dropped 7" in printed and "added 30" in printed
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "RoFormerTokenizer" and config["jaxformer_segmenter"] == "jieba"
    tok = load_tokenizer(out)
    assert tok.segmenter == "jieba" and tok.vocab_size == len(BASE) - 7 + 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base-vocab", "{tmp}/missing.txt"], "--base-vocab {tmp}/missing.txt: expected an existing vocab.txt "
                                                "file, got no such file"),
        (["--base-vocab", "{tmp}/empty.txt"], "--base-vocab {tmp}/empty.txt: expected one token per line, "
                                              "got an empty file"),
        (["--base-vocab", "{base}", "--num-words", "0"], "--num-words: expected an int >= 1, got 0"),
        (["--base-vocab", "{base}", "--num-words", "-3"], "--num-words: expected an int >= 1, got -3"),
    ],
)
def test_cli_errors(tmp_path, base_path, args, message, capsys):
    from jaxformer.cli import main

    (tmp_path / "empty.txt").write_text("")
    fill = {"{tmp}": str(tmp_path), "{base}": str(base_path)}
    for key, value in fill.items():
        args = [a.replace(key, value) for a in args]
        message = message.replace(key, value)
    code = main(["wobert-vocab", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("jaxformer wobert-vocab: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ real data (JAXFORMER_DATA)
@pytest.fixture(scope="module")
def real_vocab(data_dir):
    base = data_dir / "vocab" / "bert-base-chinese-vocab.txt"
    tokens, stats = build_wobert_vocab(base, num_words=20000)
    return base, tokens, stats


def test_real_vocab(real_vocab):
    base, tokens, stats = real_vocab
    lines = base.read_text(encoding="utf-8").split("\n")[:-1]
    assert stats["base"] == len(lines) == 21128
    assert stats["final"] == len(tokens) == stats["kept"] + 20000
    assert stats["dropped"] + stats["kept"] == stats["base"]
    assert tuple(tokens[:5]) == WOBERT_SPECIALS and len(set(tokens)) == len(tokens)
    dropped = {t for t in lines if is_redundant_token(t)} - set(WOBERT_SPECIALS)
    assert len(dropped) == stats["dropped"] and not dropped & set(tokens)
    # Su reports 33,586 (post 7758); jieba's dictionary and Unicode tables differ by version.
    print(f"WoBERT vocab from bert-base-chinese: {stats}")
    assert abs(stats["final"] - 33586) <= 50


REAL_SENTENCES_N = 200


def test_real_tokenizer(real_vocab, data_dir, tmp_path):
    _, tokens, _ = real_vocab
    tok = save_wobert_vocab(tokens, tmp_path)
    assert load_tokenizer(tmp_path).vocab_size == len(tokens)
    toks = tok.tokenize("今天天气不错，我们去公园散步吧")
    vocab = set(tokens)
    for word, _start in tok._segment(tok.normalize("今天天气不错，我们去公园散步吧")):
        if word in vocab:  # every jieba word the vocab has is one token
            assert word in toks
    assert {"不错", "我们", "公园", "散步"} <= set(toks)
    titles = [line.split("\t")[0] for line in
              (data_dir / "thucnews_titles" / "dev.txt").read_text(encoding="utf-8").splitlines()[:REAL_SENTENCES_N]]
    n_tokens = sum(len(tok.tokenize(t)) for t in titles)
    n_chars = sum(len(t.replace(" ", "")) for t in titles)
    print(f"tokens per char on {len(titles)} THUCNews titles: {n_tokens / n_chars:.3f}")
    assert n_tokens / n_chars < 1
    enc = tok.encode_batch(titles[:16], max_length=64, return_offsets=True)
    assert enc["offset_mapping"].shape == (*enc["input_ids"].shape, 2)
