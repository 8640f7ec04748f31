"""utils.allocator: glibc keeps freed memory; a user's own malloc settings win."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

CODE = "from utils.allocator import keep_freed_memory as k; print(k(), k())"


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    proc = subprocess.run([sys.executable, "-c", CODE], cwd=REPO, env={**env, **env_extra},
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_thresholds_are_set_once_unless_the_user_chose():
    assert _run({}) == "True False"  # set by the first call; the second is a no-op
    assert _run({"MALLOC_TRIM_THRESHOLD_": "131072"}) == "False False"
