"""Smoke test of bench/go_client_bench.py: builds the Go benchmark program and runs both clients for a
fraction of a second against a real ``ofs serve``. The measurements themselves are a separate command
(bench/RESULTS.md, "Go client")."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import go_client_bench  # noqa: E402  (bench/ is a directory of scripts, not a package)


def test_both_clients_measured(capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("go") is None:
        message = "the Go toolchain is not installed (clients/go needs Go >= 1.26)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert go_client_bench.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    for keys in (1, 3):
        for client in ("go", "python"):
            assert f"| {keys} | {client} | " in out, out
    assert "Python / Go" in out
