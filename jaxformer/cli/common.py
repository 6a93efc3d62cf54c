"""What the subcommands share: the user-error exception and reading text one item per line."""

import sys
from pathlib import Path


class CLIError(Exception):
    """An error the user can fix; `jaxformer.cli.main` prints it as one line and exits 2."""


def split_lines(text: str) -> list[str]:
    r"""Lines split on ``"\n"`` only, each without a trailing ``"\r"`` (so CRLF files work).

    `str.splitlines` also breaks at U+2028, U+2029, U+0085, form feed, ``\x0b`` and
    ``\x1c``-``\x1e`` (https://docs.python.org/3/library/stdtypes.html#str.splitlines), which
    would turn one sentence into several rows and break "row i is line i". A final newline ends
    the last line instead of starting an empty one; a leading UTF-8 byte-order mark is dropped.
    """
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_lines(path: str | None, *, flag: str = "--input") -> list[str]:
    """UTF-8 lines of a file (or of standard input for None or ``"-"``); at least one not blank."""
    if path is None or path == "-":
        raw = sys.stdin.buffer.read()
        where = "standard input"
    else:
        p = Path(path)
        if p.is_dir():
            raise CLIError(f"{flag} {path}: is a directory (expected a UTF-8 text file)")
        if not p.is_file():
            raise CLIError(f"{flag} {path}: no such file")
        try:
            raw = p.read_bytes()
        except OSError as err:
            raise CLIError(f"{flag} {path}: cannot read ({err.strerror})") from None
        where = path
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CLIError(f"{where}:{line}: not valid UTF-8 ({err.reason})") from None
    lines = split_lines(text)
    if not any(line.strip() for line in lines):
        raise CLIError(f"{where} has no sentences (expected UTF-8 text, one sentence per line)")
    return lines
