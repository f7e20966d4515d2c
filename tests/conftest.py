import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """Each test session gets its own data/hardening cache, so no state leaks between runs."""
    if "ARENA_CACHE" not in os.environ:
        os.environ["ARENA_CACHE"] = str(tmp_path_factory.mktemp("arena-cache"))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors on two shared cores: more threads only add contention. Test modules that
    want it say ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
