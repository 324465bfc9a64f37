"""A Cassandra node SIGKILLed under mixed read/write load, replication factor 3 (issue #21).

    python bench/cassandra_cluster_bench.py          # bench/RESULTS.md, "Cassandra, 3 nodes RF3"
    python bench/cassandra_cluster_bench.py --smoke --json   # short: tests/store/test_cassandra_cluster.py

Needs ``scripts/services/cassandra-cluster start`` (3 nodes, 127.0.0.2-4:29042). The run makes a keyspace
of its own with replication factor 3 (the store's ``replication_factor: 3``, ``consistency`` QUORUM unless
``--consistency`` says otherwise) and one ``FeatureStore`` on it with no cache in front of the store, so every
call reaches Cassandra. After writing ``--keys`` keys once, ``--threads`` threads share that store, each
persisting batches of its own keys (a new version per batch; a key is only ever written by its thread, so
the newest acknowledged version of each key is known) or retrieving random keys, ``--write-share`` of the
calls being writes. ``--before`` seconds in, node ``--node`` is SIGKILLed (``cassandra-cluster kill-node``: no
drain, no gossip goodbye), ``--down`` seconds later started again (``start-node``); the load runs on
without a restart of the store, for ``--after`` seconds once the node answers CQL.

Checked: failed calls (any exception: the store retries on the next node inside ``request_timeout``);
stale reads (a read older than the key's newest write acknowledged before the read started); after the
run, every key read back at the store's consistency holds its newest acknowledged version (a write that
failed may have landed or not: its key may hold either version); and the returned node serves our store
again (the requests its ``system_views.clients`` counts for our driver grow while the load runs).

Printed: calls/s, failed calls, p50/p99 of reads and writes for calls started before the kill, while the
node is down or starting ("during", split into "down" and "restarting": a starting JVM takes a core of
this 2-core machine), and after it answers again; seconds until the returned node had our traffic
again; requests per node. With ``--check-returned-node``: whether the returned node itself holds every
row (after the other nodes' hints for it are delivered, the other two are stopped and each key is read
from it alone at ``ONE``, compared with the bytes read at ``QUORUM`` before).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "scripts" / "services" / "cassandra-cluster"
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
PORT = 29042
NODES = [(h, PORT) for h in HOSTS]
OUR_DRIVER = "ScyllaDB Rust Driver"  # what the native store's driver calls itself (system_views.clients)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=2000)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--batch", type=int, default=20, help="keys per read or write call")
    p.add_argument("--write-share", type=float, default=0.3, help="share of the calls that are writes")
    p.add_argument("--before", type=float, default=15.0, help="seconds of load before the kill")
    p.add_argument("--down", type=float, default=15.0, help="seconds the node stays down")
    p.add_argument("--after", type=float, default=20.0, help="seconds of load once the node answers again")
    p.add_argument("--node", type=int, default=2, choices=(1, 2, 3), help="the node killed")
    p.add_argument("--consistency", default="QUORUM", help="the store's read and write consistency")
    p.add_argument("--request-timeout", type=float, default=5.0, help="the store's request_timeout, seconds")
    p.add_argument("--speculative-delay", type=float, default=0.0, help="the store's speculative_delay")
    p.add_argument("--retries", type=int, default=2, help="the store's retries (0: see what they buy)")
    p.add_argument(
        "--check-returned-node",
        action="store_true",
        help="at the end, wait for the hints to reach the returned node, stop the other two and read "
        "every key from it alone (then start them again)",
    )
    p.add_argument("--smoke", action="store_true", help="a short run (tests/store/test_cassandra_cluster.py)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _registry(directory: Path, keyspace: str, args: argparse.Namespace) -> str:
    from online_feature_store.registry.spec import reconcile
    from online_feature_store.registry.sqlite import SqliteRegistry
    from online_feature_store.registry.yaml_io import parse_spec

    settings = {
        "hosts": ",".join(HOSTS),
        "port": str(PORT),
        "keyspace": keyspace,
        "replication_factor": "3",
        "consistency": args.consistency,
        "request_timeout": str(args.request_timeout),
        "speculative_delay": str(args.speculative_delay),
        "retries": str(args.retries),
    }
    doc = {
        "stores": [{"id": "cass", "kind": "scylla", "settings": settings}],
        "entities": [
            {
                "label": "user",
                "keys": [{"label": "user_id", "column": "uid"}],
                "feature_groups": [
                    {
                        "label": "f",
                        "data_type": "fp32",
                        "store": "cass",
                        "features": [{"label": "version"}, {"label": "key"}],
                    }
                ],
            }
        ],
    }
    registry = SqliteRegistry(directory / "registry.db")
    registry.apply(lambda state: reconcile(state, parse_spec(doc, env={})))
    registry.close()
    return f"sqlite:///{directory / 'registry.db'}"


def _service(*args: str) -> str:
    done = subprocess.run([str(SERVICE), *args], capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cassandra-cluster {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def _node_session(host: str) -> Any:
    """A ``cassandra-driver`` session talking to ``host`` only (to read that node's own views)."""
    from cassandra.cluster import (  # type: ignore[import-untyped]
        EXEC_PROFILE_DEFAULT,
        Cluster,
        ExecutionProfile,
    )
    from cassandra.policies import WhiteListRoundRobinPolicy  # type: ignore[import-untyped]

    only = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=10)
    cluster = Cluster(
        [host],
        port=PORT,
        execution_profiles={EXEC_PROFILE_DEFAULT: only},
        protocol_version=4,
        connect_timeout=5,
        control_connection_timeout=5,
    )
    return cluster, cluster.connect()


def our_requests(host: str) -> int | None:
    """Requests the node at ``host`` counts from our store's driver (its connections now), None when
    the node does not answer."""
    try:
        cluster, session = _node_session(host)
    except Exception:  # a node that is down or starting: no answer
        return None
    try:
        rows = session.execute("SELECT driver_name, request_count FROM system_views.clients", timeout=5)
        return int(sum(r.request_count or 0 for r in rows if r.driver_name == OUR_DRIVER))
    except Exception:
        return None
    finally:
        cluster.shutdown()


def _rows(session: Any, keyspace: str, consistency: Any) -> dict[str, bytes | None]:
    """Every row of the run's table: key value -> its FG cell, read at ``consistency``."""
    from cassandra.query import SimpleStatement  # type: ignore[import-untyped]

    names = session.execute(
        "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s AND table_name = 'user'",
        (keyspace,),
    )
    (fg,) = [r.column_name for r in names if r.column_name.startswith("fg_")]
    query = SimpleStatement(f'SELECT uid, {fg} FROM {keyspace}."user"', consistency_level=consistency)
    return {r[0]: r[1] for r in session.execute(query, timeout=60)}


def check_returned_node(keyspace: str, node: int, timeout: float = 120.0) -> dict[str, Any]:
    """Waits until no node holds hints for ``node``, then stops the other two nodes and reads every row from
    ``node`` alone; starts them again. Returns the rows it lacks or holds older than a QUORUM read did."""
    from cassandra import ConsistencyLevel  # type: ignore[import-untyped]

    host = HOSTS[node - 1]
    others = [m for m in (1, 2, 3) if m != node]
    cluster, session = _node_session(HOSTS[others[0] - 1])
    try:
        quorum = _rows(session, keyspace, ConsistencyLevel.QUORUM)
    finally:
        cluster.shutdown()
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        pending = 0
        for m in others:
            cluster, session = _node_session(HOSTS[m - 1])
            try:
                pending += sum(
                    r.files or 0
                    for r in session.execute("SELECT address, files FROM system_views.pending_hints")
                    if str(r.address) == host
                )
            finally:
                cluster.shutdown()
        if pending == 0:
            break
        time.sleep(1.0)
    hints_s = time.monotonic() - t0
    for m in others:
        _service("stop-node", str(m))
    try:
        cluster, session = _node_session(host)
        try:
            alone = _rows(session, keyspace, ConsistencyLevel.ONE)
        finally:
            cluster.shutdown()
    finally:
        for m in others:
            _service("start-node", str(m))
    differ = sum(1 for k, v in quorum.items() if alone.get(k) != v)
    return {
        "rows": len(quorum),
        "missing_or_older_on_returned_node": differ,
        "hints_delivered_after_s": round(hints_s, 1),
    }


def _drop(keyspace: str) -> None:
    try:
        cluster, session = _node_session(HOSTS[0])
    except Exception:  # cleanup only
        return
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=30)
    except Exception:
        pass
    finally:
        cluster.shutdown()


class Load:
    """The threads' calls, their outcome and what each key was last acknowledged with."""

    def __init__(self, fs: Any, keys: int, args: argparse.Namespace) -> None:
        self.fs = fs
        self.n = keys
        self.args = args
        self.acked = np.ones(keys, dtype=np.int64)  # version 1 written before the load starts
        self.unsure: set[int] = set()  # keys whose last write failed: it may or may not have landed
        self.calls: list[tuple[float, float, str, bool]] = []  # (start, seconds, kind, ok)
        self.errors: list[str] = []
        self.stale = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def write(self, keys: list[int], version: int) -> None:
        values = np.empty((len(keys), 2), dtype=np.float32)
        values[:, 0] = version
        values[:, 1] = keys
        self.fs.persist("user", "f", [f"u{k}" for k in keys], values)

    def run(self, thread: int) -> None:
        rng = random.Random(thread)
        mine = list(range(thread, self.n, self.args.threads))
        version = 1
        while not self.stop.is_set():
            t0 = time.monotonic()
            if rng.random() < self.args.write_share:
                keys = rng.sample(mine, min(self.args.batch, len(mine)))
                version += 1
                try:
                    self.write(keys, version)
                    self.acked[keys] = version
                    self.unsure.difference_update(keys)
                    ok = True
                except Exception as e:  # every failure is counted and reported
                    self.unsure.update(keys)
                    ok = False
                    self._error(e)
                self._record(t0, "write", ok)
            else:
                keys = rng.sample(range(self.n), self.args.batch)
                floor = self.acked[keys].copy()
                try:
                    got = self.fs.retrieve("user", [f"u{k}" for k in keys], {"f": ["version", "key"]})
                    ok = True
                except Exception as e:
                    ok = False
                    self._error(e)
                self._record(t0, "read", ok)
                if ok:
                    values = got.values["f"]
                    bad = (got.status["f"] != 0) | (values[:, 0] < floor) | (values[:, 1] != keys)
                    if bad.any():
                        with self._lock:
                            self.stale += int(bad.sum())

    def _record(self, t0: float, kind: str, ok: bool) -> None:
        with self._lock:
            self.calls.append((t0, time.monotonic() - t0, kind, ok))

    def _error(self, e: Exception) -> None:
        with self._lock:
            if len(self.errors) < 20:
                self.errors.append(f"{type(e).__name__}: {e}"[:400])


def _phase(calls: list[tuple[float, float, str, bool]], start: float, end: float) -> dict[str, Any]:
    inside = [c for c in calls if start <= c[0] < end]
    span = max(end - start, 1e-9)
    out: dict[str, Any] = {
        "seconds": round(span, 1),
        "calls_per_s": round(len(inside) / span, 1),
        "failed": sum(1 for c in inside if not c[3]),
    }
    for kind in ("read", "write"):
        ms = np.array([c[1] * 1000 for c in inside if c[2] == kind])
        out[kind] = {
            "calls": int(ms.size),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if ms.size else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if ms.size else None,
            "max_ms": round(float(ms.max()), 1) if ms.size else None,
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from online_feature_store.feature_store import FeatureStore

    if args.smoke:
        args.keys, args.before, args.down, args.after = min(args.keys, 400), 4.0, 4.0, 6.0
    work = Path(tempfile.mkdtemp(prefix="ofs-cassandra-cluster-"))
    keyspace = f"ofs_cluster_{uuid.uuid4().hex[:10]}"
    registry = _registry(work, keyspace, args)
    node_host = HOSTS[args.node - 1]
    marks: dict[str, float] = {}
    killed = False
    out: dict[str, Any] = {}
    fs = FeatureStore(registry, data_directory=work, cache_bytes=0, invalidation=False)
    try:
        load = Load(fs, args.keys, args)
        for start in range(0, args.keys, 500):  # version 1 of every key, before the clock starts
            load.write(list(range(start, min(start + 500, args.keys))), 1)
        threads = [threading.Thread(target=load.run, args=(t,), daemon=True) for t in range(args.threads)]
        marks["start"] = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(args.before)
        marks["kill"] = time.monotonic()  # calls in flight at the kill count as "during"
        _service("kill-node", str(args.node))
        killed = True
        time.sleep(args.down)
        marks["restart"] = time.monotonic()
        _service("start-node", str(args.node))  # returns once the node answers CQL
        killed = False
        marks["back"] = time.monotonic()
        # the returned node gets our requests again, without a restart of the store
        first = our_requests(node_host)
        rejoined = None
        deadline = marks["back"] + max(args.after, 30.0)
        while time.monotonic() < deadline:
            now = our_requests(node_host)
            if now is not None and first is not None and now > first + 10:
                rejoined = time.monotonic()
                break
            if first is None:
                first = now
            time.sleep(0.5)
        rest = marks["back"] + args.after - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        load.stop.set()
        for t in threads:
            t.join(timeout=60)
        marks["end"] = time.monotonic()
        per_node = {h: our_requests(h) for h in HOSTS}
        # every key holds its newest acknowledged version (a key whose last write failed: that or newer)
        got = fs.retrieve("user", [f"u{k}" for k in range(args.keys)], {"f": ["version", "key"]})
        stored = got.values["f"][:, 0].astype(np.int64)
        found = got.status["f"] == 0
        sure = np.array([k not in load.unsure for k in range(args.keys)])
        lost = ~found | (sure & (stored != load.acked)) | (~sure & (stored < load.acked))
        calls = load.calls
        returned = check_returned_node(keyspace, args.node) if args.check_returned_node else None
        out = {
            "keys": args.keys,
            "threads": args.threads,
            "batch": args.batch,
            "write_share": args.write_share,
            "consistency": args.consistency,
            "request_timeout_s": args.request_timeout,
            "speculative_delay_s": args.speculative_delay,
            "retries": args.retries,
            "killed_node": args.node,
            "calls": len(calls),
            "failed_calls": sum(1 for c in calls if not c[3]),
            "failed_reads": sum(1 for c in calls if not c[3] and c[2] == "read"),
            "failed_writes": sum(1 for c in calls if not c[3] and c[2] == "write"),
            "acknowledged_writes": sum(1 for c in calls if c[3] and c[2] == "write"),
            "stale_reads": load.stale,
            "lost_writes": int(lost.sum()),
            "unsure_keys": len(load.unsure),
            "before": _phase(calls, marks["start"], marks["kill"]),
            "during": _phase(calls, marks["kill"], marks["back"]),
            "down": _phase(calls, marks["kill"], marks["restart"]),
            "restarting": _phase(calls, marks["restart"], marks["back"]),
            "after": _phase(calls, marks["back"], marks["end"]),
            "down_s": round(marks["restart"] - marks["kill"], 1),
            "restart_to_cql_s": round(marks["back"] - marks["restart"], 1),
            "rejoined_after_s": round(rejoined - marks["back"], 1) if rejoined else None,
            "our_requests_per_node": per_node,
            "returned_node": returned,
            "errors": load.errors,
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    finally:
        fs.close()
        if killed:
            _service("start-node", str(args.node))  # never leave the cluster a node short
        _drop(keyspace)
    out["work"] = str(work)
    return out


def main() -> None:
    args = parser().parse_args()
    out = run(args)
    if args.json:
        print(json.dumps(out))
        return
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
