"""The cache's server plumbing: the ``distributed_cache`` setting and the Prometheus metrics."""

from __future__ import annotations

import pytest

from online_feature_store.server.main import load_config
from online_feature_store.server.metrics import ServerMetrics


def test_setting_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFS_DISTRIBUTED_CACHE", "redis-cluster://127.0.0.1:17001")
    _config, extra = load_config(None, {})
    assert extra["distributed_cache"] == "redis-cluster://127.0.0.1:17001"


def test_metrics() -> None:
    m = ServerMetrics()
    m.cache_lookup("distributed", "user", 3, 2)
    m.cache_error("distributed", "read")
    m.cache_dropped("distributed", "backfill")
    m.cache_breaker("distributed", "open")
    value = m.registry.get_sample_value
    assert value("ofs_cache_lookups_total", {"tier": "distributed", "entity": "user", "result": "hit"}) == 3
    assert value("ofs_cache_lookups_total", {"tier": "distributed", "entity": "user", "result": "miss"}) == 2
    assert value("ofs_cache_errors_total", {"tier": "distributed", "op": "read"}) == 1
    assert value("ofs_cache_dropped_total", {"tier": "distributed", "op": "backfill"}) == 1
    assert value("ofs_cache_breaker_state", {"tier": "distributed"}) == 2
    m.cache_breaker("distributed", "closed")
    assert value("ofs_cache_breaker_state", {"tier": "distributed"}) == 0
