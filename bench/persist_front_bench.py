"""Issue #18: persists on ``ofs serve``'s compiled front through the native write path, against a checkout
whose front hands every persist to Python (``Calls.run``), in one run, on one server core.

    python bench/persist_front_bench.py --baseline ../ofs-before     # prints markdown
    python bench/persist_front_bench.py --baseline ../ofs-before --write-results   # ... into RESULTS.md
    python bench/persist_front_bench.py --smoke      # tiny and short, this checkout only

The baseline is a checkout from before the native write path (5d538be or older, with its own ``.venv``:
``git worktree add ../ofs-before 5d538be && (cd ../ofs-before && scripts/bootstrap)``).

Cases: 1 and 100 keys x 64 fp32 features (one FG) per persist, the keys drawn afresh and uniformly for
every request from ``--entities`` entities by the Go load generator (``bench/loadgen -persist``), into
two entities:

- SQLite: the embedded store with the in-process cache on and the host's invalidation log as the bus
  (``ofs serve``'s defaults): each persist is one fsynced transaction, then its keys are dropped from
  the cache and one row is appended to the log;
- Redis: the store is Redis, no cache: each persist is one round trip.

Each server is ``ofs serve`` (1 worker) pinned to one core with ``taskset -c``, the generator to the
other core(s). "saturated": 8 connections x 16 requests in flight; "1 in flight": one connection, one
request. Every 64th answer is checked (the reference's success message). Per core = requests/s divided
by the server process tree's CPU seconds per second over the measured window.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import abuse_bench as ab  # noqa: E402
import grpc_bench as gb  # noqa: E402  (bench/ is a directory of scripts, not a package)
from front_bench import GENERATOR_CPUS, SERVER_CPU, measure  # noqa: E402
from realistic_grpc import build_loadgen  # noqa: E402

LOADS = (("saturated", (8, 16)), ("1 in flight", (1, 1)))
"""(connections, requests in flight) of the generator's closed loop."""


@dataclass
class Run:
    server: str
    case: str
    keys: int
    load: str
    rps: float
    p50_ms: float
    p99_ms: float
    server_cores: float
    errors: int

    @property
    def per_core(self) -> float:
        """Persists per second per server core."""
        return self.rps / self.server_cores if self.server_cores > 0 else float("nan")


def run(args: argparse.Namespace) -> list[Run]:
    gb.ensure_proto()
    run_id = f"{os.getpid():x}{int(time.time()) % 100000:x}"
    sqlite = gb.BenchEntity(f"pb_sqlite_{run_id}", "sqlite", True, 1)
    redis = gb.BenchEntity(f"pb_redis_{run_id}", "redis", False, 1)
    servers = (("Python path", args.baseline), ("native", None)) if args.baseline else (("native", None),)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="ofs-persist-bench-") as tmp:
        work = Path(tmp)
        binary = build_loadgen(work)
        gb.apply_registry(work, gb.registry_doc([sqlite, redis]))
        try:
            for keys in args.keys:
                for case, entity in (("SQLite", sqlite), ("Redis", redis)):
                    for name, python in servers:
                        with gb.Server(work, 1, cpus=SERVER_CPU, python=python) as server:
                            for load_name, load in LOADS:
                                out = measure(binary, server, entity.label, keys, load, args, persist=True)
                                errors = sum((out.get("errors") or {}).values()) + out.get(
                                    "check_failures", 0
                                )
                                cores = (out.get("watched_cores") or {}).get("server", float("nan"))
                                runs.append(
                                    Run(
                                        name,
                                        case,
                                        keys,
                                        load_name,
                                        out["rps"],
                                        out["p50_ms"],
                                        out["p99_ms"],
                                        cores,
                                        errors,
                                    )
                                )
                                print(runs[-1], file=sys.stderr, flush=True)
        finally:
            gb.delete_our_redis_keys([redis.label])
    return runs


def table(runs: Sequence[Run]) -> str:
    names = list(dict.fromkeys(r.server for r in runs))
    head = " | ".join(f"{n} req/s per core | {n} p50 / p99 ms" for n in names)
    rows = [f"| keys | data | load | {head} |" + (" native / Python per core |" if len(names) > 1 else "")]
    rows.append("|---:|---|---|" + "---:|---|" * len(names) + ("---:|" if len(names) > 1 else ""))
    by = {(r.server, r.case, r.keys, r.load): r for r in runs}
    for keys in sorted({r.keys for r in runs}):
        for case in ("SQLite", "Redis"):
            for load, _ in LOADS:
                got = [by.get((n, case, keys, load)) for n in names]
                if any(g is None for g in got):
                    continue
                cells = " | ".join(f"{g.per_core:,.0f} | {g.p50_ms:.2f} / {g.p99_ms:.2f}" for g in got if g)
                ratio = ""
                if len(got) > 1 and got[0] and got[1] and got[0].per_core > 0:
                    ratio = f" **{got[1].per_core / got[0].per_core:.2f}x** |"
                rows.append(f"| {keys} | {case} | {load} | {cells} |{ratio}")
    return "\n".join(rows) + "\n"


def render(runs: Sequence[Run], info: dict[str, str], command: str, args: argparse.Namespace) -> str:
    errors = sum(r.errors for r in runs)
    return (
        f"Command: `{command}` ({info['date']}). Machine: {info['cpu']}, {info['os']}, Python "
        f"{info['python']}, online-feature-store {info['ofs']}. Load average before the run: {info['load']} "
        f"(after: {info.get('load_after', 'n/a')}); compare the servers within this run.\n\n"
        f"Server: `ofs serve` (native write path) and, as the baseline, the `ofs serve` of "
        f"{args.baseline or '(none this run)'}, whose front hands each persist to Python; 1 worker, metrics "
        f"off, pinned with `taskset -c {SERVER_CPU}`; the generator (`bench/loadgen -persist`, Go) with "
        f"`taskset -c {GENERATOR_CPUS}`. Keys drawn afresh and uniformly per request from "
        f"{args.entities:,} entities; one FG of 64 fp32. SQLite = the embedded store (fsync per persist), "
        "in-process cache on, invalidation log; Redis = the store is Redis, no cache. Saturated = 8 "
        "connections x 16 in flight. Entity rows/s = req/s x keys. "
        f"Failed or wrong answers in all runs: {errors}.\n\n" + table(runs)
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", default="1,100", help="comma-separated keys per persist (default 1,100)")
    p.add_argument(
        "--entities", type=int, default=100_000, help="entities keys are drawn from (default 100000)"
    )
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each (default 1)")
    p.add_argument(
        "--baseline", metavar="CHECKOUT", help="a checkout (with .venv) whose persists go to Python"
    )
    p.add_argument("--smoke", action="store_true", help="1 key, 200 entities, 0.5 s runs")
    p.add_argument("--write-results", action="store_true", help="replace this section of bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.baseline:
        args.baseline = str(ab.Target.resolve(args.baseline).python)
    if args.smoke:
        args.keys, args.entities, args.seconds, args.warmup = "1", 200, 0.5, 0.2
    args.keys = [int(k) for k in args.keys.split(",")]
    info = gb.machine()
    runs = run(args)
    info["load_after"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    command = "python bench/persist_front_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(runs, info, command.strip(), args)
    print(text)
    if args.write_results:
        gb.write_section("persist-front-bench", "## #18 persists on the compiled front", text)
    return 0 if all(r.errors == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
