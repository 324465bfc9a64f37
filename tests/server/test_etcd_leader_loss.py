"""etcd leader loss while registry changes are applied and servers serve (issue #21).

Two real ``ofs serve`` replicas on the 3-member etcd cluster (scripts/services/etcd-cluster, a prefix of
this test's own) serve retrieves under load from a few threads through one ``Client``, while a writer
applies a run of registry changes back to back; the etcd leader is SIGKILLed in the middle of it. Every
retrieve succeeds; every change lands exactly once (the registry's apply counter moves by one per apply,
no apply is lost or doubled by the client's retry of a commit whose answer died with the leader); both
replicas end up serving the last revision. tests/registry/test_cluster.py covers the registry watcher
alone through the same kill.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from online_feature_store import Client
from online_feature_store.registry import EtcdRegistry
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.yaml_io import parse_spec
from tests._bench import load_script
from tests._services import require_service

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = [("127.0.0.1", 22379), ("127.0.0.1", 22389), ("127.0.0.1", 22399)]
ENDPOINTS = [f"{h}:{p}" for h, p in CLUSTER]
AFTER = 3
"""Registry changes the writer completes after the kill (and the new leader's election) before it stops."""


def _bench() -> ModuleType:
    """bench/replica_bench.py: the replica harness (real ``ofs serve`` processes) and the checked load."""
    return load_script("bench/replica_bench.py")


def cluster(*args: str) -> str:
    script = ROOT / "scripts" / "services" / "etcd-cluster"
    result = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"etcd-cluster {args}: {result.stdout}{result.stderr}"
    return result.stdout


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def counter(registry: EtcdRegistry) -> int:
    """The registry's apply counter: one more per apply that changed something."""
    value, _meta = registry._client.get(registry.prefix + "revision")
    return int(value.decode())


def test_leader_loss_during_applies_under_load(tmp_path: Path) -> None:
    require_service("etcd-cluster", CLUSTER, "scripts/services/etcd-cluster start")
    bench = _bench()
    prefix = f"/ofs-test/{uuid.uuid4().hex}/"
    url = f"etcd://{','.join(ENDPOINTS)}{prefix}"
    writer = EtcdRegistry(ENDPOINTS, prefix=prefix, timeout=2.0)
    killed: str | None = None
    try:
        with bench.replicas(2, tmp_path, registry=url) as reps:
            start = counter(writer)
            with Client([r.address for r in reps], keys_schemas={"user": ["user_id"]}) as client:
                bench.fill(client, 200)
                load = bench.Load(client, 200, 10)
                revisions: list[int] = []
                errors: list[BaseException] = []
                stop_applying = threading.Event()

                def apply_all() -> None:
                    """Changes back to back (ttl 1001, 1002, …) until told to stop: the leader dies with
                    one of them in flight."""
                    try:
                        while not stop_applying.is_set():
                            doc: dict[str, Any] = yaml.safe_load(yaml.safe_dump(bench.DOC))
                            doc["entities"][0]["feature_groups"][0]["ttl_seconds"] = 1001 + len(revisions)
                            spec = parse_spec(doc, env={})
                            revisions.append(writer.apply(lambda s, spec=spec: reconcile(s, spec)))
                    except BaseException as exc:
                        errors.append(exc)

                threads = [threading.Thread(target=load.run, args=(seed,)) for seed in range(3)]
                applier = threading.Thread(target=apply_all)
                for t in [*threads, applier]:
                    t.start()
                try:
                    wait_until(lambda: load.done() >= 100 and len(revisions) >= 2, "load and 2 applies")
                    out = cluster("kill-leader")  # returns once a new leader is elected
                    killed = re.search(r"killed leader member (\d)", out).group(1)  # type: ignore[union-attr]
                    after_kill = len(revisions) + AFTER
                    wait_until(lambda: len(revisions) >= after_kill or bool(errors), "applies after the kill")
                    stop_applying.set()
                    applier.join()
                    at_end = load.done() + 200
                    wait_until(lambda: load.done() >= at_end, "200 more retrieves after the applies")
                finally:
                    stop_applying.set()
                    load.stop.set()
                    for t in [*threads, applier]:
                        t.join()
            assert not errors, errors
            failed = [c.error for c in load.calls if c.error is not None]
            assert failed == [], failed[:5]
            # Each change landed exactly once, in order: one counter step and one revision per apply.
            assert revisions == sorted(set(revisions))
            assert counter(writer) == start + len(revisions)
            assert writer.load().feature_group("user", "activity").ttl_seconds == 1000 + len(revisions)
            # Both replicas follow the registry to its last revision, through the leader change.
            for r in reps:
                wait_until(
                    lambda r=r: r.revision() == revisions[-1], f"{r.address} to serve the last revision"
                )
    finally:
        if killed is not None:
            cluster("start-member", killed)
        writer._client.delete_prefix(prefix)
        writer.close()
