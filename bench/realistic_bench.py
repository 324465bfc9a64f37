"""Realistic read load (issue #17): many entities, keys drawn afresh for every request, caches smaller than
the data, real stores, in process and over gRPC.

    python bench/realistic_bench.py                       # --quick + the goal cases, this checkout
    python bench/realistic_bench.py --full                # the whole matrix (hours)
    python bench/realistic_bench.py --goals-only
    python bench/realistic_bench.py --ofs /work/other --label after --baseline bench/realistic_baseline.json
    python bench/realistic_bench.py --full --stores redis --keys 100,500 --fgs 1   # pick dimensions
    python bench/realistic_bench.py --smoke               # tiny: what bench/test_realistic_bench.py runs
    python bench/realistic_bench.py --drop-data redis,cassandra    # delete the kept datasets

**System under test** (``--ofs``, as in bench/abuse_bench.py): a checkout (its ``.venv``), a virtualenv or
an interpreter; default this one. Everything that touches the feature store runs in that interpreter:
``ofs registry apply``, ``ofs push`` (or ``FeatureStore.persist``), ``ofs serve``, and
``bench/realistic_worker.py`` for the embedded cases; this file only orchestrates, loads the generator
and reads /proc and the server's metrics.

**Data** (bench/realistic_data.py): one entity of 10 FGs x 64 fp32 per store kind, ``--entities``
entities (default 1,000,000), loaded once through the target's fastest path and kept for later runs of
the same target version. Stores: SQLite, Redis, Redis Cluster, Cassandra on their fixed ports
(docs/developing.md).

**Keys** (bench/realistic_keys.py): every request names ``keys`` distinct entities drawn afresh,
uniformly or by Zipf popularity (s = 1.1), hot entities spread over the key space.

**Cache**: the in-process cache is sized in bytes for 0 / 10 / 50 / 100 % of the working set (every
entity, with the FGs the case asks for), by the cache's own accounting (docs/capacity.md: label + key +
2 + per FG (4 + 265-byte block) + 64 per entry). 0 % means no in-process cache: every key is read from
the store. The cache is warmed with the most popular ``cache %`` of the entities before the group's
cases; each case then runs its own traffic for ``--warmup`` seconds unmeasured. The hit ratio is
observed: the server's ``ofs_cache_lookups_total`` (Prometheus) over gRPC, the ``cache_lookup`` hook
of ``FeatureStore(metrics=…)`` in process.

**Paths**:
- embedded: ``FeatureStore.retrieve`` in a worker process: one thread back to back (latency, rows/s,
  the process's cores), ``--threads`` threads back to back (saturation), then an open loop at half of
  that saturation (latency from when each call was due).
- gRPC: ``ofs serve --workers 1`` with the case's cache size (the server has no setting for it yet: its
  ``FeatureStore``'s ``cache_bytes`` default is set before ``ofs serve`` starts, unless the target's
  ``ofs serve`` has ``--cache-bytes``), driven by the Go generator ``bench/loadgen``: closed loop of
  16 requests in flight on 8 connections (saturation), then an open loop at half of the measured
  saturation. The server's cores are its process tree's CPU time over the measured window (/proc), as
  in bench/grpc_bench.py; rows/s per core divides by them. The store's processes (Redis, the Cassandra
  JVM) and the generator are measured apart, since all of them share the machine's cores.

The generator's own ceiling is measured first against a null server (``loadgen -serve-null``), which
answers every call at once with a canned answer of the case's size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import abuse_bench as ab  # noqa: E402  (bench/ is a directory of scripts, not a package)
import grpc_bench as gb  # noqa: E402
import realistic_data as rd  # noqa: E402
import realistic_grpc as rg  # noqa: E402
import realistic_keys as rk  # noqa: E402
import realistic_report as rr  # noqa: E402
from realistic_cases import (  # noqa: E402
    ALL,
    GOALS,
    Case,
    Result,
    Run,
    Settings,
    cache_bytes,
    product,
    quick_cases,
    seed,
)


def run_embedded_group(
    target: ab.Target, ds: rd.Dataset, cases: Sequence[Case], s: Settings, log: rd.Log
) -> list[Result]:
    first = cases[0]
    size = cache_bytes(first, ds.label, ds.entities)
    results = [Result(c, size) for c in cases]
    params = {
        "data_dir": str(ds.data_dir),
        "entity": ds.label,
        "entities": ds.entities,
        "fgs": first.fgs,
        "cache_bytes": size,
        "warm_entities": math.ceil(ds.entities * first.cache / 100) if size else 0,
        "seed": seed(first, "embedded"),
        "seconds": s.seconds,
        "warmup": s.warmup,
        "threads": s.threads,
        "watch_pids": rd.service_pids(ds.kind),
        "cases": [{"keys": c.keys, "dist": c.dist} for c in cases],
    }
    if ds.kind == "redis" and not size:
        # Every key a miss to Redis: the same keys' bare MGET is the floor of the 1-thread latency.
        params["floor"] = {"url": rd.store_decl("redis")["settings"]["url"], "prefix": f"ofs:s:{ds.label}:"}
    log(f"  embedded: {', '.join(f'{c.dist}/{c.keys} keys' for c in cases)}")
    try:
        out = rd.worker(
            target, "embedded", params, ds.data_dir, timeout=3600 + len(cases) * (4 * s.seconds + 60)
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        for r in results:
            r.error = str(exc)[-600:]
        return results
    for r, got in zip(results, out["cases"], strict=True):
        r.warm_seconds = out["warm_seconds"]
        r.single = _embedded_run(got["single"])
        r.sat = _embedded_run(got["saturation"])
        r.half = _embedded_run(got["half"])
        if "floor" in got:
            r.floor = _embedded_run(got["floor"])
    return results


def _embedded_run(d: dict[str, Any]) -> Run:
    watched = d.get("watched_cores") or {}
    return Run(
        requests=d["requests"],
        rps=d["rps"],
        p50_ms=d["p50_ms"],
        p99_ms=d["p99_ms"],
        cores=d["cores"],
        store_cores=sum(watched.values()) if watched else math.nan,
        hit_ratio=d["hit_ratio"],
        target_rate=d.get("target_rate", 0.0),
        late=d.get("late", 0),
    )


def run_cases(
    target: ab.Target,
    cases: Sequence[Case],
    s: Settings,
    work: Path,
    data_key: str,
    *,
    reload: bool,
    flag: bool,
    ceiling_shapes: Sequence[tuple[int, int]],
    log: rd.Log,
) -> tuple[list[Result], list[rg.Ceiling], dict[str, rd.Loaded]]:
    """Every case (grouped so that cases sharing a process and a warm cache run together)."""
    kinds = sorted({c.store for c in cases}, key=rd.STORE_KINDS.index)
    wanted = [rd.Dataset(k, s.entities, rd.N_FGS, data_key, work) for k in kinds]
    binary = rg.build_loadgen(work) if any(c.mode == "grpc" for c in cases) or ceiling_shapes else None
    ceilings: list[rg.Ceiling] = []
    if binary is not None and ceiling_shapes:
        log("generator ceiling (null server)")
        ceilings = rg.ceiling(binary, ceiling_shapes, s.ceiling_seconds)
    results: list[Result] = []
    with rd.datasets(target, wanted, reload=reload, log=log) as loaded:
        by_kind = {ds.kind: ds for ds in wanted}
        groups: dict[tuple[str, int, str, int], list[Case]] = {}
        for c in sorted(cases):
            groups.setdefault(c.group, []).append(c)
        for (store, cache, mode, fgs), group in groups.items():
            started = time.monotonic()
            log(f"{store}, cache {cache} %, {mode}, {fgs} FG(s): {len(group)} case(s)")
            ds = by_kind[store]
            if mode == "grpc":
                assert binary is not None
                results += rg.run_grpc_group(target, ds, group, s, binary, flag, log)
            else:
                results += run_embedded_group(target, ds, group, s, log)
            log(f"  {time.monotonic() - started:.0f} s")
    return results, ceilings, loaded


# -- main ------------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def select(args: argparse.Namespace) -> list[Case]:
    """The cases of this run: the chosen set, restricted by the dimension flags."""
    dims = {
        "stores": _words(args.stores) if args.stores else None,
        "caches": _ints(args.caches) if args.caches else None,
        "modes": _words(args.modes) if args.modes else None,
        "fgs": _ints(args.fgs) if args.fgs else None,
        "dists": _words(args.dists) if args.dists else None,
        "keys": _ints(args.keys) if args.keys else None,
    }
    for name, values in dims.items():
        allowed = ALL[name]
        bad = [v for v in values or [] if v not in allowed]
        if bad:
            raise SystemExit(f"--{name} {bad}: choose from {','.join(map(str, allowed))}")
    if args.full:
        cases = product(*(dims[n] or ALL[n] for n in ALL))  # type: ignore[arg-type]
    elif args.goals_only:
        cases = []
    else:
        cases = quick_cases()
    if not args.no_goals:
        cases += list(GOALS.values())
    chosen = []
    for c in dict.fromkeys(cases):
        if all(
            dims[n] is None or getattr(c, attr) in dims[n]  # type: ignore[operator]
            for n, attr in (
                ("stores", "store"),
                ("caches", "cache"),
                ("modes", "mode"),
                ("fgs", "fgs"),
                ("dists", "dist"),
                ("keys", "keys"),
            )
        ):
            chosen.append(c)
    for c in chosen:
        if c.dist == "zipf" and c.keys > args.entities // 2:
            raise SystemExit(f"{c.name()}: Zipf keys are distinct: at most --entities / 2 per request")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    d = Settings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ofs", "--python", dest="ofs", help="checkout, virtualenv or interpreter to run")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="the representative subset (default)")
    which.add_argument("--full", action="store_true", help="every combination of the dimensions")
    which.add_argument("--goals-only", action="store_true", help="only the goal cases")
    p.add_argument("--no-goals", action="store_true", help="leave the goal cases out")
    p.add_argument("--stores", help=f"comma-separated subset of {','.join(ALL['stores'])}")
    p.add_argument("--caches", help="cache sizes, percent of the working set: 0,10,50,100")
    p.add_argument("--modes", help="embedded,grpc")
    p.add_argument("--fgs", help="FGs per request: 1,3,10")
    p.add_argument("--dists", help="uniform,zipf")
    p.add_argument("--keys", help="keys per request: 1,10,100,500")
    p.add_argument("--entities", type=int, default=d.entities, help="entities loaded (default 1,000,000)")
    p.add_argument("--seconds", type=float, default=d.seconds, help="measured seconds per load")
    p.add_argument("--warmup", type=float, default=d.warmup, help="unmeasured seconds before each load")
    p.add_argument("--threads", type=int, default=d.threads, help="embedded threads at saturation")
    p.add_argument(
        "--ceiling-seconds",
        type=float,
        default=d.ceiling_seconds,
        help="seconds per generator-ceiling shape (0: skip)",
    )
    p.add_argument("--work", type=Path, default=rd.default_work(), help="datasets, Parquet files, binaries")
    p.add_argument("--data-key", help="dataset name (default: the target's version and commit)")
    p.add_argument("--reload", action="store_true", help="load the datasets again even if present")
    p.add_argument(
        "--drop-data", metavar="KINDS", help="delete this bench's datasets of these stores and exit"
    )
    p.add_argument(
        "--load-only", action="store_true", help="load (or check) the datasets of --stores and exit"
    )
    p.add_argument("--smoke", action="store_true", help="tiny SQLite run: checks it all works")
    p.add_argument("--label", default="run", help="name of this run in the results")
    p.add_argument(
        "--front",
        default="",
        choices=["", "grpcio", "native"],
        help="`ofs serve --front` of the gRPC cases, for a target from before the grpcio front left ofs "
        "serve (8a90d4a and older; today's ofs serve has only the compiled front and no such flag)",
    )
    p.add_argument("--baseline", type=Path, help="JSON of an earlier run (--json): goal 1's 3x is against it")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--write-results", action="store_true", help="replace this label's block of RESULTS.md")
    args = p.parse_args(argv)
    log = _logger()
    if args.drop_data:
        for kind in _words(args.drop_data):
            rd.drop(kind, args.work, log)
        return 0
    ceiling_shapes: list[tuple[int, int]] = [(1, 1), (100, 1), (100, 10), (500, 1)]
    if args.smoke:
        args.entities, args.seconds, args.warmup, args.threads = 2000, 0.3, 0.2, 2
        args.ceiling_seconds = 0.5
        args.stores = args.stores or "sqlite"
        args.keys = args.keys or "10"
        args.no_goals = True
        ceiling_shapes = [(10, 1)]
        modes = _words(args.modes) if args.modes else ALL["modes"]
        cases = product(_words(args.stores), (0, 100), modes, (1,), rk.DISTRIBUTIONS, _ints(args.keys))
    else:
        cases = select(args)
    if args.ceiling_seconds <= 0:
        ceiling_shapes = []
    s = Settings(args.entities, args.seconds, args.warmup, args.threads, args.ceiling_seconds, args.front)
    target = ab.Target.resolve(args.ofs)
    info = gb.machine()
    info["sut"] = target.describe()
    args.work.mkdir(parents=True, exist_ok=True)
    data_key = args.data_key or rd.default_data_key(target, args.work)
    if args.load_only:
        kinds = sorted({c.store for c in cases}, key=rd.STORE_KINDS.index)
        wanted = [rd.Dataset(k, s.entities, rd.N_FGS, data_key, args.work) for k in kinds]
        with rd.datasets(target, wanted, reload=args.reload, log=log) as loaded:
            for ld in loaded.values():
                print(json.dumps(asdict(ld)))
        return 0
    flag = "--cache-bytes" in target.run(["serve", "--help"], args.work, timeout=120).stdout
    log(f"{len(cases)} cases against {info['sut']}; data key {data_key}")
    results, ceilings, loaded = run_cases(
        target,
        cases,
        s,
        args.work,
        data_key,
        reload=args.reload,
        flag=flag,
        ceiling_shapes=ceiling_shapes,
        log=log,
    )
    info["load_after"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    baseline = json.loads(args.baseline.read_text())["goals"] if args.baseline else None
    gs = rr.goals(results, baseline)
    how = (
        "`ofs serve --cache-bytes`"
        if flag
        else "`FeatureStore(cache_bytes=…)`'s default set before `ofs serve` starts (no server setting)"
    )
    command = "python bench/realistic_bench.py " + " ".join(argv)
    text = rr.render(results, gs, ceilings, loaded, info, s, args.label, command.strip(), how)
    print(text)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "info": info,
                    "settings": asdict(s),
                    "goals": rr.baseline_values(gs),
                    "ceilings": [asdict(c) for c in ceilings],
                    "loaded": {k: asdict(v) for k, v in loaded.items()},
                    "results": [asdict(r) for r in results],
                },
                indent=1,
                default=str,
            )
        )
    if args.write_results:
        gb.write_section(f"realistic-bench-{args.label}", "## Realistic load (issue #17)", text)
    return 0 if not any(rr.failures(r) for r in results) else 1


def _logger() -> rd.Log:
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    return log


if __name__ == "__main__":
    sys.exit(main())
