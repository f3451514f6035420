"""One writer per file: an exclusive ``flock`` on a lock file beside what is written.

``WriterLock(path, what)`` locks ``path`` (e.g. ``run_dir/.lock`` or ``data.h5.lock``) for the duration of a
``with`` block. The lock file holds JSON ``{host, pid, since_utc, command}`` of the holder, so a second writer
is refused with one line naming it. The kernel drops the lock when the holder's process ends in any way
(kill -9 included), so a stale lock file never blocks anyone; its contents are simply overwritten. Readers
never take the lock. Locks are re-entrant within one process (a labelling run holds its dataset's lock and
appends under it). On network file systems ``flock`` works across hosts where the file system supports it
(Linux NFSv4, Lustre with ``flock`` mounts); on others it only excludes writers on the same host.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import platform
import sys
import threading
from pathlib import Path

from mlff.errors import MLFFError

__all__ = ["WriterLock", "lock_path_for", "holder"]

_HELD: dict[str, list] = {}  # resolved lock path -> [open file, depth]: re-entrant within one process
_GUARD = threading.Lock()


def lock_path_for(target: str | Path) -> Path:
    """The lock file of ``target``: ``<dir>/.lock`` for a directory, ``<file>.lock`` for a file."""
    target = Path(target)
    return target / ".lock" if target.is_dir() else target.with_name(target.name + ".lock")


def holder(lock_file: str | Path) -> dict:
    """What the lock file says about its (last) holder; {} when it says nothing readable."""
    try:
        return json.loads(Path(lock_file).read_text() or "{}")
    except (OSError, ValueError):
        return {}


class WriterLock:
    """Exclusive, non-blocking writer lock on ``lock_file``; ``what`` names the locked thing in the error."""

    def __init__(self, lock_file: str | Path, what: str):
        self.lock_file, self.what = Path(lock_file), what
        self._key = str(self.lock_file.resolve())

    def acquire(self) -> "WriterLock":
        with _GUARD:
            if self._key in _HELD:
                _HELD[self._key][1] += 1
                return self
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.lock_file, "a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise MLFFError(self._refusal()) from None
            except OSError as err:
                handle.close()
                raise MLFFError(f"cannot lock {self.lock_file} for writing {self.what}: {err.strerror}") from None
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"host": platform.node(), "pid": os.getpid(), "since_utc":
                                     datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                     "command": " ".join(sys.argv)}) + "\n")
            handle.flush()
            _HELD[self._key] = [handle, 1]
        return self

    def _refusal(self) -> str:
        h = holder(self.lock_file)
        who = (f"host {h.get('host', '?')}, pid {h.get('pid', '?')}, since {h.get('since_utc', '?')}"
               + (f", command '{h['command']}'" if h.get("command") else ""))
        return (f"{self.what} is being written by another process ({who}); one writer at a time: wait for it "
                f"to end or stop it (lock file {self.lock_file})")

    def release(self) -> None:
        with _GUARD:
            entry = _HELD.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                handle = _HELD.pop(self._key)[0]
                handle.seek(0)
                handle.truncate()  # the file stays (removing it would race with a new writer); the lock goes
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                handle.close()

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
