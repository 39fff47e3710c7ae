"""``python -m pretune.cli ...`` (what ``torchrun -m pretune.cli`` runs) is ``pretune ...``."""

import sys

from . import main

sys.exit(main())
