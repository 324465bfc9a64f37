"""Smoke test of the persist benchmark (bench/persist_front_bench.py): ``ofs serve``'s native write path
loaded by ``bench/loadgen -persist``, every 64th answer checked, the table printed (the Python-path baseline
needs a checkout of its own). The measurement itself is a separate command whose numbers go to
bench/RESULTS.md."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import persist_front_bench  # noqa: E402  (bench/ is a directory of scripts, not a package)


def test_smoke_run_measures_persists(capsys: pytest.CaptureFixture[str]) -> None:
    missing = [tool for tool in ("go", "taskset") if shutil.which(tool) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (bench/loadgen is Go; the server is pinned by taskset)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert persist_front_bench.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "Failed or wrong answers in all runs: 0." in out
    for data in ("SQLite", "Redis"):
        for load in ("saturated", "1 in flight"):
            assert f"| 1 | {data} | {load} | " in out, out
