"""Typed frozen configs, the one registry of named configs, and `key=value` overrides.

A config is a tree of frozen dataclasses. Named configs are functions registered with
`@register("name")` (or `@register("name", kind="plan")` for `tvad plan`'s configs) that return
one; `resolve("name", ["a.b=3"])` builds it and applies overrides, failing loudly on unknown
keys or values of the wrong type. Every run writes the resolved config as JSON beside its
outputs (`save`), and `load` reads it back. This module is machinery only: the named configs
register when `tvad_jax.configs` is imported (the CLI, the tests and the experiments do).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

C = TypeVar("C")

_REGISTRY: dict[tuple[str, str], Callable[[], Any]] = {}   # (kind, name) -> factory
_PLAIN_NUMBER = {int: re.compile(r"[+-]?[0-9]+"),
                 float: re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")}


class ConfigError(ValueError):
    """A config name, override key or override value that cannot be applied."""


def register(name: str, kind: str = "run") -> Callable[[Callable[[], C]], Callable[[], C]]:
    """Decorator registering a zero-argument function that returns a config of `kind`
    ("run": the root config of every job; "plan": `tvad plan`)."""

    def wrap(fn: Callable[[], C]) -> Callable[[], C]:
        if (kind, name) in _REGISTRY:
            raise ConfigError(f"{kind} config {name!r} registered twice")
        _REGISTRY[kind, name] = fn
        return fn

    return wrap


def names(kind: str = "run") -> list[str]:
    """Registered config names of `kind`, sorted."""
    return sorted(n for k, n in _REGISTRY if k == kind)


def get(name: str, kind: str = "run") -> Any:
    """The registered config `name`, freshly built."""
    if (kind, name) not in _REGISTRY:
        known = ", ".join(names(kind)) or "none registered (import tvad_jax.configs)"
        what = "config" if kind == "run" else f"{kind} config"
        raise ConfigError(f"unknown {what} {name!r}; known: {known}")
    return _REGISTRY[kind, name]()


def resolve(name: str, overrides: list[str] = (), kind: str = "run") -> Any:
    """The named config with `key=value` overrides applied in order."""
    return apply_overrides(get(name, kind), overrides)


def apply_overrides(config: C, overrides: list[str]) -> C:
    """Apply `dotted.key=value` strings; values are parsed by the field's declared type."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        config = _set(config, key.strip().split("."), raw.strip(), key.strip())
    return config


def to_dict(config: Any) -> dict:
    """A JSON-ready dict of a config tree (tuples become lists; a plain dict passes through)."""
    tree = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    return json.loads(json.dumps(tree, default=str))


def save(config: Any, path: str | Path) -> Path:
    """Write the resolved config as JSON (atomically) and return the path."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def from_dict(cls: type[C], data: dict) -> C:
    """Rebuild a config of dataclass type `cls` from `to_dict` output; unknown keys fail."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    kwargs = {}
    for key, value in data.items():
        field_type = hints[key]
        if dataclasses.is_dataclass(field_type):
            kwargs[key] = from_dict(field_type, value)
        else:
            kwargs[key] = _coerce_json(field_type, value, key)
    return cls(**kwargs)


def load(cls: type[C], path: str | Path) -> C:
    """Read a config JSON written by `save`."""
    return from_dict(cls, json.loads(Path(path).read_text()))


def flat_keys(config: Any, prefix: str = "") -> list[str]:
    """Every dotted key a config accepts as an override."""
    keys = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            keys += flat_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def at_least(value: float, minimum: float) -> float:
    """`value` if it is a finite number >= `minimum` (NaN fails too), else a ValueError
    saying what was expected (sizes, steps, rates, command-line numbers)."""
    if not (math.isfinite(value) and value >= minimum):
        kind = "an integer" if isinstance(value, int) else "a finite number"
        raise ValueError(f"expected {kind} >= {minimum}, got {value!r}")
    return value


def check_at_least(section: Any, minimum: float, *names: str) -> None:
    """For a section's `__post_init__`: `at_least` on each of its fields `names`, the
    ValueError naming the field."""
    for name in names:
        try:
            at_least(getattr(section, name), minimum)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None


def check_choice(section: Any, name: str, choices: tuple) -> None:
    """For a section's `__post_init__`: ValueError unless field `name` is one of `choices`
    (enum values kept as plain strings)."""
    value = getattr(section, name)
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def _set(config: Any, path: list[str], raw: str, full_key: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(config)}
    head = path[0]
    if head not in fields:
        section = full_key[:len(full_key) - len(".".join(path))]     # "a.b." above this level
        raise ConfigError(f"unknown config key {full_key!r}; valid keys: "
                          f"{', '.join(flat_keys(config, section))}")
    current = getattr(config, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"config key {full_key!r}: {head!r} is not a section")
        value = _set(current, path[1:], raw, full_key)
    elif dataclasses.is_dataclass(current):
        raise ConfigError(f"config key {full_key!r} is a section; set one of its fields")
    else:
        value = _parse(typing.get_type_hints(type(config))[head], raw, full_key)
    try:
        return dataclasses.replace(config, **{head: value})
    except ValueError as err:       # a section's own check (__post_init__) refused it
        raise ConfigError(f"config key {full_key!r}={raw!r}: {err}") from None


def _parse(field_type: Any, raw: str, key: str) -> Any:
    """Parse the override string `raw` into `field_type`."""
    origin = typing.get_origin(field_type)
    args = typing.get_args(field_type)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and raw.lower() in ("none", "null"):
            return None
        non_none = [a for a in args if a is not type(None)]
        return _parse(non_none[0], raw, key)
    if origin is tuple:
        items = [s.strip() for s in raw.strip("()[]").split(",") if s.strip()]
        inner = args[0] if args else str
        return tuple(_parse(inner, s, key) for s in items)
    if origin is typing.Literal:
        if raw not in args:
            raise ConfigError(f"config key {key!r}: {raw!r} is not one of {list(args)}")
        return raw
    try:
        if field_type is bool:
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return lowered in ("true", "1", "yes")
        if field_type in (int, float):
            return _plain_number(field_type, raw)
        if field_type is str:
            return raw
    except ValueError:
        raise ConfigError(f"config key {key!r}: cannot parse {raw!r} as {field_type.__name__}")
    raise ConfigError(f"config key {key!r}: unsupported field type {field_type!r}")


def _plain_number(kind: type, raw: str) -> int | float:
    """`raw` as a plain ASCII integer or finite decimal; ValueError for what Python's int()
    and float() take besides: '1_0', other scripts' digits, 'nan', 'inf', an overflowing
    '1e400'."""
    value = kind(raw) if _PLAIN_NUMBER[kind].fullmatch(raw) else None
    if value is None or (kind is float and not math.isfinite(value)):
        raise ValueError(raw)
    return value


def _coerce_json(field_type: Any, value: Any, key: str) -> Any:
    """A JSON value as `field_type` holds it: lists back to tuples, also inside an optional
    field (`tuple[int, int] | None`), so that a loaded config equals and hashes as the saved."""
    origin = typing.get_origin(field_type)
    if origin in (typing.Union, types.UnionType) and value is not None:
        inner = [a for a in typing.get_args(field_type) if a is not type(None)]
        return _coerce_json(inner[0], value, key) if len(inner) == 1 else value
    if origin is tuple and isinstance(value, list):
        inner = typing.get_args(field_type)[0]
        return tuple(_coerce_json(inner, v, key) for v in value)
    return value
