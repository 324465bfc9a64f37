"""Smoke test of bench/batch_load_bench.py: a small Parquet file through ``ofs push`` into the embedded
store and into a real ``ofs serve``, each checked row by row. The measurements are the script's own run
(bench/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def test_batch_load_bench_runs_embedded_and_grpc() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "batch_load_bench.py"), "--rows", "3000", "--features", "8",
         "--row-group", "1000", "--sinks", "embedded,grpc", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["rows"] == 3000
    for sink in ("embedded", "embedded_tenth", "grpc"):
        assert results[sink]["rows_per_s"] > 0, results
        assert results[sink]["loader_rss_mb"] > 0, results
