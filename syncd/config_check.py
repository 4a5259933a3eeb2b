"""One checker for config values, shared by syncd and the trainer.

A ``Spec`` says what a key holds (its JSON type, whether null is allowed, bounds,
choices); ``check`` turns a JSON value into that, or raises ``ConfigError`` with the
one line a user sees. syncd's key table and the trainer's dataclass fields both go
through here, so the same bad value gets the same message from either program.

No torch, no transformers, nothing from the rest of syncd but its errors: the
trainer imports this before it imports anything heavy.
"""

from __future__ import annotations

import enum
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

# The JSON types a key may hold; ``object`` accepts anything (checked elsewhere).
Kind = type | tuple[type, ...]


@dataclass(frozen=True)
class Spec:
    """What one config key holds, its default, and the bounds its value must keep."""

    kind: Kind
    default: Any = None
    nullable: bool = False
    minimum: float | None = None  # inclusive
    # Absurd-but-finite values (1e300 seconds) overflow later in timedelta, C ints or
    # int(); a bound turns them into one line at load time instead.
    maximum: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound: above=0 reads "must be positive"
    choices: tuple[str, ...] | None = None
    non_empty: bool = False  # strings: "" is refused
    multiple_of: float | None = None
    why: str = ""  # appended to a bound's message: "(256 KiB)", "(or null to turn it off)"


def number_text(x: float) -> str:
    """2592000, not 2.592e+06: bounds are read by people."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _fail(name: str, what: str) -> ConfigError:
    return ConfigError(f"config key {name} must {what}")


def _type_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "a JSON object", list: "a JSON list"}.get(kind, kind.__name__)


def _of_type(name: str, spec: Spec, value: Any) -> Any:
    kind = spec.kind
    if kind is object:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise _fail(name, f"be true or false, not {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(name, f"be an integer, not {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(name, f"be a number, not {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise _fail(name, f"be finite, not {value!r}")
        return value
    if kind is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # `--run_name 7` arrives as a JSON number
        if not isinstance(value, str) or (spec.non_empty and not value):
            raise _fail(name, f"be {'a non-empty string' if spec.non_empty else 'a string'}, not {value!r}")
        if "\0" in value:
            raise _fail(name, f"not contain a NUL byte: {value!r}")
        return value
    if isinstance(kind, tuple):  # a union of JSON scalars: any one of them, as it is
        if not any(isinstance(value, k) and (k is bool or not isinstance(value, bool)) for k in kind):
            raise _fail(name, f"be {' or '.join(k.__name__ for k in kind)}, not {value!r}")
        return value
    if not isinstance(value, kind):
        raise _fail(name, f"be {_type_name(kind)}, not {value!r}")
    return value


def check(name: str, spec: Spec, value: Any) -> Any:
    """``value`` as ``spec`` wants it (an int where a float is due becomes a float), or ConfigError."""
    if value is None:
        if spec.nullable:
            return None
        raise _fail(name, "not be null")
    value = _of_type(name, spec, value)
    why = f" {spec.why}" if spec.why else ""
    if spec.above is not None and spec.maximum is not None:
        if not spec.above < value <= spec.maximum:
            raise _fail(name, f"be in ({number_text(spec.above)}, {number_text(spec.maximum)}]{why}, not {value!r}")
    elif spec.above is not None and not value > spec.above:
        bound = "positive" if spec.above == 0 else f"above {number_text(spec.above)}"
        raise _fail(name, f"be {bound}{why}, not {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise _fail(name, f"be at least {number_text(spec.minimum)}{why}, not {value!r}")
    if spec.maximum is not None and spec.above is None and value > spec.maximum:
        raise _fail(name, f"be at most {number_text(spec.maximum)}{why}, not {value!r}")
    if spec.multiple_of is not None and not float(value / spec.multiple_of).is_integer():
        raise _fail(name, f"be a multiple of {number_text(spec.multiple_of)}{why}, not {value!r}")
    if spec.choices is not None and value not in spec.choices:
        null = " or null" if spec.nullable else ""
        raise _fail(name, f"be one of {', '.join(spec.choices)}{null}, not {value!r}")
    return value


def spec_for_hint(hint: Any) -> Spec:
    """The Spec a dataclass field's type annotation implies (types only, no bounds).

    ``X | None`` is nullable; ``Any`` takes anything, null included; a union of an
    Enum and ``str`` (how transformers spells its strategies) takes a string; other
    unions of JSON scalars take any of them as they are; composites (lists, dicts of
    a type) are left to whoever consumes them.
    """
    nullable = hint is Any
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = tuple(a for a in args if a is not type(None))
        nullable = len(rest) != len(args)
        hint = rest[0] if len(rest) == 1 else rest
    if hint is Any:
        return Spec(object, nullable=True)
    if hint in (bool, int, float, str, dict):
        return Spec(hint, nullable=nullable)
    options = hint if isinstance(hint, tuple) else (hint,)
    if str in options and any(isinstance(o, type) and issubclass(o, enum.Enum) for o in options):
        return Spec(str, nullable=nullable)
    if options and set(options) <= {int, float, str, bool}:
        return Spec(tuple(options), nullable=nullable)
    return Spec(object, nullable=nullable)
