"""``ofs consume`` settings and the health endpoint (no broker needed)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from online_feature_store import InvalidInputError
from online_feature_store.cli import build_parser
from online_feature_store.consumer.config import ConsumerConfig, load_config
from online_feature_store.consumer.health import ConsumerMetrics, HealthServer, Readiness


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "topic: features\nworkers: 2\ncache_mode: eventual\nregistry: sqlite:///r.db\n"
        "kafka: {security_protocol: PLAINTEXT}\n"
    )
    monkeypatch.setenv("OFS_CONSUMER_WORKERS", "6")
    monkeypatch.setenv("OFS_CONSUMER_SATURATE", "yes")
    monkeypatch.setenv("OFS_CONSUMER_BATCH_MAX_SECONDS", "0.5")
    config, extra = load_config(str(path), {"topic": "flagged", "group_id": None})
    assert config.topic == "flagged"
    assert config.workers == 6
    assert config.saturate is True
    assert config.batch_max_seconds == 0.5
    assert config.cache_mode == "eventual"
    assert config.invalidate is False
    assert config.kafka == {"security_protocol": "PLAINTEXT"}
    assert config.dead_letter_topic == "flagged.dlq"
    assert config.group_id == ConsumerConfig().group_id
    assert extra == {"registry": "sqlite:///r.db"}
    # The distributed cache the consumer invalidates in strong mode: file setting, else as `ofs serve`.
    monkeypatch.setenv("OFS_DISTRIBUTED_CACHE", "redis://127.0.0.1:16379/0")
    assert load_config(None, {})[1] == {"distributed_cache": "redis://127.0.0.1:16379/0"}
    path.write_text("distributed_cache: redis://cache:6379/1\n")
    assert load_config(str(path), {})[1] == {"distributed_cache": "redis://cache:6379/1"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cache_mode: sometimes\n", "cache_mode"),
        ("workers: 0\n", "workers"),
        ("workers: many\n", "workers"),
        ("topic: t\ndlq_topic: t\n", "dlq_topic"),
        ("topicc: t\n", "unknown settings"),
        ("- a list\n", "mapping"),
        ("auto_offset_reset: middle\n", "auto_offset_reset"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        load_config(str(path), {})


def test_cli_parses_consume() -> None:
    args = build_parser().parse_args(["consume", "--topic", "t", "--cache-mode", "eventual"])
    assert args.topic == "t"
    assert args.cache_mode == "eventual"
    assert args.config is None


def test_health_endpoints() -> None:
    metrics, readiness = ConsumerMetrics(), Readiness()
    server = HealthServer("127.0.0.1", 0, metrics, readiness)
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}/health/self") as r:
            assert json.load(r) == {"message": "true"}
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/health/ready")
        assert info.value.code == 503
        assert "group" in json.load(info.value)["problems"]
        info.value.close()
        readiness.set("group", None)
        with urllib.request.urlopen(f"{base}/health/ready") as r:
            assert json.load(r) == {"ready": True, "problems": {}}
        metrics.dead_lettered.labels("t", "InvalidInputError").inc()
        with urllib.request.urlopen(f"{base}/metrics") as r:
            text = r.read().decode()
        assert 'ofs_consumer_dead_lettered_messages_total{error="InvalidInputError",topic="t"} 1.0' in text
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nope")
        assert missing.value.code == 404
        missing.value.close()
    finally:
        server.close()
