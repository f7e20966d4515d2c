import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """Each test session gets its own data/hardening cache, so no state leaks between runs."""
    if "ARENA_CACHE" not in os.environ:
        os.environ["ARENA_CACHE"] = str(tmp_path_factory.mktemp("arena-cache"))
    yield
