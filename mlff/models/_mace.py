"""Import mace-torch once, quietly, before anything imports e3nn.

mace sets the flag that lets e3nn 0.4.4 load its constants under torch >= 2.6; importing e3nn first fails.
The TorchScript and weights-only warnings it raises on import say nothing a user can act on.
"""

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    import mace.modules  # noqa: F401
    import mace.tools.scripts_utils  # noqa: F401
