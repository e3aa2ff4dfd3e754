"""instseg: instance segmentation toolkit.

Light on import: heavy modules (torch, matplotlib) load only when a submodule needs them.
"""

from instseg.errors import DataError, InstsegError

__version__ = "0.1.0"
__all__ = ["DataError", "InstsegError", "__version__"]
