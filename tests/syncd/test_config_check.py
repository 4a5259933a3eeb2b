"""The one config checker syncd and the trainer share: (spec, value) -> value or one line."""

from __future__ import annotations

import enum
import math
from typing import Any, Optional, Union

import pytest

from syncd.config_check import Spec, check, spec_for_hint
from syncd.errors import ConfigError

N = "k"  # the key's name in every message below


class Strategy(enum.Enum):
    STEPS = "steps"


OK = [
    (Spec(bool), True, True),
    (Spec(int), 7, 7),
    (Spec(float), 3, 3.0),  # an int where a float is due becomes a float
    (Spec(float, minimum=0.0, maximum=1.0), 1, 1.0),
    (Spec(str), 7, "7"),  # `--run_name 7` arrives as a JSON number
    (Spec(str), "", ""),
    (Spec(str, nullable=True), None, None),
    (Spec(dict), {"a": 1}, {"a": 1}),
    (Spec(object), [1, "x"], [1, "x"]),
    (Spec((int, str)), "auto", "auto"),
    (Spec((int, str)), 3, 3),
    (Spec(str, choices=("a", "b"), nullable=True), None, None),
    (Spec(float, above=0.0, maximum=1.0), 1.0, 1.0),
    (Spec(float, multiple_of=0.25), 0.75, 0.75),
]


@pytest.mark.parametrize(("spec", "value", "want"), OK, ids=[f"ok{i}" for i in range(len(OK))])
def test_accepted_values(spec, value, want):
    got = check(N, spec, value)
    assert got == want and type(got) is type(want)


BAD = [
    (Spec(bool), "yes", "must be true or false, not 'yes'"),
    (Spec(int), True, "must be an integer, not True"),
    (Spec(int), 2.5, "must be an integer, not 2.5"),
    (Spec(float), "fast", "must be a number, not 'fast'"),
    (Spec(float), math.inf, "must be finite, not inf"),
    (Spec(float), False, "must be a number, not False"),
    (Spec(str), ["a"], "must be a string, not ['a']"),
    (Spec(str, non_empty=True), "", "must be a non-empty string, not ''"),
    (Spec(str), "a\0b", "must not contain a NUL byte: 'a\\x00b'"),
    (Spec(dict), [1], "must be a JSON object, not [1]"),
    (Spec((int, str)), 1.5, "must be int or str, not 1.5"),
    (Spec(int), None, "must not be null"),
    (Spec(int, minimum=1), 0, "must be at least 1, not 0"),
    (Spec(float, maximum=2592000.0), 1e300, "must be at most 2592000, not 1e+300"),
    (Spec(float, minimum=0.05), 0.01, "must be at least 0.05, not 0.01"),
    (Spec(float, above=0.0), 0, "must be positive, not 0.0"),
    (Spec(float, above=0.0, maximum=1.0), 1.5, "must be in (0, 1], not 1.5"),
    (Spec(int, minimum=1, nullable=True, why="(or null for torch's default)"), 0,
     "must be at least 1 (or null for torch's default), not 0"),
    (Spec(float, multiple_of=0.25, why="(256 KiB)"), 0.3, "must be a multiple of 0.25 (256 KiB), not 0.3"),
    (Spec(float, multiple_of=0.25), 1e308, "must be a multiple of 0.25, not 1e+308"),  # no OverflowError
    (Spec(str, choices=("permanent", "trash")), "shred", "must be one of permanent, trash, not 'shred'"),
    (Spec(str, choices=("a", "b"), nullable=True), "c", "must be one of a, b or null, not 'c'"),
]


@pytest.mark.parametrize(("spec", "value", "message"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_refused_values_are_one_exact_line(spec, value, message):
    with pytest.raises(ConfigError) as ei:
        check(N, spec, value)
    assert str(ei.value) == f"config key {N} {message}"


@pytest.mark.parametrize(("hint", "spec"), [
    (int, Spec(int)),
    (Optional[float], Spec(float, nullable=True)),  # noqa: UP045 - transformers spells it so
    (str | None, Spec(str, nullable=True)),
    (Any, Spec(object, nullable=True)),
    (Union[str, Strategy], Spec(str)),  # noqa: UP007
    (Optional[Union[str, bool]], Spec((str, bool), nullable=True)),  # noqa: UP007, UP045
    (list[str], Spec(object)),
])
def test_a_dataclass_field_hint_becomes_a_spec(hint, spec):
    assert spec_for_hint(hint) == spec
