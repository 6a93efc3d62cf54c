"""A content-checked cache folder for artefacts the kit builds itself (pretrained encoders,
corpora), keyed by the settings that made them.

Layout: ``<root>/<kind>/<key>/`` where ``root`` is ``$JAXFORMER_CACHE`` (default
``~/.cache/jaxformer``) and ``key`` is a SHA-256 prefix of the canonical JSON of the settings.
An entry is built in a temporary sibling folder and renamed into place only once complete, with
a ``cache_entry.json`` manifest (settings, every file's size and SHA-256) written last. A reader
trusts an entry only when the manifest is present and every file matches it; anything else (a
crash mid-build, a truncated or edited file) is a corrupt entry, which is removed and rebuilt:
never half-read.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "cache_entry.json"


def cache_root() -> Path:
    """``$JAXFORMER_CACHE`` or ``~/.cache/jaxformer``."""
    value = os.environ.get("JAXFORMER_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "jaxformer"


def portable_path(path: str | os.PathLike[str], root: Path | None = None) -> str:
    """`path` as ``$JAXFORMER_CACHE/<relative>`` when it lies in the cache (`root`, default
    `cache_root`), else unchanged: reports name cache entries without this machine's home."""
    root = cache_root() if root is None else Path(root)
    try:
        return "$JAXFORMER_CACHE/" + Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def settings_key(settings: Mapping[str, Any]) -> str:
    """A 16-hex-digit key of the canonical JSON of `settings` (sorted keys, no spaces)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path, settings: Mapping[str, Any]) -> None:
    """Record `settings` and every file's size and SHA-256 in ``cache_entry.json``."""
    files = {str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in _files(directory)}
    body = {"settings": json.loads(json.dumps(settings, default=str)), "files": files}
    (directory / MANIFEST).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n",
                                      encoding="utf-8")


def verify_entry(directory: Path) -> str | None:
    """None when `directory` is a complete entry; else what is wrong with it."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return f"{manifest.name} is missing (an interrupted build)"
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError) as err:
        return f"{manifest.name} is unreadable ({err})"
    present = {str(p.relative_to(directory)) for p in _files(directory)}
    if present != set(files):
        return (f"files differ from the manifest: missing {sorted(set(files) - present)}, "
                f"extra {sorted(present - set(files))}")
    for name, meta in files.items():
        path = directory / name
        if path.stat().st_size != meta.get("bytes"):
            return f"{name} has {path.stat().st_size} bytes, the manifest says {meta.get('bytes')}"
        if _sha256(path) != meta.get("sha256"):
            return f"{name} does not match its SHA-256 in the manifest"
    return None


def cached_build(kind: str, settings: Mapping[str, Any], build: Callable[[Path], None], *,
                 root: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The entry for ``(kind, settings)``, built by ``build(tmp_dir)`` when absent or corrupt.

    Args:
      kind: a folder name for this kind of artefact (``"char-bert"``, ``"zh-corpus"``...).
      settings: JSON-able settings; equal settings give the same entry.
      build: writes the artefact's files into the folder it is given.
      root: the cache root (default `cache_root()`).

    Returns:
      ``(path, hit)``: the entry folder and whether it was a cache hit.
    """
    if not kind or any(c in kind for c in "/\\") or kind.startswith("."):
        raise ValueError(f"kind: expected a plain folder name, got {kind!r}")
    base = (Path(root) if root is not None else cache_root()) / kind
    final = base / settings_key(settings)
    if final.is_dir():
        problem = verify_entry(final)
        if problem is None:
            return final, True
        log.warning("cache entry %s is corrupt (%s); rebuilding it", final, problem)
        shutil.rmtree(final)
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=base))
    try:
        build(tmp)
        write_manifest(tmp, settings)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same entry first: keep theirs if it is whole.
            if final.is_dir() and verify_entry(final) is None:
                shutil.rmtree(tmp, ignore_errors=True)
                return final, False
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, False
