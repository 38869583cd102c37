"""pydantic's errors as one line naming the key."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from bmxgc.validation import describe_validation_error


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    count: int


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[Inner]
    name: str


def problem(raw: object) -> str:
    with pytest.raises(ValidationError) as exc:
        Outer.model_validate(raw)
    return describe_validation_error(exc.value, unknown="unknown field")


def test_the_first_problem_names_its_key_path_and_counts_the_rest() -> None:
    assert problem({"items": [{"count": True}], "name": 1}) == (
        "items[0].count: Input should be a valid integer, not true (and 1 more problem)"
    )


def test_missing_and_unknown_keys() -> None:
    assert problem({"items": []}) == "name: required but missing"
    assert problem({"items": [], "name": "x", "extra": 1}) == "extra: unknown field"
