"""Back ends and losses. Importing the package registers every model with `build_model`."""

from models import aasist, lcnn, sr_la_res2net, xlsr_aasist  # noqa: F401  (imported to register the models)
from models.registry import MODELS, build_model, register_model

__all__ = ["MODELS", "build_model", "register_model"]
