"""The gRPC side of the realistic benchmark (bench/realistic_bench.py): ``ofs serve`` of the target with a
sized in-process cache, the Go load generator (bench/loadgen) and its ceiling."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import abuse_bench as ab  # noqa: E402  (bench/ is a directory of scripts, not a package)
import grpc_bench as gb  # noqa: E402
import realistic_data as rd  # noqa: E402
import realistic_keys as rk  # noqa: E402
from realistic_cases import Case, Result, Run, Settings, cache_bytes, seed  # noqa: E402

LOADGEN = BENCH / "loadgen"
SAT_CONNS, SAT_INFLIGHT = 8, 16
"""The generator's closed loop: connections and requests in flight (bench/grpc_bench.py's saturation)."""
OPEN_SENDERS = 256
"""Open loop: requests outstanding at most (never reached at half of saturation)."""
CHECK_EVERY = 64
"""The generator decodes and checks every 64th answer (every key found, in order, all cells)."""
WARM_KEYS = 500
"""Keys per call when warming the server's cache."""

# -- the generator ---------------------------------------------------------------------------------


def build_loadgen(work: Path) -> Path:
    """``bench/loadgen`` built into the work directory (once per version of its source)."""
    go = shutil.which("go")
    if go is None:
        raise SystemExit("the Go toolchain (go) is not on PATH: bench/loadgen is the gRPC load generator")
    digest = hashlib.sha1()
    for f in sorted(LOADGEN.iterdir()):
        digest.update(f.name.encode() + f.read_bytes())
    binary = work / "bin" / f"loadgen-{digest.hexdigest()[:12]}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([go, "build", "-o", str(binary), "."], cwd=LOADGEN, check=True)
    return binary


def loadgen(binary: Path, args: dict[str, Any], timeout: float, cpus: str | None = None) -> dict[str, Any]:
    """Runs the generator (pinned to ``cpus`` with ``taskset -c`` when given) and returns its result."""
    cmd = [str(binary)] + [f"-{k}={v}" for k, v in args.items()]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@dataclass
class Ceiling:
    shape: str
    rps: float
    cpu_us_per_call: float

    @property
    def per_core(self) -> float:
        return 1e6 / self.cpu_us_per_call if self.cpu_us_per_call > 0 else math.nan


def null_answer(n_keys: int, n_fgs: int) -> bytes:
    """A ``retrieve.Result`` of ``n_keys`` found rows of ``n_fgs`` FGs of 64 fp32 (as a server answers)."""
    gb.ensure_proto()
    from online_feature_store._proto import retrieve_pb2

    cell = b"\x00\x00\x80\x3f"
    rows = [
        retrieve_pb2.Row(keys=[rk.key(i)], columns=[cell] * (n_fgs * rk.N_FEATURES), fg_status=[0] * n_fgs)
        for i in range(n_keys)
    ]
    schemas = [
        retrieve_pb2.FeatureSchema(
            feature_group_label=f"fg{g}",
            features=[
                retrieve_pb2.Feature(label=f"f{j}", column_idx=g * rk.N_FEATURES + j, data_type=5)
                for j in range(rk.N_FEATURES)
            ],
        )
        for g in range(n_fgs)
    ]
    result = retrieve_pb2.Result(
        entity_label="null", keys_schema=["user_id"], feature_schemas=schemas, rows=rows
    )
    return result.SerializeToString()


@contextmanager
def null_server(binary: Path, answer: bytes, cpus: str | None = None) -> Iterator[tuple[int, int]]:
    """``loadgen -serve-null`` answering every call with ``answer`` at once (pinned to ``cpus`` with
    ``taskset -c`` when given), serving while the block runs: its ``(port, pid)``."""
    with tempfile.TemporaryDirectory(prefix="ofs-null-") as tmp:
        path = Path(tmp) / "answer.bin"
        path.write_bytes(answer)
        port = gb.free_port()
        cmd = [str(binary), f"-serve-null=127.0.0.1:{port}", f"-null-response={path}"]
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]
        null = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert null.stdout is not None
            if not null.stdout.readline().startswith("SERVING"):
                raise RuntimeError("loadgen -serve-null did not start")
            yield port, null.pid
        finally:
            gb.stop_group(null)  # type: ignore[arg-type]
            if null.stdout is not None:
                null.stdout.close()


def ceiling(binary: Path, shapes: Sequence[tuple[int, int]], seconds: float) -> list[Ceiling]:
    """The generator alone: closed loop against ``loadgen -serve-null`` (which shares the cores)."""
    out: list[Ceiling] = []
    for keys, fgs in shapes:
        with null_server(binary, null_answer(keys, fgs)) as (port, _pid):
            # The canned answer names other keys than the requests: checks off.
            res = loadgen(
                binary,
                {
                    "addr": f"127.0.0.1:{port}",
                    "entity": "null",
                    "fgs": fgs,
                    "keys": keys,
                    "entities": max(keys, 1000),
                    "conns": SAT_CONNS,
                    "inflight": 4 * SAT_INFLIGHT,
                    "seconds": seconds,
                    "warmup": min(1.0, seconds),
                    "check-every": 0,
                    "perm-a": 1,
                    "perm-b": 0,
                },
                timeout=seconds + 120,
            )
        out.append(Ceiling(f"{keys} keys x {fgs} FG", res["rps"], res["cpu_us_per_call"]))
    return out


# -- the gRPC server -------------------------------------------------------------------------------

SERVE_SHIM = """\
import sys
cache_bytes = sys.argv[1]  # "" when ofs serve has --cache-bytes (then it is among the arguments)
if cache_bytes:
    import online_feature_store.feature_store as m
    defaults = m.FeatureStore.__init__.__kwdefaults__ or {}
    if "cache_bytes" not in defaults:
        sys.exit("realistic_bench: FeatureStore has no cache_bytes argument: cannot size the server's cache")
    defaults["cache_bytes"] = int(cache_bytes)
try:  # forward the cache hooks to Prometheus where the server's hooks drop them
    from online_feature_store.metrics import FeatureStoreMetrics
    from online_feature_store.server.calls import ServerHooks
except ImportError:
    pass
else:
    def _forward(name):
        def hook(self, *args):
            if self.metrics is not None:
                getattr(self.metrics, name)(*args)
        return hook
    for name in ("cache_lookup", "cache_error", "cache_breaker", "cache_dropped"):
        if getattr(ServerHooks, name, None) is getattr(FeatureStoreMetrics, name, None):
            setattr(ServerHooks, name, _forward(name))
            print(f"realistic_bench: ServerHooks.{name} forwarded to the server's metrics", flush=True)
from online_feature_store.cli import main
sys.exit(main(sys.argv[2:]))
"""
"""Starts ``ofs serve`` in the target's interpreter. Without ``--cache-bytes`` in the target's ``ofs
serve``, it sets the default of ``FeatureStore(cache_bytes=…)`` first (the server opens its store with
the default). Where the server's FeatureStore hooks (``server/calls.py`` ``ServerHooks``) leave the cache
hooks as the base class's no-ops, so ``ofs_cache_lookups_total`` is never counted (main at 520191b), it
forwards them to the server's metrics, as the other hooks are: the hit ratio is read from there."""


class Serve(gb.Server):
    """``ofs serve --workers 1`` of the target with an in-process cache of ``cache_bytes`` and its
    Prometheus metrics on a port of its own."""

    def __init__(
        self, target: ab.Target, data_dir: Path, cache_bytes: int, flag: bool, front: str = ""
    ) -> None:
        super().__init__(data_dir, workers=1)
        self.target, self.cache_bytes, self.flag, self.front = target, cache_bytes, flag, front
        self.metrics_port = gb.free_port()
        while self.metrics_port == self.port:
            self.metrics_port = gb.free_port()

    def start(self, timeout: float = 120.0) -> Serve:
        args = ["serve", "--data-dir", str(self.data_dir), "--port", str(self.port), "--workers", "1"]
        args += ["--metrics-port", str(self.metrics_port)]
        if self.front:
            args += ["--front", self.front]
        if self.flag:
            cmd = [
                str(self.target.python),
                "-c",
                SERVE_SHIM,
                "",
                *args,
                "--cache-bytes",
                str(self.cache_bytes),
            ]
        else:
            cmd = [str(self.target.python), "-c", SERVE_SHIM, str(self.cache_bytes), *args]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.target.env(),
                cwd=self.data_dir,
                start_new_session=True,
            )
        self._wait_serving(timeout)
        return self

    def cache_lookups(self, entity: str) -> tuple[float, float] | None:
        """(hits, misses) of the in-process tier so far; None without that metric."""
        text = _metrics(self.metrics_port)
        if text is None:
            return None
        counts = {"hit": 0.0, "miss": 0.0}
        seen = False
        for labels, value in _samples(text, "ofs_cache_lookups_total"):
            if labels.get("tier") == "in_process" and labels.get("entity") == entity:
                seen = True
                counts[labels.get("result", "")] = counts.get(labels.get("result", ""), 0.0) + value
        return (counts["hit"], counts["miss"]) if seen else (0.0, 0.0)


def _metrics(port: int) -> str | None:
    """The server's Prometheus text on ``port``; None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return str(r.read().decode())
    except OSError:
        return None


def retrieve_buckets(metrics_port: int | None) -> dict[float, float]:
    """A server's ``ofs_request_duration_seconds`` buckets of retrieves so far, cumulative, by upper
    bound in seconds (``inf`` last); empty without metrics."""
    text = (_metrics(metrics_port) if metrics_port else None) or ""
    return {
        float(labels["le"]): value
        for labels, value in _samples(text, "ofs_request_duration_seconds_bucket")
        if labels.get("method") == "RetrieveFeatures" and "le" in labels
    }


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The labels and value of every sample of ``name`` in a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            out.append((labels, float(line.rsplit(" ", 1)[1])))
    return out


def inside_server(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """Of the retrieves between two scrapes of the server's histogram: the share that took at most 1 ms
    inside the server, and the upper bound (ms) of the bucket that holds their 99th percentile."""
    bounds = sorted(after)
    total = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    if total <= 0 or not bounds:
        return math.nan, math.nan
    counts = {le: after[le] - before.get(le, 0.0) for le in bounds}
    p99 = next((le for le in bounds if counts[le] >= 0.99 * total), math.inf)
    return counts.get(0.001, math.nan) / total, p99 * 1000


def warm_grpc(port: int, entity: str, fgs: int, ids: Sequence[int], threads: int = 4) -> float:
    """Reads ``ids`` over gRPC, 500 keys per call, ``threads`` calls in flight; seconds taken."""
    import grpc

    features = {f"fg{g}": gb.FEATURES for g in range(fgs)}
    chunks = [ids[i : i + WARM_KEYS] for i in range(0, len(ids), WARM_KEYS)]
    began = time.perf_counter()
    options = [("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as ch:
        call = ch.unary_unary(gb.RETRIEVE_PATH, request_serializer=None, response_deserializer=None)
        todo = iter(chunks)
        lock = threading.Lock()
        errors: list[BaseException] = []

        def loop() -> None:
            while True:
                with lock:
                    chunk = next(todo, None)
                if chunk is None or errors:
                    return
                try:
                    call(ab.encode_query(entity, features, [rk.key(i) for i in chunk]), timeout=120)
                except grpc.RpcError as exc:
                    errors.append(exc)

        workers = [threading.Thread(target=loop) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if errors:
            raise RuntimeError(f"warming the server's cache failed: {errors[0]}")
    return time.perf_counter() - began


# -- running groups --------------------------------------------------------------------------------


def _sum_store(watched: dict[str, float]) -> float:
    values = [v for k, v in watched.items() if k != "server"]
    return sum(values) if values else math.nan


def run_grpc_group(
    target: ab.Target,
    ds: rd.Dataset,
    cases: Sequence[Case],
    s: Settings,
    binary: Path,
    flag: bool,
    log: rd.Log,
) -> list[Result]:
    first = cases[0]
    size = cache_bytes(first, ds.label, ds.entities)
    results = [Result(c, size) for c in cases]
    a, b = rk.perm_params(ds.entities)
    with Serve(target, ds.data_dir, size, flag, s.front) as server:
        warm = 0.0
        if first.cache:
            count = math.ceil(ds.entities * first.cache / 100)
            warm = warm_grpc(server.port, ds.label, first.fgs, rk.hot_first(ds.entities, count).tolist())
        watch = {"server": server.pid, **rd.service_pids(ds.kind)}
        for r in results:
            c = r.case
            r.warm_seconds = warm
            common = {
                "addr": f"127.0.0.1:{server.port}",
                "entity": ds.label,
                "fgs": c.fgs,
                "keys": c.keys,
                "entities": ds.entities,
                "dist": c.dist,
                "zipf-s": rk.ZIPF_S,
                "perm-a": a,
                "perm-b": b,
                "check-every": CHECK_EVERY,
                "conns": SAT_CONNS,
                "seconds": s.seconds,
                "watch": ",".join(f"{k}={v}" for k, v in watch.items()),
            }
            try:
                log(f"  {c.name()}: saturation")
                r.sat = _grpc_run(
                    server,
                    binary,
                    ds.label,
                    {**common, "inflight": SAT_INFLIGHT, "warmup": s.warmup, "seed": seed(c, "sat")},
                    s,
                )
                gb.wait_idle(server.pid, timeout=60)
                rate = max(1.0, 0.5 * r.sat.rps)
                log(f"  {c.name()}: open loop at {rate:,.0f}/s")
                r.half = _grpc_run(
                    server,
                    binary,
                    ds.label,
                    {
                        **common,
                        "rate": f"{rate:.3f}",
                        "max-inflight": OPEN_SENDERS,
                        "warmup": 0.5,
                        "seed": seed(c, "half"),
                    },
                    s,
                )
                gb.wait_idle(server.pid, timeout=60)
                log(f"  {c.name()}: the same open loop against a null server")
                r.floor = null_floor(binary, c, {**common, "rate": f"{rate:.3f}"}, s)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                r.error = str(exc)[-600:]
                log(f"  {c.name()}: FAILED {r.error}")
    return results


def null_floor(binary: Path, c: Case, common: dict[str, Any], s: Settings) -> Run:
    """The half-load open loop of ``c`` (same rate, connections and senders) against ``loadgen
    -serve-null`` answering the case's response bytes at once: the latency the generator, the loopback
    and the machine's wake-ups add with no server work at all (the floor of the half-load p99)."""
    with null_server(binary, null_answer(c.keys, c.fgs)) as (port, pid):
        args = {
            **common,
            "addr": f"127.0.0.1:{port}",
            "check-every": 0,  # the canned answer names other keys
            "max-inflight": OPEN_SENDERS,
            "warmup": 0.5,
            "seed": seed(c, "half"),
            "watch": f"server={pid}",
        }
        out = loadgen(binary, args, timeout=s.seconds + 300)
    return Run(
        requests=out["requests"],
        rps=out["rps"],
        p50_ms=out["p50_ms"],
        p99_ms=out["p99_ms"],
        cores=(out.get("watched_cores") or {}).get("server", math.nan),
        store_cores=math.nan,
        gen_cores=out["cpu_seconds"] / out["seconds"] if out["seconds"] else math.nan,
        hit_ratio=math.nan,
        target_rate=out.get("target_rate", 0.0),
        late=out.get("late_sends", 0),
        errors=out.get("errors") or {},
        check_failures=0,
        check_error="",
    )


def _grpc_run(server: Serve, binary: Path, entity: str, args: dict[str, Any], s: Settings) -> Run:
    before, buckets = server.cache_lookups(entity), retrieve_buckets(server.metrics_port)
    out = loadgen(binary, args, timeout=s.seconds + s.warmup + 300)
    after = server.cache_lookups(entity)
    within_1ms, inside_p99 = inside_server(buckets, retrieve_buckets(server.metrics_port))
    hit = math.nan
    if before is not None and after is not None:
        hits, misses = after[0] - before[0], after[1] - before[1]
        hit = hits / (hits + misses) if hits + misses else math.nan
    watched = out.get("watched_cores") or {}
    cpu_s = out["cpu_seconds"]
    return Run(
        requests=out["requests"],
        rps=out["rps"],
        p50_ms=out["p50_ms"],
        p99_ms=out["p99_ms"],
        cores=watched.get("server", math.nan),
        store_cores=_sum_store(watched),
        gen_cores=cpu_s / out["seconds"] if out["seconds"] else math.nan,
        hit_ratio=hit,
        target_rate=out.get("target_rate", 0.0),
        late=out.get("late_sends", 0),
        errors=out.get("errors") or {},
        check_failures=out.get("check_failures", 0),
        check_error=out.get("check_error", ""),
        within_1ms=within_1ms,
        inside_p99_ms=inside_p99,
    )
