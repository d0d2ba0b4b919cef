"""Typed configs: the one checker that every config dataclass (training, generator, discriminator) uses.

A field's type comes from its annotation (bool, int, float, str, dict, tuple[int, ...], tuple[float, ...]).
Values arrive from JSON, `--set` or a weights header, so lists are accepted for tuples and ints for floats.
"""

from __future__ import annotations

import dataclasses
import typing

from progsr.errors import UserError


def coerce(value, hint, where: str):
    """`value` as type `hint`, or a one-line UserError naming `where`."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(coerce(v, item, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported config type {hint}")


def field_types(cls) -> dict:
    """{field name: type hint} of a config dataclass."""
    return typing.get_type_hints(cls)


def replace_checked(base, data: dict, source: str):
    """`base` (a config dataclass) with the keys of `data` replaced and type-checked; unknown keys name `source`."""
    hints = field_types(type(base))
    unknown = sorted(set(data) - set(hints))
    if unknown:
        import difflib

        hint = [m for key in unknown for m in difflib.get_close_matches(key, hints, n=1)]
        raise UserError(f"{source}: unknown config key(s) {', '.join(unknown)}"
                        + (f" (did you mean {', '.join(hint)}?)" if hint else ""))
    return dataclasses.replace(base, **{k: coerce(v, hints[k], f"{source}: {k}") for k, v in data.items()})


def _describe(hint) -> str:
    if typing.get_origin(hint) is tuple:
        return "a tuple of " + {int: "integers", float: "numbers"}.get(typing.get_args(hint)[0], "values")
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}[hint]


def check_types(config, what: str) -> None:
    """Raise a UserError if a field of `config` does not hold its annotated type (used in __post_init__)."""
    for name, hint in field_types(type(config)).items():
        value = getattr(config, name)
        try:
            ok = coerce(value, hint, name) == value and (typing.get_origin(hint) is not tuple or isinstance(value, tuple))
        except UserError:
            ok = False
        if not ok:
            raise UserError(f"{what} config: {name} must be {_describe(hint)}, got {value!r}")
