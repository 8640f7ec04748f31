"""Front ends, back ends and losses, each registered by name.

A new model, loss or front end is one new file in this package with ``@register_model("name")``
(``register_loss``, ``register_frontend``): `build_model` and the registries' users import every module
of the package on first use (`models.registry.discover`), so no import list is kept by hand. The import
is lazy so that ``python -m models.import_released`` runs its module only once.
"""

from models.registry import MODELS, build_model, discover, register_model

__all__ = ["MODELS", "build_model", "discover", "register_model"]
