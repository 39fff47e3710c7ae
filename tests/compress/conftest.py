import sys
from pathlib import Path

# tiny.py holds the tiny-model helpers and session fixtures shared with tests/bench.
sys.path.append(str(Path(__file__).resolve().parent))

from tiny import teacher, tiny_data  # noqa: E402,F401
