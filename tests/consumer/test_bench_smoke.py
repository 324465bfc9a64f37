"""bench/consumer_bench.py runs end to end (tiny sizes; the real measurement is a separate command)."""

from __future__ import annotations

from _bench import load_script

from .conftest import BOOTSTRAP


def test_consumer_bench_smoke(kafka: str) -> None:
    bench = load_script("bench/consumer_bench.py")
    args = bench.parser().parse_args(
        ["--bootstrap", BOOTSTRAP, "--rows", "200", "--rows-per-message", "50", "--latency-samples", "2"]
    )
    out = bench.run(args)
    assert out["rows_per_s"] > 0
    assert out["latency_p50_ms"] > 0
