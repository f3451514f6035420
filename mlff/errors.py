"""The one exception type for user errors (bad input, bad config, missing files).

The CLI prints an ``MLFFError`` as one line and exits non-zero, without a traceback.
"""

__all__ = ["MLFFError"]


class MLFFError(ValueError):
    """A user error: the message names the bad thing and what is expected."""
