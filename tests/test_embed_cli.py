"""`jaxformer embed`: output formats, atomic replacement of --out, settings read from a
sentence-transformers directory, --dtype. Runs `main()` in-process on the real all-MiniLM-L6-v2."""

import io
import json
import os
import sys

import numpy as np
import pytest

LINES = ["A man is playing a guitar.", "", "line\u2028with a separator", "猫がいます。"]


def _stdin(monkeypatch, lines=LINES):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(lines).encode("utf-8"))))


def _embed(monkeypatch, capsys, *args, lines=LINES):
    from jaxformer.cli import main

    _stdin(monkeypatch, lines)
    code = main(["embed", *map(str, args)])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def ours(minilm_dir):
    from jaxformer.io import load_tokenizer
    from jaxformer.models.pretrained import load_pretrained

    return load_pretrained(minilm_dir), load_tokenizer(minilm_dir)


def _st_dir(tmp_path, minilm_dir, *, pooling, modules=("Transformer", "Pooling"), max_seq_length=None):
    """A copy of MiniLM (its weights and tokenizer linked) with other sentence-transformers files."""
    d = tmp_path / "st-model"
    d.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "vocab.txt", "special_tokens_map.json"):
        (d / name).symlink_to(minilm_dir / name)
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize", "Dense": "2_Dense"}
    (d / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": paths[m], "type": f"sentence_transformers.models.{m}"}
         for i, m in enumerate(modules)]))
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384, **pooling}))
    if max_seq_length is not None:
        (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return d


def test_formats_npy_npz_jsonl_agree(tmp_path, minilm_dir, monkeypatch, capsys):
    for suffix in (".npy", ".npz", ".jsonl"):
        code, err = _embed(monkeypatch, capsys, "--model", minilm_dir, "--out", tmp_path / f"e{suffix}")
        assert code == 0, err
    npy = np.load(tmp_path / "e.npy")
    assert npy.shape == (4, 384) and npy.dtype == np.float32
    with np.load(tmp_path / "e.npz") as npz:
        assert sorted(npz.files) == ["embeddings", "line_numbers"]
        np.testing.assert_array_equal(npz["embeddings"], npy)
        np.testing.assert_array_equal(npz["line_numbers"], [1, 2, 3, 4])
    raw = (tmp_path / "e.jsonl").read_text(encoding="utf-8")
    assert len(raw.splitlines()) == 4  # U+2028 in a text is escaped, so even splitlines agrees
    records = [json.loads(line) for line in raw.split("\n") if line]
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    assert [r["text"] for r in records] == LINES
    np.testing.assert_array_equal(np.array([r["embedding"] for r in records], np.float32), npy)


def test_a_failed_run_leaves_the_earlier_output_intact(tmp_path, minilm_dir, monkeypatch, capsys):
    out = tmp_path / "e.npy"
    np.save(out, np.arange(3, dtype=np.float32))
    os.chmod(out, 0o640)
    before = out.read_bytes()
    code, err = _embed(monkeypatch, capsys, "--model", tmp_path, "--out", out)  # no config.json
    assert code == 2 and "no config.json" in err, err

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    code, err = _embed(monkeypatch, capsys, "--model", minilm_dir, "--out", out)
    assert code == 2, err
    assert err.splitlines()[-1] == (f"jaxformer embed: error: --out {out}: writing failed (No space "
                                    "left on device); any earlier file there is unchanged")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy"]  # no temporary file left
    monkeypatch.undo()
    code, err = _embed(monkeypatch, capsys, "--model", minilm_dir, "--out", out)
    assert code == 0, err
    assert np.load(out).shape == (4, 384)
    assert (os.stat(out).st_mode & 0o777) == 0o640  # replaced, keeping its permissions
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy"]


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("{tmp}", "is a directory"),
        ("{tmp}/e.txt", "expected a path ending in .npy, .npz or .jsonl, got '.txt'"),
        ("{tmp}/e", "got no suffix"),
        ("{tmp}/file/e.npy", "cannot create its directory"),
    ],
)
def test_bad_out_fails_before_the_model_loads(tmp_path, minilm_dir, monkeypatch, capsys, out, message):
    import jaxformer.models.pretrained

    (tmp_path / "file").write_text("not a directory")

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(jaxformer.models.pretrained, "load_pretrained", never)
    code, err = _embed(monkeypatch, capsys, "--model", minilm_dir, "--out", out.replace("{tmp}", str(tmp_path)))
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert err.startswith("jaxformer embed: error: --out ")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_directory(tmp_path, minilm_dir, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = _embed(monkeypatch, capsys, "--model", minilm_dir, "--out", locked / "e.npy")
    finally:
        locked.chmod(0o700)
    assert code == 2 and "cannot write in" in err, err


def test_settings_come_from_the_model_directory_and_flags_win(tmp_path, minilm_dir, ours, monkeypatch, capsys):
    from jaxformer.models.sentence import embed_sentences

    model, tokenizer = ours
    d = _st_dir(tmp_path, minilm_dir, pooling={"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
                modules=("Transformer", "Pooling", "Dense"), max_seq_length=8)
    code, err = _embed(monkeypatch, capsys, "--model", d, "--out", tmp_path / "a.npy")
    assert code == 0, err
    assert ("from the model directory: pooling=cls (1_Pooling/config.json), normalize=off "
            "(modules.json), max_length=8 (sentence_bert_config.json)") in err
    assert "note: modules.json lists sentence_transformers.models.Dense" in err
    want = embed_sentences(model, tokenizer, LINES, pooling="cls", normalize=False, max_length=8)
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), want, atol=1e-5, rtol=0)

    code, err = _embed(monkeypatch, capsys, "--model", d, "--pooling", "mean", "--normalize",
                       "--max-length", "16", "--out", tmp_path / "b.npy")
    assert code == 0, err
    assert "from the model directory" not in err
    want = embed_sentences(model, tokenizer, LINES, pooling="mean", normalize=True, max_length=16)
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), want, atol=1e-5, rtol=0)


def test_no_normalize_overrides_the_directorys_normalize(tmp_path, minilm_dir, ours, monkeypatch, capsys):
    from jaxformer.models.sentence import embed_sentences

    model, tokenizer = ours
    code, err = _embed(monkeypatch, capsys, "--model", minilm_dir, "--no-normalize", "--out", tmp_path / "e.npy")
    assert code == 0, err
    assert "pooling=mean (1_Pooling/config.json)" in err and "normalize=" not in err.split("wrote")[0]
    want = embed_sentences(model, tokenizer, LINES, pooling="mean", normalize=False, max_length=256)
    got = np.load(tmp_path / "e.npy")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)


def test_a_pooling_we_lack_asks_for_a_flag(tmp_path, minilm_dir, monkeypatch, capsys):
    d = _st_dir(tmp_path, minilm_dir, pooling={"pooling_mode": "max"})
    code, err = _embed(monkeypatch, capsys, "--model", d, "--out", tmp_path / "e.npy")
    assert code == 2 and err.count("\n") == 1, err
    assert "1_Pooling/config.json asks for 'max' pooling, which jaxformer embed does not implement" in err
    assert "pass --pooling cls|mean|first-last-avg|pooler" in err


@pytest.mark.parametrize(
    ("pooling", "modules", "want"),
    [
        ({"pooling_mode": "cls"}, ("Transformer", "Pooling", "Normalize"), dict(pooling="cls", normalize=True)),
        ({"pooling_mode": ["mean"]}, ("Transformer", "Pooling"), dict(pooling="mean", normalize=False)),
        ({"pooling_mode": ["cls", "mean"]}, ("Transformer", "Pooling"), dict(pooling=None, problem="cls + mean")),
        ({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}, ("Transformer", "Pooling"),
         dict(pooling=None, problem="mean + max")),
        ({}, ("Transformer", "Pooling"), dict(pooling=None, problem="no mode")),
    ],
)
def test_read_model_settings(tmp_path, minilm_dir, pooling, modules, want):
    from jaxformer.cli.st_settings import read_model_settings

    got = read_model_settings(_st_dir(tmp_path, minilm_dir, pooling=pooling, modules=modules))
    assert got.pooling == want["pooling"]
    assert got.normalize == want.get("normalize", False) and got.max_length is None
    assert (got.pooling_problem is None) == ("problem" not in want)
    if "problem" in want:
        assert want["problem"] in got.pooling_problem


def test_plain_hf_directory_has_no_settings_and_broken_json_is_an_error(tmp_path):
    from jaxformer.cli.common import CLIError
    from jaxformer.cli.st_settings import read_model_settings

    got = read_model_settings(tmp_path)
    assert (got.pooling, got.normalize, got.max_length, got.sources) == (None, None, None, {})
    (tmp_path / "modules.json").write_text("{not json")
    with pytest.raises(CLIError, match="cannot read modules.json"):
        read_model_settings(tmp_path)
    (tmp_path / "modules.json").write_text('{"a": 1}')
    with pytest.raises(CLIError, match="modules.json is not a list of modules"):
        read_model_settings(tmp_path)


def test_dtype_bfloat16_writes_float32_close_to_float32(tmp_path, minilm_dir, monkeypatch, capsys):
    code, err = _embed(monkeypatch, capsys, "--model", minilm_dir, "--dtype", "bfloat16",
                       "--out", tmp_path / "bf16.npy")
    assert code == 0 and "dtype=bfloat16" in err, err
    code, err = _embed(monkeypatch, capsys, "--model", minilm_dir, "--out", tmp_path / "fp32.npy")
    assert code == 0, err
    bf16, fp32 = np.load(tmp_path / "bf16.npy"), np.load(tmp_path / "fp32.npy")
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)
    np.testing.assert_allclose(bf16, fp32, atol=2e-2)
    assert np.min(np.sum(bf16 * fp32, axis=1)) > 0.99  # unit rows: cosine to the fp32 embedding


def test_pooler_on_a_model_without_one_is_an_error(tmp_path, monkeypatch, capsys):
    from flax import nnx

    from jaxformer.io import WordPieceTokenizer
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Encoder
    from jaxformer.models.pretrained import save_pretrained

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "there"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = WordPieceTokenizer.from_directory(tmp_path)
    d = tmp_path / "model"
    save_pretrained(Encoder(EncoderConfig.tiny(vocab_size=len(vocab), use_pooler=False), rngs=nnx.Rngs(0)),
                    d, tokenizer=tok)
    code, err = _embed(monkeypatch, capsys, "--model", d, "--pooling", "pooler", "--out", tmp_path / "e.npy",
                       lines=["hello there"])
    assert code == 2 and "--pooling pooler: this model has no pooler" in err, err
    assert not (tmp_path / "e.npy").exists()
