"""Issue #18: what connections and calls cost the compiled front in memory, and whether it serves on with
10,000 idle connections open.

    python bench/front_conn_bench.py                    # prints markdown
    python bench/front_conn_bench.py --write-results    # ... and replaces its section of bench/RESULTS.md
    python bench/front_conn_bench.py --smoke            # 200 connections, 200 calls: checks it all runs

One ``ofs serve --front native`` (1 worker, the in-process cache on and warmed, 1 FG of 64 fp32), measured
from outside through ``/proc`` (VmRSS of the server's process tree):

1. a baseline: 1-key retrieves from a fresh connection (the Go generator ``bench/loadgen``, one call in
   flight, keys at random), and the RSS after it;
2. ``--idle`` idle HTTP/2 connections opened by this script (each one a completed HTTP/2 handshake: the
   client preface and SETTINGS, the server's SETTINGS acknowledged), then the RSS: its growth per
   connection; the same 1-key retrieves run again while they are all held (latency and rate against the
   baseline), and a health check on a new connection;
3. ``--calls`` calls in flight at once: gRPC calls opened with their HEADERS (100 per connection, on
   connections of their own) whose request body never comes, so each is held by the front as a call
   waiting for its message; the RSS growth, less what their connections cost idle, per call. Then every
   one is given an empty message and must be answered (an INVALID_ARGUMENT, counted), so the calls were
   real ones;
4. all closed: the RSS after.

Raw HTTP/2 frames (RFC 9113) are written by hand here for the idle and held connections: a load generator
cannot leave a call half sent, and these few frames (preface, SETTINGS, HEADERS with literal header
fields, DATA) are all it takes.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import grpc_bench as gb  # noqa: E402  (bench/ is a directory of scripts, not a package)
from front_bench import warm  # noqa: E402
from realistic_grpc import build_loadgen, loadgen  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, HEADERS, DATA = 0x4, 0x1, 0x0
ACK = END_STREAM = 0x1
END_HEADERS = 0x4
STREAMS_PER_CONNECTION = 100


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name: str, value: str) -> bytes:
    """An HPACK header field without indexing, no Huffman coding (names and values under 127 bytes)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def call_headers(port: int) -> bytes:
    fields = (
        (":method", "POST"),
        (":scheme", "http"),
        (":path", gb.RETRIEVE_PATH),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    )
    return b"".join(literal(k, v) for k, v in fields)


def read_frames(sock: socket.socket, buffer: bytearray) -> list[tuple[int, int, int]]:
    """The frames complete in ``buffer`` after one read: (type, flags, stream); consumed from it."""
    chunk = sock.recv(1 << 16)
    if not chunk:
        raise ConnectionError("the server closed the connection")
    buffer += chunk
    out = []
    while len(buffer) >= 9:
        length = int.from_bytes(buffer[:3], "big")
        if len(buffer) < 9 + length:
            break
        out.append((buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF))
        del buffer[: 9 + length]
    return out


def open_connection(port: int) -> socket.socket:
    """An HTTP/2 connection with its handshake done: our preface and SETTINGS sent, the server's SETTINGS
    read and acknowledged."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    buffer = bytearray()
    while not any(kind == SETTINGS and not flags & ACK for kind, flags, _ in read_frames(sock, buffer)):
        pass
    sock.sendall(frame(SETTINGS, ACK, 0))
    return sock


def tree_rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and its descendants, MiB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total_kb, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def settle_rss(pid: int) -> float:
    """The RSS once it stops moving (the server finishes what the last connections asked of it)."""
    last = tree_rss_mb(pid)
    for _ in range(20):
        time.sleep(0.25)
        now = tree_rss_mb(pid)
        if abs(now - last) < 0.05:
            return now
        last = now
    return last


def one_key_calls(binary: Path, port: int, pid: int, entity: str, args: argparse.Namespace) -> dict[str, Any]:
    return loadgen(
        binary,
        {
            "addr": f"127.0.0.1:{port}",
            "entity": entity,
            "fgs": 1,
            "keys": 1,
            "entities": args.entities,
            "conns": 1,
            "inflight": 1,
            "seconds": args.seconds,
            "warmup": 0.5,
            "check-every": 64,
            "seed": 18,
            "watch": f"server={pid}",
        },
        timeout=args.seconds + 120,
    )


def health_ok(port: int) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def hold_calls(port: int, calls: int) -> list[socket.socket]:
    """``calls`` calls opened and left waiting for their message, 100 per connection."""
    socks, headers = [], call_headers(port)
    for start in range(0, calls, STREAMS_PER_CONNECTION):
        sock = open_connection(port)
        n = min(STREAMS_PER_CONNECTION, calls - start)
        sock.sendall(b"".join(frame(HEADERS, END_HEADERS, 2 * i + 1, headers) for i in range(n)))
        socks.append(sock)
    return socks


def finish_calls(socks: list[socket.socket], calls: int) -> int:
    """Sends each held call an empty message and counts the calls answered (their last HEADERS)."""
    empty = b"\x00\x00\x00\x00\x00"  # gRPC message framing: not compressed, length 0
    for k, sock in enumerate(socks):
        n = min(STREAMS_PER_CONNECTION, calls - k * STREAMS_PER_CONNECTION)
        sock.sendall(b"".join(frame(DATA, END_STREAM, 2 * i + 1, empty) for i in range(n)))
    answered = 0
    for k, sock in enumerate(socks):
        n = min(STREAMS_PER_CONNECTION, calls - k * STREAMS_PER_CONNECTION)
        done: set[int] = set()
        buffer = bytearray()
        while len(done) < n:
            for kind, flags, stream in read_frames(sock, buffer):
                if kind == HEADERS and flags & END_STREAM:
                    done.add(stream)
        answered += len(done)
    return answered


def run(args: argparse.Namespace) -> dict[str, Any]:
    gb.ensure_proto()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = args.idle + args.calls // STREAMS_PER_CONNECTION + 100
    if hard < need:
        raise SystemExit(f"open files limit {hard} < the {need} connections this run opens: lower --idle")
    run_id = f"{os.getpid():x}{int(time.time()) % 100000:x}"
    entity = gb.BenchEntity(f"fc_hit_{run_id}", "sqlite", True, 1)
    out: dict[str, Any] = {"nofile": hard}
    with tempfile.TemporaryDirectory(prefix="ofs-front-conn-bench-") as tmp:
        work = Path(tmp)
        binary = build_loadgen(work)
        gb.apply_registry(work, gb.registry_doc([entity]))
        gb.load_data(work, [entity], args.entities)
        with gb.Server(work, 1) as server:
            port, pid = server.port, server.pid
            warm(port, entity.label, args.entities)
            out["baseline_calls"] = one_key_calls(binary, port, pid, entity.label, args)
            out["rss_start"] = settle_rss(pid)
            opened = time.monotonic()
            idle = [open_connection(port) for _ in range(args.idle)]
            out["open_seconds"] = time.monotonic() - opened
            out["rss_idle"] = settle_rss(pid)
            out["idle_calls"] = one_key_calls(binary, port, pid, entity.label, args)
            out["health_with_idle"] = health_ok(port)
            out["rss_idle_after_calls"] = settle_rss(pid)
            held = hold_calls(port, args.calls)
            out["rss_held"] = settle_rss(pid)
            out["answered"] = finish_calls(held, args.calls)
            for sock in held + idle:
                sock.close()
            time.sleep(1.0)
            out["rss_end"] = settle_rss(pid)
            out["health_after"] = health_ok(port)
    return out


def render(out: dict[str, Any], args: argparse.Namespace, info: dict[str, str], command: str) -> str:
    per_idle_kb = (out["rss_idle"] - out["rss_start"]) * 1024 / max(1, args.idle)
    held_conns = -(-args.calls // STREAMS_PER_CONNECTION)
    per_call_kb = (
        (out["rss_held"] - out["rss_idle_after_calls"] - held_conns * per_idle_kb / 1024)
        * 1024
        / max(1, args.calls)
    )
    base, busy = out["baseline_calls"], out["idle_calls"]
    errors = sum((base.get("errors") or {}).values()) + sum((busy.get("errors") or {}).values())
    health = "SERVING" if out["health_with_idle"] else "FAILED"
    return (
        f"Command: `{command}` ({info['date']}). Machine: {info['cpu']}, {info['os']}, Python "
        f"{info['python']}, online-feature-store {info['ofs']}. Load average before the run: {info['load']}. "
        f"Open files limit: {out['nofile']:,}.\n\n"
        "One `ofs serve --front native` (1 worker, in-process cache warmed, 1 FG of 64 fp32); RSS of its "
        "process tree from `/proc`; idle connections are completed HTTP/2 handshakes left open; calls in "
        "flight are gRPC calls whose HEADERS were sent and whose message is held back (100 per "
        "connection), then each is sent an empty message and must be answered.\n\n"
        "| measure | value |\n|---|---:|\n"
        f"| RSS after warm-up and 1-key calls | {out['rss_start']:,.1f} MiB |\n"
        f"| {args.idle:,} idle connections opened in | {out['open_seconds']:.2f} s |\n"
        f"| RSS with them held | {out['rss_idle']:,.1f} MiB |\n"
        f"| **memory per idle connection** | **{per_idle_kb:,.1f} KiB** |\n"
        f"| 1-key retrieves, 1 in flight, before: req/s, p50 / p99 | {base['rps']:,.0f}, "
        f"{base['p50_ms']:.3f} / {base['p99_ms']:.3f} ms |\n"
        f"| the same with {args.idle:,} idle connections held | {busy['rps']:,.0f}, "
        f"{busy['p50_ms']:.3f} / {busy['p99_ms']:.3f} ms |\n"
        f"| health check on a new connection, all held | {health} |\n"
        f"| RSS with {args.calls:,} calls in flight ({held_conns} more connections) "
        f"| {out['rss_held']:,.1f} MiB |\n"
        f"| **memory per call in flight** (less its connection's share) | **{per_call_kb:,.2f} KiB** |\n"
        f"| held calls answered once their message came | {out['answered']:,} of {args.calls:,} |\n"
        f"| RSS after every connection closed | {out['rss_end']:,.1f} MiB |\n"
        f"| failed 1-key retrieves | {errors} |\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--idle", type=int, default=10_000, help="idle connections to hold (default 10000)")
    p.add_argument("--calls", type=int, default=10_000, help="calls to hold in flight (default 10000)")
    p.add_argument("--entities", type=int, default=10_000, help="entities of the cache (default 10000)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds of each 1-key run (default 3)")
    p.add_argument("--smoke", action="store_true", help="200 idle connections, 200 calls, 200 entities")
    p.add_argument("--write-results", action="store_true", help="replace this section of bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.smoke:
        args.idle, args.calls, args.entities, args.seconds = 200, 200, 200, 0.5
    info = gb.machine()
    out = run(args)
    command = "python bench/front_conn_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(out, args, info, command.strip())
    print(text)
    if args.write_results:
        gb.write_section("front-conn-bench", "## #18 compiled front: connections and calls in memory", text)
    ok = out["answered"] == args.calls and out["health_with_idle"] and out["health_after"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
