"""``python -m lesionseg`` (also what ``torchrun -m lesionseg`` runs)."""

import sys

from lesionseg.cli.main import main

sys.exit(main())
