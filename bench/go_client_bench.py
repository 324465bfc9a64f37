"""The Go client (clients/go) against the Python ``Client`` on the same ``ofs serve`` (issue #20).

    python bench/go_client_bench.py                    # 1 / 100 / 500 keys, 3 s per client and case, 2 rounds
    python bench/go_client_bench.py --seconds 5 --rounds 3
    python bench/go_client_bench.py --smoke            # tiny run: what bench/test_go_client_bench.py does

One ``ofs serve`` (1 worker, no auth, metrics off) over a temporary data directory holding 1,000 entities x
one FG of 64 fp32 features (SQLite store, the entity's in-process cache on and warmed, so the server answers
from memory and client costs show). Each client makes sequential ``RetrieveFeatures`` calls, one in
flight, of the first N keys x all 64 features, and reads every result into float32 columns (the Python
``Client`` returns numpy arrays; the Go program calls ``Float32s`` per feature and checks every row was
found). Measured per client and N: p50 / p99 latency, calls/s, and the client process's own CPU time per
call (user + system: ``time.process_time`` in this process for Python, ``getrusage`` in the Go program).
The clients take turns (Go, Python, Go, Python per round), so load from others on the machine falls on
both; the table shows the median over rounds of each number.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import grpc_bench as gb  # noqa: E402  (bench/ is a directory of scripts, not a package)

ROOT = BENCH.parent
GO_MODULE = ROOT / "clients" / "go"
N_KEYS = 1000
ENTITY = "user"
GROUP = "fg0"


def registry_doc() -> dict[str, Any]:
    """One entity, one FG of 64 fp32 features on SQLite, in-process cache on."""
    return {
        "stores": [{"id": "sqlite", "kind": "sqlite", "settings": {"path": "bench.db"}}],
        "entities": [
            {
                "label": ENTITY,
                "keys": [{"label": "user_id", "column": "user_id"}],
                "cache": {"in_process": {"enabled": True, "ttl_seconds": 3600, "jitter_percent": 0}},
                "feature_groups": [
                    {
                        "label": GROUP,
                        "data_type": "fp32",
                        "store": "sqlite",
                        "in_process_cache": True,
                        "features": [{"label": f} for f in gb.FEATURES],
                    }
                ],
            }
        ],
    }


def build_go(out: Path) -> Path:
    """Builds clients/go/bench into ``out``; the binary's path."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the Go toolchain (go) is not on PATH")
    binary = out / "ofs-go-bench"
    subprocess.run([go, "build", "-o", str(binary), "./bench"], cwd=GO_MODULE, check=True)
    return binary


def run_go(binary: Path, port: int, keys: list[int], seconds: float, warmup: int) -> list[dict[str, Any]]:
    """The Go program's results, one per key count."""
    out = subprocess.run(
        [str(binary), "-addr", f"127.0.0.1:{port}", "-entity", ENTITY, "-group", GROUP,
         "-features", str(gb.N_FEATURES), "-keys", ",".join(map(str, keys)),
         "-seconds", str(seconds), "-warmup", str(warmup)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def run_python(port: int, keys: list[int], seconds: float, warmup: int) -> list[dict[str, Any]]:
    """The Python ``Client``'s results, measured in this process, one per key count."""
    from online_feature_store import Client

    results = []
    with Client(f"127.0.0.1:{port}", timeout=30.0) as client:
        for n in keys:
            ids = [gb.key(i) for i in range(n)]
            features = {GROUP: gb.FEATURES}

            def call(ids: list[str] = ids, features: dict[str, list[str]] = features, n: int = n) -> None:
                r = client.retrieve(ENTITY, ids, features, keys_schema=["user_id"])
                values = r.values[GROUP]
                if values.shape != (n, gb.N_FEATURES) or values.dtype != np.float32:
                    raise AssertionError(f"{n} keys: got {values.shape} {values.dtype}")
                if r.status[GROUP].any():
                    raise AssertionError(f"{n} keys: not every key was found (load the data first)")

            for _ in range(warmup):
                call()
            latencies = []
            cpu0, start = time.process_time(), time.perf_counter()
            while time.perf_counter() - start < seconds:
                t = time.perf_counter()
                call()
                latencies.append(time.perf_counter() - t)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
            latencies.sort()
            calls = len(latencies)
            results.append(
                {
                    "client": "python",
                    "keys": n,
                    "calls": calls,
                    "p50_ms": latencies[min(calls - 1, int(0.50 * calls))] * 1e3,
                    "p99_ms": latencies[min(calls - 1, int(0.99 * calls))] * 1e3,
                    "mean_ms": wall / calls * 1e3,
                    "calls_per_s": calls / wall,
                    "cpu_us_per_call": cpu / calls * 1e6,
                }
            )
    return results


def warm(port: int) -> None:
    """Reads every key once, so the server's in-process cache holds them all."""
    from online_feature_store import Client

    with Client(f"127.0.0.1:{port}", timeout=60.0) as client:
        r = client.retrieve(ENTITY, [gb.key(i) for i in range(N_KEYS)], {GROUP: gb.FEATURES})
        if r.status[GROUP].any():
            raise AssertionError("the benchmark data is not all there")


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{cpu}, nproc = {os.cpu_count()}, Linux {platform.release()}, Python {platform.python_version()}, "
        f"{go.removeprefix('go version ')}"
    )


def table(rows: list[dict[str, Any]], keys: list[int]) -> str:
    """Markdown: per key count, Go and Python side by side (medians over rounds)."""

    def med(client: str, n: int, field: str) -> float:
        return float(
            statistics.median(float(r[field]) for r in rows if r["client"] == client and r["keys"] == n)
        )

    out = [
        "| keys | client | p50 ms | p99 ms | calls/s (1 in flight) | client CPU µs / call | calls measured |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in keys:
        for client in ("go", "python"):
            calls = sum(r["calls"] for r in rows if r["client"] == client and r["keys"] == n)
            p50, p99 = med(client, n, "p50_ms"), med(client, n, "p99_ms")
            rate, cpu = med(client, n, "calls_per_s"), med(client, n, "cpu_us_per_call")
            out.append(f"| {n} | {client} | {p50:.3f} | {p99:.3f} | {rate:,.0f} | {cpu:,.0f} | {calls:,} |")
    out.append("")
    out.append("| keys | Python / Go: p50 | Python / Go: client CPU per call |")
    out.append("|---:|---:|---:|")
    for n in keys:
        out.append(
            f"| {n} | {med('python', n, 'p50_ms') / med('go', n, 'p50_ms'):.2f}x | "
            f"{med('python', n, 'cpu_us_per_call') / med('go', n, 'cpu_us_per_call'):.2f}x |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", default="1,100,500", help="comma-separated key counts")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="measured seconds per client and key count"
    )
    parser.add_argument("--rounds", type=int, default=2, help="Go, then Python, this many times")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured calls before each measurement")
    parser.add_argument("--json", type=Path, help="also write every raw result here")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (1 and 3 keys, 0.2 s, 1 round)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.keys, args.seconds, args.rounds, args.warmup = "1,3", 0.2, 1, 2
    keys = [int(k) for k in args.keys.split(",")]
    if max(keys) > N_KEYS:
        parser.error(f"at most {N_KEYS} keys")

    gb.ensure_proto()
    with tempfile.TemporaryDirectory(prefix="ofs-go-bench-") as tmp:
        data = Path(tmp)
        gb.apply_registry(data, registry_doc())
        entity = gb.BenchEntity(ENTITY, "sqlite", cache=True, n_fgs=1)
        gb.load_data(data, [entity], N_KEYS)
        binary = build_go(data)
        load_before = os.getloadavg()
        started = datetime.datetime.now(datetime.timezone.utc)
        rows: list[dict[str, Any]] = []
        with gb.Server(data) as server:
            warm(server.port)
            for _ in range(args.rounds):
                rows += run_go(binary, server.port, keys, args.seconds, args.warmup)
                rows += run_python(server.port, keys, args.seconds, args.warmup)
        load_after = os.getloadavg()
    print(
        f"Command: `python bench/go_client_bench.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" ({started:%Y-%m-%d %H:%M} UTC). Machine: {machine()}. Load average before: "
        f"{' / '.join(f'{x:.2f}' for x in load_before)}, after: {' / '.join(f'{x:.2f}' for x in load_after)}."
    )
    print()
    print(table(rows, keys))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
