"""Side-by-side benchmark (issue #8): Feast's SDK and feature server against our embedded library and our
gRPC server, same data, same Redis, same load generator (h2load), one run. Also runs the issue #5 gRPC
matrix (cache hit / miss over SQLite), a py-spy profile of our server at saturation, storage footprint
and ingestion. Run through ``bench/peers/run.sh`` (installs h2load, the Feast venv and py-spy first):

    bench/peers/run.sh                       # everything, writes both sections of bench/RESULTS.md
    python bench/peers/compare.py --quick        # shorter loads, no RESULTS.md (a trial run)
    python bench/peers/compare.py --no-feast     # ours only

Data: 1,000 entities (``u000000``...), feature groups ``fg0..fg19`` of 64 fp32 features each; requests of
1 / 100 / 500 keys x 1 / 3 FGs, and 10 keys x 1 -> 20 FGs for the FG sweep. Ours reads Redis DB 13, Feast
Redis DB 14 of the shared Redis on 127.0.0.1:16379 (ours under run-unique entity labels, Feast under a
run-unique project); both delete exactly the keys they wrote at the end.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import grpc_bench as gb

ROOT = gb.ROOT
FEAST_VENV = ROOT / "bench" / ".venv-feast"
FEAST_PY = FEAST_VENV / "bin" / "python"
FEAST_PEER = Path(__file__).resolve().parent / "feast_peer.py"
PROFILES = ROOT / "bench" / "profiles"
FEAST_REDIS_DB = 14
FOOTPRINT_TYPES = ("fp32", "fp16", "fp8e4m3")
FEAST_SATURATION = (16, 1)
"""HTTP/1.1 allows one request in flight per connection: 16 connections = our 8 x 2 streams."""


@dataclass
class Plan:
    """What one run covers (``--smoke`` shrinks it to seconds of work)."""

    entities: int = 1000
    fgs: int = 20
    """FGs (Feast: feature views) stored per entity."""
    key_counts: tuple[int, ...] = (1, 100, 500)
    fg_counts: tuple[int, ...] = (1, 3)
    sweep_fgs: tuple[int, ...] = (1, 2, 5, 10, 20)
    sweep_keys: int = 10
    workers: tuple[int, ...] = (1, 2)


SMOKE = Plan(
    entities=20, fgs=2, key_counts=(1,), fg_counts=(1,), sweep_fgs=(1, 2), sweep_keys=2, workers=(1,)
)
PLAN = Plan()


@dataclass
class Row:
    """One (peer, request shape) measurement."""

    peer: str
    keys: int
    fgs: int
    p50_ms: float
    p99_ms: float
    samples: int
    rps: float = float("nan")
    """Saturated requests/s (servers); 1000 / mean ms for one-at-a-time library calls."""
    cores: float = float("nan")
    ok: bool = True
    note: str = ""

    @property
    def rows_per_core(self) -> float:
        """Entity rows per second per core: servers by their measured CPU, libraries on one thread."""
        cores = self.cores if self.cores == self.cores else 1.0
        return self.rps * self.keys / cores if cores > 0 else float("nan")


@dataclass
class Report:
    """Everything one run measured."""

    info: dict[str, str]
    grpc: list[gb.GrpcCase] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    sweep: dict[str, dict[int, float]] = field(default_factory=dict)
    footprint: dict[str, tuple[float, str]] = field(default_factory=dict)
    ingest: dict[str, float] = field(default_factory=dict)
    profile_top: str = ""
    profile_svg: str = ""
    skipped: list[str] = field(default_factory=list)


# -- ours ------------------------------------------------------------------------------------------


def time_calls(
    fn: Callable[[], object], seconds: float, min_calls: int = 5
) -> tuple[float, float, int, float]:
    """Calls ``fn`` one at a time for ``seconds`` (at least ``min_calls``): p50, p99, calls, mean (ms)."""
    fn()  # warm: plans, connections, cache
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < min_calls:
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    t = np.array(times) * 1000
    return float(np.percentile(t, 50)), float(np.percentile(t, 99)), len(times), float(t.mean())


def embedded(fs: Any, label: str, peer: str, keys: int, fgs: int, seconds: float) -> Row:
    """``FeatureStore.retrieve`` of ``keys`` x ``fgs`` FGs, one call at a time."""
    names = [gb.key(i) for i in range(keys)]
    features = {f"fg{i}": gb.FEATURES for i in range(fgs)}
    first = fs.retrieve(label, names, features)
    if any(int(s.max()) != 0 for s in first.status.values()):
        raise AssertionError(f"{label}: not every key was found")
    p50, p99, n, mean = time_calls(lambda: fs.retrieve(label, names, features), seconds)
    return Row(peer, keys, fgs, p50, p99, n, rps=1000 / mean)


def from_grpc(case: gb.GrpcCase, peer: str) -> Row:
    lat, sat = case.latency, case.saturation
    return Row(
        peer,
        case.keys,
        case.fgs,
        lat.p50_ms,
        lat.p99_ms,
        lat.requests,
        sat.rps,
        sat.server_cores,
        lat.ok and sat.ok,
        lat.note or sat.note,
    )


def grpc_latency(
    server: gb.Server, e: gb.BenchEntity, fgs: int, seconds: float, warmup: float, work: Path
) -> gb.Load:
    """h2load with 1 request in flight for ``PLAN.sweep_keys`` keys x ``fgs`` FGs (checked first)."""
    frame, _size = gb.prepare(server, e, PLAN.sweep_keys, fgs, work)
    c, m = gb.LATENCY_LOAD
    url = f"http://127.0.0.1:{server.port}{gb.RETRIEVE_PATH}"
    return gb.run_h2load(
        url, frame, connections=c, streams=m, seconds=seconds, warmup=warmup, server_pid=server.pid
    )


def footprint_entities(run_id: str) -> list[gb.BenchEntity]:
    """One FG of 64 features per type, on Redis and on a SQLite file of its own."""
    out = []
    for t in FOOTPRINT_TYPES:
        out.append(gb.BenchEntity(f"pf_r{t}_{run_id}", "redis", False, 1, t))
        out.append(gb.BenchEntity(f"pf_s{t}_{run_id}", f"sqlite_{t}", False, 1, t))
    return out


def redis_footprint(labels: Sequence[str], db: int = gb.OUR_REDIS_DB) -> dict[str, tuple[int, int]]:
    """(keys, MEMORY USAGE bytes) per entity label."""
    import redis

    client = redis.Redis(gb.REDIS_HOST, gb.REDIS_PORT, db=db)
    out = {}
    try:
        for label in labels:
            keys = list(client.scan_iter(match=f"ofs:s:{label}:*", count=1000))
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.memory_usage(k, samples=0)
            out[label] = (len(keys), sum(int(x or 0) for x in pipe.execute()))
    finally:
        client.close()
    return out


def sqlite_bytes(path: Path) -> int:
    """The database file's size once its WAL is checkpointed into it."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return path.stat().st_size


# -- Feast -----------------------------------------------------------------------------------------


def feast(*args: str, timeout: float = 900) -> Any:
    """Runs feast_peer.py in the Feast venv; its JSON answer."""
    proc = subprocess.run(
        [str(FEAST_PY), str(FEAST_PEER), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"feast_peer.py {args[0]} failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class FeastServer:
    """``feast serve`` (HTTP) from the Feast venv on a free port."""

    def __init__(self, repo: Path, workers: int) -> None:
        self.repo, self.workers, self.port = repo, workers, gb.free_port()
        self.log = repo / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FeastServer:
        cmd = [str(FEAST_VENV / "bin" / "feast"), "-c", str(self.repo), "serve", "-h", "127.0.0.1"]
        cmd += ["-p", str(self.port), "-w", str(self.workers), "--no-access-log"]
        # No periodic worker restarts (default 1000 requests): they would count against Feast.
        cmd += ["--max-requests", "0"]
        with open(self.log, "ab") as out:
            # Its own session: gunicorn's workers can be stopped as one process group.
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.repo, start_new_session=True
            )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"feast serve exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"feast serve not healthy: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            gb.stop_group(self.proc)


def feast_server_case(
    server: FeastServer, keys: int, fgs: int, seconds: float, warmup: float, work: Path, saturate: bool = True
) -> Row:
    """Checks one POST /get-online-features answer, then loads it with h2load --h1."""
    body = json.dumps(feast("body", "--fvs", str(fgs), "--keys", str(keys))).encode()
    path = work / f"feast-{keys}x{fgs}.json"
    path.write_bytes(body)
    url = f"http://127.0.0.1:{server.port}/get-online-features"
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:  # may wait behind the queue the last load left
        answer = json.loads(r.read())
    statuses = [s for res in answer["results"][1:] for s in res["statuses"]]
    if len(statuses) != keys * fgs * gb.N_FEATURES or set(statuses) != {"PRESENT"}:
        raise AssertionError(f"feast server {keys}x{fgs}: statuses {collections.Counter(statuses)}")
    assert server.proc is not None
    loads = [
        gb.run_h2load(
            url,
            path,
            connections=c,
            streams=m,
            seconds=seconds,
            warmup=warmup,
            headers=("content-type: application/json",),
            http1=True,
            server_pid=server.proc.pid,
        )
        for c, m in ((gb.LATENCY_LOAD, FEAST_SATURATION) if saturate else (gb.LATENCY_LOAD,))
    ]
    lat, sat = loads[0], loads[-1]
    peer = f"Feast feature server (HTTP), {server.workers} worker{'s' if server.workers > 1 else ''}"
    return Row(
        peer,
        keys,
        fgs,
        lat.p50_ms,
        lat.p99_ms,
        lat.requests,
        sat.rps,
        sat.server_cores,
        lat.ok and sat.ok,
        lat.note or sat.note,
    )


# -- profile ---------------------------------------------------------------------------------------


def profile(server: gb.Server, frame: Path, seconds: float, name: str) -> tuple[str, str]:
    """Profiles the server under saturating h2load: py-spy ``record --native --gil`` (an SVG flamegraph and
    collapsed stacks of the Python threads) and, when ``perf`` is installed, ``perf record`` of every
    thread (gRPC's C-core threads and the kernel included, which py-spy cannot see), all under
    bench/profiles/. Returns the SVG path and a markdown summary."""
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    perf = shutil.which("perf")
    PROFILES.mkdir(exist_ok=True)
    svg, raw = PROFILES / f"{name}.svg", PROFILES / f"{name}.collapsed.txt"
    c, m = gb.SATURATION_LOAD
    url = f"http://127.0.0.1:{server.port}{gb.RETRIEVE_PATH}"
    load = subprocess.Popen(
        [
            "h2load",
            "-t",
            "1",
            "-c",
            str(c),
            "-m",
            str(m),
            "-d",
            str(frame),
            "-D",
            f"{round(3 * seconds + 5)}s",
            *[x for h in gb.GRPC_HEADERS for x in ("-H", h)],
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    perf_md = ""
    try:
        time.sleep(1)
        for fmt, out in (("flamegraph", svg), ("raw", raw)):
            subprocess.run(
                [
                    spy,
                    "record",
                    "--native",
                    "--gil",
                    "-p",
                    str(server.pid),
                    "-d",
                    str(round(seconds)),
                    "-r",
                    "100",
                    "-f",
                    fmt,
                    "-o",
                    str(out),
                ],
                check=True,
                capture_output=True,
                timeout=seconds + 60,
            )
        if perf:
            perf_md = perf_profile(perf, server.pid, seconds, PROFILES / f"{name}.perf.txt")
    finally:
        load.wait(timeout=4 * seconds + 30)
    return os.path.relpath(svg, ROOT), summarize(raw.read_text()) + perf_md


def perf_profile(perf: str, pid: int, seconds: float, report: Path) -> str:
    """``perf record -g`` of every thread of ``pid``; the report (by DSO, by symbol) is written to
    ``report`` and summarised as markdown."""
    with tempfile.TemporaryDirectory(prefix="ofs-perf-") as tmp:
        data = Path(tmp) / "perf.data"
        subprocess.run(
            [perf, "record", "-F", "499", "-g", "-p", str(pid), "-o", str(data), "--", "sleep", str(seconds)],
            check=True,
            capture_output=True,
            timeout=seconds + 60,
        )
        texts = {}
        for sort in ("dso", "dso,sym"):
            texts[sort] = subprocess.run(
                [
                    perf,
                    "report",
                    "-i",
                    str(data),
                    "--stdio",
                    "--no-children",
                    "-g",
                    "none",
                    "--sort",
                    sort,
                    "--percent-limit",
                    "0.5",
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
    report.write_text("\n\n".join(texts.values()))

    def rows(text: str, limit: int) -> list[str]:
        out = []
        for line in text.splitlines():
            # "(deleted)": the extension was rebuilt while the server ran (its symbols are then lost).
            hit = re.match(r"^\s+([\d.]+)%\s+(\S+(?: \(deleted\))?)(?:\s+\[[.k]\]\s+(.*))?$", line.rstrip())
            if hit:
                pct, dso, sym = hit.groups()
                label = f"{sym.strip()} ({dso})" if sym else dso
                out.append(f"| `{label.replace('|', '/')}` | {pct} |")
        return out[:limit]

    return (
        f"\n`perf record -g` of all threads (gRPC C-core and kernel included), saved as "
        f"[`{report.name}`](profiles/{report.name}). CPU by library:\n\n| library | % |\n|---|---:|\n"
        + "\n".join(rows(texts["dso"], 10))
        + "\n\nTop symbols:\n\n| symbol | % |\n|---|---:|\n"
        + "\n".join(rows(texts["dso,sym"], 15))
        + "\n"
    )


WAITS = frozenset(
    {
        "PyThread_acquire_lock_timed",
        "pthread_cond_timedwait",
        "pthread_cond_wait",
        "pthread_cond_clockwait",
        "epoll_wait",
        "sem_wait",
        "sem_timedwait",
        "sem_clockwait",
        "take_gil",
        "poll",
    }
)
"""Leaf-side frames of a thread that is blocked (idle pool threads, the GIL, locks), not computing."""


def _frame(f: str) -> str:
    f = re.sub(r":\d+\)$", ")", f)  # line numbers: aggregate per function
    return re.sub(r"::h[0-9a-f]{16}\b", "", f)  # Rust symbol hashes


def summarize(collapsed: str, top: int = 15) -> str:
    """Markdown: where the busy samples of py-spy's collapsed stacks go. Stacks with a blocking frame
    (``WAITS``: idle worker threads, GIL and lock waits) are counted apart; of the rest, the top
    functions by own samples (innermost named frame: native frames without symbols are attributed to
    their caller) and their total share."""
    self_n: collections.Counter[str] = collections.Counter()
    total_n: collections.Counter[str] = collections.Counter()
    busy = waiting = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if any(f.split(" ")[0] in WAITS for f in frames):
            waiting += n
            continue
        named = [f for f in frames if not f.startswith("0x")]
        if not named:
            continue
        busy += n
        self_n[named[-1]] += n
        for f in set(named):
            total_n[f] += n
    if not busy:
        return "(no busy samples)\n"
    lines = ["| function (innermost named frame) | self % | total % |", "|---|---:|---:|"]
    for f, n in self_n.most_common(top):
        name = f.replace("|", "/")
        lines.append(f"| `{name}` | {100 * n / busy:.1f} | {100 * total_n[f] / busy:.1f} |")
    ours = [(f, n) for f, n in total_n.most_common() if "online_feature_store" in f or "_native" in f][:8]
    lines += ["", "Our frames by total share of busy samples:", ""]
    lines += ["| function | total % |", "|---|---:|"]
    lines += [f"| `{f.replace('|', '/')}` | {100 * n / busy:.1f} |" for f, n in ours]
    share = 100 * busy / (busy + waiting)
    return "\n".join(lines) + f"\n\n{busy:,} samples ({share:.0f} % of those taken; the rest were blocked).\n"


# -- the run ---------------------------------------------------------------------------------------


def run(seconds: float, warmup: float, with_feast: bool, with_profile: bool) -> Report:
    gb.ensure_proto()
    info = gb.machine()
    info["redis"] = (
        subprocess.run(
            ["redis-cli", "-p", str(gb.REDIS_PORT), "info", "server"], capture_output=True, text=True
        )
        .stdout.split("redis_version:")[-1]
        .split()[0]
    )
    report = Report(info)
    run_id = f"{os.getpid():x}{int(time.time()) % 100000:x}"
    hit = gb.BenchEntity(f"pr_hit_{run_id}", "sqlite", True, PLAN.fgs)
    miss = gb.BenchEntity(f"pr_miss_{run_id}", "sqlite", False, PLAN.fgs)
    red = gb.BenchEntity(f"pr_redis_{run_id}", "redis", False, PLAN.fgs)
    foot = footprint_entities(run_id)
    redis_labels = [red.label] + [e.label for e in foot if e.store == "redis"]
    project = f"ofsbench{run_id}"
    with tempfile.TemporaryDirectory(prefix="ofs-peers-") as tmp:
        work = Path(tmp)
        doc = gb.registry_doc([hit, miss, red, *foot])
        doc["stores"] += [
            {"id": f"sqlite_{t}", "kind": "sqlite", "settings": {"path": f"footprint-{t}.db"}}
            for t in FOOTPRINT_TYPES
        ]
        gb.apply_registry(work, doc)
        try:
            rates = gb.load_data(work, [hit, miss, red, *foot], PLAN.entities)
            report.ingest["ours: FeatureStore.persist -> SQLite"] = rates[hit.label]
            report.ingest["ours: FeatureStore.persist -> Redis"] = rates[red.label]
            measure_footprint(report, work, red, foot)
            measure_ours(report, work, hit, miss, red, seconds, warmup, with_profile)
            if with_feast:
                measure_feast(report, work / "feast", project, seconds, warmup)
        finally:
            gb.delete_our_redis_keys(redis_labels)
            if with_feast:
                feast("clean", "--project", project)
    return report


def measure_footprint(
    report: Report, work: Path, red: gb.BenchEntity, foot: Sequence[gb.BenchEntity]
) -> None:
    mem = redis_footprint([red.label] + [e.label for e in foot if e.store == "redis"])
    for e in foot:
        if e.store == "redis":
            n, b = mem[e.label]
            report.footprint[f"ours, Redis, 1 FG {e.data_type}"] = (b / n, f"MEMORY USAGE, {n} keys")
        else:
            size = sqlite_bytes(work / f"footprint-{e.data_type}.db")
            report.footprint[f"ours, SQLite file, 1 FG {e.data_type}"] = (
                size / PLAN.entities,
                "file size / entities",
            )
    n, b = mem[red.label]
    report.footprint[f"ours, Redis, {PLAN.fgs} FGs fp32"] = (b / n, f"MEMORY USAGE, {n} keys")


def measure_ours(
    report: Report,
    work: Path,
    hit: gb.BenchEntity,
    miss: gb.BenchEntity,
    red: gb.BenchEntity,
    seconds: float,
    warmup: float,
    with_profile: bool,
) -> None:
    from online_feature_store.feature_store import FeatureStore

    with FeatureStore(data_directory=work) as fs:
        for label, peer in (
            (red.label, "ours: embedded, Redis"),
            (miss.label, "ours: embedded, SQLite"),
            (hit.label, "ours: embedded, in-process cache hit"),
        ):
            for fgs in PLAN.fg_counts:
                for k in PLAN.key_counts:
                    report.rows.append(embedded(fs, label, peer, k, fgs, min(seconds, 1.5)))
            report.sweep[peer] = {
                n: embedded(fs, label, peer, PLAN.sweep_keys, n, min(seconds, 1.0)).p50_ms
                for n in PLAN.sweep_fgs
            }
    for w in PLAN.workers:
        suffix = f"{w} worker{'s' if w > 1 else ''}"
        with gb.Server(work, w) as server:
            for e in (hit, miss, red):
                for fgs in PLAN.fg_counts:
                    for k in PLAN.key_counts:
                        case = gb.measure_grpc(
                            server, f"ofs serve, {suffix}", e, k, fgs, seconds, warmup, work
                        )
                        report.grpc.append(case)
                        if e is red:
                            report.rows.append(from_grpc(case, f"ours: gRPC server (Redis), {suffix}"))
                        if e is hit:
                            report.rows.append(from_grpc(case, f"ours: gRPC server (cache hit), {suffix}"))
            if w == 1:
                for e, peer in (
                    (red, "ours: gRPC server (Redis), 1 worker"),
                    (hit, "ours: gRPC server (cache hit), 1 worker"),
                ):
                    report.sweep[peer] = {
                        n: grpc_latency(server, e, n, min(seconds, 1.5), warmup, work).p50_ms
                        for n in PLAN.sweep_fgs
                    }
                if with_profile:
                    keys = 100 if 100 in PLAN.key_counts else PLAN.key_counts[0]
                    frame = work / f"{hit.label}-{keys}x1.grpc"
                    report.profile_svg, report.profile_top = profile(
                        server, frame, max(4.0, 2 * seconds), "grpc_retrieve_100keys_1fg_cache_hit"
                    )


def measure_feast(report: Report, repo: Path, project: str, seconds: float, warmup: float) -> None:
    loaded = feast(
        "load",
        "--repo",
        str(repo),
        "--project",
        project,
        "--keys",
        str(PLAN.entities),
        "--fvs",
        str(PLAN.fgs),
        "--db",
        str(FEAST_REDIS_DB),
    )
    report.info["feast"] = loaded["feast"]
    report.ingest["Feast: write_to_online_store -> Redis"] = loaded["rows_per_s"]
    for fvs, fp in loaded["footprint"].items():
        report.footprint[f"Feast, Redis, {fvs} FV{'s' if fvs != '1' else ''} Float32"] = (
            fp["bytes"] / fp["keys"],
            f"MEMORY USAGE, {fp['keys']} keys",
        )
    cases = [f"{k}x{f}" for f in PLAN.fg_counts for k in PLAN.key_counts]
    sdk = feast("sdk", "--repo", str(repo), "--cases", ",".join(cases), "--seconds", str(min(seconds, 2.0)))
    for case, r in sdk.items():
        k, f = (int(x) for x in case.split("x"))
        report.rows.append(
            Row(
                "Feast SDK get_online_features",
                k,
                f,
                r["p50_ms"],
                r["p99_ms"],
                r["calls"],
                rps=1000 / r["mean_ms"],
            )
        )
    sweep = feast(
        "sdk",
        "--repo",
        str(repo),
        "--cases",
        ",".join(f"{PLAN.sweep_keys}x{n}" for n in PLAN.sweep_fgs),
        "--seconds",
        str(min(seconds, 1.0)),
    )
    report.sweep["Feast SDK get_online_features"] = {
        int(c.split("x")[1]): r["p50_ms"] for c, r in sweep.items()
    }
    for w in PLAN.workers:
        with FeastServer(repo, w) as server:
            for f in PLAN.fg_counts:
                for k in PLAN.key_counts:
                    report.rows.append(feast_server_case(server, k, f, seconds, warmup, repo))
            if w == 1:
                name = "Feast feature server (HTTP), 1 worker"
                report.sweep[name] = {}
                for n in PLAN.sweep_fgs:
                    row = feast_server_case(
                        server, PLAN.sweep_keys, n, min(seconds, 1.5), warmup, repo, saturate=False
                    )
                    report.sweep[name][n] = row.p50_ms


# -- markdown --------------------------------------------------------------------------------------

BASELINE = {
    "Feast SDK get_online_features": "ours: embedded, Redis",
    "Feast feature server (HTTP), 1 worker": "ours: gRPC server (Redis), 1 worker",
    "Feast feature server (HTTP), 2 workers": "ours: gRPC server (Redis), 2 workers",
}
"""Which of our rows each peer is compared with (same store, same shape of deployment)."""


def peers_markdown(report: Report, command: str) -> str:
    info = report.info
    out = [
        f"Command: `{command}` ({info['date']}). Machine: {info['cpu']}, {info['os']}, "
        f"Python {info['python']}, "
        f"Redis {info.get('redis', '?')}, h2load {info['h2load']}, Feast {info.get('feast', 'not run')} "
        f"(its own venv, `bench/.venv-feast`), online-feature-store {info['ofs']}. Load average before: "
        f"{info['load']} (after: {info.get('load_after', 'n/a')}). "
        "**The 2 cores are shared with 7 other engineers while this ran**, and the load "
        "generator, Redis and the servers share them too: read the ratios (same run), not the absolutes.\n",
        f"Same data for everyone: {PLAN.entities:,} entities x {PLAN.fgs} FGs (Feast: feature views) "
        f"of 64 fp32 features, in Redis DB {gb.OUR_REDIS_DB} (ours) and DB {FEAST_REDIS_DB} (Feast) "
        "of the same Redis. "
        "Servers: h2load, p50/p99 with 1 request in flight; req/s with 16 in flight (ours: 8 connections x 2 "
        "HTTP/2 streams; Feast: 16 HTTP/1.1 connections), cores = the server process tree's CPU time / wall "
        "time. Libraries: one call at a time in one thread (`to_dict()` included for Feast), so req/s = "
        "1 / mean latency and cores = 1 (Redis's own CPU is not counted for either). "
        "Ratios: our entity-rows/s per core / the peer's, and the peer's p99 / ours, against "
        + ", ".join(f"{v} for {k}" for k, v in BASELINE.items())
        + ".\n",
        "### Throughput and latency\n",
        "| peer | keys | FGs | p50 ms | p99 ms | n | req/s | entity-rows/s per core "
        "| rows/s per core: ours / peer | p99: peer / ours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    index = {(r.peer, r.keys, r.fgs): r for r in report.rows}
    for r in sorted(report.rows, key=lambda r: (r.fgs, r.keys, r.peer)):
        base = index.get((BASELINE.get(r.peer, ""), r.keys, r.fgs))
        ratio = f"{base.rows_per_core / r.rows_per_core:.1f}x" if base and r.rows_per_core > 0 else ""
        slower = f"{r.p99_ms / base.p99_ms:.1f}x" if base and base.p99_ms > 0 else ""
        flag = "" if r.ok else f" (**failed**: {r.note})"
        out.append(
            f"| {r.peer}{flag} | {r.keys} | {r.fgs} | {gb._ms(r.p50_ms)} | {gb._ms(r.p99_ms)} | {r.samples} "
            f"| {gb._num(r.rps)} | {gb._num(r.rows_per_core)} | {ratio} | {slower} |"
        )
    if report.sweep:
        out += [
            "",
            f"### Latency versus FGs per request ({PLAN.sweep_keys} keys, 64 fp32 per FG, p50 ms, "
            "1 in flight)\n",
        ]
        out.append(
            "| peer | " + " | ".join(f"{n} FG" for n in PLAN.sweep_fgs) + f" | {PLAN.sweep_fgs[-1]} / 1 |"
        )
        out.append("|---|" + "---:|" * (len(PLAN.sweep_fgs) + 1))
        for peer, by_n in report.sweep.items():
            growth = (
                by_n[PLAN.sweep_fgs[-1]] / by_n[PLAN.sweep_fgs[0]]
                if by_n.get(PLAN.sweep_fgs[0])
                else float("nan")
            )
            cells = " | ".join(gb._ms(by_n.get(n, float("nan"))) for n in PLAN.sweep_fgs)
            out.append(f"| {peer} | {cells} | {growth:.1f}x |")
    out += ["", "### Storage per entity\n", "| layout | bytes per entity | how |", "|---|---:|---|"]
    out += [f"| {k} | {gb._num(v)} | {how} |" for k, (v, how) in report.footprint.items()]
    out += [
        "",
        "Ours: one Redis string per entity holding a CSDB of its FGs' PSDB blocks (9-byte header + packed "
        "values; fp16 / fp8 halve / quarter the payload). Feast: one Redis hash per entity, one field per "
        "feature (4-byte murmur3 name hash -> a serialized `ValueProto`) plus a timestamp field per feature "
        "view; Feast has no 16- or 8-bit float type. A 64-feature fp32 block does not shrink with zstd, "
        "so it is "
        "stored raw.",
        "",
        "### Ingestion (FG rows of 64 fp32 per second, batches of 500)\n",
        "| path | rows/s |",
        "|---|---:|",
    ]
    out += [f"| {k} | {gb._num(v)} |" for k, v in report.ingest.items()]
    out += [
        "",
        "Ingestion through Kafka is measured with the consumer (`bench/consumer_bench.py`): see its section.",
        "",
    ]
    if report.profile_top:
        out += [
            "### CPU profile of the gRPC retrieve path at saturation\n",
            f"`ofs serve` (1 worker) under h2load {gb.SATURATION_LOAD[0]} connections x "
            f"{gb.SATURATION_LOAD[1]} streams, 100 keys x 1 FG of 64 fp32, cache hit. py-spy "
            "`record --native --gil` samples whichever thread holds the GIL (the Python-level cost; "
            "without `--gil` the 16 idle pool threads drown it). Flamegraph: "
            f"[`{report.profile_svg}`]({Path(report.profile_svg).relative_to('bench')}); collapsed stacks "
            "next to it. Top functions by own samples:\n",
            report.profile_top,
        ]
    if report.skipped:
        out += ["Not measured in this run: " + "; ".join(report.skipped) + "."]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per server load (default 3)")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--quick", action="store_true", help="1 s loads, for a trial run")
    p.add_argument(
        "--smoke", action="store_true", help="a few seconds of everything at tiny sizes (the test)"
    )
    p.add_argument("--no-feast", action="store_true", help="ours only")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="where grpc.md / peers.md go")
    p.add_argument("--write-results", action="store_true", help="replace both sections of bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 1.0, 0.3
    global PLAN
    if args.smoke:
        PLAN = SMOKE
        args.seconds, args.warmup, args.no_profile = 0.5, 0.2, True
    with_feast = not args.no_feast
    skipped = []
    if with_feast and not FEAST_PY.exists():
        with_feast = False
        skipped.append("Feast (no bench/.venv-feast: run bench/peers/setup.sh feast)")
    report = run(args.seconds, args.warmup, with_feast, not args.no_profile)
    report.info["load_after"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    report.skipped += skipped
    command = (
        "bench/peers/run.sh" if os.environ.get("OFS_BENCH_VIA_RUN_SH") else "python bench/peers/compare.py"
    )
    command += (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    rates = ", ".join(
        f"{k}: {gb._num(v)} FG rows/s" for k, v in report.ingest.items() if k.startswith("ours")
    )
    grpc_text = gb.render(report.grpc, report.info, command.strip(), rates)
    peers_text = peers_markdown(report, command.strip())
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "grpc.md").write_text(grpc_text)
    (out_dir / "peers.md").write_text(peers_text)
    print(grpc_text + "\n" + peers_text)
    if args.write_results:
        gb.write_section("grpc-bench", "## gRPC server (issue #5)", grpc_text)
        gb.write_section("peers-bench", "## Peers (issue #8)", peers_text)
    return 0 if all(r.ok for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
