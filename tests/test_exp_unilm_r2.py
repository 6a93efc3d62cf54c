"""`benchmarks.exp_unilm_r2` and `jaxformer.io.generation_sets`: the data builders on the real CSL and CMRC2018 files (skipped
without ``JAXFORMER_DATA``), the article split on its own, and a ``--limit`` smoke run of `main`
with two tiny masked-LM folders and tiny data files written to tmp."""

import json
import shutil
from types import SimpleNamespace

import pytest
from flax import nnx

from benchmarks.exp_unilm_r2 import R2Config, cmrc_splits, csl_splits, main
from jaxformer.io.generation_sets import (article_of, csl_keyword_pairs, question_pair,
                                          split_articles)

CHARS = "无线传感器网络隐私保护查询协议数据结构基站方程直方图统计信息问题答案是什么谁哪年"


def test_csl_keeps_label_one_and_joins_keywords(data_dir):
    folder = data_dir / "fewclue" / "csl"
    for name in ("train_few_all", "dev_few_all", "test_public"):
        raw = [json.loads(line) for line in (folder / f"{name}.json").read_text(
            "utf-8").splitlines() if line.strip()]
        genuine = {r["abst"] for r in raw if str(r["label"]) == "1"}
        assert 0 < len(genuine) < len({r["abst"] for r in raw}) <= len(raw)
        pairs = csl_keyword_pairs(folder / f"{name}.json")
        assert [a for a, _ in pairs] == list(dict.fromkeys(
            r["abst"] for r in raw if str(r["label"]) == "1"))  # label 1, each abstract once
        for abstract, target in pairs:
            words = target.split("；")
            ones = [r["keyword"] for r in raw if r["abst"] == abstract and str(r["label"]) == "1"]
            assert words == list(dict.fromkeys(k for ks in ones for k in ks))
            assert "；".join(ones[0]) == target[:len("；".join(ones[0]))]
    splits, counts = csl_splits(folder, R2Config())
    assert len(splits["test"]) == 200 and counts["train_few_all"] == 70
    # No abstract in two splits; the report set never trains, the rest of the pool does.
    abstracts = {k: {a for a, _ in v} for k, v in splits.items()}
    assert not abstracts["test"] & abstracts["train"]
    assert not abstracts["test"] & abstracts["dev"] and not abstracts["dev"] & abstracts["train"]
    assert len(splits["train"]) == 70 + counts["leftover_test"]


def test_cmrc_article_split_is_disjoint(data_dir):
    from jaxformer.io.clue import read_clue

    records = read_clue("cmrc2018", data_dir / "cmrc2018" / "cmrc2018_dev.json")
    first, second = split_articles(records, seed=0)
    a, b = {article_of(r.qid) for r in first}, {article_of(r.qid) for r in second}
    assert a and b and not a & b
    assert abs(len(a) - len(b)) <= 1 and len(first) + len(second) == len(records)
    # No passage in both halves either; the split is fixed.
    assert not {r.context for r in first} & {r.context for r in second}
    assert split_articles(records, seed=0) == (first, second)
    splits, counts = cmrc_splits(data_dir / "cmrc2018", R2Config())
    assert len(splits["test"]) == 300 and len(splits["dev"]) == 200
    test_passages = {s.split("[SEP]", 1)[1] for s, _ in splits["test"]}
    assert not test_passages & {s.split("[SEP]", 1)[1] for s, _ in splits["dev"]}


def test_question_pair_window_and_answer_first():
    rec = SimpleNamespace(context="甲" * 100 + "答案" + "乙" * 100, question="问？",
                          answers=(("答案", -1),))
    source, target = question_pair(rec, window=20)
    answer, window = source.split("[SEP]")
    assert (answer, target) == ("答案", "问？")
    assert window == "甲" * 10 + "答案" + "乙" * 8
    edge = SimpleNamespace(context="答案" + "乙" * 50, question="q", answers=(("答案", 0),))
    assert question_pair(edge, window=10)[0] == "答案[SEP]答案" + "乙" * 8
    assert question_pair(SimpleNamespace(context="abc", question="q", answers=(("x", 5),)),
                         window=10) is None


def _tiny_mlm(folder, seed):
    from jaxformer.io import WordPieceTokenizer
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Encoder
    from jaxformer.models.lm import MaskedLM
    from jaxformer.models.pretrained_lm import save_masked_lm

    vocab = folder / "vocab"
    vocab.mkdir(parents=True)
    lines = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "；", "？"] + sorted(set(CHARS))
    (vocab / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = WordPieceTokenizer.from_directory(vocab)
    cfg = EncoderConfig.tiny(vocab_size=tok.vocab_size, num_layers=1, use_pooler=False,
                             max_position_embeddings=256)
    model = MaskedLM(Encoder(cfg, rngs=nnx.Rngs(seed)), rngs=nnx.Rngs(seed + 1))
    return save_masked_lm(model, folder / "model", tokenizer=tok)


def _tiny_data(root):
    import numpy as np

    rng = np.random.default_rng(0)

    def text(n):
        return "".join(rng.choice(list(CHARS), n))

    csl = root / "fewclue" / "csl"
    csl.mkdir(parents=True)
    for name in ("train_few_all", "dev_few_all", "test_public"):
        rows = [{"id": i, "abst": text(40), "keyword": [text(3), text(2)], "label": str(i % 2)}
                for i in range(16)]
        (csl / f"{name}.json").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                  for r in rows), "utf-8")
    cmrc = root / "cmrc2018"
    cmrc.mkdir()
    for name, prefix in (("trial", "TRIAL"), ("dev", "DEV")):
        data = []
        for a in range(6):
            context = text(60)
            qas = [{"id": f"{prefix}_{a}_QUERY_{q}", "question": text(6) + "？",
                    "answers": [{"text": context[10 * q:10 * q + 3], "answer_start": 10 * q}]}
                   for q in range(2)]
            data.append({"id": f"{prefix}_{a}", "title": "t",
                         "paragraphs": [{"id": f"{prefix}_{a}", "context": context, "qas": qas}]})
        (cmrc / f"cmrc2018_{name}.json").write_text(json.dumps({"data": data},
                                                               ensure_ascii=False), "utf-8")
    return root


def test_limit_smoke_run_writes_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXFORMER_CACHE", str(tmp_path / "cache"))
    data = _tiny_data(tmp_path / "data")
    char, wobert = _tiny_mlm(tmp_path / "char", 0), _tiny_mlm(tmp_path / "wobert", 2)
    out = tmp_path / "results"
    args = ["--data-dir", str(data), "--char-model", str(char), "--wobert-model", str(wobert),
            "--seeds", "0", "--beams", "1", "2", "--limit", "4", "--out", str(out)]
    assert main(args) == 0
    (json_path,) = out.glob(f"*/unilm_r2.json")
    report = json.loads(json_path.read_text("utf-8"))
    rows = report["rows"]
    assert [(r["task"], r["model"], r["beam"]) for r in rows] == [
        (t, m, k) for t in ("csl", "cmrc2018") for m in ("char-bert", "wobert") for k in (1, 2)]
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["steps"] == 2
        assert 0 <= float(r["rouge-l"].split(" ± ")[0]) <= 100
    assert json_path.with_suffix(".md").read_text("utf-8").startswith(
        "Reproduce with: `python -m benchmarks.exp_unilm_r2 ")
    # Stored runs: a report-only rerun reads them back without training.
    capsys.readouterr()
    assert main([*args, "--report-only"]) == 0
    assert "training" not in capsys.readouterr().out
    assert json.loads(json_path.read_text("utf-8"))["rows"] == rows
    # Completing a report whose run cache was lost: cmrc2018's rows come from the earlier report
    # (its stored runs are deleted here), csl's from the runs; same rows, and notes say so.
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json_path.read_text("utf-8"), "utf-8")
    for stored in (tmp_path / "cache").glob("runs/unilm_r2/*/cmrc2018"):
        shutil.rmtree(stored)
    assert main([*args, "--report-only", "--tasks", "csl", "--keep-rows-from", str(earlier)]) == 0
    merged = json.loads(json_path.read_text("utf-8"))
    commit = report["environment"]["git_commit"]
    assert [{k: v for k, v in r.items() if k != "measured"} for r in merged["rows"]] == rows
    assert [r["task"] for r in merged["rows"] if "measured" in r] == ["cmrc2018"] * 4
    assert all(r["measured"].startswith(f"commit {commit}") for r in merged["rows"][4:])
    (note,) = [n for n in merged["notes"] if n.startswith("rows carried over")]
    assert "cmrc2018/char-bert, cmrc2018/wobert (measured at commit" in note
    assert any(n.startswith("cmrc2018, beam 1: WoBERT") for n in merged["notes"])
    # Another report, or one of other settings, is refused with what differs.
    other = dict(report, name="clue")
    (tmp_path / "other.json").write_text(json.dumps(other), "utf-8")
    with pytest.raises(SystemExit):
        main([*args, "--report-only", "--keep-rows-from", str(tmp_path / "other.json")])
    assert "--keep-rows-from: expected a report named 'unilm_r2', got 'clue'" in (
        capsys.readouterr().err)
    changed = dict(report, notes=[n.replace('"batch_size": 16', '"batch_size": 8')
                                  for n in report["notes"]])
    (tmp_path / "changed.json").write_text(json.dumps(changed), "utf-8")
    with pytest.raises(SystemExit):
        main([*args, "--report-only", "--keep-rows-from", str(tmp_path / "changed.json")])
    err = capsys.readouterr().err
    assert "expected the earlier report's settings to be this run's" in err
    assert '"batch_size": 8' in err


def test_missing_model_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXFORMER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit):
        main(["--data-dir", str(tmp_path), "--char-model", str(tmp_path / "nope")])
    assert "--char-model: no model folder at" in capsys.readouterr().err
    with pytest.raises(ValueError, match="R2Config.beams"):
        R2Config(beams=(0,))
