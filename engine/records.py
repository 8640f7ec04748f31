"""Run records: the files a training run leaves beside its checkpoints (config, command, environment,
history, TensorBoard), so every result says which code, settings and machine produced it."""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.config import save_config
from utils.io import atomic_write_text

HISTORY_FIELDS = ("epoch", "train_loss", "dev_loss", "dev_eer", "dev_threshold", "lr", "time_s")


def git_commit(repo: Path | None = None) -> str | None:
    """The git commit of the code (with ``-dirty`` if modified), or None outside a git checkout."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: torch.device, world_size: int) -> dict[str, Any]:
    """Versions and machine facts recorded in every run folder."""
    try:
        import transformers

        tf_version: str | None = transformers.__version__
    except ImportError:
        tf_version = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": tf_version,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "device": str(device),
        "world_size": world_size,
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }


#: Per-source dev EER columns (several dev sources, data/mixture.py): ``dev_eer_<source name>``.
SOURCE_EER_PREFIX = "dev_eer_"


def source_columns(row: dict[str, Any]) -> dict[str, float]:
    """``{source name: dev EER}`` from a history row's ``dev_eer_<name>`` columns (empty for one dev set)."""
    return {k[len(SOURCE_EER_PREFIX):]: v for k, v in row.items() if k.startswith(SOURCE_EER_PREFIX)}


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """history.csv: `HISTORY_FIELDS`, then the per-source ``dev_eer_<name>`` columns if there are any."""
    sources = dict.fromkeys(k for row in history for k in row if k.startswith(SOURCE_EER_PREFIX))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*HISTORY_FIELDS, *sources], extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


class TensorBoard:
    """TensorBoard scalars when tensorboard is installed and this is rank 0; silent otherwise."""

    def __init__(self, log_dir: Path | None) -> None:
        self.writer = None
        if log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(log_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_run_files(
    out: Path,
    cfg: dict[str, Any],
    device: torch.device,
    world_size: int,
    command: Sequence[str] | None,
    choices: dict[str, Any] | None = None,
) -> None:
    """config.yaml, command.txt (``command`` or this process's argv) and environment.json in ``out``.

    ``choices``: what the run resolved and why, recorded in environment.json: e.g. "settings" (precision,
    layout, compile with reasons), "cpu" (CPU facts), "augment" (``Augmenter.settings()``: parameters,
    measured codec delays, PyAV version; null: none).
    """
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    atomic_write_text(out / "command.txt", shlex.join([sys.executable, *(command or sys.argv)]) + "\n")
    environment = {**environment_info(device, world_size), **(choices or {})}
    atomic_write_text(out / "environment.json", json.dumps(environment, indent=2) + "\n")
