"""Front ends, back ends and losses, each registered by name. Importing the package imports every module
in it (and in `models.frontends`), so a new model is one new file with ``@register_model("name")``."""

import importlib
import pkgutil

from models.registry import MODELS, build_model, register_model

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "build_model", "register_model"]
