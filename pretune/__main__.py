"""``python -m pretune ...`` is ``pretune ...``."""

import sys

from .cli import main

sys.exit(main())
