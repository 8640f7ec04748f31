"""Scoring recordings with ONNX Runtime instead of PyTorch: the ONNX file written by `engine.export`
(front end included), given as the file or as a package folder (or hub id) holding ``model.onnx``.

The file's metadata carries the package config (threshold, calibration, input length), so an
`OnnxScorer` offers what `engine.scorer.iter_recording_rows` needs of a scorer, like `engine.scorer.Scorer`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.score_windows import WindowScorer
from models.package import ONNX_METADATA_KEY, ONNX_NAME, locate_model
from utils.calibration import Calibration
from utils.errors import UserError


@dataclass
class OnnxScorer:
    """An ONNX Runtime session of a exported countermeasure: ``window`` samples per input window, the
    dev-EER ``threshold`` and ``calibration`` of its package config (None when it has none)."""

    session: Any
    config: dict[str, Any]
    window: int
    threshold: float | None
    calibration: Calibration | None
    source: str
    batch_size: int = 1
    announced: bool = False

    def announce(self) -> None:
        """Print which runtime scores, once."""
        if not self.announced:
            import onnxruntime

            providers = ", ".join(self.session.get_providers())
            print(f"runtime: ONNX Runtime {onnxruntime.__version__} ({providers}), float32", file=sys.stderr)
            self.announced = True

    def window_scorer(self) -> tuple[int, WindowScorer]:
        """(window length, scorer of window batches) as `engine.scorer.Scorer.window_scorer`."""
        self.announce()
        return self.window, self.score_windows

    def score_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        """Scores (n,) float64 of windows of any lengths: one run per stretch of equal-length windows."""
        scores = np.empty(len(windows))
        start = 0
        while start < len(windows):
            stop = start + 1
            while stop < len(windows) and len(windows[stop]) == len(windows[start]):
                stop += 1
            batch = np.stack(windows[start:stop]).astype(np.float32, copy=False)
            scores[start:stop] = self.session.run(["score"], {"waves": batch})[0]
            start = stop
        return scores


def onnx_path(spec: str | os.PathLike) -> Path:
    """The ONNX file of ``spec``: the file itself, or ``model.onnx`` in a package folder or hub snapshot."""
    path = locate_model(spec)
    if path.is_dir():
        if not (path / ONNX_NAME).is_file():
            raise UserError(f"{path}: no {ONNX_NAME} in this folder (export: python -m engine.export)")
        return path / ONNX_NAME
    if path.suffix != ".onnx":
        raise UserError(f"{path}: ONNX Runtime scores an .onnx file of engine.export")
    if not path.is_file():
        raise UserError(f"{path}: ONNX file not found")
    return path


def load_onnx_scorer(spec: str | os.PathLike, batch_size: int = 1, threads: int | None = None) -> OnnxScorer:
    """An `OnnxScorer` of ``spec`` (`onnx_path`) on the CPU; ``threads``: intra-op threads (None: ONNX
    Runtime's default, one per core)."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("scoring needs the onnxruntime package: pip install onnxruntime") from None
    path = onnx_path(spec)
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable ONNX model ({first})") from None
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    if text is None:
        raise UserError(f"{path}: not exported by this toolkit (no '{ONNX_METADATA_KEY}' metadata)")
    config = json.loads(text)
    threshold = (config.get("threshold") or {}).get("value")
    calibration = None
    if config.get("calibration"):
        try:
            calibration = Calibration.from_dict(config["calibration"])
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
    return OnnxScorer(session, config, int(config["onnx"]["window"]), threshold, calibration, str(spec),
                      batch_size=max(1, int(batch_size)))
