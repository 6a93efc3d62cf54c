"""CMRC2018 and CLUENER with GlobalPointer (`jaxformer.tasks.clue.span`, `.ner`): windows,
labels, decoding back to characters, `bio_records`, then `run_clue` on fixtures in the official
formats and (``JAXFORMER_DATA``) on the real folders with ``max_steps=2``."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_clue_run import CHARS, tiny_model, write_lines

from jaxformer.global_pointer import global_pointer_loss
from jaxformer.io import WordPieceTokenizer
from jaxformer.io.clue import NerExample, SpanQuestion
from jaxformer.io.clue_submit import read_submission
from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.tasks.clue import runner
from jaxformer.tasks.clue.config import ClueConfig
from jaxformer.tasks.clue.ner import NerAdapter, bio_records, span_labels
from jaxformer.tasks.clue.runner import run_clue
from jaxformer.tasks.clue.span import SpanAdapter, best_spans, pick_answers

pytestmark = pytest.mark.usefixtures("fast_compile")

CONTEXT = CHARS + CHARS[::-1] + CHARS[::2]  # 100 characters, one token each (tiny vocabulary)
ANSWER = CONTEXT[60:66]  # found first at 60


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return WordPieceTokenizer.from_directory(tiny_model(tmp_path_factory.mktemp("tok")))


def span_adapter(tok, **changes):
    cfg = ClueConfig.preset("cmrc2018", **{"batch_size": 4, "max_len": 32, "doc_stride": 8,
                                          "head_size": 8, **changes})
    return SpanAdapter(cfg, tok)


def window_text(data, n, start, end):
    off = data["offsets"][n]
    return CONTEXT[off[start, 0]:off[end, 1]]


def test_windows_cover_the_context_and_label_the_answer(tok):
    records = [SpanQuestion("q0", CONTEXT, "为什么", ((ANSWER, 60),)),
               SpanQuestion("q1", CONTEXT, "为什么", ((ANSWER, -1),)),      # found by text
               SpanQuestion("q2", CONTEXT, "孩子", (("不在文中", 3),))]     # unusable
    data = span_adapter(tok).encode(records)
    q0 = np.flatnonzero(data["question"] == 0)
    assert len(q0) > 5 and data["input_ids"].shape[1] == 32
    covered = set()
    for n in q0:
        ctx = np.flatnonzero(data["span_mask"][n][1:]) + 1
        assert data["span_mask"][n][0] == 1 and ctx[0] == 5  # [CLS] 为 什 么 [SEP] context
        covered |= {c for i in ctx for c in range(*data["offsets"][n][i])}
        kind, i, j = data["spans"][n, 0]
        window = {c for i in ctx for c in range(*data["offsets"][n][i])}
        if set(range(60, 66)) <= window:
            assert window_text(data, n, i, j) == ANSWER and i >= 5
        else:
            assert (kind, i, j) == (0, 0, 0)
    assert covered == set(range(len(CONTEXT)))
    assert any(data["spans"][n, 0, 1] for n in q0)
    np.testing.assert_array_equal(data["spans"][data["question"] == 1],
                                  data["spans"][data["question"] == 0])
    assert data["usable"][data["question"] == 2].sum() == 0
    assert data["usable"][data["question"] < 2].all()


def test_span_decoding_maps_back_to_the_exact_text(tok):
    records = [SpanQuestion("q0", CONTEXT, "为什么", ()), SpanQuestion("q1", "孩子跟谁睡", "谁", ())]
    adapter = span_adapter(tok)
    data = adapter.encode(records)
    scores = np.full((len(data["input_ids"]), 32, 32), -1e4, np.float32)
    n0, n1 = np.flatnonzero(data["question"] == 0)[[2, 4]]
    scores[n0, 5, 7] = 3.0  # the best window of q0
    scores[n1, 6, 9] = 2.0
    scores[:, 0, 0] = 9.0  # "no answer" is ignored
    (n2,) = np.flatnonzero(data["question"] == 1)
    scores[n2, 6, 7] = -5.0  # every question gets its best valid span
    start, end, score = (np.asarray(x) for x in best_spans(jnp.asarray(scores)))
    answers = pick_answers(start, end, score, data, records)
    assert answers[0] == window_text(data, n0, 5, 7) and len(answers[0]) == 3
    assert answers[1] == "谁睡"  # [CLS] 谁 [SEP] 孩 子 跟 谁 睡: tokens 6..7
    # The length cap: a longer span is never picked.
    scores[n0, 5, 20] = 10.0
    s, e, _ = best_spans(jnp.asarray(scores[n0:n0 + 1]), max_answer_len=4)
    assert (int(s[0]), int(e[0])) == (5, 7)


def ner_adapter(tok, **kw):
    return NerAdapter(ClueConfig.preset("cluener", max_len=16, batch_size=2, head_size=8),
                      tok, **kw)


def test_cluener_labels_and_decoding(tok):
    text = CHARS[:20]
    rec = NerExample(0, text, (("name", 0, 2), ("address", 3, 6), ("game", 12, 16)))
    adapter = ner_adapter(tok)
    data = adapter.encode([rec, NerExample(1, "深山", None)])
    labels = np.asarray(span_labels(jnp.asarray(data["spans"]), (2, 10, 16, 16)))
    # Token = character + 1 ([CLS]); the game entity is cut off by max_len 16 ([SEP] at 15).
    assert sorted(map(tuple, np.argwhere(labels))) == [(0, 0, 4, 6), (0, 6, 1, 2)]
    assert data["usable"].tolist() == [1.0, 0.0]
    assert data["span_mask"][0].tolist() == [0] + [1] * 14 + [0]
    scores = np.full((2, 10, 16, 16), -1.0, np.float32)
    scores[0, 6, 1, 2] = scores[0, 7, 5, 9] = scores[1, 0, 1, 2] = 1.0
    scores[1, 0, 3, 3] = 1.0  # padding: no characters, dropped
    assert adapter.decode(scores, data["offsets"]) == [
        (("name", 0, 2), ("organization", 4, 9)), (("address", 0, 2),)]
    with pytest.raises(ValueError, match="entity type 'PER' is not among"):
        adapter.encode([NerExample(0, text, (("PER", 0, 2),))])
    pd = ner_adapter(tok, types=("PER", "LOC", "ORG"))
    spans = pd.encode([NerExample(0, text, (("ORG", 1, 3),))])["spans"]
    assert spans.tolist() == [[[2, 2, 3]]]


def test_pointer_loss_is_global_pointer_loss(tok):
    adapter = ner_adapter(tok)
    cfg = EncoderConfig.tiny(vocab_size=tok.vocab_size, num_layers=1, use_pooler=False,
                             max_position_embeddings=128)
    model = adapter.build(Encoder(cfg, rngs=nnx.Rngs(0)))
    recs = [NerExample(0, CHARS[:12], (("name", 0, 2),)), NerExample(1, CHARS[3:9],
                                                                    (("book", 1, 4),))]
    data = adapter.encode(recs)
    batch = adapter.task().collate(data, np.arange(2))
    assert "offsets" not in batch
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    loss, metrics = adapter.task().loss_fn(model, batch, key=None, deterministic=True)
    scores = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                   span_mask=batch["span_mask"], deterministic=True)
    want = global_pointer_loss(scores, span_labels(jnp.asarray(batch["spans"]), scores.shape))
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    padded, _ = adapter.task().loss_fn(model, {**batch, "weights": jnp.array([1.0, 0.0])},
                                       key=None, deterministic=True)
    one = {k: jnp.asarray(v) for k, v in adapter.task().collate(data, np.arange(1)).items()}
    alone, _ = adapter.task().loss_fn(model, one, key=None, deterministic=True)
    np.testing.assert_allclose(padded, alone, rtol=1e-6)
    assert 0.0 <= float(metrics["f1"]) <= 1.0


def test_bio_records(tmp_path):
    path = tmp_path / "example.dev"
    path.write_text("张 B-PER\n三 I-PER\n在 O\n北 B-LOC\n京 I-LOC\n\n新 B-ORG\n华 I-ORG\n社 I-ORG\n",
                    encoding="utf-8")
    want = [NerExample(0, "张三在北京", (("PER", 0, 2), ("LOC", 3, 5))),
            NerExample(1, "新华社", (("ORG", 0, 3),))]
    assert bio_records(path) == want
    assert bio_records(([["ab", "c"]], [["B-PER", "I-PER"]])) == [
        NerExample(0, "abc", (("PER", 0, 3),))]
    with pytest.raises(ValueError, match="sentence 0: 2 characters but 1 tags"):
        bio_records(([["a", "b"]], [["O"]]))


def cmrc_fixture(folder, rng):
    def article(n, answered=True):
        paragraphs = []
        for p in range(n):
            context = "".join(rng.choice(list(CHARS), 70))
            at = int(rng.integers(0, 60))
            qas = [{"id": f"Q{p}_{k}", "question": context[at + k:at + k + 3],
                    **({"answers": [{"text": context[at:at + 5], "answer_start": at}]}
                       if answered else {})} for k in range(2)]
            paragraphs.append({"context": context, "qas": qas})
        return {"version": "v1.0", "data": [{"id": "A", "title": "t", "paragraphs": paragraphs}]}

    folder.mkdir()
    for name, n, answered in (("train", 5, True), ("dev", 3, True), ("test", 2, False)):
        (folder / f"{name}.json").write_text(json.dumps(article(n, answered),
                                                        ensure_ascii=False), "utf-8")


def test_run_clue_cmrc2018_fixture(tmp_path):
    cmrc_fixture(tmp_path / "cmrc", np.random.default_rng(0))
    report = run_clue(ClueConfig.preset("cmrc2018", batch_size=4, max_len=64, doc_stride=16,
                                        head_size=8),
                      model_dir=tiny_model(tmp_path), data_dir=tmp_path / "cmrc",
                      out_dir=tmp_path / "out", max_steps=2, progress=False)
    assert report["steps"] == 2 and set(report["dev"]) >= {"em", "f1", "average"}
    assert report["dev"]["total"] == 6 and report["submission"]["from"] == "test"
    lines = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any("f1" in x and "exact" in x for x in lines)
    submitted = read_submission("cmrc2018", tmp_path / "out")
    assert sorted(submitted) == ["Q0_0", "Q0_1", "Q1_0", "Q1_1"]


def test_run_clue_cluener_fixture(tmp_path):
    rng = np.random.default_rng(1)
    types = ("name", "address", "game")
    for name, n in (("train", 8), ("dev", 4), ("test", 3)):
        rows = []
        for i in range(n):
            text = "".join(rng.choice(list(CHARS), 20))
            row = {"id": i, "text": text} if name == "test" else {"text": text, "label": {
                types[i % 3]: {text[2:5]: [[2, 4]]}, "book": {text[9:11]: [[9, 10]]}}}
            rows.append(row)
        write_lines(tmp_path / "ner" / f"{name}.json", rows)
    report = run_clue(ClueConfig.preset("cluener", batch_size=4, max_len=32, head_size=8),
                      model_dir=tiny_model(tmp_path), data_dir=tmp_path / "ner",
                      out_dir=tmp_path / "out", max_steps=2, progress=False)
    assert set(report["dev"]) == {"f1", "precision", "recall", "per_type"}
    assert report["submission"] == {"file": "cluener_predict.json", "from": "test",
                                    "examples": 3}
    assert sorted(read_submission("cluener", tmp_path / "out")) == [0, 1, 2]


@pytest.mark.parametrize("task,folder,kind,limit", [("cmrc2018", "cmrc2018", "span", 48),
                                                    ("cluener", "cluener2020", "ner", 96)])
def test_real_folders_run_with_max_steps(data_dir, tmp_path, monkeypatch, task, folder, kind,
                                         limit):
    # The full dev sets (3219 questions as ~1e5 short windows, 1343 sentences) would dominate
    # the run: the adapter's `limit` keeps the first questions / sentences of every split.
    plain = runner.adapter_for
    monkeypatch.setattr(runner, "adapter_for", lambda config, tok: type(plain(config, tok))(
        config, tok, limit=limit))
    model_dir = tiny_model(tmp_path, data_dir / "vocab" / "bert-base-chinese-vocab.txt")
    changes = {"max_len": 64, "doc_stride": 32} if kind == "span" else {"max_len": 64}
    report = run_clue(ClueConfig.preset(task, batch_size=4, head_size=8, **changes),
                      model_dir=model_dir, data_dir=data_dir / folder,
                      out_dir=tmp_path / "out", max_steps=2, progress=False)
    assert report["steps"] == 2 and report["submission"]["examples"] == limit
    assert 0.0 <= report["dev"]["f1"] <= 100.0
    if kind == "span":
        assert report["dev"]["total"] == limit and report["dev"]["skipped"] == 0
