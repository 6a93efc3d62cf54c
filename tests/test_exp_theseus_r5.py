"""The R5 experiment script: its report logic on hand-made runs, and one end-to-end smoke run
on the real THUCNews and IFLYTEK files (``JAXFORMER_DATA``) with a tiny encoder."""

import json

import numpy as np
import pytest
from flax import nnx

from benchmarks.exp_theseus_r5 import R5Config, load_task, main, report_rows, verdicts

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_report_rows_and_verdicts():
    cfg = R5Config(targets=(3,), curriculum=(3,))
    done = {}
    for seed, (pred, trunc, thes, lin) in enumerate([(50, 40, 45, 46), (52, 41, 47, 44),
                                                      (51, 39, 46, 45)]):
        for variant, acc in (("predecessor", pred), ("truncated-3", trunc), ("theseus-3", thes),
                             ("theseus-3-linear", lin)):
            done[f"t|{seed}|{variant}"] = {"test_accuracy": float(acc), "seconds": 1.0,
                                           "dev_best": {"accuracy": acc / 100}}
    rows = report_rows(done, ["t"], [0, 1, 2], cfg, 6, {"t": {6: 2.0, 3: 1.0}})
    by = {r["variant"]: r for r in rows}
    assert by["theseus-3"]["test_acc"] == "46.00 ± 1.00"
    assert by["theseus-3"]["speedup"] == 2.0 and by["predecessor"]["speedup"] == 1.0
    lines = verdicts(rows, cfg)
    # 46 - 40 = 6 points; 2 SE = 2 * sqrt(1/3 + 1/3) = 1.63.
    assert lines[0] == "t, 3 blocks: Theseus beats truncation (+6.00 points, 2 SE = 1.63)"
    assert lines[1] == ("t, 3 blocks: the linear curriculum minus constant p = -1.00 points "
                        "(2 SE = 1.63)")


def chinese_tokenizer(data_dir, tmp_path):
    import shutil

    from jaxformer.io import WordPieceTokenizer

    shutil.copy(data_dir / "vocab" / "bert-base-chinese-vocab.txt", tmp_path / "vocab.txt")
    return WordPieceTokenizer.from_directory(tmp_path)


def test_load_task_splits(data_dir, tmp_path):
    tok = chinese_tokenizer(data_dir, tmp_path)
    splits, labels = load_task(data_dir, "thucnews", tok, 32, None)
    assert labels == 10
    assert [len(splits[k]["labels"]) for k in ("train", "select", "test")] == [9000, 1000, 10000]
    splits, labels = load_task(data_dir, "iflytek", tok, 64, 50)
    assert labels == 119 and splits["select"]["input_ids"].shape[1] <= 64


def test_smoke_run_writes_the_report(data_dir, tmp_path, monkeypatch):
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Encoder
    from jaxformer.models.pretrained import save_pretrained

    monkeypatch.setenv("JAXFORMER_CACHE", str(tmp_path / "cache"))
    tok = chinese_tokenizer(data_dir, tmp_path)
    model_dir = tmp_path / "model"
    cfg = EncoderConfig.tiny(vocab_size=tok.vocab_size, num_layers=2, use_pooler=False,
                             max_position_embeddings=128)
    save_pretrained(Encoder(cfg, rngs=nnx.Rngs(0)), model_dir, tokenizer=tok)
    args = ["--data-dir", str(data_dir), "--model", str(model_dir), "--targets", "1",
            "--epochs", "1", "1", "1", "--limit", "64", "--seeds", "0", "--tasks", "thucnews",
            "--curriculum", "--out", str(tmp_path / "results")]
    assert main(args) == 0
    report = json.loads((tmp_path / "results" / "cpu" / "theseus_r5.json").read_text())
    assert [r["variant"] for r in report["rows"]] == ["predecessor", "truncated-1",
                                                      "truncated-1-long", "theseus-1"]
    assert all(0 <= r["test_acc_mean"] <= 100 for r in report["rows"])
    assert report["command"].startswith("python -m benchmarks.exp_theseus_r5 --data-dir")
    runs = json.loads((tmp_path / "results" / "cpu" / "theseus_r5_runs.json").read_text())
    assert set(runs["runs"]) == {"thucnews|0|predecessor", "thucnews|0|theseus-1",
                                 "thucnews|0|truncated-1", "thucnews|0|truncated-1-long"}
    assert np.isfinite(runs["runs"]["thucnews|0|theseus-1"]["replaced_test_accuracy"])
    assert set(runs["speeds"]["thucnews"]) == {"2", "1"}
    assert (tmp_path / "results" / "cpu" / "theseus_r5.png").stat().st_size > 0
    # A rerun finds every run stored and retrains nothing (the report is rewritten, speeds kept).
    assert main(args + ["--report-only"]) == 0
    again = json.loads((tmp_path / "results" / "cpu" / "theseus_r5.json").read_text())
    assert [r["speedup"] for r in again["rows"]] == [r["speedup"] for r in report["rows"]]
    assert again["rows"][0]["speedup"] == 1.0
