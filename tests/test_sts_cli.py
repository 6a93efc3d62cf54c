"""`jaxformer sts`: Spearman of every pooling, whitening fitted/saved/loaded, bad input.

Runs `main()` in-process on the real all-MiniLM-L6-v2; the reference is sentence-transformers'
own encoding of the same model, then scipy's Spearman.
"""

import json

import numpy as np
import pytest

from conftest import require

PAIRS = [
    ("A man is playing a guitar.", "A man is playing an instrument.", 3.8),
    ("A man is playing a guitar.", "A woman is slicing an onion.", 0.2),
    ("A plane is taking off.", "An air plane is taking off.", 5.0),
    ("A cat sits on the mat.", "A dog sleeps on the rug.", 1.4),
    ("Two children play football in a park.", "Kids are playing soccer outside.", 4.2),
    ("The stock market fell sharply today.", "Shares dropped steeply on Monday.", 3.9),
    ("The stock market fell sharply today.", "A girl is riding a horse.", 0.0),
    ("She is cooking pasta in the kitchen.", "A woman prepares noodles.", 3.5),
    ("A man is driving a car.", "A person drives a vehicle.", 4.6),
    ("A man is driving a car.", "The sun rises in the east.", 0.1),
    ("Birds fly south in winter.", "In winter, many birds migrate.", 4.0),
    ("He plays the piano every day.", "He practises the guitar weekly.", 1.8),
    ("A baby is laughing.", "An infant giggles.", 4.8),
    ("The train was late again.", "The train arrived on time.", 1.5),
    ("A chef is chopping vegetables.", "Someone cuts carrots.", 3.6),
    ("A dog runs through the snow.", "Snow falls on the mountains.", 1.2),
]


@pytest.fixture()
def data(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in PAIRS), encoding="utf-8")
    return f


def _sts(capsys, *args):
    from jaxformer.cli import main

    code = main(["sts", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_pooling_one_json_object_each_and_parity_with_sentence_transformers(
        minilm_dir, data, capsys):
    code, out, _ = _sts(capsys, "--model", minilm_dir, "--data", data, "--pooling", "all",
                        "--json")
    assert code == 0
    reports = [json.loads(line) for line in out.splitlines()]
    assert [r["pooling"] for r in reports] == ["cls", "mean", "first-last-avg", "pooler"]
    for r in reports:
        assert -1.0 <= r["spearman"] <= 1.0 and r["n"] == len(PAIRS)
        assert r["whiten"] is None and r["max_length"] == 256  # sentence_bert_config.json
    st = require("sentence_transformers")
    stats = require("scipy.stats")
    model = st.SentenceTransformer(str(minilm_dir), device="cpu")
    a = model.encode([p[0] for p in PAIRS], convert_to_numpy=True).astype(np.float64)
    b = model.encode([p[1] for p in PAIRS], convert_to_numpy=True).astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    expected = stats.spearmanr(cos, [p[2] for p in PAIRS]).statistic
    mean = next(r for r in reports if r["pooling"] == "mean")
    assert mean["spearman"] == pytest.approx(expected, abs=1e-6)
    assert mean["spearman"] > 0.8  # the model does rank these pairs


def test_whitening_default_fit_save_and_reload(minilm_dir, data, tmp_path, capsys):
    saved = tmp_path / "w.safetensors"
    code, out, _ = _sts(capsys, "--model", minilm_dir, "--data", data, "--pooling", "cls",
                        "--whiten", "8", "--save-whitening", saved, "--json")
    assert code == 0
    first = json.loads(out)
    assert first["whiten"] == 8 and "evaluated pairs' own sentences" in first["whiten_fit"]
    assert first["whiten_fit_sentences"] == len({s for p in PAIRS for s in p[:2]})
    code, out, _ = _sts(capsys, "--model", minilm_dir, "--data", data, "--pooling", "cls",
                        "--whiten", "8", "--whiten-fit", saved, "--json")
    again = json.loads(out)
    assert code == 0 and again["spearman"] == pytest.approx(first["spearman"], abs=1e-6)
    assert str(saved) in again["whiten_fit"]
    # Kept with a model: a directory holding whitening.safetensors is read the same way.
    saved.rename(tmp_path / "whitening.safetensors")
    code, out, _ = _sts(capsys, "--model", minilm_dir, "--data", data, "--pooling", "cls",
                        "--whiten", "8", "--whiten-fit", tmp_path, "--json")
    assert code == 0 and json.loads(out)["spearman"] == pytest.approx(first["spearman"], abs=1e-6)
    # Statistics of one pooling refuse another.
    code, _, err = _sts(capsys, "--model", minilm_dir, "--data", data, "--pooling", "mean",
                        "--whiten", "8", "--whiten-fit", tmp_path)
    assert code == 2 and "statistics of pooling 'cls'" in err


def test_whitening_fit_on_other_sentences(minilm_dir, data, tmp_path, capsys):
    lines = tmp_path / "fit.txt"
    lines.write_text("\n".join(f"Sentence number {i} about topic {i % 7}." for i in range(40)),
                     encoding="utf-8")
    code, out, _ = _sts(capsys, "--model", minilm_dir, "--data", data, "--pooling", "mean",
                        "--whiten", "4", "--whiten-fit", lines, "--whiten-fit-format", "lines",
                        "--json")
    report = json.loads(out)
    assert code == 0 and report["whiten_fit"] == str(lines)
    assert report["whiten_fit_sentences"] == 40


@pytest.mark.parametrize("args,message", [
    (["--whiten", "-2"], "--whiten must be -1"),
    (["--split", "test"], "--split needs --format stsb"),
    (["--whiten-fit", "x.txt"], "need --whiten K"),
    (["--save-whitening", "w.npy", "--whiten", "4"], "expected a path ending in .safetensors"),
    (["--max-length", "1"], "--max-length must be >= 2"),
])
def test_bad_flags_fail_before_the_model_loads(minilm_dir, data, capsys, monkeypatch, args,
                                                message):
    import jaxformer.models.pretrained as pretrained

    monkeypatch.setattr(pretrained, "load_pretrained", lambda *a, **k: pytest.fail("loaded"))
    code, _, err = _sts(capsys, "--model", minilm_dir, "--data", data, *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_malformed_data_line_is_reported_as_file_line(minilm_dir, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\t1\nc\td\n", encoding="utf-8")
    code, _, err = _sts(capsys, "--model", minilm_dir, "--data", bad)
    assert code == 2 and f"{bad}:2: expected 3 tab-separated fields" in err


def test_whiten_wider_than_the_model_is_refused(minilm_dir, data, capsys):
    code, _, err = _sts(capsys, "--model", minilm_dir, "--data", data, "--pooling", "cls",
                        "--whiten", "1000")
    assert code == 2 and "at most the width E=384" in err
