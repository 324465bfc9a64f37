"""Crashes and outages: a consumer process killed mid-stream and restarted, SIGTERM, and a store that goes
away for a while. Nothing acknowledged may be lost, and replays must be harmless."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition

from online_feature_store.feature_store import FeatureStore

from .conftest import BOOTSTRAP, Running, config, make_registry, persist_message, stored, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _consume_process(cfg_path: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "consume", "--config", str(cfg_path)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _committed(topic: str, group: str, partitions: int) -> list[int | None]:
    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False)
    try:
        return [c.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        c.close(autocommit=False)


def test_sigkill_mid_stream_then_restart_loses_nothing_and_sigterm_commits(
    tmp_path: Path, make_topic: Callable[[int], str], producer: Any
) -> None:
    topic = make_topic(2)
    url = make_registry(tmp_path / "registry.db")
    settings = {
        "bootstrap_servers": BOOTSTRAP,
        "topic": topic,
        "group_id": f"g-{topic}",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        "batch_max_messages": 2,
        "batch_max_seconds": 0.05,
        "health_port": -1,
        "registry": url,
        "data_dir": str(tmp_path),
    }
    cfg_path = tmp_path / "consumer.yaml"
    cfg_path.write_text(yaml.safe_dump(settings))
    log = tmp_path / "consumer.log"
    n_messages, rows = 300, 20
    total = n_messages * rows
    for m in range(n_messages):
        producer.send(topic, persist_message(m * rows, rows), partition=m % 2)
    producer.flush()
    proc = _consume_process(cfg_path, log)
    try:
        with FeatureStore(url, data_directory=tmp_path, cache_bytes=0) as fs:
            assert wait_for(lambda: stored(fs, total)[0] > 0, timeout=60), log.read_text()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            partial, ok = stored(fs, total)
            assert ok
            assert partial < total  # killed mid-stream (most of the topic is still unread)
            # A second process takes over from the last commit (after the dead member's session expires).
            proc = _consume_process(cfg_path, log)
            assert wait_for(lambda: stored(fs, total)[0] == total, timeout=90), (partial, log.read_text())
            assert stored(fs, total) == (total, True)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "ofs consume: stopped" in log.read_text()
    # SIGTERM finished the work in hand and committed it: the group's offsets are at the end.
    assert _committed(topic, f"g-{topic}", 2) == [n_messages // 2, n_messages // 2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test only (AOF on, so a restart keeps what was written)."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        assert wait_for(up, timeout=20, interval=0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    import shutil

    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (scripts/services/redis install)")
        pytest.skip("redis-server is not installed")
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.stop()


def test_store_outage_pauses_then_resumes_without_loss(
    tmp_path: Path,
    make_topic: Callable[[int], str],
    run_consumer: Callable[..., Running],
    producer: Any,
    private_redis: PrivateRedis,
) -> None:
    topic = make_topic(2)
    store = {
        "id": "main",
        "kind": "redis",
        "settings": {
            "url": f"redis://127.0.0.1:{private_redis.port}/0",
            "connect_timeout": "0.5",
            "socket_timeout": "0.5",
            "retries": "0",
        },
    }
    url = make_registry(tmp_path / "registry.db", store)
    c = run_consumer(url, tmp_path, config(topic))
    rows = 10
    for m in range(10):
        producer.send(topic, persist_message(m * rows, rows), partition=m % 2)
    producer.flush()
    with FeatureStore(url, data_directory=tmp_path, cache_bytes=0) as fs:
        assert wait_for(lambda: stored(fs, 100)[0] == 100)
        private_redis.stop()
        for m in range(10, 30):
            producer.send(topic, persist_message(m * rows, rows), partition=m % 2)
        producer.flush()
        assert wait_for(lambda: c.value("ofs_consumer_store_failures_total", topic=topic) >= 2)
        assert c.value("ofs_consumer_paused") == 1
        assert "store" in c.readiness.problems()
        time.sleep(1.0)  # a few more failed retries while the store stays down
        private_redis.start()
        assert wait_for(lambda: stored(fs, 300)[0] == 300, timeout=60)
        assert stored(fs, 300) == (300, True)
    assert wait_for(lambda: c.value("ofs_consumer_paused") == 0)
    assert "store" not in c.readiness.problems()
    assert c.value("ofs_consumer_dead_lettered_messages_total", topic=topic, error="UnavailableError") == 0
    c.stop()
    # redis-py can drop a connection whose handshake failed while redis-server was coming back without
    # closing its socket (a reference cycle through the exception keeps it until a full collection). It
    # is the client library's, not a leak of ours (both stores were closed above); collect it here so a
    # later test's garbage collection does not report it as that test's ResourceWarning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
