"""Name -> constructor registries for models (and, through the same helpers, losses).

A recipe names its model as ``{"name": "lcnn", "input_shape": [1, 1024, 201], ...}``; everything
except ``name`` is passed to the registered constructor as keyword arguments, so the keys a recipe's
section may have are that constructor's parameters (`registry_section`, checked when a recipe is loaded).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from torch import nn

from utils.errors import UserError
from utils.schema import Field, Section, signature_fields

T = TypeVar("T", bound=Callable[..., nn.Module])

MODELS: dict[str, Callable[..., nn.Module]] = {}
_discovered = False


def discover() -> None:
    """Import every module of the `models` package and its sub-packages once, so that each registers
    what it defines. Registries filled from elsewhere (e.g. a test's own model) are kept."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import models

    for info in pkgutil.walk_packages(models.__path__, "models."):
        importlib.import_module(info.name)


def make_register(
    registry: dict[str, Callable[..., nn.Module]], kind: str
) -> Callable[[str], Callable[[T], T]]:
    """Return a ``register(name)`` class decorator that adds constructors to ``registry``."""

    def register(name: str) -> Callable[[T], T]:
        def decorator(factory: T) -> T:
            old = registry.get(name)
            # Re-importing the same module (e.g. importlib.reload) may re-register the same class.
            if old is not None and old.__qualname__ != factory.__qualname__:
                raise ValueError(f"{kind} {name!r} is registered twice")
            registry[name] = factory
            return factory

        return decorator

    return register


def build_from(
    registry: Mapping[str, Callable[..., nn.Module]],
    kind: str,
    cfg: Mapping[str, Any],
    **runtime: Any,
) -> nn.Module:
    """Build ``registry[cfg["name"]](**other keys)`` for every registry (models, losses, front ends).

    Keys the constructor lists in its ``derived_settings`` (recorded, not chosen) are dropped; ``runtime``
    keyword arguments (e.g. ``device``) are passed to constructors that take them. An unknown name or
    setting raises `UserError` naming the known ones.
    """
    discover()
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise UserError(f"{kind} config must be a mapping with a 'name' key, got {cfg!r}")
    name = cfg["name"]
    if name not in registry:
        known = ", ".join(sorted(registry))
        raise UserError(f"unknown {kind} {name!r}; known {kind}s: {known}")
    factory = registry[name]
    params = inspect.signature(factory).parameters
    derived = getattr(factory, "derived_settings", frozenset())
    kwargs = {key: value for key, value in cfg.items() if key != "name" and key not in derived}
    chosen = sorted(set(params) - set(runtime))
    unknown = sorted(set(kwargs) - set(chosen))
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if unknown and not takes_any:
        raise UserError(f"{kind} {name!r}: unknown setting(s) {unknown} (known: {chosen})")
    kwargs.update({key: value for key, value in runtime.items() if key in params})
    # A missing required argument is the recipe's mistake; a TypeError raised inside the constructor
    # still surfaces as the bug it is.
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise UserError(f"{kind} {name!r}: {exc}") from None
    return factory(**kwargs)


def registry_section(
    registry: Mapping[str, Callable[..., nn.Module]], kind: str, skip: Sequence[str] = ()
) -> Section:
    """The recipe section that chooses a constructor of ``registry`` by ``name``: its keys are ``name`` and
    the constructor's keyword parameters (annotated types, defaults) except ``skip``."""

    def fields(values: Mapping[str, Any]) -> dict[str, Field]:
        discover()
        names = tuple(sorted(registry))
        name = Field("name", str, None, f"one of {', '.join(names)}", choices=names, required=True)
        chosen = values.get("name")
        factory = registry.get(chosen) if isinstance(chosen, str) else None
        return {"name": name, **(signature_fields(factory, skip) if factory is not None else {})}

    return Section(fields=fields, kind=kind, doc=f"the {kind}: name and constructor arguments")


register_model = make_register(MODELS, "model")
register_model.__doc__ = (
    "Class decorator: make a model constructor available to `build_model` under ``name``."
)


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build a model from ``{"name": ..., **kwargs}``; unknown name -> `UserError` listing the known ones."""
    return build_from(MODELS, "model", cfg)


#: A recipe's ``model`` section: ``name`` and the keyword parameters of that model's constructor.
MODEL_SECTION = registry_section(MODELS, "model")
