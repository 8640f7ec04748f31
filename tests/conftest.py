"""Shared test fixtures: repo paths and the optional ../shared reference data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Two cores: keep each test process from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder with the real ASVspoof 2019 LA reference files; skip when absent."""
    if not (SHARED / "asvspoof2019_la").is_dir():
        pytest.skip("../shared/asvspoof2019_la is not present")
    return SHARED
