"""pymbar, imported once and quietly.

pymbar 4 logs a banner at import (no JAX; a timeseries caveat) through the ``logging`` module; the banner says
nothing about our data, so its loggers are held at ERROR while it imports. JAX is optional in pymbar 4 and never
imported by mlff: without it pymbar solves MBAR with numpy/scipy.
"""

from __future__ import annotations

import logging
from importlib import metadata

__all__ = ["pymbar", "pymbar_version"]


def pymbar():
    """The ``pymbar`` module (imported lazily, banner silenced)."""
    logger = logging.getLogger("pymbar")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import pymbar as module
    finally:
        logger.setLevel(previous)
    logger.setLevel(logging.ERROR)  # its solvers log every failed attempt of a protocol; we report our own errors
    return module


def pymbar_version() -> str:
    try:
        return metadata.version("pymbar")
    except metadata.PackageNotFoundError:  # pragma: no cover - pymbar is a core dependency
        return "unknown"
