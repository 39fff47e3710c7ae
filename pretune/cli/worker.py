"""``python -m pretune.cli.worker JOB < payload.json``: one ``pretune.workers`` job in a fresh process.

Prints the answer as its last stdout line (see ``pretune.workers``); exit 2 for a ``PretuneError``.
"""

from __future__ import annotations

import json
import sys

from .logs import configure_logging


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pretune.cli.worker JOB < payload.json", file=sys.stderr)
        return 2
    configure_logging(verbose=False)
    from ..workers import serve

    status, line = serve(argv[0], json.loads(sys.stdin.read()))
    print(line)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
