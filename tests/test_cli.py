"""The `jaxformer` command line: the console script, `--help`/`--version`, the subcommand
registry, reading lines, and `jaxformer embed` end to end (more embed cases: test_embed_cli.py)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(sys.executable).with_name("jaxformer")
HEAVY = ("jax", "jaxlib", "numpy", "flax", "torch", "transformers", "sentence_transformers", "tqdm")
# Every character `str.splitlines` breaks at besides "\n" and "\r".
SPLITLINES_BREAKS = ["\u2028", "\u2029", "\u0085", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e"]


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}


def _run(args, stdin: bytes = b""):
    return subprocess.run([str(SCRIPT), *args], input=stdin, capture_output=True, env=_env(), timeout=300)


@pytest.fixture(scope="module")
def reference(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


def test_console_script_installed():
    assert SCRIPT.exists(), f"console script missing at {SCRIPT}; is the package installed (-e .)?"


def test_help_is_fast_and_imports_nothing_heavy():
    check = f"""
import sys
import jaxformer.cli as cli
from jaxformer.cli import main
for argv in (["--help"], ["embed", "--help"], ["flops", "--help"], ["wobert-vocab", "--help"]):
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code == 0, (argv, exit.code)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
assert not heavy, heavy
"""
    res = subprocess.run([sys.executable, "-c", check], capture_output=True, env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    assert b"row i of the output is line i" in res.stdout
    res = _run(["--help"])
    assert res.returncode == 0 and b"embed" in res.stdout and b"wobert-vocab" in res.stdout, res.stderr


def test_version(capsys):
    from importlib import metadata

    import jaxformer
    from jaxformer.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"jaxformer {metadata.version('jaxformer')}\n"
    assert jaxformer.__version__
    res = subprocess.run([sys.executable, "-m", "jaxformer.cli", "--version"], capture_output=True,
                         env=_env(), timeout=120)
    assert res.returncode == 0 and res.stdout.decode().startswith("jaxformer "), res.stderr


def test_version_falls_back_to_the_package_when_not_installed(monkeypatch):
    from importlib import metadata

    import jaxformer
    from jaxformer.cli import version

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert version() == jaxformer.__version__


def test_lazy_package_keeps_its_exports():
    import jaxformer

    for name in jaxformer.__all__:
        assert getattr(jaxformer, name) is not None
    assert set(jaxformer.__all__) <= set(dir(jaxformer))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jaxformer.nope  # noqa: B018


def test_subcommand_registry():
    import importlib

    from jaxformer.cli import SUBCOMMANDS, build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert list(sub.choices) == ["embed", "sts", "flops", "bench", "wobert-vocab", "clue",
                                 "generate"]
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"jaxformer.cli.{name}")
        assert module.NAME in sub.choices and callable(module.register)


def test_pooling_choices_are_the_librarys():
    from jaxformer.cli.embed import POOLING_CHOICES
    from jaxformer.pooling import POOLINGS

    assert POOLING_CHOICES == POOLINGS


@pytest.mark.parametrize("char", SPLITLINES_BREAKS, ids=lambda c: f"U+{ord(c):04X}")
def test_lines_split_on_newline_only(char):
    from jaxformer.cli.common import split_lines

    text = f"one{char}line\r\n\nlast{char}\n"
    assert len(text.splitlines()) > 3  # what str.splitlines would have done
    assert split_lines(text) == [f"one{char}line", "", f"last{char}"]


@pytest.mark.parametrize(
    ("text", "lines"),
    [("", []), ("\n", [""]), ("a", ["a"]), ("a\n", ["a"]), ("a\n\n", ["a", ""]), ("\ufeffa\r\nb", ["a", "b"]),
     ("a\rb\n", ["a\rb"]), (" \n\t\n", [" ", "\t"])],
)
def test_split_lines_edges(text, lines):
    from jaxformer.cli.common import split_lines

    assert split_lines(text) == lines


def test_embed_matches_sentence_transformers_with_the_directorys_defaults(tmp_path, minilm_dir, reference):
    # No --pooling/--normalize/--max-length: mean, Normalize and 256 come from the directory.
    lines = ["A man is playing a guitar.", "", "Ein Mann spielt Gitarre.", "猫がいます。", "crlf line"]
    lines += [f"a{char}b" for char in SPLITLINES_BREAKS]
    out = tmp_path / "emb.npy"
    stdin = ("\n".join(lines[:4]) + "\ncrlf line\r\n" + "\n".join(lines[5:]) + "\n").encode()
    res = _run(["embed", "--model", str(minilm_dir), "--out", str(out)], stdin=stdin)
    assert res.returncode == 0, res.stderr.decode()
    err = res.stderr.decode()
    assert ("from the model directory: pooling=mean (1_Pooling/config.json), normalize=on "
            "(modules.json), max_length=256 (sentence_bert_config.json)") in err
    assert "it/s" not in err and "sentence/s" not in err  # stderr is a pipe: no progress bar
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (len(lines), 384)
    want = reference.encode(lines, convert_to_numpy=True)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_progress_bar_counts_sentences_when_forced(tmp_path, minilm_dir, capsys):
    from jaxformer.cli import main

    src = tmp_path / "in.txt"
    src.write_text("\n".join(f"sentence number {i} about topic {i % 7}" for i in range(40)), encoding="utf-8")
    out = tmp_path / "emb.npy"
    assert main(["embed", "--model", str(minilm_dir), "--input", str(src), "--pooling", "cls",
                 "--max-length", "32", "--batch-size", "16", "--progress", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "embed:" in err and "40/40" in err and "sentence" in err, err  # the tqdm bar
    assert np.load(out).shape == (40, 384)


@pytest.mark.parametrize("pooling", ["mean", "cls", "first-last-avg", "pooler"])
def test_poolings_in_process(tmp_path, minilm_dir, pooling, monkeypatch):
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
        (["--model", "{minilm}"], b"\xff\xfe bad", "standard input:1: not valid UTF-8"),
        (["--model", "{minilm}", "--max-length", "100000"], b"hi\n", "--max-length must be in [2, 512]"),
        (["--model", "{minilm}", "--max-length", "0"], b"hi\n", "--max-length must be >= 2"),
        (["--model", "{minilm}", "--max-length", "1"], b"hi\n", "--max-length must be >= 2"),
        (["--model", "{minilm}", "--batch-size", "0"], b"hi\n", "--batch-size must be >= 1"),
        (["--model", "{minilm}", "--input", "/no/such/file.txt"], b"", "no such file"),
        (["--model", "{minilm}", "--input", "{tmp}"], b"", "is a directory"),
    ],
)
def test_errors_are_clear_and_nonzero(tmp_path, minilm_dir, args, stdin, message, monkeypatch, capsys):
    from jaxformer.cli import main

    args = [a.replace("{tmp}", str(tmp_path)).replace("{minilm}", str(minilm_dir)) for a in args]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(["embed", *args, "--out", str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert err.startswith("jaxformer embed: error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == []  # nor a temporary file
