"""Loading a trained countermeasure for scoring: our checkpoints, converted released weights, or model
packages (a folder or a Hugging Face hub id, `models.package`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.partitions import waveform_input_cfg
from models import build_model
from models.countermeasure import WithFrontEnd
from models.frontends import build_frontend
from models.import_released import load_model_weights, released_weights
from models.losses import build_loss
from models.package import CONFIG_NAME, TrainedWeights, is_package, locate_model, read_package
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
    weights (fine-tuned XLS-R-AASIST, converted releases, packages with the front end included): ``model``
    then runs front end and back end
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


def read_trained(path: str | os.PathLike) -> TrainedWeights:
    """What a trained-model file holds: ``best.pt`` / ``last.pt`` (our checkpoints), a ``.safetensors``
    weights file from ``models.import_released``, or a model package folder (`models.package`)."""
    path = Path(path)
    if path.is_dir():
        if not is_package(path):
            raise UserError(f"{path}: a folder, but not a model package (no {CONFIG_NAME})")
        return read_package(path)[0]
    if path.suffix == ".safetensors":
        return released_weights(*load_model_weights(path))
    state = load_checkpoint(path, map_location="cpu")
    best = state.get("best") or {}
    threshold = best.get("threshold", state.get("threshold"))
    trained = TrainedWeights(
        config=dict(state.get("config", {})), model_state=state["model"], loss_state=state.get("loss", {}),
        frontend_sha256=state.get("frontend_sha256"), calibration=state.get(CALIBRATION_KEY),
        threshold=float(threshold) if threshold is not None else None,
        source={"file": path.name, "kind": "checkpoint of main_train.py", "epoch": best.get("epoch")},
    )
    if state.get("frontend_state") is not None:  # fine-tuned front end
        trained.frontend_state = state["frontend_state"]
        trained.frontend_settings = state.get("frontend_settings") or trained.config.get("frontend")
    return trained


def load_scoring_model(
    path: str | os.PathLike, device: torch.device, ssl_model: str | None = None
) -> ScoringModel:
    """Load ``best.pt`` / ``last.pt`` (our checkpoints), a ``.safetensors`` weights file from
    ``models.import_released``, or a model package given as a folder or a hub id (`models.package`).
    ``ssl_model`` replaces the SSL front end's model id/directory recorded in the file (e.g. a local
    copy of XLS-R). Weights that do not fit the recorded model -> `UserError`."""
    path = locate_model(path)
    trained = read_trained(path)
    calibration = stored_calibration(path, {CALIBRATION_KEY: trained.calibration})
    cfg = trained.config
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
        if trained.frontend_state is not None:
            raise UserError(f"SSL model override: {path} holds its own SSL weights")
        cfg["frontend"]["model"] = ssl_model
    model = build_model(cfg["model"])
    loss_fn = build_loss(cfg["loss"])
    try:
        model.load_state_dict(trained.model_state)
        if trained.loss_state:
            loss_fn.load_state_dict(trained.loss_state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise UserError(f"{path}: weights do not fit the recorded model config ({first})") from None
    threshold = trained.threshold
    threshold = float(threshold) if threshold is not None and math.isfinite(float(threshold)) else None
    input_cfg = cfg
    if trained.frontend_state is not None:
        model = _with_frontend(path, model, trained, device)
        input_cfg = waveform_input_cfg(cfg)
    return ScoringModel(
        model.to(device).eval(), loss_fn.to(device).eval(), cfg, threshold, path, calibration, input_cfg
    )


def _with_frontend(
    path: Path, model: nn.Module, trained: TrainedWeights, device: torch.device
) -> WithFrontEnd:
    """The back end ``model`` behind the front end that ``trained`` holds the weights of."""
    settings = dict(trained.frontend_settings or {})
    if trained.frontend_frozen:
        # a frozen pretrained model copied into a package: the frozen path, exactly as from its hub id
        # (float64 normalisation, features rounded as stored), in float32 whatever the device
        settings.update(trainable=False, dtype="fp32")
    else:
        # fine-tuned: the float32 differentiable path the model was trained with (the frozen path rounds
        # features to float16 for the store); under inference_mode it computes no gradients.
        settings["trainable"] = True
    if settings.get("name", "ssl") == "ssl" and settings.get("architecture") is None:
        raise UserError(f"{path}: no SSL architecture recorded beside the front end's weights")
    frontend = build_frontend(settings, device)
    try:
        frontend.load_state_dict(trained.frontend_state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise UserError(f"{path}: front end weights do not fit the recorded architecture ({first})") from None
    if trained.frontend_frozen and trained.frontend_sha256 not in (None, frontend.content_hash()):
        raise UserError(f"{path}: the included front end's weights differ from the content hash recorded")
    return WithFrontEnd(model, frontend)
