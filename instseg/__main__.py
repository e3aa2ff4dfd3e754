"""``python -m instseg`` (also what ``torchrun -m instseg`` runs)."""

import sys

from instseg.cli.main import main

sys.exit(main())
