"""The settings-keyed cache: hits on equal settings, rebuilds corrupt or interrupted entries
whole, and leaves nothing behind when a build fails."""

import json
import logging

import pytest

from jaxformer.io.cache import MANIFEST, cache_root, cached_build, settings_key, verify_entry


def _builder(calls, payload="weights"):
    def build(folder):
        calls.append(folder)
        (folder / "model.safetensors").write_text(payload)
        (folder / "sub").mkdir()
        (folder / "sub" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    return build


def test_rerun_with_same_settings_is_a_hit(tmp_path):
    calls = []
    path, hit = cached_build("char-bert", {"layers": 2, "lr": 1e-3}, _builder(calls), root=tmp_path)
    assert not hit and len(calls) == 1
    again, hit = cached_build("char-bert", {"lr": 1e-3, "layers": 2}, _builder(calls), root=tmp_path)
    assert hit and again == path and len(calls) == 1  # key order does not matter
    other, hit = cached_build("char-bert", {"layers": 3, "lr": 1e-3}, _builder(calls), root=tmp_path)
    assert not hit and other != path and len(calls) == 2
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["settings"] == {"layers": 2, "lr": 1e-3}
    assert set(manifest["files"]) == {"model.safetensors", "sub/vocab.txt"}


@pytest.mark.parametrize("damage", ["truncate", "edit", "drop-manifest", "extra-file", "remove"])
def test_corrupt_entry_is_rebuilt_not_read(tmp_path, caplog, damage):
    calls = []
    path, _ = cached_build("zh-corpus", {"n": 1}, _builder(calls), root=tmp_path)
    target = path / "model.safetensors"
    if damage == "truncate":
        target.write_text("wei")
    elif damage == "edit":
        target.write_text("WEIGHTS")  # same size, other bytes
    elif damage == "drop-manifest":
        (path / MANIFEST).unlink()
    elif damage == "extra-file":
        (path / "stray.bin").write_text("x")
    else:
        target.unlink()
    assert verify_entry(path) is not None
    with caplog.at_level(logging.WARNING, logger="jaxformer.io.cache"):
        again, hit = cached_build("zh-corpus", {"n": 1}, _builder(calls), root=tmp_path)
    assert not hit and again == path and len(calls) == 2
    assert "corrupt" in caplog.text and "rebuilding" in caplog.text
    assert verify_entry(again) is None
    assert target.read_text() == "weights"


def test_failed_build_leaves_no_entry(tmp_path):
    def boom(folder):
        (folder / "half.bin").write_text("half")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed mid-build"):
        cached_build("char-bert", {"n": 2}, boom, root=tmp_path)
    assert list((tmp_path / "char-bert").iterdir()) == []
    calls = []
    _, hit = cached_build("char-bert", {"n": 2}, _builder(calls), root=tmp_path)
    assert not hit and len(calls) == 1


def test_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXFORMER_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("JAXFORMER_CACHE")
    assert cache_root().parts[-2:] == (".cache", "jaxformer")


def test_settings_key_and_kind_checks(tmp_path):
    assert settings_key({"a": 1, "b": [1, 2]}) == settings_key({"b": [1, 2], "a": 1})
    assert settings_key({"a": 1}) != settings_key({"a": 2})
    with pytest.raises(ValueError, match=r"kind: expected a plain folder name, got '../x'"):
        cached_build("../x", {}, lambda folder: None, root=tmp_path)


def test_portable_path_names_cache_entries_without_the_home(tmp_path, monkeypatch):
    from jaxformer.io.cache import portable_path

    monkeypatch.setenv("JAXFORMER_CACHE", str(tmp_path / "cache"))
    entry = tmp_path / "cache" / "char-bert" / "0123"
    entry.mkdir(parents=True)
    assert portable_path(entry) == "$JAXFORMER_CACHE/char-bert/0123"
    assert portable_path(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")
