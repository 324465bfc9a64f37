"""The two fronts the server tests run against (docs/serving.md#fronts), and what the native front does
not do yet, each as a strict xfail with its reason: a test that starts passing on the native front fails
until its mark is removed, so this list is what is left of issue #18's first increment."""

from __future__ import annotations

from typing import Any

import pytest

FRONTS = ("grpcio", "native")

NATIVE_TLS = pytest.mark.xfail(strict=True, reason="native front: no TLS yet (refused at start)")


def fronts(*native_marks: pytest.MarkDecorator) -> list[Any]:
    """``parametrize`` values over both fronts, the native one carrying ``native_marks``."""
    return ["grpcio", pytest.param("native", marks=list(native_marks))]
