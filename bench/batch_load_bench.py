"""Batch loading benchmark: Parquet → readable rows/s into each sink, with the loader's CPU per row and
peak RSS, and the Spark job's rows/s in local mode.

    python bench/batch_load_bench.py                                  # 1M rows x 64 fp32, every sink
    python bench/batch_load_bench.py --rows 200000 --sinks embedded,grpc
    python bench/batch_load_bench.py --sinks embedded,spark --repeat 3 \
        --baseline-python /work/main/.venv/bin/python                 # before / after, same run

One Parquet file of ``--rows`` rows (a string key and ``--features`` random fp32 columns, row groups of
``--row-group`` rows, pyarrow's defaults: snappy, dictionary pages that fall back to plain) is loaded:

- ``embedded``: ``ofs push --data-dir`` into the SQLite store; readable when the command returns. Also
  run on a tenth of the rows, to compare peak RSS (it should not grow with the input).
- ``grpc``: ``ofs push --server`` to an ``ofs serve`` on the same data directory; readable on return.
- ``kafka``: ``ofs push --kafka`` to a 4-partition topic while one ``ofs consume`` stores it; readable
  when the last row is in the store (clock from the start of the push).
- ``spark``: ``spark-submit --master local[2]`` reads the file and writes it into the embedded store
  (4 partitions) by each of ``--spark-paths``: ``arrow`` (``push_dataframe``: ``mapInArrow``, Arrow
  batches) and ``rows`` (``foreachPartition(spark_partition_writer(...))``, ``Row`` objects); the
  rate is over the write, the JVM's start excluded.

``--baseline-python`` runs the embedded and Spark (``rows``) loads a second time with another
interpreter (another checkout's virtualenv: the "before" of a change), alternating with this one;
``--repeat`` runs each load that many times (fresh data directories) and reports every run and the
median. ``rows_per_cpu_s`` is rows per CPU-second of the loader process: what one core does, however
busy the machine.

Every run is a fresh process (its peak RSS is ``VmHWM``; the CPU is its user + system time); the
server and consumer report their own peak (``VmHWM``), the Spark job the sum over its process tree,
sampled. Each load ends with a check that the store holds ``--rows`` rows and that sampled keys read back
their exact values. Needs Java 17+ for ``spark``, the broker of ``scripts/services/kafka`` for ``kafka``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SINKS = ("embedded", "grpc", "kafka", "spark")
BOOTSTRAP = "127.0.0.1:19092"

_RUN = """\
import json, resource, sys, time
from online_feature_store.cli import main
started = time.perf_counter()
rc = main(sys.argv[1:])
wall = time.perf_counter() - started
u = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at its parent's peak (kept across exec)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"rc": rc, "wall": wall, "cpu": u.ru_utime + u.ru_stime, "rss_mb": int(hwm) / 1024}))
"""

_SPARK_JOB = """\
import functools, json, sys, time
from pyspark.sql import SparkSession
from online_feature_store.ingest import EmbeddedSink, spark_partition_writer

data_dir, source, partitions, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
spark = SparkSession.builder.appName("ofs-batch-bench").getOrCreate()
spark.sparkContext.setLogLevel("ERROR")
df = spark.read.parquet(source).repartition(partitions).cache()
df.count()  # read and shuffled before the clock starts: the rate is the writer's
sink = functools.partial(EmbeddedSink, data_dir)
registry = f"sqlite:///{data_dir}/registry.db"
started = time.perf_counter()
if path == "arrow":
    from online_feature_store.batch import push_dataframe
    push_dataframe(df, sink, "user", feature_groups=["emb"], registry=registry, arrow=True)
else:
    df.foreachPartition(spark_partition_writer(sink, "user", feature_groups=["emb"], registry=registry))
print("SPARK_RESULT " + json.dumps({"wall": time.perf_counter() - started}))
spark.stop()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_registry(data_dir: Path, features: int) -> None:
    from online_feature_store.registry.spec import reconcile
    from online_feature_store.registry.sqlite import SqliteRegistry
    from online_feature_store.registry.yaml_io import parse_spec

    data_dir.mkdir(parents=True)
    fg = {
        "label": "emb",
        "data_type": "fp32",
        "store": "main",
        "features": [{"label": f"f{j}", "default": 0.0} for j in range(features)],
    }
    doc = {
        "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
        "entities": [
            {"label": "user", "keys": [{"label": "user_id", "column": "uid"}], "feature_groups": [fg]}
        ],
    }
    registry = SqliteRegistry(data_dir / "registry.db")
    spec = parse_spec(doc, env={})
    registry.apply(lambda state: reconcile(state, spec))
    registry.close()


def _values(start: int, n: int, features: int) -> np.ndarray:
    """The fp32 values of rows ``start … start+n-1`` (a function of the row: the check recomputes them)."""
    rows = np.arange(start, start + n, dtype=np.uint64)[:, None]
    cols = np.arange(features, dtype=np.uint64)[None, :]
    mixed = (rows * np.uint64(2654435761) + cols * np.uint64(40503)) % np.uint64(1 << 20)
    return (mixed.astype(np.float32) / np.float32(1 << 20)).astype(np.float32)


def make_parquet(path: Path, rows: int, features: int, row_group: int) -> None:
    schema = pa.schema([("user_id", pa.string())] + [(f"f{j}", pa.float32()) for j in range(features)])
    with pq.ParquetWriter(path, schema) as w:
        for s in range(0, rows, row_group):
            n = min(row_group, rows - s)
            values = _values(s, n, features)
            cols = [pa.array([f"u{i}" for i in range(s, s + n)])] + [
                pa.array(values[:, j]) for j in range(features)
            ]
            w.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=row_group)


def stored_rows(data_dir: Path) -> int:
    path = data_dir / "store.db"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM blocks").fetchone()[0])
        except sqlite3.OperationalError:  # the table is not created yet
            return 0


def check(data_dir: Path, rows: int, features: int, samples: int = 2000) -> None:
    """Every row stored, and sampled keys read back exactly."""
    from online_feature_store.feature_store import FeatureStore

    count = stored_rows(data_dir)
    if count != rows:
        raise SystemExit(f"{data_dir}: {count} rows stored, expected {rows}")
    picked = np.random.default_rng(7).choice(rows, size=min(samples, rows), replace=False)
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        got = fs.retrieve("user", [f"u{i}" for i in picked], {"emb": [f"f{j}" for j in range(features)]})
    want = np.concatenate([_values(int(i), 1, features) for i in picked])
    if not np.array_equal(got.values["emb"], want):
        raise SystemExit(f"{data_dir}: values read back differ")


def _push(args: list[str], cwd: Path, python: str = sys.executable) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-c", _RUN, "push", *args, "--no-progress"],
        cwd=cwd, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"ofs push failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result["rc"] != 0:
        raise SystemExit(f"ofs push exited {result['rc']}:\n{done.stderr}")
    # ofs push's own line: "... in 4.6 s (217,391 rows/s)", the load without the process start
    said = [line for line in lines if line.startswith("pushed ")]
    result["load_rows_per_s"] = float(said[-1].rsplit("(", 1)[1].split()[0].replace(",", "")) if said else 0.0
    return result


def _peak_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _tree_rss_mb(root: int) -> tuple[float, float]:
    """Current RSS of ``root`` and every process under it, and of the Python ones among them (Spark's
    Python workers: what the writers use; the rest is the JVM)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    python: set[int] = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (d / "stat").read_text()
            name = stat.split("(", 1)[1].rsplit(")", 1)[0]
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d.name))
            rss[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[21]) * os.sysconf("SC_PAGE_SIZE")
            if name.startswith("python"):
                python.add(int(d.name))
    total, workers, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        if pid in python and pid != root:
            workers += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / (1 << 20), workers / (1 << 20)


@contextlib.contextmanager
def _process(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            time.sleep(0.5)  # listening; let it finish starting
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}:\n{log.read_text()}")


def run_embedded(
    work: Path, source: Path, rows: int, features: int, python: str = sys.executable
) -> dict[str, Any]:
    data = work / f"embedded-{uuid.uuid4().hex[:6]}"
    make_registry(data, features)
    load_before = os.getloadavg()[0]
    r = _push(["--data-dir", str(data), "-e", "user", "-g", "emb", str(source)], work, python)
    check(data, rows, features)
    shutil.rmtree(data)
    return {
        "rows_per_s": rows / r["wall"],
        "load_rows_per_s": r["load_rows_per_s"],
        "rows_per_cpu_s": rows / r["cpu"],
        "cpu_us_per_row": r["cpu"] / rows * 1e6,
        "loader_rss_mb": r["rss_mb"],
        "load_average": load_before,
    }


def run_grpc(work: Path, source: Path, rows: int, features: int) -> dict[str, Any]:
    data = work / "grpc"
    make_registry(data, features)
    port = _free_port()
    env = {**os.environ, "OFS_METRICS_PORT": str(_free_port())}
    argv = [
        sys.executable,
        "-m",
        "online_feature_store.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data),
    ]
    with _process(argv, work / "serve.log", env) as server:
        _wait_port(port, server, work / "serve.log")
        r = _push(
            [
                "--data-dir",
                str(data),
                "-e",
                "user",
                "-g",
                "emb",
                str(source),
                "--server",
                f"127.0.0.1:{port}",
            ],
            work,
        )
        server_peak = _peak_mb(server.pid)
    check(data, rows, features)
    return {
        "rows_per_s": rows / r["wall"],
        "load_rows_per_s": r["load_rows_per_s"],
        "cpu_us_per_row": r["cpu"] / rows * 1e6,
        "loader_rss_mb": r["rss_mb"],
        "server_rss_mb": server_peak,
    }


def run_kafka(work: Path, source: Path, rows: int, features: int) -> dict[str, Any]:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    data = work / "kafka"
    make_registry(data, features)
    topic = f"ofs-batch-bench-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(topic, 4, 1)])
    try:
        cfg = work / "consume.json"
        cfg.write_text(json.dumps({
            "bootstrap_servers": BOOTSTRAP, "topic": topic, "group_id": f"g-{topic}", "health_port": -1,
            "data_dir": str(data), "session_timeout_ms": 6000, "heartbeat_interval_ms": 500,
        }))  # fmt: skip
        argv = [sys.executable, "-m", "online_feature_store.cli", "consume", "--config", str(cfg)]
        with _process(argv, work / "consume.log") as consumer:
            time.sleep(8)  # joined the group before the clock starts
            started = time.perf_counter()
            registry = f"sqlite:///{data / 'registry.db'}"
            r = _push(["--registry", registry, "-e", "user", "-g", "emb", str(source),
                       "--kafka", BOOTSTRAP, "--topic", topic], work)  # fmt: skip
            while stored_rows(data) < rows:
                if consumer.poll() is not None:
                    raise SystemExit((work / "consume.log").read_text())
                time.sleep(0.05)
            readable = time.perf_counter() - started
            consumer_peak = _peak_mb(consumer.pid)
        check(data, rows, features)
    finally:
        with contextlib.suppress(Exception):
            admin.delete_topics([topic])
        admin.close()
    return {
        "rows_per_s": rows / readable,
        "push_rows_per_s": rows / r["wall"],
        "cpu_us_per_row": r["cpu"] / rows * 1e6,
        "loader_rss_mb": r["rss_mb"],
        "consumer_rss_mb": consumer_peak,
    }


def run_spark(
    work: Path,
    source: Path,
    rows: int,
    features: int,
    partitions: int,
    path: str = "arrow",
    python: str = sys.executable,
) -> dict[str, Any]:
    from pyspark.find_spark_home import _find_spark_home

    data = work / f"spark-{uuid.uuid4().hex[:6]}"
    make_registry(data, features)
    job = work / "spark_job.py"
    job.write_text(textwrap.dedent(_SPARK_JOB))
    home = _find_spark_home()
    env = {**os.environ, "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python,
           "SPARK_LOCAL_DIRS": str(work / "spark-local")}  # fmt: skip
    argv = [f"{home}/bin/spark-submit", "--master", "local[2]", "--driver-memory", "1g", "--conf",
            "spark.ui.enabled=false", str(job), str(data), str(source), str(partitions), path]  # fmt: skip
    load_before = os.getloadavg()[0]
    log = work / "spark.log"
    peak = workers_peak = 0.0
    with _process(argv, log, env) as proc:
        while proc.poll() is None:
            tree, workers = _tree_rss_mb(proc.pid)
            peak, workers_peak = max(peak, tree), max(workers_peak, workers)
            time.sleep(0.2)
    text = log.read_text()
    found = [line for line in text.splitlines() if line.startswith("SPARK_RESULT ")]
    if proc.returncode != 0 or not found:
        raise SystemExit(f"spark job failed:\n{text[-5000:]}")
    wall = json.loads(found[-1].split(" ", 1)[1])["wall"]
    check(data, rows, features)
    shutil.rmtree(data)
    return {
        "rows_per_s": rows / wall,
        "job_tree_rss_mb": peak,
        "python_workers_rss_mb": workers_peak,
        "load_average": load_before,
    }


def _runs(label: str, repeat: int, runs: dict[str, Any], one: Any) -> None:
    """``one()`` ``repeat`` times into ``runs[label]``: every run and the median of each number."""
    got = [one() for _ in range(repeat)]
    if repeat == 1:
        runs[label] = got[0]
        return
    median = {k: float(np.median([g[k] for g in got])) for k in got[0]}
    runs[label] = {"median": median, "runs": got}
    print(label, json.dumps(median), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--row-group", type=int, default=100_000)
    parser.add_argument("--sinks", default=",".join(SINKS), help=f"comma-separated, of {', '.join(SINKS)}")
    parser.add_argument("--spark-partitions", type=int, default=4)
    parser.add_argument("--spark-paths", default="arrow,rows", help="comma-separated, of arrow, rows")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each embedded and Spark load")
    parser.add_argument(
        "--baseline-python", help="also run the embedded and Spark (rows) loads with this interpreter"
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()
    sinks = [s for s in args.sinks.split(",") if s]
    unknown = set(sinks) - set(SINKS)
    if unknown:
        raise SystemExit(f"unknown sinks {sorted(unknown)}")
    paths = [p for p in args.spark_paths.split(",") if p]
    if set(paths) - {"arrow", "rows"}:
        raise SystemExit(f"unknown Spark paths {sorted(set(paths) - {'arrow', 'rows'})}")
    results: dict[str, Any] = {
        "rows": args.rows,
        "features": args.features,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_before": os.getloadavg()[0],
    }
    pythons = {"": sys.executable}
    if args.baseline_python:
        pythons["baseline_"] = args.baseline_python
    with tempfile.TemporaryDirectory(prefix="ofs-batch-bench-") as tmp:
        work = Path(tmp)
        source = work / "input.parquet"
        make_parquet(source, args.rows, args.features, args.row_group)
        results["parquet_mb"] = source.stat().st_size / (1 << 20)
        for sink in sinks:
            if sink == "embedded":
                for prefix, python in pythons.items():

                    def embedded(py: str = python) -> dict[str, Any]:
                        return run_embedded(work, source, args.rows, args.features, py)

                    _runs(f"{prefix}embedded", args.repeat, results, embedded)
                small_rows = max(args.rows // 10, 1)
                small = work / "small.parquet"
                make_parquet(small, small_rows, args.features, min(args.row_group, small_rows))
                results["embedded_tenth"] = run_embedded(work, small, small_rows, args.features)
            elif sink == "grpc":
                results["grpc"] = run_grpc(work, source, args.rows, args.features)
            elif sink == "kafka":
                results["kafka"] = run_kafka(work, source, args.rows, args.features)
            else:
                for prefix, python in pythons.items():
                    for path in paths:
                        if prefix and path == "arrow":
                            continue  # the baseline has the rows path only

                        def spark(py: str = python, p: str = path) -> dict[str, Any]:
                            return run_spark(
                                work, source, args.rows, args.features, args.spark_partitions, p, py
                            )

                        _runs(f"{prefix}spark_{path}", args.repeat, results, spark)
                if "arrow" in paths:  # the Python workers' memory against a tenth of the input
                    small_rows = max(args.rows // 10, 1)
                    small = work / "small.parquet"
                    make_parquet(small, small_rows, args.features, min(args.row_group, small_rows))
                    results["spark_arrow_tenth"] = run_spark(
                        work, small, small_rows, args.features, args.spark_partitions, "arrow"
                    )
            if not args.json:
                print(sink, json.dumps({k: v for k, v in results.items() if sink in k}), flush=True)
    results["load_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results))
    else:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
