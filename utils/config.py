"""YAML recipes: loading, ``section.key=value`` overrides with dotted keys, checking, saving.

`load_config` reads a YAML mapping, applies overrides and, given a schema (`utils.schema`; the recipes' is
engine/recipe_schema.py), checks every key: an unknown key or a value of the wrong type is a one-line
`UserError` naming where it came from (the file and line of the key, or the override) with the nearest valid
key, e.g. ``configs/x.yaml:12: unknown key 'train.epoch' (did you mean 'train.epochs'?)``. With a schema,
every key it documents can be set by an override, also when the file lacks it; without one, overrides may
only change keys the file has. The result is a plain, JSON-compatible dict. A key repeated in one mapping
of the file is an error (YAML would keep the last silently).
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
from utils.schema import Schema, SettingError, check, suggestion

_EXPONENT_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; missing, unreadable or non-mapping files raise `UserError`."""
    return _read_yaml(path)[0]


def _read_yaml(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, int]]:
    """The mapping in ``path`` and the line (1-based) of each of its keys, dotted (``train.epochs``,
    ``augment.codecs[1].p``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        loader = yaml.SafeLoader(path.read_text())
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else f"{path}"
        reason = getattr(exc, "problem", None) or type(exc).__name__
        raise UserError(f"{where}: invalid YAML ({reason})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping of sections, got {type(data).__name__}")
    lines: dict[str, int] = {}
    _key_lines(node, "", lines, path)
    return _numbers_from_strings(data), lines


def _key_lines(node: yaml.Node, prefix: str, lines: dict[str, int], path: Path) -> None:
    """Fill ``lines`` with the line of every key below ``node``; a repeated key is a `UserError`."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{prefix}[{i}]"] = item.start_mark.line + 1
            _key_lines(item, f"{prefix}[{i}]", lines, path)
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in lines:
            raise UserError(f"{path}:{line}: duplicate key {key!r} (also at line {lines[key]})")
        lines[key] = line
        _key_lines(value_node, key, lines, path)


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


def _set_overrides(
    cfg: Mapping[str, Any], overrides: Iterable[str], source: str, strict: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """A copy of ``cfg`` with the overrides applied, and the override that set each dotted key.

    ``strict``: only keys ``cfg`` has (no schema to say which others exist); else missing or null
    sections on the way are created, and the schema check judges the keys."""
    out = copy.deepcopy(dict(cfg))
    origins: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"{source}: override {item!r} is not of the form section.key=value")
        parts = key.split(".")
        node: dict[str, Any] = out
        for depth, part in enumerate(parts):
            dotted = ".".join(parts[: depth + 1])
            if strict and part not in node:
                near = suggestion(part, list(node), dotted[: -len(part)])
                raise UserError(f"{source}: unknown key {dotted!r} in {item!r}{near}")
            if depth == len(parts) - 1:
                node[part] = parse_value(text)
                break
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise UserError(f"{source}: {dotted!r} is not a section (in {item!r})")
            node = node[part]
        origins[key] = item
    return out, origins


class _Origins:
    """Where each key of a loaded config came from: the line of the file, or an override."""

    def __init__(self, path: Path | None, lines: dict[str, int], overrides: dict[str, str], source: str):
        self.path, self.lines, self.overrides, self.source = path, lines, overrides, source

    def _override(self, key: str) -> str | None:
        """The override that set ``key`` or a section above it, or created a section below it."""
        for prefix in _prefixes(key):
            if prefix in self.overrides:
                return self.overrides[prefix]
        if key in self.lines:
            return None
        return next((item for k, item in self.overrides.items() if k.startswith(key + ".")), None)

    def error(self, err: SettingError) -> UserError:
        """``err`` as a one-line `UserError` naming the override, or the file and line of the key."""
        item = self._override(err.key)
        if item is not None:
            return UserError(f"{self.source}: {err.head} in {item!r}{err.tail}")
        line = next((self.lines[p] for p in reversed(_prefixes(err.key)) if p in self.lines), None)
        where = "config" if self.path is None else f"{self.path}:{line}" if line else f"{self.path}"
        return UserError(f"{where}: {err.head}{err.tail}")


def _prefixes(key: str) -> list[str]:
    """``a.b[1].c`` -> ``a``, ``a.b``, ``a.b[1]``, ``a.b[1].c``."""
    return [key[: m.start()] for m in re.finditer(r"[.\[]", key)] + [key]


def _checked(cfg: dict[str, Any], schema: Schema | None, origins: _Origins) -> dict[str, Any]:
    if schema is not None:
        try:
            check(cfg, schema)
        except SettingError as err:
            raise origins.error(err) from None
    return cfg


def apply_overrides(
    cfg: Mapping[str, Any],
    overrides: Iterable[str],
    source: str = "command line",
    schema: Schema | None = None,
) -> dict[str, Any]:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied (and checked against
    ``schema``, if given). Unknown keys, wrong types and malformed overrides raise `UserError` naming
    ``source``."""
    out, origins = _set_overrides(cfg, overrides, source, strict=schema is None)
    return _checked(out, schema, _Origins(None, {}, origins, source))


def load_config(
    path: str | os.PathLike, overrides: Iterable[str] = (), schema: Schema | None = None
) -> dict[str, Any]:
    """Load a YAML config, apply ``key=value`` overrides and check the result against ``schema`` (if
    given); returns a plain, JSON-compatible dict. Recipes: `engine.recipe_schema.load_recipe`."""
    cfg, lines = _read_yaml(path)
    source = f"command line ({path})"
    out, origins = _set_overrides(cfg, overrides, source, strict=schema is None)
    return _checked(out, schema, _Origins(Path(path), lines, origins, source))


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
