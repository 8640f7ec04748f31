"""Front ends registered by name. Every module of this package is imported here, so a new front end is
one new file with ``@register_frontend("name")`` on a `FrontEnd` subclass (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import torch

from models.frontends.base import FRONTENDS, FrontEnd, check_waves, register_frontend
from models.registry import registry_section
from utils.errors import UserError

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_frontend(settings: dict[str, Any], device: str | torch.device | None = None) -> FrontEnd:
    """Build a front end from a settings dict: ``{"name": "f0", ...}`` or ``{"name": "ssl", "model": ...}``.

    Accepts the output of ``settings()``; derived keys in it are ignored, unknown keys are a `UserError`.
    ``device`` goes to front ends that take one (SSL); None = CUDA if available.
    """
    settings = dict(settings)
    name = settings.pop("name", None)
    if name not in FRONTENDS:
        raise UserError(f"front end name must be one of {sorted(FRONTENDS)}, got {name!r}")
    cls = FRONTENDS[name]
    chosen = set(inspect.signature(cls).parameters) - {"device"}
    unknown = set(settings) - chosen - cls.derived_settings
    if unknown:
        raise UserError(f"unknown {name} front-end setting(s) {sorted(unknown)} (known: {sorted(chosen)})")
    kwargs = {k: v for k, v in settings.items() if k in chosen}
    if "device" in inspect.signature(cls).parameters:
        kwargs["device"] = device
    return cls(**kwargs)


#: A recipe's ``frontend`` section: ``name`` and the settings that front end's constructor takes (its
#: ``device`` is chosen at run time, not in the recipe).
FRONTEND_SECTION = registry_section(FRONTENDS, "front end", skip=("device",))

__all__ = ["FRONTENDS", "FRONTEND_SECTION", "FrontEnd", "build_frontend", "check_waves", "register_frontend"]
