"""``python -m pretune.bench.worker ARGS_JSON``: measure one folder in a fresh process.

A fresh process makes peak memory (``VmHWM``) belong to this model alone and keeps
one variant's allocator state and thread pools from skewing the next one's timings.
Prints the result as one JSON line; a ``PretuneError`` is printed as one line, exit 2.
"""

from __future__ import annotations

import json
import sys
import warnings


def main(argv: list[str]) -> int:
    warnings.simplefilter("ignore")
    from transformers.utils import logging as hf_logging

    from ..errors import PretuneError
    from .harness import BenchConfig, measure

    hf_logging.set_verbosity_error()
    args = json.loads(argv[0])
    cfg = BenchConfig(**args.pop("cfg"))
    try:
        result = measure(args.pop("model_dir"), args.pop("data"), cfg=cfg, **args)
    except PretuneError as e:  # the parent re-raises it with the same class and message
        print(json.dumps({"error": str(e), "type": type(e).__name__}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
