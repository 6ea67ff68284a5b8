"""``python -m lensmap …`` — the same as the ``lensmap`` command (what ``torchrun -m lensmap`` runs)."""

import sys

from lensmap.cli import main

sys.exit(main())
