"""Issue #18: ``ofs serve``'s compiled front against the grpcio front it replaced, in one run, on one
server core.

    python bench/front_bench.py --grpcio-baseline ../ofs-grpcio     # prints markdown
    python bench/front_bench.py --grpcio-baseline ../ofs-grpcio --write-results   # ... into RESULTS.md
    python bench/front_bench.py --smoke            # tiny and short, the compiled front only

The baseline is a checkout from before the grpcio front left ``ofs serve`` (its ``--front grpcio``), with
its own ``.venv``: ``git worktree add ../ofs-grpcio 8a90d4a && (cd ../ofs-grpcio && scripts/bootstrap)``.
Without ``--grpcio-baseline`` only the compiled front is measured.

Cases: 1 and 100 keys x 64 fp32 features (one FG) per request, the keys drawn afresh and uniformly for
every request from ``--entities`` entities by the Go load generator (``bench/loadgen``: h2load repeats one
request body, which would measure one set of keys), against two entities:

- cache hit: the entity's in-process cache on, warmed with every key before the runs (a hit still parses,
  plans and encodes the whole request and response);
- Redis: stored in Redis (``scripts/services/redis``), no cache: every request makes its store round trip.

Each front is ``ofs serve`` (1 worker; the baseline's with ``--front grpcio``) pinned to one core with
``taskset -c``; the generator to the other core(s) (Redis is not pinned). "saturated": a closed loop of 8
connections x 16 requests in flight; "half of saturation": an open loop at half the rate the same server
just reached saturated (where the p99 goals are read); "1 in flight": one connection, one request. The
generator decodes and checks the first and every 64th answer (one row per key, in order, every FG found,
64 cells). Server cores: CPU seconds of the server's process tree over the measured window (``/proc``),
so "per core" divides by what the server used. After each half-load run of the compiled front, the same
open loop runs against ``loadgen -serve-null`` pinned to the server's core (a server that answers the
case's bytes at once): the floor of latency the generator and the machine set, printed beside it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import abuse_bench as ab  # noqa: E402
import grpc_bench as gb  # noqa: E402  (bench/ is a directory of scripts, not a package)
from realistic_grpc import (  # noqa: E402
    build_loadgen,
    inside_server,
    loadgen,
    null_answer,
    null_server,
    retrieve_buckets,
)

FRONTS = ("grpcio", "native")
NULL = "null server"
"""The floor of the half-load runs: the generator against ``loadgen -serve-null`` (see :func:`floor`)."""
"""The baseline (the grpcio front, from ``--grpcio-baseline``) and ``ofs serve``'s compiled front."""
SERVER_CPU = str(max(0, (os.cpu_count() or 1) - 1))
"""The core the server is pinned to (``taskset -c``): the last one."""
GENERATOR_CPUS = f"0-{max(0, (os.cpu_count() or 1) - 2)}"
"""The cores the generator is pinned to: every other one (so it never takes the server's core)."""
SATURATED = (8, 16)
ONE = (1, 1)
"""(connections, requests in flight) of the generator's closed loop."""
HALF = "half of saturation"
LOADS = (("saturated", SATURATED), (HALF, (8, 512)), ("1 in flight", ONE))
"""The loads of each case, in order: half of saturation is an open loop at half the saturated rate just
measured on the same server (8 connections, at most 512 requests outstanding), where p99 is read."""


@dataclass
class Run:
    front: str
    case: str
    keys: int
    load: str
    rps: float
    p50_ms: float
    p99_ms: float
    server_cores: float
    errors: int
    server_within_1ms: float | None = None
    """With metrics on: the share of the run's calls whose time inside the server (the metrics' latency
    histogram, handler start to answer) was at most 1 ms."""

    @property
    def per_core(self) -> float:
        """Requests per second per server core."""
        return self.rps / self.server_cores if self.server_cores > 0 else float("nan")


def warm(port: int, entity: str, n_entities: int) -> None:
    """Every key of ``entity`` read once, so its in-process cache holds them all."""
    import grpc

    from online_feature_store._proto import retrieve_pb2

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(gb.RETRIEVE_PATH, request_serializer=None, response_deserializer=None)
        for start in range(0, n_entities, 500):
            q = retrieve_pb2.Query(
                entity_label=entity,
                feature_groups=[retrieve_pb2.FeatureGroup(label="fg0", feature_labels=gb.FEATURES)],
                keys_schema=["user_id"],
                keys=[
                    retrieve_pb2.Keys(cols=[gb.key(i)]) for i in range(start, min(start + 500, n_entities))
                ],
            )
            call(q.SerializeToString(), timeout=60)


def measure(
    binary: Path,
    server: gb.Server,
    entity: str,
    keys: int,
    load: tuple[int, int],
    args: argparse.Namespace,
    rate: float = 0.0,
    persist: bool = False,
) -> dict[str, Any]:
    """One load of ``keys`` keys per request of ``entity`` on ``server`` (``persist``: persists of
    them, ``loadgen -persist``), the server's cores watched."""
    conns, inflight = load
    shape = {"rate": rate, "max-inflight": inflight} if rate > 0 else {"inflight": inflight}
    if persist:
        shape["persist"] = "true"
    return loadgen(
        binary,
        {
            "addr": f"127.0.0.1:{server.port}",
            "entity": entity,
            "fgs": 1,
            "keys": keys,
            "entities": args.entities,
            "conns": conns,
            **shape,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "check-every": 64,
            "seed": 18,
            "watch": f"server={server.pid}",
        },
        timeout=args.seconds + args.warmup + 300,
        cpus=GENERATOR_CPUS,
    )


def run(args: argparse.Namespace) -> list[Run]:
    gb.ensure_proto()
    run_id = f"{os.getpid():x}{int(time.time()) % 100000:x}"
    hit = gb.BenchEntity(f"fb_hit_{run_id}", "sqlite", True, 1)
    redis = gb.BenchEntity(f"fb_redis_{run_id}", "redis", False, 1)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="ofs-front-bench-") as tmp:
        work = Path(tmp)
        binary = build_loadgen(work)
        gb.apply_registry(work, gb.registry_doc([hit, redis]))
        try:
            gb.load_data(work, [hit, redis], args.entities)
            for keys in args.keys:
                for case, entity in (("cache hit", hit), ("Redis", redis)):
                    # The fronts one after the other for each case, so a change in the machine's load
                    # between cases hits both alike; each front's server runs the case's three loads.
                    for front in fronts(args):
                        baseline = front == "grpcio"
                        server = gb.Server(
                            work,
                            1,
                            front="grpcio" if baseline else None,
                            cpus=SERVER_CPU,
                            metrics=args.metrics,
                            python=args.grpcio_baseline if baseline else None,
                        )
                        with server:
                            if entity.cache:
                                warm(server.port, entity.label, args.entities)
                            saturated = 0.0
                            for load_name, load in LOADS:
                                rate = saturated / 2 if load_name == HALF else 0.0
                                before = retrieve_buckets(server.metrics_port)
                                out = measure(binary, server, entity.label, keys, load, args, rate)
                                within, _p99 = inside_server(before, retrieve_buckets(server.metrics_port))
                                saturated = out["rps"] if load_name == "saturated" else saturated
                                errors = sum((out.get("errors") or {}).values()) + out.get(
                                    "check_failures", 0
                                )
                                runs.append(
                                    Run(
                                        front,
                                        case,
                                        keys,
                                        load_name,
                                        out["rps"],
                                        out["p50_ms"],
                                        out["p99_ms"],
                                        (out.get("watched_cores") or {}).get("server", float("nan")),
                                        errors,
                                        None if math.isnan(within) else within,
                                    )
                                )
                                print(runs[-1], file=sys.stderr, flush=True)
                                if load_name == HALF and front == "native":
                                    runs.append(floor(binary, case, keys, rate, args))
                                    print(runs[-1], file=sys.stderr, flush=True)
        finally:
            gb.delete_our_redis_keys([redis.label])
    return runs


def floor(binary: Path, case: str, keys: int, rate: float, args: argparse.Namespace) -> Run:
    """The same open loop (rate, connections, senders) against ``loadgen -serve-null`` pinned to the
    server's core, answering the case's response bytes at once: the latency of the generator, the
    loopback and the cores' wake-ups with no server work at all, under which no server can answer."""
    conns, inflight = dict(LOADS)[HALF]
    with null_server(binary, null_answer(keys, 1), cpus=SERVER_CPU) as (port, pid):
        out = loadgen(
            binary,
            {
                "addr": f"127.0.0.1:{port}",
                "entity": "null",
                "fgs": 1,
                "keys": keys,
                "entities": args.entities,
                "conns": conns,
                "rate": rate,
                "max-inflight": inflight,
                "seconds": args.seconds,
                "warmup": args.warmup,
                "check-every": 0,  # the canned answer names other keys
                "seed": 18,
                "watch": f"server={pid}",
            },
            timeout=args.seconds + args.warmup + 300,
            cpus=GENERATOR_CPUS,
        )
    errors = sum((out.get("errors") or {}).values())
    cores = (out.get("watched_cores") or {}).get("server", float("nan"))
    return Run(NULL, case, keys, HALF, out["rps"], out["p50_ms"], out["p99_ms"], cores, errors)


def floor_note(runs: Sequence[Run]) -> str:
    """The half-load runs of the compiled front beside the same load against a null server."""
    by = {(r.front, r.case, r.keys): r for r in runs if r.load == HALF}
    parts = []
    for (front, case, keys), null in by.items():
        native = by.get(("native", case, keys))
        if front != NULL or native is None:
            continue
        parts.append(
            f"{keys} key(s) {case} at {null.rps:,.0f} req/s: compiled front {native.p50_ms:.2f} / "
            f"{native.p99_ms:.2f} ms, null server {null.p50_ms:.2f} / {null.p99_ms:.2f} ms"
        )
    if not parts:
        return ""
    return (
        "\nFloor of the half-load latencies (p50 / p99): the same open loop against `loadgen -serve-null` "
        "(a Go gRPC server answering the case's response bytes at once) pinned to the server's core, so "
        "the generator, the loopback and the cores' wake-ups are all that is measured: "
        + "; ".join(parts)
        + ".\n"
    )


def fronts(args: argparse.Namespace) -> tuple[str, ...]:
    """The fronts this run measures: the baseline only when a checkout of it is given."""
    return FRONTS if args.grpcio_baseline else ("native",)


def native_table(runs: Sequence[Run]) -> str:
    runs = [r for r in runs if r.front != NULL]
    rows = [
        "| keys | data | load | req/s | req/s per core | p50 / p99 ms |",
        "|---:|---|---|---:|---:|---|",
    ]
    for r in runs:
        rows.append(
            f"| {r.keys} | {r.case} | {r.load} | {r.rps:,.0f} | {r.per_core:,.0f} "
            f"| {r.p50_ms:.2f} / {r.p99_ms:.2f} |"
        )
    return "\n".join(rows) + "\n"


def table(runs: Sequence[Run]) -> str:
    if not any(r.front == "grpcio" for r in runs):
        return native_table(runs)
    rows = [
        "| keys | data | load | grpcio req/s | native req/s | grpcio req/s per core | native req/s per core "
        "| native / grpcio per core | grpcio p50 / p99 ms | native p50 / p99 ms |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    by = {(r.front, r.case, r.keys, r.load): r for r in runs}
    for keys in sorted({r.keys for r in runs}):
        for case in ("cache hit", "Redis"):
            for load in [name for name, _ in LOADS]:
                g, n = by.get(("grpcio", case, keys, load)), by.get(("native", case, keys, load))
                if g is None or n is None:
                    continue
                ratio = n.per_core / g.per_core if g.per_core > 0 else float("nan")
                rows.append(
                    f"| {keys} | {case} | {load} | {g.rps:,.0f} | {n.rps:,.0f} | {g.per_core:,.0f} "
                    f"| {n.per_core:,.0f} | **{ratio:.2f}x** | {g.p50_ms:.2f} / {g.p99_ms:.2f} "
                    f"| {n.p50_ms:.2f} / {n.p99_ms:.2f} |"
                )
    return "\n".join(rows) + "\n"


def render(runs: Sequence[Run], info: dict[str, str], command: str, args: argparse.Namespace) -> str:
    errors = sum(r.errors for r in runs)
    rows_note = ", ".join(
        f"{r.keys} keys {r.case}: grpcio {by_rows(runs, 'grpcio', r)} / native {by_rows(runs, 'native', r)}"
        for r in runs
        if r.front == "native" and r.load == "saturated" and r.keys > 1
    )
    return (
        f"Command: `{command}` ({info['date']}). Machine: {info['cpu']}, {info['os']}, Python "
        f"{info['python']}, online-feature-store {info['ofs']}. Load average before the run: {info['load']} "
        f"(after: {info.get('load_after', 'n/a')}); **the 2 cores are shared with other engineers' builds**, "
        "so compare the two fronts within this run, not with other sections.\n\n"
        f"Server: `ofs serve` (compiled front) and, as the baseline, `ofs serve --front grpcio` of "
        f"{args.grpcio_baseline or '(none this run)'}; 1 worker, metrics {'on' if args.metrics else 'off'}, "
        f"pinned with `taskset -c {SERVER_CPU}`; the generator (`bench/loadgen`, Go) with `taskset -c "
        f"{GENERATOR_CPUS}`. Keys drawn afresh and uniformly per request "
        f"from {args.entities:,} entities; one FG of 64 fp32. Cache hit = in-process cache on and warmed "
        "with every key; Redis = the store is Redis, no cache, a round trip per request. Saturated = 8 "
        "connections x 16 in flight; half of saturation = an open loop at half the saturated rate of the "
        "same server (p99 read there); per core = requests/s divided by the server's CPU seconds per second. "
        f"Failed or wrong answers in all runs: {errors}.\n\n" + table(runs) + "\n"
        f"Entity rows/s per core at 100 keys, saturated: {rows_note}.\n"
        + server_note(runs)
        + floor_note(runs)
    )


def server_note(runs: Sequence[Run]) -> str:
    """With metrics on: how much of each half-load run's calls took ≤ 1 ms inside the server."""
    seen = [r for r in runs if r.load == HALF and r.server_within_1ms is not None]
    if not seen:
        return ""
    parts = ", ".join(
        f"{r.front} {r.keys} key(s) {r.case} {100 * (r.server_within_1ms or 0):.2f} %" for r in seen
    )
    return (
        "\nAt half of saturation, the share of calls that took ≤ 1 ms inside the server (its "
        f"`ofs_request_duration_seconds` histogram, warm-up included): {parts}.\n"
    )


def by_rows(runs: Sequence[Run], front: str, like: Run) -> str:
    for r in runs:
        if (r.front, r.case, r.keys, r.load) == (front, like.case, like.keys, like.load):
            return f"{r.per_core * r.keys:,.0f}"
    return "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", default="1,100", help="comma-separated keys per request (default 1,100)")
    p.add_argument(
        "--entities", type=int, default=10_000, help="entities keys are drawn from (default 10000)"
    )
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each (default 1)")
    p.add_argument(
        "--metrics",
        action="store_true",
        help="servers with Prometheus metrics on (default off, as bench/grpc_bench.py runs them)",
    )
    p.add_argument(
        "--grpcio-baseline",
        metavar="CHECKOUT",
        help="a checkout (with .venv) whose ofs serve still has --front grpcio: the baseline (default: none)",
    )
    p.add_argument("--smoke", action="store_true", help="1 key, 200 entities, 0.5 s runs")
    p.add_argument("--write-results", action="store_true", help="replace this section of bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.grpcio_baseline:
        args.grpcio_baseline = str(ab.Target.resolve(args.grpcio_baseline).python)
    if args.smoke:
        args.keys, args.entities, args.seconds, args.warmup = "1", 200, 0.5, 0.2
    args.keys = [int(k) for k in args.keys.split(",")]
    info = gb.machine()
    runs = run(args)
    info["load_after"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    command = "python bench/front_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(runs, info, command.strip(), args)
    print(text)
    if args.write_results:
        tag = "front-bench-metrics" if args.metrics else "front-bench"  # both runs keep their numbers
        gb.write_section(tag, "## #18 compiled front (first increment)", text)
    return 0 if all(r.errors == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
