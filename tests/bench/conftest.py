import sys
from pathlib import Path

# The tiny-model helpers live with the compress tests; both suites use the same teacher.
sys.path.append(str(Path(__file__).resolve().parents[1] / "compress"))

from tiny import teacher, tiny_data  # noqa: E402,F401
