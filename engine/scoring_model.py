"""Loading a trained countermeasure for scoring: our checkpoints or converted released weights."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.partitions import waveform_settings
from models import build_model
from models.countermeasure import WithFrontEnd
from models.frontends import build_frontend
from models.import_released import BACKEND_KEY_PREFIX, SSL_KEY_PREFIX, load_model_weights
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
    score-to-LLR calibration stored by `engine.calibrate_checkpoint` (None if none).

    ``input_cfg`` is the recipe as the scorer sees it: its ``frontend`` turns audio into ``model``'s input
    of ``model.input_shape``. It is ``cfg`` itself, except for files that hold the SSL front end's own
    weights (fine-tuned XLS-R-AASIST, converted releases): ``model`` then runs front end and back end
    (`models.countermeasure.WithFrontEnd`) on raw waves, and ``input_cfg`` names the ``waveform`` front end.
    """

    model: nn.Module
    loss_fn: nn.Module
    cfg: dict[str, Any]
    threshold: float | None
    source: Path
    calibration: Calibration | None = None
    input_cfg: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.input_cfg is None:
            self.input_cfg = self.cfg


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
    frontend_state: dict[str, Any] | None = None
    frontend_settings: dict[str, Any] | None = None
    if path.suffix == ".safetensors":
        model_state, meta = load_model_weights(path)
        cfg = dict(meta.get("config", {}))
        loss_state: dict[str, Any] = {}
        threshold = meta.get("threshold")
        calibration = stored_calibration(path, meta)
        if any(key.startswith(SSL_KEY_PREFIX) for key in model_state):  # converted XLS-R-AASIST release
            frontend_state = {"model." + k: v for k, v in _strip(model_state, SSL_KEY_PREFIX).items()}
            model_state = _strip(model_state, BACKEND_KEY_PREFIX)
            frontend_settings = {**cfg.get("frontend", {}), "architecture": meta.get("ssl_architecture")}
    else:
        state = load_checkpoint(path, map_location="cpu")
        cfg = dict(state.get("config", {}))
        model_state, loss_state = state["model"], state.get("loss", {})
        best = state.get("best") or {}
        threshold = best.get("threshold", state.get("threshold"))
        calibration = stored_calibration(path, state)
        if state.get("frontend_state") is not None:  # fine-tuned front end
            frontend_state = state["frontend_state"]
            frontend_settings = state.get("frontend_settings") or cfg.get("frontend")
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
        if frontend_state is not None:
            raise UserError(f"SSL model override: {path} holds its own (fine-tuned) SSL weights")
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
    input_cfg = cfg
    if frontend_state is not None:
        model = _with_frontend(path, model, frontend_settings, frontend_state, device)
        waveform = waveform_settings(cfg)
        model_cfg = {**cfg["model"], "input_shape": [waveform["n_samples"]]}
        input_cfg = {**cfg, "frontend": waveform, "model": model_cfg}
    return ScoringModel(
        model.to(device).eval(), loss_fn.to(device).eval(), cfg, threshold, path, calibration, input_cfg
    )


def _strip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``state`` under ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _with_frontend(
    path: Path, model: nn.Module, settings: dict[str, Any], state: dict[str, Any], device: torch.device
) -> WithFrontEnd:
    """The back end ``model`` behind the front end of ``settings`` holding the weights ``state``."""
    # trainable: the float32 differentiable path the model was trained with (the frozen path rounds
    # features to float16 for the store); under inference_mode it computes no gradients.
    settings = {**settings, "trainable": True}
    if settings.get("architecture") is None:
        raise UserError(f"{path}: no SSL architecture recorded beside the front end's weights")
    frontend = build_frontend(settings, device)
    try:
        frontend.load_state_dict(state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise UserError(f"{path}: SSL weights do not fit the recorded architecture ({first})") from None
    return WithFrontEnd(model, frontend)
