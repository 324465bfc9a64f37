"""Fixtures of the server tests."""

from __future__ import annotations

import pytest
from fronts import FRONTS


@pytest.fixture(params=FRONTS)
def front(request: pytest.FixtureRequest) -> str:
    """The front a test's server runs (tests/server/fronts.py); a test narrows or marks it with
    ``parametrize("front", fronts(...))``."""
    value: str = request.param
    return value
