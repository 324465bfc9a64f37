"""Smoke test of the embedding benchmark (bench/embedding_bench.py, issue #19): every part runs at tiny sizes
against this checkout's real ``ofs serve`` and produces its tables and goal lines. Nothing here asserts a
timing (the bench measures those; numbers in bench/RESULTS.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import embedding_bench as eb  # noqa: E402  (bench/ is a directory of scripts, not a package)


def test_codecs_round_trip_within_their_precision() -> None:
    x = eb.generate("gaussian", 50, 32, seed=0)
    for name in eb.TYPES:
        back = eb.round_trip(name, x)
        assert back.shape == x.shape
        assert back.dtype == np.float32
        assert eb.CODECS[name].cell_bytes(32) == {"fp32": 128, "fp16": 64, "bf16": 64, "q8": 36}.get(name, 32)
    assert np.array_equal(eb.round_trip("fp32", x), x)
    assert np.abs(eb.round_trip("q8", x) - x).max() <= np.abs(x).max() / 127 * 0.51


@pytest.mark.parametrize("dist", eb.DISTRIBUTIONS)
def test_distributions_share_their_structure_between_base_and_queries(dist: str) -> None:
    a, b = eb.generate(dist, 100, 24, seed=1), eb.generate(dist, 100, 24, seed=2)
    assert a.shape == b.shape == (100, 24)
    if dist == "gaussian-unit":
        assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    if dist == "outlier-dims":  # the same 4 coordinates dominate both sets
        assert set(np.argsort(-np.abs(a).mean(0))[:4]) == set(np.argsort(-np.abs(b).mean(0))[:4])
    with pytest.raises(ValueError, match="unknown distribution"):
        eb.generate("uniform", 1, 1, seed=0)


def test_recall_of_exact_search_is_one() -> None:
    base, queries = eb.generate("gaussian", 200, 16, seed=1), eb.generate("gaussian", 20, 16, seed=2)
    want = eb.top_k(queries, base)
    assert eb.recall(want, want) == 1.0
    assert eb.recall(eb.top_k(queries, base[::-1].copy()), want) < 0.5


def test_smoke_run_prints_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert eb.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    for heading in ("### Goals", "### Fidelity", "### Conversion throughput", "### Retrieve"):
        assert heading in out
    for case in ("stored q8", "stored bf16", "fp32 served @q8", "fp32 served @bf16"):
        assert f"| {case} |" in out
    assert "q8 mean cosine ≥ 0.999" in out
    assert "stored q8 no slower than stored fp16" in out


def test_results_section_is_replaced_in_place(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    eb.gb.write_section("embedding-bench", "## Embedding types (issue #19)", "first", results)
    eb.gb.write_section("embedding-bench", "## Embedding types (issue #19)", "second", results)
    text = results.read_text()
    assert "kept" in text
    assert "second" in text
    assert "first" not in text
