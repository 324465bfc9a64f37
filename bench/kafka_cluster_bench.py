"""A broker SIGKILLed while two ``ofs consume`` processes ingest from a 3-broker cluster (issue #21).

    python bench/kafka_cluster_bench.py                      # 4000 keys x 30 versions, broker down 10 s
    python bench/kafka_cluster_bench.py --keys 500 --versions 12 --down-seconds 4   # what CI runs

Needs ``scripts/services/kafka-cluster start`` (3 brokers; topics get replication factor 3 and
``min.insync.replicas`` 2). A topic of ``--partitions`` partitions is created; two ``ofs consume`` processes
(one group, 6 s session timeout) write it into one SQLite store. The producer (the ingest SDK's
``KafkaSink``: ``acks=all``, idempotent) pushes every key once per version, the version as the value, one
round after the other. After ``--kill-after`` of the rounds the group's coordinator broker is SIGKILLed
(``scripts/services/kafka-cluster kill-broker N``: no controlled shutdown) and ``--down-seconds`` later
started again. Then the run waits until the group's committed offsets reach the end of every partition.

Reported: rows/s stored (the consumers' ``ofs_consumer_persisted_blocks_total``, one block per row here)
before the kill, while the broker is down and after it is back; rows lost (keys missing or not holding
their newest version, read back from the store); seconds from the last acknowledged send until the lag is 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "scripts" / "services" / "kafka-cluster"
BROKERS = [("127.0.0.1", 29092), ("127.0.0.1", 29102), ("127.0.0.1", 29112)]
BOOTSTRAP = ",".join(f"{h}:{p}" for h, p in BROKERS)
N_FEATURES = 2
_HEALTH = re.compile(r"health (http://\S+)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=4000, help="distinct keys, each written once per version")
    p.add_argument("--versions", type=int, default=30, help="rounds; round v writes value v to every key")
    p.add_argument("--rows-per-message", type=int, default=100)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--kill-after", type=float, default=0.3, help="share of the rounds sent before the kill")
    p.add_argument("--down-seconds", type=float, default=10.0, help="how long the broker stays down")
    p.add_argument("--timeout", type=float, default=180.0, help="longest wait for the lag to reach 0")
    return p


def _registry(directory: Path) -> str:
    from online_feature_store.registry.spec import reconcile
    from online_feature_store.registry.sqlite import SqliteRegistry
    from online_feature_store.registry.yaml_io import parse_spec

    doc = {
        "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": str(directory / "store.db")}}],
        "entities": [
            {
                "label": "user",
                "keys": [{"label": "user_id", "column": "uid"}],
                "feature_groups": [
                    {
                        "label": "emb",
                        "data_type": "fp32",
                        "store": "main",
                        "features": [{"label": f"f{i}", "default": -1.0} for i in range(N_FEATURES)],
                    }
                ],
            }
        ],
    }
    registry = SqliteRegistry(directory / "registry.db")
    registry.apply(lambda state: reconcile(state, parse_spec(doc, env={})))
    registry.close()
    return f"sqlite:///{directory / 'registry.db'}"


def _values(keys: int, version: int) -> np.ndarray:
    """Row k of version v: (v, k), exact in fp32."""
    out = np.empty((keys, N_FEATURES), dtype=np.float32)
    out[:, 0] = version
    out[:, 1] = np.arange(keys)
    return out


class Consumer:
    """One ``ofs consume`` process, its health URL read from its first line."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "consume", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=self._out,
            cwd=config.parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        found = _HEALTH.search(line)
        if not found:
            self.stop()
            raise RuntimeError(f"ofs consume did not start: {line!r}; log: {log.read_text()[-2000:]}")
        self.url = found.group(1)

    def persisted_rows(self, topic: str) -> float:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            text = r.read().decode()
        pattern = rf'^ofs_consumer_persisted_blocks_total\{{topic="{re.escape(topic)}"\}} (\S+)$'
        found = re.search(pattern, text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def stop(self) -> int:
        """SIGTERM (finish the batch, commit, leave the group); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def _service(*args: str) -> str:
    done = subprocess.run([str(SERVICE), *args], capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"kafka-cluster {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def _coordinator(admin: Any, group: str) -> int:
    """The node id of the group's coordinator (the broker whose loss also moves the group)."""
    found: dict[str, int] = admin._find_coordinator_ids([group])  # kafka-python has no public call
    return found[group]


def _lag(admin: Any, probe: Any, topic: str, group: str, partitions: int) -> int | None:
    """Messages of ``topic`` past the group's committed offsets (uncommitted partitions count whole);
    ``None`` when the brokers cannot say now (a connection to the restarted broker not yet back)."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    tps = [TopicPartition(topic, p) for p in range(partitions)]
    try:
        ends = probe.end_offsets(tps)
        committed = admin.list_consumer_group_offsets(group)
    except KafkaError:
        return None
    return int(sum(max(ends[tp] - (committed[tp].offset if tp in committed else 0), 0) for tp in tps))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic

    from online_feature_store.feature_store import FeatureStore
    from online_feature_store.ingest import KafkaSink, push

    work = Path(tempfile.mkdtemp(prefix="ofs-kafka-cluster-"))
    registry = _registry(work)
    topic = f"ofs-cluster-{uuid.uuid4().hex[:10]}"
    group = f"g-{topic}"
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="ofs-bench-admin")
    admin.create_topics(
        [NewTopic(topic, args.partitions, 3, topic_configs={"min.insync.replicas": "2"})], timeout_ms=30_000
    )
    probe = KafkaConsumer(bootstrap_servers=BOOTSTRAP, client_id="ofs-bench-lag")
    config = work / "consume.yaml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "bootstrap_servers": BOOTSTRAP,
                "topic": topic,
                "group_id": group,
                "registry": registry,
                "data_dir": str(work),
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
                "lag_interval_seconds": 1.0,
                "backoff_max_seconds": 2.0,
                "health_port": 0,
                "kafka": {"metadata_max_age_ms": 2000, "request_timeout_ms": 10_000},
            }
        )
    )
    consumers = [Consumer(config, work / f"consume-{i}.log") for i in (1, 2)]
    samples: list[tuple[float, float]] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.is_set():
            with contextlib.suppress(OSError):  # a consumer busy in a rebalance answers late: no sample
                samples.append((time.monotonic(), sum(c.persisted_rows(topic) for c in consumers)))
            stop_sampling.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    keys = [f"u{k}" for k in range(args.keys)]
    kill_round = max(1, int(args.versions * args.kill_after))
    marks: dict[str, float] = {}
    killed = restarted = None
    restarter: threading.Thread | None = None
    out: dict[str, Any] = {}
    try:
        with KafkaSink(BOOTSTRAP, topic, request_timeout_ms=10_000) as sink:
            for version in range(1, args.versions + 1):
                if version == kill_round + 1:
                    killed = _coordinator(admin, group)
                    _service("kill-broker", str(killed))
                    marks["kill"] = time.monotonic()

                    def restart(node: int = killed) -> None:
                        time.sleep(args.down_seconds)
                        marks["restart"] = time.monotonic()
                        _service("start-broker", str(node))
                        marks["back"] = time.monotonic()

                    restarter = threading.Thread(target=restart)
                    restarter.start()
                push(
                    sink,
                    "user",
                    keys,
                    {"emb": _values(args.keys, version)},
                    features={"emb": [f"f{i}" for i in range(N_FEATURES)]},
                    data_types={"emb": "fp32"},
                    keys_schema=["user_id"],
                    rows_per_message=args.rows_per_message,
                )  # waits for every acknowledgement (raises if a send failed): one round after the other
                if version == 1:
                    # the group has joined and ingests before the rates and the kill start
                    _wait_rows(samples, args.keys, args.timeout)
                    marks["start"] = time.monotonic()
            marks["sent"] = time.monotonic()
        if restarter is not None:
            restarter.join()
            restarted = killed
        deadline = time.monotonic() + args.timeout
        lag = _lag(admin, probe, topic, group, args.partitions)
        while lag != 0 and time.monotonic() < deadline:
            time.sleep(0.25)
            lag = _lag(admin, probe, topic, group, args.partitions)
        marks["lag0"] = time.monotonic()
        stop_sampling.set()
        sampler.join()
        with FeatureStore(registry, data_directory=work) as fs:
            got = fs.retrieve("user", keys, {"emb": [f"f{i}" for i in range(N_FEATURES)]})
        found = got.status["emb"] == 0
        newest = _values(args.keys, args.versions)
        right = found & np.all(got.values["emb"] == newest, axis=1)
        out = {
            "keys": args.keys,
            "versions": args.versions,
            "rows_sent": args.keys * args.versions,
            "partitions": args.partitions,
            "killed_broker": killed,
            "restarted_broker": restarted,
            "keys_missing": int((~found).sum()),
            "keys_stale": int((found & ~right).sum()),
            "rows_lost": int((~right).sum()),
            "final_lag": lag,
            "lag_zero_after_sent_s": round(marks["lag0"] - marks["sent"], 2),
            "lag_zero_after_restart_s": round(marks["lag0"] - marks["back"], 2) if "back" in marks else None,
            **_rates(samples, marks),
            "consumer_exits": [c.stop() for c in consumers],
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    finally:
        stop_sampling.set()
        for c in consumers:
            c.stop()
        if restarter is not None:
            restarter.join()
        if killed is not None and "back" not in marks:
            _service("start-broker", str(killed))  # never leave the cluster a broker short
        probe.close()
        admin.close()
        _delete_topics([topic, f"{topic}.dlq"])
    out["logs"] = str(work)
    return out


def _delete_topics(topics: list[str]) -> None:
    """Deletes the run's topics, those that exist. Cleanup only: after a broker's restart a client may
    still hold a failed connection to it, so each attempt uses a fresh client, and a run is never failed
    here (the topics' names are unique to it)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    for attempt in range(5):
        try:
            admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="ofs-bench-cleanup")
        except KafkaError:
            time.sleep(1.0)
            continue
        try:
            existing = set(admin.list_topics())
            found = [t for t in topics if t in existing]
            if found:
                admin.delete_topics(found)
            return
        except KafkaError as e:
            if attempt == 4:
                print(f"kafka_cluster_bench: topics {topics} left behind: {e}", file=sys.stderr)
            time.sleep(1.0)
        finally:
            admin.close()


def _wait_rows(samples: list[tuple[float, float]], rows: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not samples or samples[-1][1] < rows:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the consumers stored {samples[-1][1] if samples else 0} of {rows} rows")
        time.sleep(0.1)


def _rates(samples: list[tuple[float, float]], marks: dict[str, float]) -> dict[str, float | None]:
    """Rows/s stored between the marks: before the kill, while the broker was down, after it was back."""

    def rate(start: float | None, end: float | None) -> float | None:
        if start is None or end is None:
            return None
        inside = [(t, n) for t, n in samples if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return round((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]))

    return {
        "rows_per_s_before_kill": rate(marks.get("start"), marks.get("kill")),
        "rows_per_s_broker_down": rate(marks.get("kill"), marks.get("restart")),
        "rows_per_s_after_restart": rate(marks.get("back"), marks.get("lag0")),
    }


def main() -> None:
    print(json.dumps(run(parser().parse_args()), indent=2))


if __name__ == "__main__":
    main()
