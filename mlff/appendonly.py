"""Append-only text files (COLVAR, HILLS, log.csv): safe against a kill in the middle of a write.

Every writer ends each row with a newline, so a file whose last line has none was torn: its writer was killed
while appending it (or, seen by a reader, is still writing it). The appender cuts such a line off before it
appends again (``repair_torn_tail``, on resume); readers skip it (``complete_lines``). Both say so in one line
on stderr. A malformed line anywhere else is an error naming the file and the line (``bad_line``): the file
was edited or damaged, and guessing what it meant would hide that.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlff.errors import MLFFError

__all__ = ["bad_line", "complete_lines", "repair_torn_tail"]

_CHUNK = 1 << 16


def _preview(text: bytes) -> str:
    shown = text.decode("utf-8", "replace")
    return repr(shown if len(shown) <= 40 else shown[:37] + "...")


def _torn_start(handle) -> int | None:
    """Offset where the torn last line of the open binary file begins; None when the file ends with a newline
    (or is empty)."""
    end = handle.seek(0, os.SEEK_END)
    if end == 0:
        return None
    handle.seek(end - 1)
    if handle.read(1) == b"\n":
        return None
    position = end
    while position > 0:
        start = max(0, position - _CHUNK)
        handle.seek(start)
        block = handle.read(position - start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


def repair_torn_tail(path: str | Path) -> bool:
    """Before appending to ``path`` again: cut off a torn last line (no final newline) and say so on stderr.
    Returns whether it cut anything. A missing file is left alone."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb+") as handle:
        start = _torn_start(handle)
        if start is None:
            return False
        handle.seek(start)
        torn = handle.read()
        handle.truncate(start)
        handle.flush()
        os.fsync(handle.fileno())
    print(f"mlff: note: {path}: removed a torn last line ({len(torn)} bytes, {_preview(torn)}) left by a run "
          "killed while writing it; appending after the last complete line", file=sys.stderr)
    return True


def complete_lines(path: str | Path) -> list[tuple[int, str]]:
    """(line number from 1, text without the newline) of every complete line of ``path``; a torn last line (no
    final newline: the writer was killed, or is still writing) is skipped and said so on stderr."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise MLFFError(f"cannot read {path}: {err.strerror}") from None
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    if torn:
        print(f"mlff: note: {path}: skipped its torn last line (line {len(lines) + 1}, {_preview(torn)}): left by a "
              "run killed while writing it, or one still writing", file=sys.stderr)
    out = []
    for number, raw in enumerate(lines, start=1):
        try:
            out.append((number, raw.decode("utf-8").rstrip("\r")))
        except UnicodeDecodeError:
            raise bad_line(path, number, "is not text (damaged file)") from None
    return out


def bad_line(path: str | Path, number: int, what: str) -> MLFFError:
    """The one-line error for a malformed line in the middle of an append-only file."""
    return MLFFError(f"{path} line {number} {what}: the file was edited or damaged (only a torn last line is "
                     "repaired); fix or remove that line, or start the run again")
