"""Smoke test of the front benchmark (bench/front_bench.py): ``ofs serve``'s compiled front loaded by
bench/loadgen, every answer checked, the table printed (the grpcio baseline needs a checkout of its own).
The measurement itself is a separate command whose numbers go to bench/RESULTS.md."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import front_bench  # noqa: E402  (bench/ is a directory of scripts, not a package)


def test_smoke_run_measures_the_front(capsys: pytest.CaptureFixture[str]) -> None:
    missing = [tool for tool in ("go", "taskset") if shutil.which(tool) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (bench/loadgen is Go; the server is pinned by taskset)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert front_bench.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "Failed or wrong answers in all runs: 0." in out
    for data in ("cache hit", "Redis"):
        for load in ("saturated", "half of saturation", "1 in flight"):
            assert f"| 1 | {data} | {load} | " in out, out
