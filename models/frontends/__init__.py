"""Front ends registered by name: a new front end is one new file in this package with
``@register_frontend("name")`` on a `FrontEnd` subclass (see docs/ARCHITECTURE.md). Like models and losses,
the modules are imported on first use (`models.registry.discover`), and built by the same `build_from`."""

from __future__ import annotations

from typing import Any

import torch

from models.frontends.base import FRONTENDS, FrontEnd, check_waves, register_frontend
from models.registry import build_from, registry_section


def build_frontend(settings: dict[str, Any], device: str | torch.device | None = None) -> FrontEnd:
    """Build a front end from a settings dict: ``{"name": "f0", ...}`` or ``{"name": "ssl", "model": ...}``.

    Accepts the output of ``settings()``; derived keys in it are ignored, unknown keys are a `UserError`.
    ``device`` goes to front ends that take one (SSL); None = CUDA if available.
    """
    return build_from(FRONTENDS, "front end", settings, device=device)  # type: ignore[return-value]


#: A recipe's ``frontend`` section: ``name`` and the settings that front end's constructor takes (its
#: ``device`` is chosen at run time, not in the recipe).
FRONTEND_SECTION = registry_section(FRONTENDS, "front end", skip=("device",))

__all__ = ["FRONTENDS", "FRONTEND_SECTION", "FrontEnd", "build_frontend", "check_waves", "register_frontend"]
