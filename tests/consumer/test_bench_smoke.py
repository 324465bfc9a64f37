"""bench/consumer_bench.py runs end to end (tiny sizes; the real measurement is a separate command)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .conftest import BOOTSTRAP


def test_consumer_bench_smoke(kafka: str) -> None:
    path = Path(__file__).resolve().parents[2] / "bench" / "consumer_bench.py"
    spec = importlib.util.spec_from_file_location("consumer_bench", path)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parser().parse_args(
        ["--bootstrap", BOOTSTRAP, "--rows", "200", "--rows-per-message", "50", "--latency-samples", "2"]
    )
    out = bench.run(args)
    assert out["rows_per_s"] > 0
    assert out["latency_p50_ms"] > 0
