"""The report of the realistic benchmark (bench/realistic_bench.py): the table of cases, the goals."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import realistic_data as rd  # noqa: E402
from realistic_cases import GOALS, Case, Result, Run, Settings  # noqa: E402
from realistic_grpc import Ceiling  # noqa: E402

NONE = "\u2013"

QUICK_NOTE = (
    "`--quick`: 100 keys x {1, 10} FGs, uniform and Zipf keys, cache 10 % on SQLite, Redis and Cassandra, "
    "cache 100 % on SQLite only (a cache holding everything answers without its store once warm), "
    "embedded and gRPC; 1 key over gRPC (Redis, cache 10 %, 1 FG); plus the goal cases."
)

# -- report ----------------------------------------------------------------------------------------


def _ms(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x * 1000:.0f} µs" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:,.0f}"


def _dur(x: float) -> str:
    """``_ms`` with its unit: "510 µs", "3.27 ms"."""
    text = _ms(x)
    return text if text.endswith("µs") or text == "n/a" else f"{text} ms"


def _lat(run: Run | None) -> str:
    return NONE if run is None else f"{_ms(run.p50_ms)} / {_ms(run.p99_ms)}"


def _num(x: float) -> str:
    return "n/a" if x != x else f"{x:,.0f}"


def _cores(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}"


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f} %"


def _mib(n: int) -> str:
    return "off" if n == 0 else f"{n / 2**20:,.0f} MiB"


def rows_per_core(r: Result) -> float:
    if r.sat is None or not r.sat.cores > 0:
        return math.nan
    return r.sat.rps * r.case.keys / r.sat.cores


def failures(r: Result) -> list[str]:
    """What makes a case's numbers wrong: an error, failed calls, answers that failed the check."""
    out = [r.error] if r.error else []
    for name, run in (("saturation", r.sat), ("half", r.half)):
        if run is not None and run.errors:
            out.append(f"{name}: errors {run.errors}")
        if run is not None and run.check_failures:
            out.append(f"{name}: {run.check_failures} answers failed the check ({run.check_error})")
    return out


def problems(r: Result) -> str:
    """:func:`failures`, and what makes them doubtful: an open loop whose generator fell behind."""
    out = failures(r)
    # embedded: a late call is the system's own doing (its threads share the GIL with the loop)
    if r.case.mode == "grpc" and r.half is not None and r.half.late > 0.01 * max(r.half.requests, 1):
        out.append(f"half: {r.half.late:,} calls sent > 1 ms late (the generator fell behind)")
    return "; ".join(out)


def table(results: Sequence[Result], threads: int) -> str:
    head = (
        "| store | cache | path | FGs | keys | keys drawn | hit ratio | saturated: req/s | entity-rows/s "
        "| cores | entity-rows/s per core | p50 / p99 ms | half load: p50 / p99 ms "
        "| 1 thread: p50 / p99 ms, rows/s | store cores | generator cores | problems |\n"
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for r in results:
        c, sat = r.case, r.sat
        path = "gRPC" if c.mode == "grpc" else f"embedded, {threads} threads"
        single = f"{_lat(r.single)}, {_num(r.single.rps * c.keys)}" if r.single is not None else NONE
        floor = ""
        if r.floor is not None and c.mode == "grpc":
            floor = f" (null server: {_lat(r.floor)})"
        elif r.floor is not None:
            single += f" (bare MGET: {_lat(r.floor)})"
        rows.append(
            f"| {c.store} | {c.cache} % ({_mib(r.cache_bytes)}) | {path} | {c.fgs} | {c.keys} | {c.dist} "
            f"| {_pct(sat.hit_ratio) if sat else 'n/a'} | {_num(sat.rps) if sat else 'n/a'} "
            f"| {_num(sat.rps * c.keys) if sat else 'n/a'} | {_cores(sat.cores) if sat else 'n/a'} "
            f"| {_num(rows_per_core(r))} | {_lat(sat)} | {_lat(r.half)}{floor} | {single} "
            f"| {_cores(sat.store_cores) if sat else 'n/a'} | {_cores(sat.gen_cores) if sat else NONE} "
            f"| {problems(r) or NONE} |"
        )
    return head + "\n".join(rows) + "\n"


@dataclass
class Goal:
    name: str
    case: str
    value: float
    shown: str
    target: str
    met: bool | None


def _inside(run: Run) -> str:
    """What the server's own histogram says of a run: its share within 1 ms and its p99's bucket."""
    if run.within_1ms != run.within_1ms:
        return ""
    return (
        f"; inside the server (its histogram): {run.within_1ms * 100:.2f} % <= 1 ms, "
        f"p99 <= {_dur(run.inside_p99_ms)}"
    )


def _floor(r: Result) -> str:
    """The case's half-load floor: the same open loop against a null server (see ``null_floor``)."""
    if r.floor is None:
        return ""
    return f"; the same load against a null server: p99 {_dur(r.floor.p99_ms)}"


def _find(results: Sequence[Result], case: Case) -> Result | None:
    return next((r for r in results if r.case == case and r.sat is not None and not r.error), None)


def goals(results: Sequence[Result], baseline: dict[str, float] | None) -> list[Goal]:
    """The issue's goals read from this run (``baseline``: the values of an earlier run, for goal 1)."""
    out: list[Goal] = []
    g1 = _find(results, GOALS["1 gRPC"])
    if g1 is not None:
        v = rows_per_core(g1)
        base = (baseline or {}).get("1 gRPC rows/s per core")
        out.append(
            Goal(
                "1 gRPC rows/s per core",
                "Redis, no in-process cache, 100 uniform keys x 1 FG, gRPC, saturated",
                v,
                f"{_num(v)} rows/s per server core ({_num(g1.sat.rps * 100) if g1.sat else 'n/a'} rows/s on "
                f"{_cores(g1.sat.cores) if g1.sat else 'n/a'} cores)",
                f">= 3x today's{f' ({_num(3 * base)})' if base else ''}",
                (v >= 3 * base) if base else None,
            )
        )
    e1 = _find(results, GOALS["1 embedded"])
    if e1 is not None and e1.single is not None:
        v = e1.single.p50_ms
        out.append(
            Goal(
                "1 embedded p50",
                "Redis, no in-process cache, 100 uniform keys x 1 FG, embedded, 1 thread",
                v,
                _dur(v)
                + (
                    f"; the same keys' bare MGET (redis-py, hiredis): p50 {_dur(e1.floor.p50_ms)}"
                    if e1.floor is not None
                    else ""
                ),
                "<= 0.5 ms",
                v <= 0.5,
            )
        )
    g2 = _find(results, GOALS["2"])
    if g2 is not None and g2.single is not None:
        v = g2.single.p50_ms
        out.append(
            Goal(
                "2 embedded median, cache holds all",
                "SQLite, cache 100 %, 100 uniform keys x 1 FG, embedded, 1 thread",
                v,
                f"{v * 1000:.0f} µs (hit ratio {_pct(g2.single.hit_ratio)})",
                "<= 30 µs",
                v <= 0.030,
            )
        )
    g3a, g3b = _find(results, GOALS["1 gRPC"]), _find(results, GOALS["3 gRPC 10 FGs"])
    if g3a and g3b and g3a.sat and g3b.sat and g3a.sat.rps > 0 and g3b.sat.rps > 0:
        cost1, cost10 = g3a.sat.cores / g3a.sat.rps, g3b.sat.cores / g3b.sat.rps
        v = cost10 / cost1
        extra = ""
        e1, e10 = _find(results, GOALS["1 embedded"]), _find(results, GOALS["3 embedded 10 FGs"])
        if e1 and e10 and e1.single and e10.single:
            extra = (
                f"; embedded 1-thread p50 {_dur(e10.single.p50_ms)} / {_dur(e1.single.p50_ms)} = "
                f"{e10.single.p50_ms / e1.single.p50_ms:.2f}x"
            )
        out.append(
            Goal(
                "3 10 FGs / 1 FG",
                "Redis, no in-process cache, 100 uniform keys, gRPC: server CPU per request",
                v,
                f"{v:.2f}x ({cost10 * 1e6:,.0f} / {cost1 * 1e6:,.0f} µs of server CPU per request){extra}",
                "<= 1.5x",
                v <= 1.5,
            )
        )
    g4 = _find(results, GOALS["4"])
    if g4 is not None and g4.half is not None:
        v = g4.half.p99_ms
        out.append(
            Goal(
                "4 Zipf, cache 10 %, p99 at half load",
                "Redis, cache 10 %, 100 Zipf keys x 1 FG, gRPC",
                v,
                f"{_dur(v)} at {_num(g4.half.rps)} req/s (hit ratio {_pct(g4.half.hit_ratio)})"
                + _floor(g4)
                + _inside(g4.half),
                "<= 3 ms",
                v <= 3,
            )
        )
    g5 = _find(results, GOALS["5"])
    if g5 is not None and g5.half is not None:
        v = g5.half.p99_ms
        out.append(
            Goal(
                "5 Cassandra p99 at half load",
                "Cassandra, no in-process cache, 100 uniform keys x 1 FG, gRPC",
                v,
                f"{_dur(v)} at {_num(g5.half.rps)} req/s" + _floor(g5) + _inside(g5.half),
                "<= 5 ms",
                v <= 5,
            )
        )
    return out


def goals_table(gs: Sequence[Goal]) -> str:
    head = "| goal (issue #17) | case | this run | target | met |\n|---|---|---|---|---|\n"
    met = {True: "yes", False: "**no**", None: "(baseline)"}
    return (
        head
        + "\n".join(f"| {g.name} | {g.case} | {g.shown} | {g.target} | {met[g.met]} |" for g in gs)
        + "\n"
    )


def render(
    results: Sequence[Result],
    gs: Sequence[Goal],
    ceilings: Sequence[Ceiling],
    loaded: dict[str, rd.Loaded],
    info: dict[str, str],
    s: Settings,
    label: str,
    command: str,
    flag: str,
) -> str:
    loads = "; ".join(
        f"{k}: {ld.method}, {ld.seconds:,.0f} s ({ld.rows_per_s:,.0f} entities/s, {ld.loaded_at}"
        f"{', reused' if ld.reused else ''})"
        for k, ld in loaded.items()
    )
    gen = "; ".join(
        f"{c.shape}: {c.cpu_us_per_call:.1f} µs of generator CPU per call, i.e. ~{_num(c.per_core)} "
        f"calls/s per generator core ({_num(c.rps)} calls/s reached against the null server on the shared "
        "cores)"
        for c in ceilings
    )
    return (
        f"**{label}** — system under test: {info['sut']}. Command: `{command}` ({info['date']}). "
        f"Machine: {info['cpu']}, {info['os']}, Python {info['python']}; load average {info['load']} "
        f"before, {info.get('load_after', 'n/a')} after.\n\n"
        f"Data: {s.entities:,} entities x {rd.N_FGS} FGs of 64 fp32 per store; loaded with {loads}. "
        f"{s.seconds:g} s measured per load after {s.warmup:g} s of the same traffic unmeasured; "
        f"embedded: {s.threads} threads for saturation. Server cache size: {flag}.\n\n"
        "CPU accounting: the machine's cores are shared by the generator (or the embedded worker), the "
        'server and the store services. "cores" is the system under test alone (`ofs serve`\'s process '
        "tree from /proc, or the embedded worker's getrusage), over the measured window; entity-rows/s "
        'per core divides by it. "store cores": the store\'s own processes (Redis, the Cassandra JVM; '
        'none for SQLite, which runs inside the server). "generator cores": the Go generator\'s '
        "getrusage. Saturated = 16 requests in flight on 8 connections (embedded: the threads back to "
        "back); half load = an open loop at half the saturated rate, latency from when each call was "
        'due; over gRPC, "null server" is the same open loop against `loadgen -serve-null` (canned '
        "answers, no server work): the floor the generator and the machine set under the half-load "
        'latencies; embedded from Redis with no cache, "bare MGET" is one thread sending the same keys\' '
        "`MGET` through redis-py (hiredis), nothing decoded: the store's floor under the 1-thread "
        "latency.\n\n"
        f"Generator ceiling (bench/loadgen against its null server): {gen or 'not measured'}.\n\n"
        + table(results, s.threads)
        + "\nGoals, from this run:\n\n"
        + goals_table(gs)
    )


def baseline_values(gs: Sequence[Goal]) -> dict[str, float]:
    return {g.name: g.value for g in gs}
