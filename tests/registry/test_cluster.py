"""The etcd registry through a leader failure of a real 3-member cluster (scripts/services/etcd-cluster)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from online_feature_store.registry import EtcdRegistry, RegistryWatcher, reconcile

from .conftest import CLUSTER, require_service
from .helpers import base, fg, spec

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services" / "etcd-cluster"
ENDPOINTS = [f"{h}:{p}" for h, p in CLUSTER]


def cluster(*args: str) -> str:
    result = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"etcd-cluster {args}: {result.stdout}{result.stderr}"
    return result.stdout


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_registry_survives_leader_loss() -> None:
    require_service("etcd-cluster", CLUSTER, "scripts/services/etcd-cluster start")
    prefix = f"/ofs-test/{uuid.uuid4().hex}/"
    reader = EtcdRegistry(ENDPOINTS, prefix=prefix, timeout=2.0)
    killed: str | None = None
    stop = threading.Event()
    reads = [0]
    read_errors: list[BaseException] = []
    try:
        rev = reader.apply(lambda s: reconcile(s, spec()))
        watcher = RegistryWatcher(reader, poll_interval=0.5, max_backoff=1.0)

        def read() -> None:
            try:
                while not stop.is_set():
                    assert watcher.snapshot.entity("user").fg("activity") is not None
                    reads[0] += 1
                    time.sleep(0.001)
            except BaseException as exc:
                read_errors.append(exc)

        readers = [threading.Thread(target=read) for _ in range(2)]
        for t in readers:
            t.start()
        try:
            out = cluster("kill-leader")
            killed = re.search(r"killed leader member (\d)", out).group(1)  # type: ignore[union-attr]
            # the last good snapshot is still served
            assert watcher.revision == rev
            before = reads[0]
            time.sleep(0.2)
            assert reads[0] > before

            # an apply through the survivors (a fresh client, all endpoints: it fails over)
            writer = EtcdRegistry(ENDPOINTS, prefix=prefix, timeout=2.0)
            try:
                doc = base()
                fg(doc, "user", "activity")["ttl_seconds"] = 999
                new_rev = writer.apply(lambda s: reconcile(s, spec(doc)))
            finally:
                writer.close()
            assert new_rev > rev
            wait_until(lambda: watcher.revision == new_rev, 20, "the watcher to see the apply")
            assert watcher.snapshot.feature_group("user", "activity").ttl_seconds == 999

            cluster("start-member", killed)
            killed = None
            cluster("status")
            doc = base()
            fg(doc, "user", "activity")["ttl_seconds"] = 1234
            last = reader.apply(lambda s: reconcile(s, spec(doc)))
            wait_until(lambda: watcher.revision == last, 20, "the watcher after the member came back")
            wait_until(lambda: watcher.healthy, 20, "the watcher to be healthy")
        finally:
            stop.set()
            for t in readers:
                t.join()
            watcher.close()
        assert not read_errors
    finally:
        if killed is not None:
            cluster("start-member", killed)
        reader._client.delete_prefix(prefix)
        reader.close()
