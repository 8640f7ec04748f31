"""Typed settings: which keys a mapping of sections may have, with types, defaults and one-line docs,
and the check of a loaded mapping against them (unknown keys with the nearest valid key, wrong types).

Generic: a schema is ``{key: Field | Section}``. A `Section` lists its keys as `Field`s, either fixed (a
dataclass, `section_of`) or depending on the section's own values (a registry chooses a constructor by
``name`` and its signature gives the keys, `signature_fields`), or hands the whole section to its own
checker. The schemas themselves live with what they configure; `utils.config` says where a bad key came
from (file and line, or the override).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from utils.errors import UserError

#: A field of this name accepts every key not listed (a constructor with ``**kwargs``).
ANY_KEY = "*"
#: The leading dotted key of a section checker's message, e.g. ``augment.codecs[1].bitrate: ...``.
_LEADING_KEY = re.compile(r"([A-Za-z_]\w*(?:\.\w+|\[\d+\])*):")
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


@dataclass(frozen=True)
class Field:
    """One key: its type (an annotation: ``int``, ``float | None``, ``Sequence[int]``, ...), its default
    (what the consumer uses when the key is absent), a one-line description and, for strings read as a
    choice, the accepted values (``ignore_case``: compared lower-cased, as the consumer does)."""

    name: str
    type: Any = Any
    default: Any = None
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    ignore_case: bool = False
    required: bool = False
    #: a further check of a value of the right type: ``check(value, key, section values)`` raises
    #: `SettingError` (e.g. the entries of a list of sources)
    check: Callable[[Any, str, Mapping[str, Any]], None] | None = None


@dataclass(frozen=True)
class Section:
    """How a section is checked: ``fields(values)`` gives its keys (they may depend on the values, e.g. on
    ``name``), or ``check(values, key)`` checks it whole (its `UserError` messages start with the dotted
    key). ``kind`` names what ``name`` chooses in messages (``model 'lcnn'``)."""

    fields: Callable[[Mapping[str, Any]], Mapping[str, Field]] | None = None
    check: Callable[[Any, str], object] | None = None
    kind: str = ""
    doc: str = ""


Schema = Mapping[str, Field | Section]


class SettingError(Exception):
    """A bad key or value at dotted ``key``: ``head`` and ``tail`` of the message, between which
    `utils.config` puts the override that set it (``... in 'train.epoch=3' (did you mean ...)``)."""

    def __init__(self, key: str, head: str, tail: str = "") -> None:
        super().__init__(head + tail)
        self.key, self.head, self.tail = key, head, tail


def setting(
    default: Any,
    doc: str,
    *,
    choices: Sequence[Any] | None = None,
    ignore_case: bool = False,
    check: Callable[[Any, str, Mapping[str, Any]], None] | None = None,
) -> Any:
    """A dataclass field for `section_of`: its default, one-line doc, (optional) accepted values and
    further check (`Field.check`)."""
    choices = tuple(choices) if choices is not None else None
    meta = {"doc": doc, "choices": choices, "ignore_case": ignore_case, "check": check}
    return dataclasses.field(default=default, metadata=meta)


def _hints(obj: Any) -> dict[str, Any]:
    """Resolved annotations of ``obj``; none when one names something not importable at run time."""
    try:
        return typing.get_type_hints(obj)
    except (NameError, TypeError):
        return {}


def dataclass_fields(cls: type) -> dict[str, Field]:
    """The fields of dataclass ``cls`` (declared with `setting`) as `Field`s, in declaration order."""
    hints = _hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        out[f.name] = Field(f.name, hints.get(f.name, Any), f.default, meta.get("doc", ""),
                            meta.get("choices"), meta.get("ignore_case", False), check=meta.get("check"))
    return out


def signature_fields(factory: Callable[..., Any], skip: Sequence[str] = ()) -> dict[str, Field]:
    """The keyword parameters of ``factory`` (a class: its constructor) as `Field`s: annotated types where
    present, defaults, required when there is none; ``**kwargs`` becomes `ANY_KEY`."""
    hints = _hints(factory.__init__ if isinstance(factory, type) else factory)
    out = {}
    for p in inspect.signature(factory).parameters.values():
        if p.name in skip or p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL):
            continue
        if p.kind == p.VAR_KEYWORD:
            out[ANY_KEY] = Field(ANY_KEY, doc="any other keyword")
            continue
        required = p.default is p.empty
        default = None if required else p.default
        out[p.name] = Field(p.name, hints.get(p.name, Any), default, required=required)
    return out


def section_of(cls: type, doc: str = "") -> Section:
    """A section with the fixed keys of dataclass ``cls``."""
    fields = dataclass_fields(cls)
    return Section(fields=lambda _values: fields, doc=doc or (cls.__doc__ or "").split("\n")[0])


def nearest(word: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``word`` (difflib), None when none is close."""
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1)
    return close[0] if close else None


def suggestion(word: str, candidates: Sequence[str], prefix: str = "") -> str:
    """`` (did you mean 'prefix.x'?)`` for the nearest candidate, else `` (known: a, b)``."""
    close = nearest(word, candidates)
    if close is not None:
        return f" (did you mean {prefix + close!r}?)"
    return f" (known: {', '.join(str(c) for c in candidates) or 'none'})"


def type_name(annotation: Any) -> str:
    """Words for what ``annotation`` accepts: ``an integer or null``, ``a list of numbers``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in _NAMES:
        return _NAMES[annotation]
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in sorted(args, key=lambda a: a is type(None)))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_sequence(annotation):
        inner = args[0] if args else Any
        return f"a list of {_PLURALS[inner]}" if inner in _PLURALS else "a list"
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        return "a mapping"
    return "anything" if annotation is Any else getattr(annotation, "__name__", str(annotation))


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return origin in (list, tuple, Sequence, typing.Sequence)


def matches(value: Any, annotation: Any) -> bool:
    """Whether a YAML value (None, bool, int, float, str, list, dict) is of type ``annotation``.
    An int is a float; a bool is neither; a list is a sequence; unknown classes by isinstance."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return True
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation in (int, float) and isinstance(value, bool):
        return False
    if annotation is float:
        return isinstance(value, (int, float))
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if _is_sequence(annotation):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args, strict=True))
        return all(matches(v, args[0] if args else Any) for v in value)
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        inner = args[1] if args else Any
        return isinstance(value, Mapping) and all(matches(v, inner) for v in value.values())
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def check_value(value: Any, field: Field, key: str, section: Mapping[str, Any] | None = None) -> None:
    """`SettingError` when ``value`` is not of ``field``'s type, not one of its choices or fails its
    ``check`` (given the values of its ``section``)."""
    if not matches(value, field.type):
        raise SettingError(key, f"{key!r} must be {type_name(field.type)}, got {value!r}")
    if field.check is not None:
        field.check(value, key, section or {})
    if field.choices is None or value is None:
        return
    seen = str(value).lower() if field.ignore_case else value
    if seen not in field.choices:
        names = [str(c) for c in field.choices]
        close = nearest(str(value), names)
        raise SettingError(key, f"{key!r} must be one of {', '.join(names)}, got {value!r}",
                           f" (did you mean {close!r}?)" if close is not None else "")


def check_section(values: Any, section: Section, key: str) -> None:
    """Check one section's ``values`` (a mapping, unless its own ``check`` says otherwise) at ``key``."""
    if section.check is not None:
        try:
            section.check(values, key)
        except UserError as exc:
            text = " ".join(str(exc).split())
            match = _LEADING_KEY.match(text)
            raise SettingError(match[1] if match else key, text) from None
        return
    if not isinstance(values, Mapping):
        raise SettingError(key, f"{key!r} must be a mapping of keys, got {values!r}")
    fields = section.fields(values) if section.fields is not None else {}
    if "name" in values and "name" in fields:  # first: it may choose the other keys
        check_value(values["name"], fields["name"], f"{key}.name")
    for name, field in fields.items():
        if field.required and name not in values:
            what = f" ({field.doc})" if field.doc else ""
            raise SettingError(f"{key}.{name}", f"missing key {f'{key}.{name}'!r}", what)
    for name, value in values.items():
        dotted = f"{key}.{name}"
        if name in fields:
            check_value(value, fields[name], dotted, values)
        elif ANY_KEY not in fields:
            chosen = f" for {section.kind} {values['name']!r}" if section.kind and "name" in values else ""
            near = suggestion(str(name), list(fields), f"{key}.")
            raise SettingError(dotted, f"unknown key {dotted!r}{chosen}", near)


def check(cfg: Mapping[str, Any], schema: Schema) -> None:
    """Check every key of ``cfg`` against ``schema``; the first problem raises `SettingError`."""
    for key, value in cfg.items():
        spec = schema.get(key)
        if spec is None:
            raise SettingError(str(key), f"unknown key {key!r}", suggestion(str(key), list(schema)))
        if isinstance(spec, Field):
            check_value(value, spec, str(key))
        else:
            check_section(value, spec, str(key))


def describe(schema: Schema) -> list[str]:
    """The key reference of ``schema``, one line per key: ``section.key: type = default  # doc``. In a
    section whose keys depend on ``name``, the keys of each choice follow it (``model.dropout [lcnn]``)."""
    lines = []
    for key, spec in schema.items():
        if isinstance(spec, Field):
            lines.append(_described(key, spec))
            continue
        lines.append(f"{key}: {spec.doc}")
        base = spec.fields({}) if spec.fields is not None else {}
        lines += [_described(f"  {key}.{name}", field) for name, field in base.items()]
        choices = base["name"].choices if "name" in base else None
        for choice in choices or ():
            chosen = spec.fields({"name": choice})  # type: ignore[misc]
            lines += [_described(f"    {key}.{n} [{choice}]", f) for n, f in chosen.items() if n not in base]
    return lines


def _described(key: str, field: Field) -> str:
    default = "" if field.required else f" = {json.dumps(_plain(field.default))}"
    doc = f"  # {field.doc}" if field.doc else ""
    return f"{key}: {type_name(field.type)}{default}{doc}"


def _plain(value: Any) -> Any:
    """Tuples as lists, and anything JSON cannot show as its repr, for `describe`."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None), dict)) else repr(value)
