"""models.typecheck: the one check of a value against an annotation's text, behind a spec's
settings, a record's fields and a model's arguments."""

from __future__ import annotations

import pytest

from models.typecheck import as_json, fits, readable, why_not


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (3, "int"),
        (3, "float"),
        (2.5, "float"),
        (None, "int | None"),
        (True, "bool"),
        ("x", "str"),
        ([1.0, 2], "list[float]"),
        ({"a": [1]}, "dict[str, Any]"),
        ([{"epoch": 1}], "list[dict[str, Any]]"),
        ([1, "x"], "list"),
        ((1, 2), "tuple[int, int]"),
        ("anything", "Sequence[int] | None"),
        (5, ""),
    ],
)
def test_values_that_fit(value, hint):
    assert fits(value, hint) and why_not(value, hint) == ""


@pytest.mark.parametrize(
    ("value", "hint", "why"),
    [
        (1.5, "int", "expected int, got 1.5"),
        (True, "int", "expected int, got True"),
        (True, "float", "expected float, got True"),
        (5.0, "int | None", "expected int | None, got 5.0"),
        ("3", "float | None", "expected float | None, got '3'"),
        ([1, "x"], "list[float]", "an item: expected float, got 'x'"),
        ([1], "list[dict[str, Any]]", "an item: expected dict[str, Any], got 1"),
        ({"a": 2}, "dict[str, str]", "an item: expected str, got 2"),
    ],
)
def test_values_that_do_not_fit_say_why(value, hint, why):
    assert why_not(value, hint) == why and not fits(value, hint)


def test_what_is_not_read_fits_and_a_record_shows_values_as_json():
    assert not readable("tuple[int, int, int]") and not readable("Path") and not readable("")
    assert readable("int | None") and readable("list[dict[str, Any]]")
    assert why_not("fast", "float | None", as_json) == 'expected float | None, got "fast"'
