"""Loading a trained countermeasure for scoring: our checkpoints or converted released weights."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import build_model
from models.import_released import load_model_weights
from models.losses import build_loss
from utils.calibration import Calibration
from utils.checkpoint import load_checkpoint
from utils.errors import UserError

#: Where a checkpoint (or a .safetensors file's metadata) keeps its score-to-LLR calibration.
CALIBRATION_KEY = "calibration"


@dataclass
class ScoringModel:
    """A trained model ready to score: model and loss (eval mode, on ``device``), the recipe (``cfg``,
    with ``frontend``, ``model`` and ``loss`` sections), the dev-EER threshold (None if unknown) and the
    score-to-LLR calibration stored by `engine.calibrate` (None if none)."""

    model: nn.Module
    loss_fn: nn.Module
    cfg: dict[str, Any]
    threshold: float | None
    source: Path
    calibration: Calibration | None = None


def stored_calibration(path: str | os.PathLike, container: dict[str, Any]) -> Calibration | None:
    """The calibration kept in a checkpoint dict or weights metadata, None if it has none; a damaged entry
    raises `UserError` naming the file."""
    data = container.get(CALIBRATION_KEY)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the stored calibration is not a mapping")
    try:
        return Calibration.from_dict(data)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def load_scoring_model(
    path: str | os.PathLike, device: torch.device, ssl_model: str | None = None
) -> ScoringModel:
    """Load ``best.pt`` / ``last.pt`` (our checkpoints) or a ``.safetensors`` weights file from
    ``models.import_released``. ``ssl_model`` replaces the SSL front end's model id/directory recorded
    in the file (e.g. a local copy of XLS-R). Weights that do not fit the recorded model -> `UserError`."""
    path = Path(path)
    if path.suffix == ".safetensors":
        model_state, meta = load_model_weights(path)
        cfg = dict(meta.get("config", {}))
        loss_state: dict[str, Any] = {}
        threshold = meta.get("threshold")
        calibration = stored_calibration(path, meta)
    else:
        state = load_checkpoint(path, map_location="cpu")
        cfg = dict(state.get("config", {}))
        model_state, loss_state = state["model"], state.get("loss", {})
        best = state.get("best") or {}
        threshold = best.get("threshold", state.get("threshold"))
        calibration = stored_calibration(path, state)
    for section in ("frontend", "model", "loss"):
        if not isinstance(cfg.get(section), dict):
            raise UserError(f"{path}: no '{section}' config recorded in the file")
    cfg = {**cfg, "frontend": dict(cfg["frontend"])}
    if ssl_model is not None:
        if cfg["frontend"].get("name") != "ssl":
            raise UserError(
                f"SSL model override: {path} uses the "
                f"'{cfg['frontend'].get('name')}' front end, not an SSL model"
            )
        cfg["frontend"]["model"] = ssl_model
    model = build_model(cfg["model"])
    loss_fn = build_loss(cfg["loss"])
    try:
        model.load_state_dict(model_state)
        if loss_state:
            loss_fn.load_state_dict(loss_state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise UserError(f"{path}: weights do not fit the recorded model config ({first})") from None
    threshold = float(threshold) if threshold is not None and math.isfinite(float(threshold)) else None
    return ScoringModel(
        model.to(device).eval(), loss_fn.to(device).eval(), cfg, threshold, path, calibration
    )
