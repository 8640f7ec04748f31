"""What every front end is: a `torch.nn.Module` from waveforms to model-input features, registered by name.

A front end turns float32 16 kHz waves into the back end's input, ``(B, *feature_shape)``. Frozen front
ends (``trainable`` False, today's F0 and SSL recipes) run once in preprocessing and their output is
stored (`data.store`); a trainable one runs inside the countermeasure (`models.countermeasure`) and is
trained with it. Both paths compute the same numbers for the same waves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from models.registry import make_register

FRONTENDS: dict[str, type] = {}
register_frontend = make_register(FRONTENDS, "front end")
register_frontend.__doc__ = "Class decorator: make a front end available to `build_frontend` under ``name``."


def check_waves(waves: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Waves as 1-D arrays; an empty or multi-dimensional one is a `ValueError` naming its index."""
    out = []
    for i, wave in enumerate(waves):
        wave = np.asarray(wave)
        if wave.ndim != 1 or wave.shape[0] == 0:
            raise ValueError(f"wave {i}: expected a non-empty 1-D waveform, got shape {wave.shape}")
        out.append(wave)
    return out


class FrontEnd(nn.Module):
    """Base class. Subclasses set ``name``, ``store_dtype``, ``feature_shape`` (model input without the
    batch axis), ``n_samples`` (input samples one utterance is cut or tiled to) and implement
    ``settings()`` (JSON-serialisable; `build_frontend` of it rebuilds an identical front end) and
    ``extract(waves)`` (numpy, any lengths). ``derived_settings`` lists keys of ``settings()`` that are
    recorded but not chosen (ignored when rebuilding)."""

    name: ClassVar[str] = ""
    store_dtype: ClassVar[type] = np.float32
    derived_settings: ClassVar[frozenset[str]] = frozenset()
    trainable: bool = False
    feature_shape: tuple[int, ...]
    n_samples: int

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def portable_settings(self) -> dict[str, Any]:
        """Settings that rebuild this front end where its source (e.g. a hub model) is not at hand; a
        checkpoint of a trainable front end records them beside its weights. Default: `settings`."""
        return self.settings()

    def extract(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Waves (float32, 16 kHz, any lengths) -> (B, *feature_shape) float32, without gradients."""
        raise NotImplementedError

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, n) float32 16 kHz waves -> (B, *feature_shape) float32 on the waves' device.

        The default runs `extract` (frozen front ends); trainable ones override it with a
        differentiable path."""
        feats = self.extract(list(waves.detach().float().cpu().numpy()))
        return torch.from_numpy(feats).to(waves.device)

    def content_hash(self) -> str:
        """sha256 of the weights (names, dtypes, shapes, bytes): identifies a frozen pretrained front end
        that a checkpoint refers to instead of copying its weights."""
        digest = hashlib.sha256()
        for key, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return digest.hexdigest()
