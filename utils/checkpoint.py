"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict (format `FORMAT`)::

    format, model, optimizer, scheduler, scaler, loss      state dicts (tensors, numbers, lists)
    rng                                                    list of `utils.seed.get_rng_state` per rank
    epoch, global_step                                     epochs / optimizer steps completed
    config                                                 resolved recipe (plain dict)
    threshold, dev_eer, dev_loss, best_epoch, best_metric  dev-set decision threshold and selection state
    history                                                per-epoch records (list of dicts)

Nothing in it needs pickled classes, so loading never runs code from the file.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from utils.errors import UserError
from utils.io import atomic_path

FORMAT = "asvspoof-toolkit-checkpoint/1"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, then rename)."""
    state = {"format": FORMAT, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` with ``weights_only=True``.

    Missing, truncated or foreign files (e.g. a whole-model pickle) raise `UserError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling refused"
        raise UserError(
            f"{path}: not a checkpoint of this toolkit (weights-only load refused: {first[:160]}); "
            "convert released models with `python -m models.import_released`"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: unreadable or truncated checkpoint ({reason[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a checkpoint of this toolkit (no '{FORMAT}' format tag)")
    return state


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The underlying module of a DistributedDataParallel or torch.compile wrapper."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module
