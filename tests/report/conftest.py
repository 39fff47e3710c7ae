import sys
from pathlib import Path

import pytest

# report_fixtures.py holds the synthetic run writer, shared with tests/test_run.py.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_fixtures import write_run  # noqa: E402


@pytest.fixture
def saved_run(tmp_path) -> Path:
    return write_run(tmp_path / "run")
