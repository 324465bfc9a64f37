"""Redis Cluster failover under load (issue #21): a master of the 3 + 3 cluster
(scripts/services/redis-cluster-ha) is SIGKILLed while readers and a writer run through ``FeatureStore``;
its replica takes over, and the killed node comes back as a replica.

    python bench/redis_failover_bench.py                      # both roles, the figures in bench/RESULTS.md
    python bench/redis_failover_bench.py --role store --keys 5000 --after 10

Two roles of the cluster:

- ``store``: the cluster is the system of record (``kind: redis`` with ``cluster_nodes`` and
  ``wait_replicas: 1``, so a write is acknowledged once the master's replica has it). Reads and writes of
  the killed master's slots fail until the replica is promoted (the cluster's ``cluster-node-timeout``
  plus an election): the failed calls and that window are measured and stated. After failover, every
  acknowledged write must read back (none lost), and no read may ever return an older value than one
  acknowledged before it started.
- ``cache``: the cluster is the distributed cache in front of a SQLite store. A read whose cache call fails
  goes to the store (the circuit breaker then skips the cache until it answers again), so no retrieve may
  fail and none may return stale data; writes go to SQLite and drop their cached copies.

Each value is the key's version number: the writer bumps every key in turn, and records what was
acknowledged. Prints one JSON object per role (``--json`` writes them to a file).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "services" / "redis-cluster-ha"
HOST = "127.0.0.1"
PORTS = list(range(17101, 17107))
SEEDS = ",".join(f"{HOST}:{p}" for p in PORTS)
FG = "g"
FEATURES = {FG: ["version", "f1"]}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=["store", "cache", "both"], default="both")
    p.add_argument("--keys", type=int, default=5000, help="entities (default 5000)")
    p.add_argument("--batch", type=int, default=20, help="keys per retrieve (default 20)")
    p.add_argument("--write-batch", type=int, default=50, help="keys per persist (default 50)")
    p.add_argument("--readers", type=int, default=2, help="reader threads (default 2)")
    p.add_argument("--before", type=float, default=3.0, help="seconds of load before the kill (default 3)")
    p.add_argument("--after", type=float, default=5.0, help="seconds of load after failover (default 5)")
    p.add_argument("--failover-timeout", type=float, default=30.0, help="seconds the failover may take")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p


def _run(*args: str) -> str:
    out = subprocess.run([str(SCRIPT), *args], check=True, capture_output=True, text=True, timeout=180)
    return out.stdout


def _redis(port: int) -> Any:
    import redis

    return redis.Redis(host=HOST, port=port, socket_timeout=0.5, socket_connect_timeout=0.5)


def masters() -> list[int]:
    """Ports of the masters that serve slots, as a live node sees them."""
    for port in PORTS:
        try:
            table = _redis(port).execute_command("CLUSTER", "NODES")
        except Exception:
            continue
        text = table.decode() if isinstance(table, bytes) else str(table)
        out = []
        for line in text.splitlines():
            f = line.split()
            if "master" in f[2] and "fail" not in f[2] and len(f) > 8:
                out.append(int(f[1].split("@")[0].rsplit(":", 1)[1]))
        return sorted(out)
    return []


def cluster_ok(exclude: int) -> bool:
    """Every live node reports ``cluster_state:ok`` and 3 slot-serving masters, none of them ``exclude``."""
    ms = masters()
    if len(ms) != 3 or exclude in ms:
        return False
    for port in PORTS:
        if port == exclude:
            continue
        try:
            info = _redis(port).execute_command("CLUSTER", "INFO")
        except Exception:
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        if "cluster_state:ok" not in text:
            return False
    return True


def registry_doc(role: str) -> dict[str, Any]:
    if role == "store":
        store = {"id": "main", "kind": "redis", "settings": {"cluster_nodes": SEEDS, "wait_replicas": "1"}}
    else:
        store = {"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}
    return {
        "stores": [store],
        "entities": [
            {
                "label": "acct",
                "keys": [{"label": "id", "column": "id"}],
                "cache": {
                    "in_process": {"enabled": False},
                    "distributed": {"enabled": role == "cache", "ttl_seconds": 600, "jitter_percent": 10},
                },
                "feature_groups": [
                    {
                        "label": FG,
                        "data_type": "fp32",
                        "store": "main",
                        "distributed_cache": role == "cache",
                        "features": [{"label": "version"}, {"label": "f1"}],
                    }
                ],
            }
        ],
    }


class Counts:
    """``FeatureStore(metrics=…)`` hooks: distributed-cache hits/misses and errors, breaker states."""

    def __init__(self) -> None:
        self.hits = self.misses = self.cache_errors = 0
        self.breaker: list[tuple[float, str]] = []

    def request(self, entity: str, rows: int) -> None:
        pass

    def time_left(self) -> float | None:
        return None

    def store_call(self, store_id: str, op: str, seconds: float, failed: bool) -> None:
        pass

    def feature_status(self, entity: str, feature_group: str, found: int, missing: int, expired: int) -> None:
        pass

    def cache_lookup(self, tier: str, entity: str, hits: int, misses: int) -> None:
        if tier == "distributed":
            self.hits += hits
            self.misses += misses

    def cache_error(self, tier: str, op: str) -> None:
        self.cache_errors += 1

    def cache_breaker(self, tier: str, state: str) -> None:
        self.breaker.append((time.monotonic(), state))

    def cache_dropped(self, tier: str, op: str) -> None:
        pass


def open_store(role: str, work: Path, counts: Counts) -> Any:
    from online_feature_store.feature_store import FeatureStore
    from online_feature_store.registry.spec import reconcile
    from online_feature_store.registry.sqlite import SqliteRegistry
    from online_feature_store.registry.yaml_io import parse_spec

    registry = SqliteRegistry(work / "registry.db")
    spec = parse_spec(registry_doc(role), env={})
    registry.apply(lambda state: reconcile(state, spec))
    registry.close()
    cache = f"redis-cluster://{SEEDS}" if role == "cache" else None
    return FeatureStore(
        f"sqlite:///{work / 'registry.db'}",
        data_directory=work,
        cache_bytes=0,
        distributed_cache=cache,
        invalidation=False,
        metrics=counts,
    )


class Load:
    """A writer bumping every key's version in turn, and readers checking what they get against it."""

    def __init__(self, fs: Any, args: argparse.Namespace, names: list[str]) -> None:
        self.fs, self.args, self.names = fs, args, names
        self.acked = np.ones(len(names), dtype=np.int64)  # the preload wrote version 1 everywhere
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.reads: list[tuple[float, float]] = []  # (start, seconds) of successful reads
        self.read_fail: list[tuple[float, str]] = []
        self.write_fail: list[tuple[float, str]] = []
        self.writes_ok = 0
        self.stale = 0
        self.threads = [threading.Thread(target=self.write, daemon=True)]
        self.threads += [
            threading.Thread(target=self.read, args=(i,), daemon=True) for i in range(args.readers)
        ]

    def write(self) -> None:
        version, n, step = 2, len(self.names), self.args.write_batch
        while not self.stop.is_set():
            for start in range(0, n, step):
                if self.stop.is_set():
                    return
                idx = np.arange(start, min(n, start + step))
                rows = np.zeros((len(idx), 2), dtype=np.float32)
                rows[:, 0] = version
                try:
                    self.fs.persist("acct", FG, [self.names[i] for i in idx], rows)
                except Exception as e:
                    with self.lock:
                        self.write_fail.append((time.monotonic(), type(e).__name__))
                    continue
                with self.lock:
                    self.acked[idx] = np.maximum(self.acked[idx], version)
                    self.writes_ok += 1
            version += 1

    def read(self, seed: int) -> None:
        rng = random.Random(seed)
        n = len(self.names)
        while not self.stop.is_set():
            idx = rng.sample(range(n), self.args.batch)
            with self.lock:
                floor = self.acked[idx].copy()
            began = time.monotonic()
            try:
                got = self.fs.retrieve("acct", [self.names[i] for i in idx], FEATURES)
            except Exception as e:
                with self.lock:
                    self.read_fail.append((began, type(e).__name__))
                continue
            took = time.monotonic() - began
            versions = got.values[FG][:, 0]
            with self.lock:
                self.reads.append((began, took))
                self.stale += int(np.sum(versions < floor))


def _by_second(times: list[float], origin: float) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in times:
        out[int(t - origin)] = out.get(int(t - origin), 0) + 1
    return out


def _closed_after(events: list[tuple[float, str]], origin: float) -> float | None:
    """When the cache's breaker last closed, after ``origin``; None if it was never open or stays open."""
    if not events or events[-1][1] != "closed":
        return None
    return round(events[-1][0] - origin, 2)


def _window(times: list[float]) -> float:
    return round(max(times) - min(times), 2) if times else 0.0


def p99(xs: list[float]) -> float | None:
    return round(float(np.percentile(xs, 99)) * 1000, 2) if xs else None


def run_role(role: str, args: argparse.Namespace) -> dict[str, Any]:
    _run("start")
    with tempfile.TemporaryDirectory(prefix=f"ofs-redis-failover-{role}-") as tmp:
        counts = Counts()
        fs = open_store(role, Path(tmp), counts)
        names = [f"a{i:07d}" for i in range(args.keys)]
        ones = np.ones((args.keys, 2), dtype=np.float32)
        for s in range(0, args.keys, 500):
            fs.persist("acct", FG, names[s : s + 500], ones[s : s + 500])
        load = Load(fs, args, names)
        for t in load.threads:
            t.start()
        time.sleep(args.before)
        victim = random.Random().choice(masters())
        _run("kill-master", str(victim))
        killed_at = time.monotonic()
        deadline = killed_at + args.failover_timeout
        while not cluster_ok(victim) and time.monotonic() < deadline:
            time.sleep(0.05)
        failover_s = time.monotonic() - killed_at
        failed_over = cluster_ok(victim)
        time.sleep(args.after)
        restarted_at = time.monotonic()
        _run("start")  # the killed node comes back as a replica
        rejoin_s = time.monotonic() - restarted_at
        rejoined_after_kill = restarted_at - killed_at
        time.sleep(1.0)
        load.stop.set()
        for t in load.threads:
            t.join(timeout=30)
        ended = time.monotonic()
        # every acknowledged write reads back
        lost, check_errors = 0, []
        for s in range(0, args.keys, 500):
            for _ in range(20):
                try:
                    got = fs.retrieve("acct", names[s : s + 500], FEATURES).values[FG][:, 0]
                    break
                except Exception as e:
                    check_errors.append(str(e)[-120:])
                    time.sleep(0.5)
            else:
                raise RuntimeError(f"the check after the run cannot read: {check_errors[-1]}")
            lost += int(np.sum(got < load.acked[s : s + 500]))
        fs.close()
    fails = sorted([t for t, _ in load.read_fail] + [t for t, _ in load.write_fail])
    before = [d for t, d in load.reads if t < killed_at]
    during = [d for t, d in load.reads if killed_at <= t < killed_at + failover_s]
    after = [d for t, d in load.reads if t >= killed_at + failover_s]
    return {
        "role": role,
        "keys": args.keys,
        "killed_master": victim,
        "failed_over": failed_over,
        "failover_seconds": round(failover_s, 2),
        "rejoin_seconds": round(rejoin_s, 2),
        "restarted_after_kill_seconds": round(rejoined_after_kill, 2),
        "reads_ok": len(load.reads),
        "reads_failed": len(load.read_fail),
        "read_errors": sorted({e for _, e in load.read_fail}),
        "writes_ok": load.writes_ok,
        "writes_failed": len(load.write_fail),
        "write_errors": sorted({e for _, e in load.write_fail}),
        "read_errors_by_second_after_kill": _by_second([t for t, _ in load.read_fail], killed_at),
        "write_errors_by_second_after_kill": _by_second([t for t, _ in load.write_fail], killed_at),
        "read_error_window_seconds": _window([t for t, _ in load.read_fail]),
        "write_error_window_seconds": _window([t for t, _ in load.write_fail]),
        "error_window_seconds": round(fails[-1] - fails[0], 2) if fails else 0.0,
        "first_error_after_kill_seconds": round(fails[0] - killed_at, 2) if fails else None,
        "stale_reads": load.stale,
        "lost_acknowledged_writes": lost,
        "check_read_errors": check_errors,
        "read_p99_ms": {"before": p99(before), "failover": p99(during), "after": p99(after)},
        "reads_per_s": round(len(load.reads) / (ended - killed_at + args.before), 1),
        "cache_hit_ratio": round(counts.hits / (counts.hits + counts.misses), 3) if counts.hits else None,
        "cache_errors": counts.cache_errors,
        "breaker": [s for _, s in counts.breaker],
        "cache_closed_after_kill_seconds": _closed_after(counts.breaker, killed_at),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    roles = ["store", "cache"] if args.role == "both" else [args.role]
    return [run_role(role, args) for role in roles]


def main() -> None:
    args = parser().parse_args()
    out = run(args)
    for r in out:
        print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
