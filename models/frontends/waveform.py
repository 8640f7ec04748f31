"""The ``waveform`` front end: raw 16 kHz waves cut or tiled to ``n_samples`` (AASIST(-L); docs/features.md).

It computes nothing: recipes of models that read raw waveforms name it (``frontend: {name: waveform,
n_samples: 64600}``), so that length fixing, scoring by windows (`engine.score_windows`) and the checks of
the model's ``input_shape`` work as for the other front ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.frontends.base import FrontEnd, check_waves, register_frontend
from utils.tiling import fix_length_batch


@register_frontend("waveform")
class WaveformFrontEnd(FrontEnd):
    """Waves → (B, n_samples) float32: the first ``n_samples`` samples, tiled when shorter (the scoring
    input of AASIST and XLS-R-AASIST). ``forward`` is the identity on (B, n_samples) batches."""

    name = "waveform"
    store_dtype = np.float32

    def __init__(self, n_samples: int = 64600) -> None:
        super().__init__()
        self.n_samples = int(n_samples)
        self.feature_shape = (self.n_samples,)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "n_samples": self.n_samples}

    def extract(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Waves (any lengths) → (B, n_samples) float32, first samples kept, short waves tiled."""
        return fix_length_batch(check_waves(waves), self.n_samples)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return waves
