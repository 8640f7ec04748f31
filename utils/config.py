"""YAML recipes: loading, ``key=value`` overrides with dotted keys, saving the resolved config.

A recipe is a mapping of sections (``frontend``, ``model``, ``loss``, ``optim``, ``sched``, ``train``,
``data``). Overrides may only change keys that the recipe already has, so a typo such as
``train.epoch=3`` is an error instead of a silently ignored setting. A key whose recipe value is
``null`` or a mapping accepts any value (YAML-typed), and new keys can be added to the sections
listed in `OPEN_SECTIONS` (model and front-end options differ between architectures). Sections in
`OPTIONAL_SECTIONS` may be missing from a recipe: an override creates them, and any keys inside them
(their reader checks the keys, e.g. ``augment.preset=la`` on any recipe; see data/augment).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from utils.errors import UserError
from utils.io import atomic_write_text

# Sections whose keys depend on the chosen architecture / front end: overrides may add keys here.
OPEN_SECTIONS = ("model", "frontend", "loss")
# Sections a recipe may lack (off when absent); overrides create them and any keys below them.
OPTIONAL_SECTIONS = ("augment",)
_EXPONENT_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; missing, unreadable or non-mapping files raise `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else f"{path}"
        reason = getattr(exc, "problem", None) or type(exc).__name__
        raise UserError(f"{where}: invalid YAML ({reason})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping of sections, got {type(data).__name__}")
    return _numbers_from_strings(data)


def _numbers_from_strings(node: Any) -> Any:
    """Turn strings such as ``1e-4`` (a string in YAML 1.1) into floats, recursively."""
    if isinstance(node, dict):
        return {key: _numbers_from_strings(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_numbers_from_strings(value) for value in node]
    if isinstance(node, str) and _EXPONENT_NUMBER.fullmatch(node.strip()):
        return float(node)
    return node


def parse_value(text: str) -> Any:
    """Parse an override value the way YAML would (``3`` -> int, ``1e-4`` -> float, ``[1, 2]`` -> list)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return _numbers_from_strings(value)


def apply_overrides(cfg: Mapping[str, Any], overrides: Iterable[str], source: str = "command line") -> dict:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied.

    Unknown keys raise `UserError` naming ``source``; so does a malformed override (no ``=``).
    """
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"{source}: override {item!r} is not of the form section.key=value")
        parts = key.split(".")
        node: Any = out
        optional = parts[0] in OPTIONAL_SECTIONS
        for depth, part in enumerate(parts[:-1]):
            if optional and isinstance(node, dict) and part not in node:
                node[part] = {}
            if not isinstance(node, dict) or part not in node:
                raise UserError(f"{source}: unknown config key {'.'.join(parts[: depth + 1])!r} in {item!r}")
            if node[part] is None:
                node[part] = {}
            node = node[part]
        if not isinstance(node, dict):
            raise UserError(f"{source}: {'.'.join(parts[:-1])!r} is not a section (in {item!r})")
        leaf = parts[-1]
        open_section = (len(parts) >= 2 and parts[0] in OPEN_SECTIONS) or optional
        if leaf not in node and not open_section:
            known = ", ".join(sorted(node)) or "none"
            raise UserError(f"{source}: unknown config key {key!r} (known here: {known})")
        node[leaf] = parse_value(text)
    return out


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Load a recipe and apply ``key=value`` overrides; returns a plain, JSON-compatible dict."""
    cfg = load_yaml(path)
    return apply_overrides(cfg, overrides, source=f"{path}")


def save_config(cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved config to ``path`` as YAML (atomically), keys in recipe order."""
    atomic_write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None))


def get(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """Read ``cfg['a']['b']`` as ``get(cfg, 'a.b')``; ``default`` when any part is missing or null."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or node.get(part) is None:
            return default
        node = node[part]
    return node
