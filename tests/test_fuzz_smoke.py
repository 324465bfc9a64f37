"""Runs the fuzz target (``fuzz/fuzz_decode.py``) on a few thousand deterministic inputs, without atheris."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ_TARGET = Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_decode.py"


@pytest.fixture(scope="module")
def target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_decode", FUZZ_TARGET)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_decode", module)
    spec.loader.exec_module(module)
    return module


def test_random_inputs(target: ModuleType) -> None:
    target.run_random(3000, seed=7)


def test_every_mode_on_every_meta(target: ModuleType) -> None:
    """Each meta and mode with short random bodies, so the structured paths are all reached."""
    rng = random.Random(11)
    for selector in range(256):
        for mode in range(5):
            for size in (0, 1, 3, 12, 40):
                body = bytes(rng.getrandbits(8) for _ in range(size))
                target.test_one_input(bytes([selector, mode]) + body)


def test_seed_blocks_decode(target: ModuleType) -> None:
    """The unmodified seeds are valid blocks (mode 3 with no edits)."""
    for selector in range(len(target.METAS)):
        meta, block = target._block_for(selector, 3, b"")
        assert target.formats.decode_block(meta, block, now=target.NOW).status == "present"


def test_past_findings(target: ModuleType) -> None:
    """Inputs the fuzzer once reported (kept as regressions)."""
    # Expiry day 365 of common year 16383 decodes to 16384-01-01, which the encoder wraps to year 0.
    target.test_one_input(bytes.fromhex("f90000dbfefffff6"))
