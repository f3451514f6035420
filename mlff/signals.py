"""Stop requests from a batch scheduler: SIGTERM and SIGUSR1 set a flag that long loops (MD, training) poll
between steps, so they can write a checkpoint and return cleanly instead of dying mid-write."""

from __future__ import annotations

import signal
import threading

__all__ = ["SignalFlag"]


class SignalFlag:
    """Context manager: SIGTERM and SIGUSR1 set ``received`` (the signal's name) instead of killing."""

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):  # noqa: ARG002
        self.received = signal.Signals(signum).name

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
