"""``python -m mlff ...``: the ``mlff`` command (used to start worker processes with this interpreter)."""

import sys

from mlff.cli import main

sys.exit(main())
