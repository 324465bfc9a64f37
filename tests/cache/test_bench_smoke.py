"""bench/cache_bench.py runs (SQLite only, a few iterations) and prints its tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cache_bench.py"


def test_cache_bench_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("| keys | FGs | in-process hit")
    assert len([line for line in lines if line.startswith("| 500 |")]) == 2
    assert any(line.startswith("| strong, in-process + SQLite invalidation log |") for line in lines)
