"""bench/store_bench.py runs (SQLite, a few iterations) and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "store_bench.py"


def test_store_bench_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("| backend |")
    assert lines[2].startswith("| sqlite | ")
