"""What every front end is: a `torch.nn.Module` from waveforms to model-input features, registered by name.

A front end turns float32 16 kHz waves into the back end's input, ``(B, *feature_shape)``. Frozen front
ends (``trainable`` False, today's F0 and SSL recipes) run once in preprocessing and their output is
stored (`data.store`); a trainable one runs inside the countermeasure (`models.countermeasure`) and is
trained with it. Both paths compute the same numbers for the same waves.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from models.registry import discover, make_register
from utils.checkpoint import state_sha256
from utils.errors import UserError

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


#: Settings that change how features are computed (speed, memory, precision), not which: a store's tag
#: ignores them (the store still records them and checks them on reopen).
COMPUTE_SETTINGS = frozenset({"batch_size", "dtype", "device", "compile"})


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class FrontEnd(nn.Module):
    """Base class. Subclasses set ``name``, ``store_dtype``, ``feature_shape`` (model input without the
    batch axis; a ``None`` axis when its length varies per utterance: `extract` then returns a list of
    arrays and preprocessing writes a variable-length store), ``n_samples`` (input samples one utterance is
    cut or tiled to) and implement ``settings()`` (JSON-serialisable; `build_frontend` of it rebuilds an
    identical front end) and ``extract(waves)`` (numpy, any lengths). ``derived_settings`` lists keys of
    ``settings()`` that are recorded but not chosen (ignored when rebuilding); `store_tag` names the
    front end's feature stores."""

    name: ClassVar[str] = ""
    store_dtype: ClassVar[type] = np.float32
    derived_settings: ClassVar[frozenset[str]] = frozenset()
    trainable: bool = False
    feature_shape: tuple[int, ...]
    n_samples: int

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def store_tag(cls, settings: Mapping[str, Any]) -> str:
        """Directory name of this front end's feature stores (`data.store.store_dir`) for ``settings``: a
        recipe's ``frontend`` section or `settings()`, which give the same tag.

        Default: the name alone when every chosen setting (a constructor argument, `COMPUTE_SETTINGS` aside)
        is at its default, else the name and a digest of the ones that differ, e.g. ``mfcc-3f2a9c01d4``.
        A subclass may override it for readable tags (F0 and SSL keep those their stores have always had).
        """
        params = inspect.signature(cls).parameters
        empty = inspect.Parameter.empty
        differing = {
            key: settings[key]
            for key, param in params.items()
            if key in settings and key not in COMPUTE_SETTINGS
            and (param.default is empty or _canonical(settings[key]) != _canonical(param.default))
        }
        if not differing:
            return cls.name
        return f"{cls.name}-{hashlib.sha256(_canonical(differing).encode()).hexdigest()[:10]}"

    def portable_settings(self) -> dict[str, Any]:
        """Settings that rebuild this front end where its source (e.g. a hub model) is not at hand; a
        checkpoint of a trainable front end records them beside its weights. Default: `settings`."""
        return self.settings()

    def extract(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Waves (float32, 16 kHz, any lengths) -> (B, *feature_shape) float32, without gradients (a list of
        B arrays when ``feature_shape`` has a ``None`` axis)."""
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
        return state_sha256(self.state_dict())


def store_tag(settings: Mapping[str, Any]) -> str:
    """The store tag of the front end ``settings`` name (`FrontEnd.store_tag`), without building it; an
    unknown name raises `UserError`."""
    discover()
    cls = FRONTENDS.get(settings.get("name"))
    if cls is None:
        known = ", ".join(sorted(FRONTENDS))
        raise UserError(f"unknown front end {settings.get('name')!r}; known front ends: {known}")
    return cls.store_tag(settings)
