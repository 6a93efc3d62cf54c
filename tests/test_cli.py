"""`jaxformer embed`: end to end through the installed console script, and its error paths."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(sys.executable).with_name("jaxformer")


def _run(args, stdin: bytes = b""):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(SCRIPT), *args], input=stdin, capture_output=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def reference(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


def test_console_script_installed():
    assert SCRIPT.exists(), f"console script missing at {SCRIPT}; is the package installed (-e .)?"


def test_embed_from_stdin_matches_sentence_transformers(tmp_path, minilm_dir, reference):
    lines = ["A man is playing a guitar.", "", "Ein Mann spielt Gitarre.", "猫がいます。"]
    out = tmp_path / "emb.npy"
    res = _run(["embed", "--model", str(minilm_dir), "--normalize", "--out", str(out)],
               stdin="\n".join(lines).encode())
    assert res.returncode == 0, res.stderr.decode()
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (4, 384)
    want = reference.encode(lines, convert_to_numpy=True)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_embed_many_lines_from_file_shows_progress(tmp_path, minilm_dir):
    from jaxformer.cli import main

    src = tmp_path / "in.txt"
    src.write_text("\n".join(f"sentence number {i} about topic {i % 7}" for i in range(300)), encoding="utf-8")
    out = tmp_path / "emb.npy"
    res = _run(["embed", "--model", str(minilm_dir), "--input", str(src), "--pooling", "cls",
                "--max-length", "32", "--batch-size", "64", "--out", str(out)])
    assert res.returncode == 0, res.stderr.decode()
    assert "embed:" in res.stderr.decode() and "batch" in res.stderr.decode()  # the tqdm bar
    assert np.load(out).shape == (300, 384)
    assert main  # imported in-process too: the module has no import-time side effects


@pytest.mark.parametrize("pooling", ["mean", "cls", "first-last-avg", "pooler"])
def test_poolings_in_process(tmp_path, minilm_dir, pooling, monkeypatch):
    import io

    from jaxformer.cli import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hello there\nsecond line\n")))
    out = tmp_path / "e.npy"
    assert main(["embed", "--model", str(minilm_dir), "--pooling", pooling, "--out", str(out)]) == 0
    got = np.load(out)
    assert got.shape == (2, 384) and np.all(np.isfinite(got))


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--model", "/definitely/not/here"], b"hi\n", "not a directory"),
        (["--model", "{tmp}"], b"hi\n", "no config.json"),
        (["--model", "{minilm}"], b"", "has no sentences"),
        (["--model", "{minilm}"], b"\n  \n", "has no sentences"),
        (["--model", "{minilm}"], b"\xff\xfe bad", "<stdin>"),
        (["--model", "{minilm}", "--max-length", "100000"], b"hi\n", "--max-length must be in [2, 512]"),
        (["--model", "{minilm}", "--input", "/no/such/file.txt"], b"", "no such file"),
    ],
)
def test_errors_are_clear_and_nonzero(tmp_path, minilm_dir, args, stdin, message, monkeypatch, capsys):
    import io

    from jaxformer.cli import main

    args = [a.replace("{tmp}", str(tmp_path)).replace("{minilm}", str(minilm_dir)) for a in args]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(["embed", *args, "--out", str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert code == 2, err
    expected = "standard input:1: not valid UTF-8" if message == "<stdin>" else message
    assert expected in err, err
    assert err.startswith("jaxformer embed: error: ")
    assert not (tmp_path / "x.npy").exists()
