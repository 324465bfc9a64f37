"""The two fronts the server tests run against (docs/serving.md#fronts). What the native front does not
do yet goes here as a strict xfail mark with its reason, for ``fronts(MARK)``: a test that starts passing
on the native front then fails until its mark is removed, so the marks are what is left of issue #18.
None today (TLS, the last, is served since its second increment)."""

from __future__ import annotations

from typing import Any

import pytest

FRONTS = ("grpcio", "native")


def fronts(*native_marks: pytest.MarkDecorator) -> list[Any]:
    """``parametrize`` values over both fronts, the native one carrying ``native_marks``."""
    return ["grpcio", pytest.param("native", marks=list(native_marks))]
