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

import hashlib
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from utils.errors import UserError
from utils.io import atomic_path

FORMAT = "asvspoof-toolkit-checkpoint/1"


def previous_path(path: str | os.PathLike) -> Path:
    """Where `save_checkpoint(..., keep_previous=True)` keeps the file it replaced (last.prev.pt)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, then rename).

    ``keep_previous``: the file being replaced is first renamed to `previous_path` (only once the new
    one is completely written), so a damaged or missing ``path`` still leaves the one before it.
    """
    state = {"format": FORMAT, **state}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))


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
    except Exception as exc:  # text or other non-torch files: torch's legacy reader raises KeyError & co.
        raise UserError(
            f"{path}: not a checkpoint of this toolkit (cannot be read as a torch file: {type(exc).__name__})"
        ) from None
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


def state_sha256(*states: Mapping[str, torch.Tensor]) -> str:
    """sha256 of state dicts' tensors (names, dtypes, shapes, bytes, in name order): identifies weights
    wherever they were loaded from."""
    digest = hashlib.sha256()
    for state in states:
        for key, tensor in sorted(state.items()):
            t = tensor.detach().cpu().contiguous().reshape(-1)  # channels_last weights: stride 1
            digest.update(f"{key}|{t.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
