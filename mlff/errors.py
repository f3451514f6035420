"""The one exception type for user errors (bad input, bad config, missing files).

The CLI prints an ``MLFFError`` as one line and exits non-zero, without a traceback.
"""

__all__ = ["MLFFError", "script_exit"]


class MLFFError(ValueError):
    """A user error: the message names the bad thing and what is expected."""


def script_exit(name: str, stage, *args) -> int:
    """Exit status of a standalone script's ``stage(*args)`` (workflows/, benchmarks/): 0, or 2 with an
    ``MLFFError`` printed as one line ``NAME: message`` on stderr, as the CLI does."""
    import sys

    try:
        stage(*args)
    except MLFFError as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 2
    return 0
