"""Smoke and unit tests of the realistic benchmark (bench/realistic_bench.py, issue #17): the key draws, the
data the stores are loaded with, the cache sizing against the cache's own accounting, the goals, and one
tiny run against this checkout (SQLite, 2,000 entities, embedded and over gRPC with the Go generator).
Nothing here asserts a timing: the measurements are ``python bench/realistic_bench.py`` (bench/RESULTS.md).
``pytest bench/test_realistic_bench.py --benchmark-enable`` times the embedded retrieve of fresh keys."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import realistic_bench as rb  # noqa: E402  (bench/ is a directory of scripts, not a package)
import realistic_cases as rc  # noqa: E402
import realistic_data as rd  # noqa: E402
import realistic_grpc as rg  # noqa: E402
import realistic_keys as rk  # noqa: E402
import realistic_report as rr  # noqa: E402


@pytest.mark.parametrize("n", [1, 2, 10, 1000, 1_000_000])
def test_rank_to_entity_is_a_bijection(n: int) -> None:
    ids = rk.entities_of_ranks(np.arange(n, dtype=np.int64), n)
    assert sorted(ids.tolist()) == list(range(n))
    if n >= 1000:  # the most popular entities are not the first rows written
        assert ids[:10].max() > n // 10


@pytest.mark.parametrize("dist", rk.DISTRIBUTIONS)
def test_requests_name_distinct_keys(dist: str) -> None:
    ids = rk.Sampler(dist, 1000).draw(np.random.default_rng(1), 200, 100)
    assert ids.shape == (200, 100)
    assert ids.min() >= 0
    assert ids.max() < 1000
    assert all(len(set(row)) == 100 for row in ids.tolist())


def test_zipf_concentrates_on_the_popular_ranks() -> None:
    n = 100_000
    hot = set(rk.hot_first(n, n // 10).tolist())
    rng = np.random.default_rng(2)
    share = {
        dist: np.isin(rk.Sampler(dist, n).draw(rng, 2000, 1), list(hot)).mean() for dist in rk.DISTRIBUTIONS
    }
    # the top 10 % of ranks draw ~10 % of single-key requests uniformly, ~90 % under Zipf(1.1)
    assert 0.05 < share["uniform"] < 0.15
    assert share["zipf"] > 0.8


def test_too_many_distinct_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="distinct keys"):
        rk.Sampler("zipf", 100).draw(np.random.default_rng(0), 1, 60)
    with pytest.raises(ValueError, match="key distribution"):
        rk.Sampler("pareto", 100)


def test_values_are_recomputable_floats_in_range() -> None:
    ids = np.array([0, 7, 999_999], dtype=np.int64)
    v = rk.values(ids, 10)
    assert v.shape == (3, 640)
    assert v.dtype == np.float32
    assert v.min() >= -4
    assert v.max() < 4
    assert np.array_equal(v, rk.values(ids, 10))
    assert np.array_equal(v[1:2], rk.values(ids[1:2], 10))
    assert len(np.unique(v)) > 1900  # no pattern a store's compression could exploit


@pytest.mark.parametrize("fgs", [1, 3, 10])
def test_cache_budget_uses_the_caches_own_accounting(fgs: int) -> None:
    from online_feature_store import DataType, formats
    from online_feature_store._native import BlockCache

    label = rd.Dataset("sqlite", 1000, 10, "k", Path("/tmp")).label
    meta = formats.BlockMeta(DataType.FP32, rk.N_FEATURES)
    block = formats.encode_block(meta, rk.values(np.array([3]), 1)[0], compress=False)
    assert len(block) == rc.BLOCK_BYTES
    cache = BlockCache(1 << 20)
    cache.put_many(label, [rk.key(3)], list(range(1, fgs + 1)), [block] * fgs, 3600, 0)
    assert cache.weight == rc.entry_bytes(label, fgs)


def _result(case: rc.Case, **runs: Any) -> rc.Result:
    return rc.Result(case, 0, **runs)


def test_goals_are_read_from_their_cases() -> None:
    g = rc.GOALS
    results = [
        _result(g["1 gRPC"], sat=rc.Run(1000, 1000.0, 2.0, 5.0, cores=1.0)),
        _result(g["1 embedded"], sat=rc.Run(1, 1, 1, 1), single=rc.Run(100, 2000.0, 0.4, 0.9)),
        _result(g["2"], sat=rc.Run(1, 1, 1, 1), single=rc.Run(100, 20000.0, 0.05, 0.2, hit_ratio=1.0)),
        _result(g["3 gRPC 10 FGs"], sat=rc.Run(500, 500.0, 4.0, 9.0, cores=1.0)),
        _result(g["4"], sat=rc.Run(1, 1, 1, 1), half=rc.Run(10, 100.0, 1.0, 2.5, hit_ratio=0.9)),
    ]
    got = {x.name: x for x in rr.goals(results, {"1 gRPC rows/s per core": 20_000.0})}
    assert got["1 gRPC rows/s per core"].value == 100_000
    assert got["1 gRPC rows/s per core"].met is True  # >= 3 x 20,000
    assert got["1 embedded p50"].met is True
    assert got["2 embedded median, cache holds all"].met is False  # 50 µs > 30 µs
    assert got["3 10 FGs / 1 FG"].value == 2.0  # server CPU per request: 2 ms / 1 ms
    assert got["4 Zipf, cache 10 %, p99 at half load"].met is True
    assert "5 Cassandra p99 at half load" not in got  # not measured: no row, not a guess
    table = rr.goals_table(list(got.values()))
    assert "| 3 10 FGs / 1 FG |" in table
    assert "**no**" in table
    no_base = {x.name: x for x in rr.goals(results, None)}
    assert no_base["1 gRPC rows/s per core"].met is None


def test_the_servers_own_histogram_is_read_between_two_scrapes() -> None:
    before = {0.0005: 10.0, 0.001: 20.0, 0.0025: 20.0, math.inf: 20.0}
    after = {0.0005: 100.0, 0.001: 195.0, 0.0025: 219.0, math.inf: 220.0}
    # 200 calls between the scrapes: 175 within 1 ms, the 99th (198th) in the bucket up to 2.5 ms.
    assert rg.inside_server(before, after) == (0.875, 2.5)
    assert all(math.isnan(x) for x in rg.inside_server({}, {})), "no metric: nothing claimed"
    text = (
        'ofs_request_duration_seconds_bucket{le="0.001",method="RetrieveFeatures"} 7.0\n'
        'ofs_request_duration_seconds_bucket{le="+Inf",method="RetrieveFeatures"} 9.0\n'
        'ofs_request_duration_seconds_bucket{le="+Inf",method="PersistFeatures"} 4.0\n'
    )
    got = {
        float(labels["le"]): v
        for labels, v in rg._samples(text, "ofs_request_duration_seconds_bucket")
        if labels["method"] == "RetrieveFeatures"
    }
    assert got == {0.001: 7.0, math.inf: 9.0}


def test_quick_set_holds_every_goal_case_once() -> None:
    args = rb_args()
    cases = rb.select(args)
    assert len(cases) == len(set(cases))
    assert set(rc.GOALS.values()) <= set(cases)
    assert {c.store for c in cases} == {"sqlite", "redis", "cassandra"}
    only_redis = rb.select(rb_args(stores="redis", keys="100"))
    assert only_redis
    assert all(c.store == "redis" and c.keys == 100 for c in only_redis)


def rb_args(**over: Any) -> Any:
    import argparse

    base = {
        "stores": None, "caches": None, "modes": None, "fgs": None, "dists": None, "keys": None,
        "full": False, "goals_only": False, "no_goals": False, "entities": 1_000_000,
    }  # fmt: skip
    return argparse.Namespace(**{**base, **over})


def _require_go() -> None:
    if shutil.which("go"):
        return
    message = "the Go toolchain is not installed (bench/loadgen, the gRPC load generator, needs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_smoke_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Loads 2,000 entities with ``ofs push``, runs embedded and gRPC cases and prints the tables."""
    _require_go()
    out = tmp_path / "run.json"
    assert rb.main(["--smoke", "--work", str(tmp_path / "work"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| store | cache | path | FGs | keys | keys drawn | hit ratio |" in text
    assert "Generator ceiling (bench/loadgen against its null server): 10 keys x 1 FG:" in text
    run = json.loads(out.read_text())
    assert run["loaded"]["sqlite"]["method"] == "`ofs push` (Parquet)"
    results = run["results"]
    assert {(r["case"]["mode"], r["case"]["cache"]) for r in results} == {
        ("embedded", 0),
        ("embedded", 100),
        ("grpc", 0),
        ("grpc", 100),
    }
    for r in results:
        assert not r["error"], r["error"]
        for phase in ("sat", "half"):
            assert r[phase]["requests"] > 0
            assert r[phase]["check_failures"] == 0
        if r["case"]["cache"]:  # observed, from the server's metrics or the embedded hooks
            assert 0.5 < r["sat"]["hit_ratio"] <= 1.0
        else:
            assert math.isnan(r["sat"]["hit_ratio"])


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """This checkout's FeatureStore over 2,000 entities x 1 FG (SQLite), in-process cache for 10 %."""
    import abuse_bench as ab

    from online_feature_store import FeatureStore

    work = tmp_path_factory.mktemp("realistic")
    doc = rd.registry_doc("sqlite", "bench", 1)
    assert ab._apply(ab.Target.resolve(None), work, doc, "registry", "") is None
    n = 2000
    budget = n * rc.entry_bytes("bench", 1) // 10
    fs = FeatureStore(data_directory=work, cache_bytes=budget)
    ids = np.arange(n, dtype=np.int64)
    fs.persist("bench", "fg0", [rk.key(i) for i in range(n)], rk.values(ids, 1))
    yield fs, n
    fs.close()


def test_embedded_retrieve_of_fresh_keys(benchmark: Any, small_store: Any) -> None:
    """One ``FeatureStore.retrieve`` of 100 Zipf keys drawn afresh for every call (a timing only with
    ``--benchmark-enable``)."""
    fs, n = small_store
    traffic = rk.Sampler("zipf", n).draw(np.random.default_rng(3), 1000, 100)
    names = [rk.key(i) for i in range(n)]
    features = {"fg0": [f"f{j}" for j in range(rk.N_FEATURES)]}
    calls = iter(traffic.tolist())

    def fresh_keys() -> tuple[tuple[list[str]], dict[str, Any]]:  # untimed: drawn before each round
        return ([names[i] for i in next(calls)],), {}

    def call(keys: list[str]) -> Any:
        return fs.retrieve("bench", keys, features)

    res = benchmark.pedantic(call, setup=fresh_keys, rounds=500, warmup_rounds=50)
    assert res.values["fg0"].shape == (100, rk.N_FEATURES)
    assert not res.status["fg0"].any()
