"""Many servers (issue #21): retrieves under load over several ``ofs serve`` replicas, one SIGKILLed mid-run.

Starts ``--replicas`` real ``ofs serve`` processes on one data directory (one SQLite registry and store),
writes ``--entities`` keys, then ``--threads`` threads share one ``Client`` given every address (gRPC
round-robin; a retrieve that fails with ``UNAVAILABLE`` is retried on another replica within its deadline)
and retrieve ``--keys`` random keys per call, checking every value. After ``--before`` calls the first
replica is killed (SIGKILL, its whole process group); the run ends ``--after`` calls later. Printed: failed
calls, latency percentiles of the calls before the kill, in flight at it or started in the ``--window``
seconds after it ("during"), and after that window, and each replica's OK retrieves (its own Prometheus
counter) before and after the kill. ``--json`` prints one JSON object instead (tests/client/test_replicas.py
runs ``--smoke --json`` and asserts on it).

    python bench/replica_bench.py                 # bench/RESULTS.md, "Many servers (issue #21)"
    python bench/replica_bench.py --smoke --json  # a few hundred calls: the test's run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from online_feature_store import Client

FG, FEATURES = "activity", ["ctr", "clicks"]
DOC: dict[str, Any] = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
    "entities": [
        {
            "label": "user",
            "keys": [{"label": "user_id", "column": "uid"}],
            "feature_groups": [
                {
                    "label": FG,
                    "data_type": "fp32",
                    "store": "main",
                    "features": [{"label": f, "default": -1.0} for f in FEATURES],
                }
            ],
        }
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    address: str
    metrics_port: int
    log: Path

    def kill(self) -> None:
        """SIGKILL to the replica's process group (``ofs serve`` and any worker): no drain, no goodbye."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def _metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text: str = reply.read().decode()
            return text

    def served(self) -> float:
        """OK ``RetrieveFeatures`` calls this replica counted (``ofs_requests_total``)."""
        pattern = r"^ofs_requests_total\{([^}]*)\} (\S+)$"
        total = 0.0
        for labels, value in re.findall(pattern, self._metrics(), flags=re.M):
            if 'method="RetrieveFeatures"' in labels and 'code="OK"' in labels:
                total += float(value)
        return total

    def revision(self) -> int:
        """The registry revision this replica serves (``ofs_registry_revision``)."""
        found = re.search(r"^ofs_registry_revision (\S+)$", self._metrics(), flags=re.M)
        return int(float(found.group(1))) if found else -1


def _ofs(*args: str) -> list[str]:
    return [sys.executable, "-m", "online_feature_store.cli", *args]


def _wait_serving(replica: Replica, timeout: float = 90.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.proc.poll() is not None:
            raise RuntimeError(f"ofs serve at {replica.address} exited:\n{replica.log.read_text()}")
        with grpc.insecure_channel(replica.address) as ch, contextlib.suppress(grpc.RpcError):
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        time.sleep(0.1)
    raise RuntimeError(f"ofs serve at {replica.address} did not start:\n{replica.log.read_text()}")


@contextlib.contextmanager
def replicas(n: int, root: Path, registry: str | None = None) -> Iterator[list[Replica]]:
    """``n`` ``ofs serve`` processes on one data directory under ``root`` and one registry (``registry``,
    a URL; default: SQLite in the data directory) holding :data:`DOC`, each in its own session (so a kill
    reaches all of its processes and a failed run leaves none behind)."""
    data = root / "data"
    data.mkdir()
    spec = root / "features.yaml"
    spec.write_text(yaml.safe_dump(DOC))
    env = {**os.environ, "TMPDIR": str(root), "OFS_GRACE_SECONDS": "1"}
    registry = registry or f"sqlite:///{data / 'registry.db'}"
    subprocess.run(
        _ofs("registry", "apply", "-y", "-f", str(spec), "--registry", registry),
        check=True, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    started: list[Replica] = []
    try:
        for i in range(n):
            port, metrics_port = free_port(), free_port()
            log = root / f"serve-{i}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(
                    _ofs("serve", "--port", str(port), "--metrics-port", str(metrics_port),
                         "--data-dir", str(data), "--registry", registry),
                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            started.append(Replica(proc, f"127.0.0.1:{port}", metrics_port, log))
        for r in started:
            _wait_serving(r)
        yield started
    finally:
        for r in started:
            r.kill()


def fill(client: Client, entities: int) -> None:
    """Writes keys ``u0`` … with the values :class:`Load` checks: ``(i, i / 2)``."""
    ids = np.arange(entities)
    values = np.stack([ids, ids / 2], axis=1).astype(np.float32)
    client.persist("user", FG, [f"u{i}" for i in ids], values, features=FEATURES)


@dataclass
class Call:
    start: float
    end: float
    error: str | None


@dataclass
class Load:
    """Threads retrieving random keys through one client until stopped, every answer checked."""

    client: Client
    entities: int
    keys: int
    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self) -> int:
        with self._lock:
            return len(self.calls)

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            ids = [rng.randrange(self.entities) for _ in range(self.keys)]
            start = time.monotonic()
            error = None
            try:
                r = self.client.retrieve("user", [f"u{i}" for i in ids], {FG: FEATURES})
                want = np.array([[i, i / 2] for i in ids], dtype=np.float32)
                if not (r.status[FG] == 0).all() or not np.array_equal(r.values[FG], want):
                    error = "wrong values"
            except Exception as exc:  # every failure is a finding: counted and reported
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.calls.append(Call(start, time.monotonic(), error))


def _wait(cond: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def percentiles(calls: list[Call]) -> dict[str, float]:
    if not calls:
        return {"calls": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ms = np.array([(c.end - c.start) * 1000 for c in calls])
    return {
        "calls": len(calls),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="ofs-replicas-") as tmp,
        replicas(args.replicas, Path(tmp)) as reps,
    ):
        addresses = [r.address for r in reps]
        with Client(addresses, timeout=args.timeout, keys_schemas={"user": ["user_id"]}) as client:
            fill(client, args.entities)
            load = Load(client, args.entities, args.keys)
            threads = [threading.Thread(target=load.run, args=(s,)) for s in range(args.threads)]
            for t in threads:
                t.start()
            try:
                _wait(lambda: load.done() >= args.before, "the calls before the kill")
                served_before = [r.served() for r in reps]
                killed_at = time.monotonic()
                reps[0].kill()
                _wait(lambda: load.done() >= args.before + args.after, "the calls after the kill")
            finally:
                load.stop.set()
                for t in threads:
                    t.join()
            served_after = [r.served() for r in reps[1:]]
    calls = load.calls
    until = killed_at + args.window
    before = [c for c in calls if c.end < killed_at]
    during = [c for c in calls if c.end >= killed_at and c.start <= until]
    after = [c for c in calls if c.start > until]
    failed = [c.error for c in calls if c.error is not None]
    cut = [c for c in calls if c.start < killed_at < c.end]
    return {
        "replicas": args.replicas,
        "threads": args.threads,
        "keys_per_call": args.keys,
        "calls": len(calls),
        "failed": len(failed),
        "failures": failed[:10],
        "before": percentiles(before),
        "during": percentiles(during),
        "after": percentiles(after),
        "window_s": args.window,
        "in_flight_at_kill": percentiles(cut),
        "served_before": served_before,
        "served_after": [None, *served_after],
    }


def table(out: dict[str, Any]) -> str:
    lines = [
        f"{out['replicas']} replicas, {out['threads']} threads, {out['keys_per_call']} keys per call: "
        f"{out['calls']} calls, **{out['failed']} failed**",
        "",
        "| calls | n | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for phase, label in (
        ("before", "before the kill"),
        ("during", f"during (in flight at the kill or started in the {out['window_s']} s after)"),
        ("after", "after that window"),
        ("in_flight_at_kill", 'of "during", in flight at the kill (on any replica)'),
    ):
        p = out[phase]
        lines.append(f"| {label} | {p['calls']} | {p['p50_ms']} | {p['p99_ms']} | {p['max_ms']} |")
    lines += ["", "| replica | OK retrieves at the kill | at the end |", "|---|---:|---:|"]
    for i, (b, a) in enumerate(zip(out["served_before"], out["served_after"], strict=True)):
        lines.append(f"| {i} | {b:.0f} | {'killed' if a is None else f'{a:.0f}'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--keys", type=int, default=20, help="keys per retrieve")
    p.add_argument("--entities", type=int, default=2000)
    p.add_argument("--before", type=int, default=3000, help="calls before the kill")
    p.add_argument("--after", type=int, default=6000, help="calls after the kill")
    p.add_argument("--window", type=float, default=2.0, help="seconds after the kill counted as 'during'")
    p.add_argument("--timeout", type=float, default=5.0, help="each call's deadline (retries included)")
    p.add_argument(
        "--smoke", action="store_true", help="a short run: 3 threads, 300 + 600 calls, 0.5 s window"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    if args.smoke:
        args.threads, args.entities, args.before, args.after, args.window = 3, 200, 300, 600, 0.5
    if args.replicas < 2:
        p.error("--replicas must be at least 2: one is killed")
    out = run(args)
    print(json.dumps(out) if args.json else table(out))


if __name__ == "__main__":
    main()
