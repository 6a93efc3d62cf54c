"""C3 and CHID (`jaxformer.tasks.clue.choice`): token layouts on hand-written records, masked
options, the loss against NumPy, Hungarian vs argmax decoding, and `run_clue` end to end on
fixtures in the official formats and (``JAXFORMER_DATA``) on the real folders."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_clue_run import CHARS, tiny_model, write_lines

from jaxformer.global_pointer import mask_value
from jaxformer.io import WordPieceTokenizer
from jaxformer.io.clue import ChidExample, ChoiceQuestion
from jaxformer.io.clue_submit import read_submission
from jaxformer.tasks.clue.choice import (ChoiceAdapter, ChoiceScorer, centred_window,
                                         chid_groups, choice_loss, decode_groups,
                                         longest_first)
from jaxformer.tasks.clue.config import ClueConfig
from jaxformer.tasks.clue.runner import run_clue

pytestmark = pytest.mark.usefixtures("fast_compile")

IDIOMS = ["孩子跟谁", "深山发现", "紫薇树桩", "村民看了", "无可奈何", "为什么要", "出现一个",
          "身穿军装", "高大男人", "就是的了"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return WordPieceTokenizer.from_directory(tiny_model(tmp_path_factory.mktemp("tok")))


def tokens(tok, ids):
    return tok.decode(ids, skip_special_tokens=False).split()


def test_c3_row_layout_truncation_and_padded_options(tok):
    q = ChoiceQuestion("q0", ("孩子跟谁", "睡"), "谁是", ("村民", "男人", "树桩"), 1)
    data = ChoiceAdapter(ClueConfig.preset("c3", max_len=64), tok).encode([q])
    assert data["input_ids"].shape == (1, 4, 15) and data["labels"].tolist() == [1]
    # Su's c3.py order: passage (lines joined by "||", not in this vocab: [UNK]), question,
    # option, each closed by [SEP].
    row = data["attention_mask"][0, 1].sum()
    assert tokens(tok, data["input_ids"][0, 1, :row]) == [
        "[CLS]", "孩", "子", "跟", "谁", "[UNK]", "[UNK]", "睡", "[SEP]", "谁", "是", "[SEP]",
        "男", "人", "[SEP]"]
    # Three choices: the fourth option is masked and only [CLS] [SEP].
    assert data["option_mask"].tolist() == [[1, 1, 1, 0]]
    assert data["attention_mask"][0, 3].sum() == 2 and not data["token_type_ids"].any()
    pair = ChoiceAdapter(ClueConfig.preset("c3", max_len=64, segment_ids="pair"), tok).encode([q])
    assert pair["token_type_ids"][0, 1, :row].tolist() == [0] * 9 + [1] * 6
    # Longest first, ties cutting the earlier piece (option, question, passage).
    assert longest_first([2, 3, 10], 20) == [2, 3, 10]
    assert longest_first([2, 3, 10], 9) == [2, 3, 4]
    assert longest_first([5, 5, 5], 10) == [3, 3, 4]
    assert longest_first([6, 1, 6], 8) == [3, 1, 4]
    short = ChoiceAdapter(ClueConfig.preset("c3", max_len=10), tok).encode([q])
    ids = tokens(tok, short["input_ids"][0, 1])
    assert ids == ["[CLS]", "孩", "子", "[SEP]", "谁", "是", "[SEP]", "男", "人", "[SEP]"]


def test_chid_blank_marks_and_centred_truncation(tok):
    # The tokenizer splits a literal "[unused1]" (not a special token), so it goes in as an id.
    assert "[unused1]" not in tok.tokenize("孩子[unused1]") and "[MASK]" in tok.tokenize("孩[MASK]")
    # Three blanks; the current one is [unused1] (one token, not split), the others 4x[MASK].
    content = "孩子#idiom000001#深山#idiom000002#紫薇#idiom000003#村民"
    blanks = ("#idiom000001#", "#idiom000002#", "#idiom000003#")
    rec = ChidExample("7-0", content, tuple(IDIOMS[:7]), blanks, (0, 1, 2))
    data = ChoiceAdapter(ClueConfig.preset("chid", max_len=64), tok).encode([rec])
    assert data["input_ids"].shape[:2] == (3, 10)
    assert data["option_mask"].tolist() == [[1] * 7 + [0] * 3] * 3
    assert data["record"].tolist() == [0, 0, 0] and data["blank"].tolist() == [0, 1, 2]
    row = tokens(tok, data["input_ids"][1, 2, :data["attention_mask"][1, 2].sum()])
    m = ["[MASK]"] * 4
    assert row == ["[CLS]", "紫", "薇", "树", "桩", "[SEP]", "孩", "子", *m, "深", "山",
                   "[unused1]", "紫", "薇", *m, "村", "民", "[SEP]"]
    # A long passage, max_len 24: the window (24 - 3 - 4 = 17 tokens) is centred on the
    # blank, and keeps it near either end.
    long = "".join(CHARS)
    for at in (0, 3, len(long) // 2, len(long) - 2, len(long)):
        text = long[:at] + "#idiom000009#" + long[at:]
        rec = ChidExample("1-0", text, tuple(IDIOMS), ("#idiom000009#",), (0,))
        data = ChoiceAdapter(ClueConfig.preset("chid", max_len=24), tok).encode([rec])
        ids = data["input_ids"][0, 0]
        assert data["attention_mask"][0, 0].sum() == 24
        window = tokens(tok, ids[6:23])
        assert window.count("[unused1]") == 1
        k = window.index("[unused1]")
        assert "".join(window[:k]) == long[max(0, at - max(8, 16 - (len(long) - at))):at]
    # A vocabulary without [unused1] (WoBERT's) is refused with the option to set; with
    # blank_token set, that token marks the blank where [unused1] stood.
    rec = ChidExample("7-0", content, tuple(IDIOMS[:7]), blanks, (0, 1, 2))
    other = ChoiceAdapter(ClueConfig.preset("chid", max_len=64, blank_token="[unused9]"), tok)
    with pytest.raises(ValueError, match=r"chid needs a \[unused9\] token; the vocabulary has "
                                         r"none; set ClueConfig.blank_token \(--blank-token\)"):
        other.encode([rec])
    base = ChoiceAdapter(ClueConfig.preset("chid", max_len=64), tok).encode([rec])["input_ids"]
    swapped = ChoiceAdapter(ClueConfig.preset("chid", max_len=64, blank_token="紫"),
                            tok).encode([rec])["input_ids"]
    unused1, zi = tok.backend.token_to_id("[unused1]"), tok.backend.token_to_id("紫")
    assert (base == unused1).sum() == 3 * 7  # one per (blank, candidate) row
    np.testing.assert_array_equal(swapped, np.where(base == unused1, zi, base))
    with pytest.raises(ValueError, match=r"ClueConfig.blank_token must be a non-empty token "
                                         r"string, got ''"):
        ClueConfig.preset("chid", blank_token="")
    assert centred_window([1] * 20, [2] * 20, 9) == (4, 4)
    assert centred_window([1] * 2, [2] * 20, 9) == (2, 6)
    assert centred_window([1] * 20, [2] * 1, 9) == (7, 1)
    assert centred_window([1] * 3, [2] * 3, 9) == (3, 3)


def test_masked_options_never_win_and_loss_matches_numpy():
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Encoder

    cfg = EncoderConfig.tiny(vocab_size=40, num_layers=1, use_pooler=False)
    model = ChoiceScorer(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    ids = jax.random.randint(jax.random.key(0), (3, 4, 6), 1, 40)
    option_mask = jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]], jnp.int32)
    scores = model(ids, attention_mask=jnp.ones_like(ids), option_mask=option_mask,
                   deterministic=True)
    raw = model(ids, attention_mask=jnp.ones_like(ids), deterministic=True)
    om = np.asarray(option_mask)
    assert np.isfinite(np.asarray(scores)).all()
    np.testing.assert_array_equal(np.asarray(scores)[om == 1], np.asarray(raw)[om == 1])
    assert (np.asarray(scores)[om == 0] == mask_value(jnp.float32)).all()
    # Real scores far below zero still beat a masked option.
    low = jnp.where(option_mask > 0, -1e30, mask_value(jnp.float32)).astype(jnp.float32)
    assert all(option_mask[i, j] for i, j in enumerate(np.argmax(np.asarray(low), axis=1)))

    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 4)) * 3
    s[0, 3] = mask_value(jnp.float32)
    labels, weights = np.array([1, 0, 3, -1, 2]), np.array([1.0, 0.5, 1.0, 1.0, 0.0])
    loss, acc = choice_loss(jnp.asarray(s, jnp.float32), jnp.asarray(labels, jnp.int32),
                            weights=jnp.asarray(weights, jnp.float32))
    logp = s - s.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    w = weights * (labels >= 0)
    nll = -logp[np.arange(5), np.maximum(labels, 0)]
    np.testing.assert_allclose(float(loss), (w * nll).sum() / w.sum(), rtol=1e-5)
    hit = (s.argmax(1) == labels).astype(float)
    np.testing.assert_allclose(float(acc), (w * hit).sum() / w.sum(), rtol=1e-6)


def test_hungarian_beats_argmax_on_a_shared_favourite():
    # Two passages of one CLUE line share its candidates; both blanks of the line prefer
    # candidate 0, the gold assignment is (0, 1).
    recs = [ChidExample("5-0", "a#idiom000001#", ("x", "y", "z"), ("#idiom000001#",), (0,)),
            ChidExample("5-1", "b#idiom000002#", ("x", "y", "z"), ("#idiom000002#",), (1,)),
            ChidExample(9, "c#idiom#", ("x", "y"), ("#idiom#",), (0,))]
    assert chid_groups(recs) == [0, 0, 1]
    data = {"group": np.array([0, 0, 1]), "record": np.array([0, 1, 2]),
            "blank": np.array([0, 0, 0]),
            "option_mask": np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0]])}
    scores = np.array([[5.0, 1.0, 0.0, -9], [4.0, 3.5, 0.0, -9], [0.0, 1.0, -9, -9]])
    preds = decode_groups(scores, data, recs)
    assert [p.hungarian for p in preds] == [(0,), (1,), (1,)]
    assert [p.argmax for p in preds] == [(0,), (0,), (1,)]
    adapter = ChoiceAdapter(ClueConfig.preset("chid"), tokenizer=None)
    assert adapter.score(preds, recs) == pytest.approx(
        {"accuracy": 200 / 3, "accuracy_argmax": 100 / 3})
    assert adapter.submission(preds, recs) == {"#idiom000001#": 0, "#idiom000002#": 1, 9: 1}


def c3_item(i, with_answer=True, choices=4):
    opts = ["村民", "男人", "树桩", "孩子"][:choices]
    q = {"question": "谁是" + CHARS[i % 9], "choice": opts}
    q.update({"answer": opts[i % choices]} if with_answer else {"id": i})
    return [["男：" + CHARS[i:i + 9], "女：" + CHARS[i + 3:i + 20]], [q], f"{i}-1"]


def test_run_clue_c3_fixture(tmp_path):
    model_dir = tiny_model(tmp_path)
    folder = tmp_path / "c3"
    folder.mkdir()
    for name, items in (("d-train", [c3_item(i, choices=3 + i % 2) for i in range(8)]),
                        ("m-train", [c3_item(i + 8) for i in range(4)]),
                        ("d-dev", [c3_item(i, choices=2 + i % 3) for i in range(3)]),
                        ("m-dev", [c3_item(i + 3) for i in range(3)]),
                        ("test1.1", [c3_item(i, False) for i in range(5)])):
        (folder / f"{name}.json").write_text(json.dumps(items, ensure_ascii=False), "utf-8")
    report = run_clue(ClueConfig.preset("c3", batch_size=4, max_len=64), model_dir=model_dir,
                      data_dir=folder, out_dir=tmp_path / "out", max_steps=2, progress=False)
    assert report["steps"] == 2 and 0 <= report["dev"]["accuracy"] <= 100
    assert report["submission"] == {"file": "c311_predict.json", "from": "test", "examples": 5}
    back = read_submission("c3", tmp_path / "out")
    assert sorted(back) == list(range(5)) and set(back.values()) <= {0, 1, 2, 3}


def chid_line(i, passages=2):
    content, answers = [], {}
    for k in range(passages):
        keys = [f"#idiom{100 * i + 10 * k + b:06d}#" for b in range(1 + k)]
        content.append(CHARS[i:i + 6] + keys[0] + CHARS[k:k + 7] + "".join(
            key + CHARS[3:8] for key in keys[1:]))
        answers.update({key: (i + len(answers)) % 10 for key in keys})
    return {"candidates": IDIOMS, "content": content}, answers


def test_run_clue_chid_clue_fixture(tmp_path):
    model_dir = tiny_model(tmp_path)
    folder = tmp_path / "chid"
    for split, n in (("train", 8), ("dev", 3), ("test1.1", 3)):
        lines = [chid_line(i) for i in range(n)]
        write_lines(folder / f"{split}.json", [line for line, _ in lines])
        if split != "test1.1":
            gold = {k: v for _, a in lines for k, v in a.items()}
            (folder / f"{split}_answer.json").write_text(json.dumps(gold), "utf-8")
    report = run_clue(ClueConfig.preset("chid", batch_size=4, max_len=32), model_dir=model_dir,
                      data_dir=folder, out_dir=tmp_path / "out", max_steps=2, progress=False)
    assert set(report["dev"]) == {"accuracy", "accuracy_argmax"}
    assert report["submission"]["file"] == "chid11_predict.json"
    back = read_submission("chid", tmp_path / "out")
    want = {f"#idiom{100 * i + 10 * k + b:06d}#" for i in range(3) for k in range(2)
            for b in range(1 + k)}
    assert set(back) == want and set(back.values()) <= set(range(10))
    for i in range(3):  # Hungarian: the blanks of one line never share an idiom
        line = [v for k, v in back.items() if int(k[6:12]) // 100 == i]
        assert len(line) == 3 and len(set(line)) == 3


@pytest.mark.parametrize("task, folder", [("c3", "c3"), ("chid", "fewclue/chid")])
def test_real_folders_run_with_max_steps(data_dir, tmp_path, task, folder):
    model_dir = tiny_model(tmp_path, data_dir / "vocab" / "bert-base-chinese-vocab.txt")
    report = run_clue(ClueConfig.preset(task, batch_size=4, max_len=32), model_dir=model_dir,
                      data_dir=data_dir / folder, out_dir=tmp_path / "out", max_steps=2,
                      progress=False)
    assert 0 <= report["dev"]["accuracy"] <= 100
    sub = tmp_path / "out" / report["submission"]["file"]
    assert sub.is_file()
    if task == "chid":  # FewCLUE: one blank per record, so Hungarian is the argmax
        assert report["dev"]["accuracy"] == report["dev"]["accuracy_argmax"]
        assert sub.name == "chidf_predict.json" and report["submission"]["examples"] == 2002
    else:
        assert report["holdout"]["from"] == "dev" and "test" not in report
    shutil.rmtree(tmp_path / "out")
