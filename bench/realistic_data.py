"""The data of the realistic benchmark (bench/realistic_bench.py): one entity of 10 FGs x 64 fp32 per
store kind, loaded once and kept for later runs.

A dataset is (store kind, entities, FGs, data key). The data key defaults to the system under test's
version and git commit, so another checkout loads its own copy (``--data-key`` shares one on purpose; it is
checked against the target either way). Its registry (SQLite, ``registry.db``) and, for the SQLite store,
the store itself live in ``<work>/<kind>-<entities>x<fgs>-<data key>/``, which the worker processes and
``ofs serve`` use as their data directory. Redis data is in DB 12 of the standalone Redis, Redis Cluster
data in the cluster, Cassandra data in keyspace ``ofs_realbench``; the entity label
``realbench_<hash of the data key>`` keeps each dataset apart from everyone else's keys.

Each store kind holds at most one dataset at a time: loading a new one first deletes every earlier
``realbench_*`` dataset of that kind (Redis keeps everything in memory: a million entities of 10 FGs are
about 3 GB). A lock per kind in the work directory (shared while a run uses the data, exclusive while it
is loaded or deleted) keeps concurrent runs from deleting data under each other.

Loading goes through the fastest path the target has: ``ofs push`` of Parquet files (generated once per
size, kept in the work directory), else ``FeatureStore.persist`` in chunks. A load ends, and every reuse
starts, with a check that the first, the last and 200 random entities read back exactly
(``realistic_worker.py verify``); a dataset that fails it is loaded again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import abuse_bench as ab  # noqa: E402  (bench/ is a directory of scripts, not a package)
import realistic_keys as rk  # noqa: E402

STORE_KINDS = ("sqlite", "redis", "redis_cluster", "cassandra")
N_FGS = 10
REDIS = ("127.0.0.1", 16379)
REDIS_DB = 12
"""Redis DB of this bench's data (grpc_bench uses 13, the Feast peer 14, the tests 0)."""
CLUSTER = [("127.0.0.1", 17001), ("127.0.0.1", 17002), ("127.0.0.1", 17003)]
CASSANDRA = ("127.0.0.1", 19042)
KEYSPACE = "ofs_realbench"
LABEL_PREFIX = "realbench_"
PARQUET_ROWS = 50_000
"""Rows per Parquet file (one part per file; ``ofs push`` reads a directory)."""
WORKER = BENCH / "realistic_worker.py"
Log = Callable[[str], None]


def default_work() -> Path:
    return Path.home() / ".cache" / "online-feature-store" / "realistic-bench"


# -- the store kinds -------------------------------------------------------------------------------


def store_decl(kind: str) -> dict[str, Any]:
    """The registry's store entry of ``kind`` (settings as strings, as the registry keeps them)."""
    if kind == "sqlite":
        return {"id": "main", "kind": "sqlite", "settings": {"path": "bench.db"}}
    if kind == "redis":
        url = f"redis://{REDIS[0]}:{REDIS[1]}/{REDIS_DB}"
        return {"id": "main", "kind": "redis", "settings": {"url": url}}
    if kind == "redis_cluster":
        nodes = ",".join(f"{h}:{p}" for h, p in CLUSTER)
        return {"id": "main", "kind": "redis", "settings": {"cluster_nodes": nodes}}
    if kind == "cassandra":
        settings = {"hosts": CASSANDRA[0], "port": str(CASSANDRA[1]), "keyspace": KEYSPACE}
        return {"id": "main", "kind": "scylla", "settings": settings}
    raise ValueError(f"store kind {kind!r}: one of {', '.join(STORE_KINDS)}")


def endpoints(kind: str) -> list[tuple[str, int]]:
    """The service addresses a store kind needs (none for SQLite)."""
    return {"sqlite": [], "redis": [REDIS], "redis_cluster": CLUSTER, "cassandra": [CASSANDRA]}[kind]


def registry_doc(kind: str, label: str, n_fgs: int) -> dict[str, Any]:
    """One store and one entity of ``n_fgs`` FGs of 64 fp32, every FG allowed in the in-process cache
    (its size is the process's ``cache_bytes``; 0 turns the tier off)."""
    features = [{"label": f"f{j}"} for j in range(rk.N_FEATURES)]
    return {
        "stores": [store_decl(kind)],
        "entities": [
            {
                "label": label,
                "keys": [{"label": "user_id", "column": "user_id"}],
                "cache": {"in_process": {"enabled": True, "ttl_seconds": 86400, "jitter_percent": 0}},
                "feature_groups": [
                    {
                        "label": f"fg{g}",
                        "data_type": "fp32",
                        "store": "main",
                        "in_process_cache": True,
                        "features": features,
                    }
                    for g in range(n_fgs)
                ],
            }
        ],
    }


def listening_pids(ports: list[int]) -> list[int]:
    """The processes listening on these TCP ports of this host (Linux ``/proc``; ours only)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) in ports:  # 0A: LISTEN
                    inodes.add(f[9])
    pids: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                link = str(fd.readlink()) if fd.is_symlink() else ""
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.append(int(proc.name))
                    break
    return sorted(set(pids))


def service_pids(kind: str) -> dict[str, int]:
    """The store's own processes, whose CPU the results show beside the server's."""
    ports = [p for _, p in endpoints(kind)]
    return {f"{kind}:{pid}": pid for pid in listening_pids(ports)} if ports else {}


# -- the target's identity -------------------------------------------------------------------------


def target_identity(target: ab.Target, work: Path) -> tuple[str, str]:
    """(version, git commit or "") of the target's ``online_feature_store``."""
    code = "import online_feature_store as o, pathlib; print(o.__version__, pathlib.Path(o.__file__).parent)"
    out = subprocess.run(
        [str(target.python), "-c", code], cwd=work, env=target.env(), capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"{target.python} cannot import online_feature_store: {out.stderr[-500:]}")
    version, package = out.stdout.split()
    rev = subprocess.run(
        ["git", "-C", str(Path(package).parent), "rev-parse", "--short=10", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return version, rev


def default_data_key(target: ab.Target, work: Path) -> str:
    version, rev = target_identity(target, work)
    return f"{version}-{rev}" if rev else version


# -- datasets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    kind: str
    entities: int
    fgs: int
    data_key: str
    work: Path

    @property
    def label(self) -> str:
        digest = hashlib.sha1(f"{self.data_key}/{self.entities}/{self.fgs}".encode()).hexdigest()[:10]
        return LABEL_PREFIX + digest

    @property
    def data_dir(self) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", self.data_key)
        return self.work / f"{self.kind}-{self.entities}x{self.fgs}-{slug}"

    @property
    def manifest(self) -> Path:
        return self.data_dir / "manifest.json"


@dataclass
class Loaded:
    """What the results say about a dataset: how and how fast it was loaded."""

    kind: str
    entities: int
    fgs: int
    label: str
    data_key: str
    method: str
    seconds: float
    rows_per_s: float
    loaded_at: str
    target: str
    reused: bool = False


def worker(target: ab.Target, command: str, params: dict[str, Any], cwd: Path, timeout: float = 7200) -> Any:
    """Runs ``realistic_worker.py command`` in the target's interpreter; its JSON answer."""
    out = subprocess.run(
        [str(target.python), str(WORKER), command, json.dumps(params)],
        cwd=cwd,
        env=target.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"worker {command} failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(lines[-1])


def write_parquet(work: Path, n: int, n_fgs: int, log: Log) -> Path:
    """The Parquet files of ``n`` entities x ``n_fgs`` FGs (``user_id``, ``fg<g>.f<j>``), made once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = work / f"parquet-{n}x{n_fgs}"
    done = work / f"parquet-{n}x{n_fgs}.complete"  # beside it: ofs push reads every file inside
    if done.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log(f"writing {n:,} rows x {n_fgs * rk.N_FEATURES} fp32 as Parquet in {out}")
    names = [f"fg{g}.f{j}" for g in range(n_fgs) for j in range(rk.N_FEATURES)]
    for part, start in enumerate(range(0, n, PARQUET_ROWS)):
        ids = np.arange(start, min(start + PARQUET_ROWS, n), dtype=np.int64)
        vals = rk.values(ids, n_fgs)
        columns = [pa.array([rk.key(int(i)) for i in ids])]
        columns += [pa.array(vals[:, c]) for c in range(vals.shape[1])]
        table = pa.Table.from_arrays(columns, names=["user_id", *names])
        pq.write_table(table, out / f"part-{part:05d}.parquet", compression="none")
    done.write_text(str(n))
    return out


def drop(kind: str, work: Path, log: Log) -> None:
    """Deletes every dataset of this bench in ``kind`` (data and data directories)."""
    for old in work.glob(f"{kind}-*"):
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    pattern = f"*{LABEL_PREFIX}*"
    if kind == "redis":
        import redis

        client = redis.Redis(REDIS[0], REDIS[1], db=REDIS_DB)
        try:
            deleted = _unlink_all(client, client.scan_iter(match=pattern, count=5000))
        finally:
            client.close()
        log(f"redis: deleted {deleted:,} keys of earlier datasets")
    elif kind == "redis_cluster":
        from redis.cluster import ClusterNode, RedisCluster

        cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in CLUSTER])
        try:
            deleted = 0
            for node in cluster.get_primaries():
                client = cluster.get_redis_connection(node)
                deleted += _unlink_all(client, client.scan_iter(match=pattern, count=5000))
        finally:
            cluster.close()
        log(f"redis_cluster: deleted {deleted:,} keys of earlier datasets")
    elif kind == "cassandra":
        from cassandra.cluster import Cluster

        cluster = Cluster([CASSANDRA[0]], port=CASSANDRA[1])
        try:
            session = cluster.connect()
            ks = cluster.metadata.keyspaces.get(KEYSPACE)
            for table in list(ks.tables) if ks else []:
                if table.startswith(LABEL_PREFIX):
                    session.execute(f'DROP TABLE {KEYSPACE}."{table}"', timeout=120)
                    log(f"cassandra: dropped {KEYSPACE}.{table}")
        finally:
            cluster.shutdown()


def _unlink_all(client: Any, names: Iterator[bytes]) -> int:
    """UNLINKs ``names`` (one node's keys) in batches; how many."""
    deleted, batch = 0, []
    for name in names:
        batch.append(name)
        if len(batch) == 1000:
            deleted += _unlink_batch(client, batch)
            batch = []
    return deleted + (_unlink_batch(client, batch) if batch else 0)


def _unlink_batch(client: Any, batch: list[bytes]) -> int:
    pipe = client.pipeline(transaction=False)
    for name in batch:  # one command per key: cluster slots may differ
        pipe.unlink(name)
    return sum(int(x) for x in pipe.execute())


def _check_services(kind: str) -> None:
    for host, port in endpoints(kind):
        try:
            with socket.create_connection((host, port), timeout=2):
                pass
        except OSError:
            raise SystemExit(
                f"{kind}: nothing listens on {host}:{port}; start it with scripts/services "
                "(docs/developing.md) or leave the store out (--stores)"
            ) from None


def _verify(target: ab.Target, ds: Dataset) -> dict[str, Any]:
    params = {"data_dir": str(ds.data_dir), "entity": ds.label, "entities": ds.entities, "fgs": ds.fgs}
    result: dict[str, Any] = worker(target, "verify", params, ds.data_dir, timeout=600)
    return result


def _load(target: ab.Target, ds: Dataset, log: Log) -> Loaded:
    drop(ds.kind, ds.work, log)
    ds.data_dir.mkdir(parents=True)
    refused = ab._apply(target, ds.data_dir, registry_doc(ds.kind, ds.label, ds.fgs), "registry", "")
    if refused is not None:
        raise RuntimeError(f"ofs registry apply refused the bench registry: {refused}")
    if target.has("push"):
        parquet = write_parquet(ds.work, ds.entities, ds.fgs, log)
        method = "`ofs push` (Parquet)"
        log(f"{ds.kind}: loading {ds.entities:,} entities x {ds.fgs} FGs with ofs push")
        args = ["push", "--data-dir", str(ds.data_dir), "-e", ds.label, "--format", "parquet"]
        args += [x for g in range(ds.fgs) for x in ("-g", f"fg{g}")]
        args += ["--no-progress", "--restart", "--checkpoint", str(ds.data_dir / "push.json"), str(parquet)]
        began = time.perf_counter()
        out = target.run(args, ds.data_dir, timeout=7200)
        seconds = time.perf_counter() - began
        ab._check(out, "ofs push")
    else:
        method = "`FeatureStore.persist` (chunks of 5,000 keys, FG by FG)"
        log(f"{ds.kind}: loading {ds.entities:,} entities x {ds.fgs} FGs with FeatureStore.persist")
        params = {"data_dir": str(ds.data_dir), "entity": ds.label, "entities": ds.entities, "fgs": ds.fgs}
        began = time.perf_counter()
        worker(target, "load", params, ds.data_dir)
        seconds = time.perf_counter() - began
    check = _verify(target, ds)
    if not check["ok"]:
        raise RuntimeError(f"{ds.kind}: the data just loaded does not read back: {check['why']}")
    loaded = Loaded(
        ds.kind,
        ds.entities,
        ds.fgs,
        ds.label,
        ds.data_key,
        method,
        seconds,
        ds.entities / seconds,
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        target.describe(),
    )
    ds.manifest.write_text(json.dumps(asdict(loaded), indent=1))
    log(f"{ds.kind}: loaded in {seconds:,.0f} s ({loaded.rows_per_s:,.0f} entities/s)")
    return loaded


@contextlib.contextmanager
def datasets(
    target: ab.Target, wanted: list[Dataset], *, reload: bool, log: Log
) -> Iterator[dict[str, Loaded]]:
    """The ``wanted`` datasets, loaded (or found and checked), each kind locked shared while in use."""
    locks: list[IO[str]] = []
    loaded: dict[str, Loaded] = {}
    try:
        for ds in wanted:
            _check_services(ds.kind)
            ds.work.mkdir(parents=True, exist_ok=True)
            lock = open(ds.work / f"{ds.kind}.lock", "w")  # noqa: SIM115 (held until the run ends)
            locks.append(lock)
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = None
            if ds.manifest.exists() and not reload:
                check = _verify(target, ds)
                if check["ok"]:
                    found = Loaded(**{**json.loads(ds.manifest.read_text()), "reused": True})
                    log(f"{ds.kind}: reusing {ds.data_dir.name} ({check['why']})")
                else:
                    log(f"{ds.kind}: {ds.data_dir.name} fails its check ({check['why']}): loading again")
            loaded[ds.kind] = found or _load(target, ds, log)
            fcntl.flock(lock, fcntl.LOCK_SH)
        yield loaded
    finally:
        for lock in locks:
            lock.close()
