"""Stop requests from a batch scheduler: SIGTERM and SIGUSR1 set a flag that long loops (MD, training) poll
between steps, so they can write a checkpoint and return cleanly instead of dying mid-write.

A stop file works too: with ``MLFF_STOP_FILE`` set (``mlff slurm``'s torchrun jobs), the file's appearance is
a stop request, checked at most once a second. Every rank of a multi-node job sees it (the run directory is
on a shared file system), and no signal has to pass through srun and torchrun, which kill workers that are
not yet (or no longer) inside a loop that handles it.
"""

from __future__ import annotations

import os
import signal
import threading
import time

__all__ = ["SignalFlag", "record_exit", "RESUMABLE"]

RESUMABLE = 75  # EX_TEMPFAIL: the exit code of a run that stopped with a checkpoint (batch scripts requeue it)


def record_exit(code: int) -> int:
    """Under ``mlff slurm``'s torchrun jobs (MLFF_EXIT_STATUS set), each rank leaves its exit code in
    ``$MLFF_EXIT_STATUS.RANK``: torchrun itself exits 1 after a forwarded signal, even when all ranks stopped
    resumably (75), and it stops the other ranks (SIGTERM) as soon as one has exited, so a rank that stops
    resumably records it before the ranks part (see ``mlff.train.run.train``)."""
    base = os.environ.get("MLFF_EXIT_STATUS")
    if base:
        try:
            with open(f"{base}.{os.environ.get('RANK', '0')}", "w") as handle:
                handle.write(f"{code}\n")
        except OSError:
            pass
    return code


class SignalFlag:
    """Context manager: SIGTERM and SIGUSR1 set ``received`` (the signal's name) instead of killing."""

    SIGNALS = ("SIGTERM", "SIGUSR1")
    CHECK_EVERY_S = 1.0

    def __init__(self):
        self._received: str | None = None
        self._previous = {}
        self._stop_file = os.environ.get("MLFF_STOP_FILE") or None
        self._checked = float("-inf")

    @property
    def received(self) -> str | None:
        """The name of the stop request (a signal's, or "stop file"), None while there is none."""
        if self._received is None and self._stop_file is not None:
            now = time.monotonic()
            if now - self._checked >= self.CHECK_EVERY_S:
                self._checked = now
                if os.path.exists(self._stop_file):
                    self._received = "stop file"
        return self._received

    @received.setter
    def received(self, value: str | None) -> None:
        self._received = value

    def _handle(self, signum, frame):  # noqa: ARG002
        self._received = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                if hasattr(signal, name):
                    self._previous[name] = signal.signal(getattr(signal, name), self._handle)
        return self

    def __exit__(self, *exc):
        for name, handler in self._previous.items():
            signal.signal(getattr(signal, name), handler)
        self._previous = {}
        return False
