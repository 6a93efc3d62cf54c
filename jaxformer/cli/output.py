"""`jaxformer embed`'s output file: the format its suffix names, replaced atomically.

The path is checked (and a temporary file created next to it) before any work starts, so a bad
``--out`` fails in a second, not after the embedding. The results go to that temporary file and
`os.replace` moves it over the target only once it is complete: a failed or interrupted run
leaves an earlier file at that path untouched (rename within one directory is atomic on POSIX:
https://docs.python.org/3/library/os.html#os.replace).
"""

import json
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from jaxformer.cli.common import CLIError

FORMATS = {
    ".npy": "float32 [N, E] array (numpy.load)",
    ".npz": "arrays `embeddings` float32 [N, E] and `line_numbers` int64 [N], 1-based",
    ".jsonl": 'one JSON object per line: {"line": 1-based number, "text": ..., "embedding": [...]}',
}

# JSON allows these raw inside strings, but readers that split on them (str.splitlines,
# JavaScript before ES2019) would see a broken line; escaped, every record stays on one line.
_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def output_format(path: str, *, flag: str = "--out") -> str:
    """The suffix (``.npy``, ``.npz`` or ``.jsonl``) that picks the format, or a CLIError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        got = f"'{Path(path).suffix}'" if Path(path).suffix else "no suffix"
        raise CLIError(f"{flag} {path}: expected a path ending in .npy, .npz or .jsonl, got {got}")
    return suffix


def _new_file_mode(target: Path) -> int:
    """The mode the target would get from a plain open(): its own if it exists, else 0o666 less
    the umask (mkstemp creates 0o600, which would silently make results private)."""
    if target.exists():
        return stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class AtomicOutput:
    """A checked output path: ``with AtomicOutput(path) as out: ...; out.commit(write)``.

    Creating it checks the path's form; entering checks that it can be written by creating the
    temporary file; `commit` writes and renames it;
    leaving without a commit (an error, Ctrl-C) removes the temporary file.
    """

    def __init__(self, path: str, *, flag: str = "--out"):
        self.flag, self.shown = flag, path
        target = Path(path)
        # Through a symlink, replace the file it names, not the link.
        self.path = target.resolve() if target.is_symlink() else target
        if self.path.is_dir():
            raise self._fail("is a directory (expected a file path)")
        self.format = output_format(path, flag=flag)
        self._tmp: Path | None = None

    def _fail(self, why: str) -> CLIError:
        return CLIError(f"{self.flag} {self.shown}: {why}")

    def __enter__(self) -> "AtomicOutput":
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise self._fail("exists and is not writable")
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self._fail(f"cannot create its directory {parent} ({err.strerror})") from None
        mode = _new_file_mode(self.path)
        try:
            fd, name = tempfile.mkstemp(dir=parent, prefix=f".{self.path.name}.", suffix=".part")
        except OSError as err:
            raise self._fail(f"cannot write in {parent} ({err.strerror})") from None
        os.close(fd)
        self._tmp = Path(name)
        os.chmod(self._tmp, mode)
        return self

    def commit(self, write: Callable[[IO[bytes]], None]) -> None:
        """Write through ``write(binary_file)``, then move the result over the target."""
        if self._tmp is None:
            raise RuntimeError("AtomicOutput.commit outside its `with` block")
        try:
            with open(self._tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(self._tmp, self.path)
        except OSError as err:
            raise self._fail(f"writing failed ({err.strerror or err}); "
                             "any earlier file there is unchanged") from None
        self._tmp = None

    def __exit__(self, *exc: Any) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


def embeddings_writer(fmt: str, vectors: Any, sentences: Sequence[str]) -> Callable[[IO[bytes]], None]:
    """A ``write(binary_file)`` for `AtomicOutput.commit`: row i of `vectors` is line i + 1."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)

    def write(fh: IO[bytes]) -> None:
        if fmt == ".npy":
            np.save(fh, vectors)
        elif fmt == ".npz":
            np.savez(fh, embeddings=vectors, line_numbers=np.arange(1, len(vectors) + 1, dtype=np.int64))
        else:
            for i, (text, vec) in enumerate(zip(sentences, vectors, strict=True)):
                record = json.dumps({"line": i + 1, "text": text, "embedding": vec.tolist()},
                                    ensure_ascii=False)
                for raw, escaped in _LINE_BREAKS.items():
                    record = record.replace(raw, escaped)
                fh.write(record.encode("utf-8") + b"\n")

    return write
