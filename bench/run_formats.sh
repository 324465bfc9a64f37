#!/usr/bin/env bash
# Runs the storage-format benchmarks and prints a markdown summary (machine, our numbers, and the
# reference's published PSDB numbers beside them). About 3-4 minutes on a 2-core machine, builds
# included (about 2.5 minutes of measurement).
#
#   bench/run_formats.sh                  # rebuild the extension (release), Rust + Python benchmarks
#   OFS_BENCH_SKIP_BUILD=1 bench/run_formats.sh   # measure the extension already in .venv
#   OFS_BENCH_MEASURE=5 bench/run_formats.sh      # seconds of measurement per Rust benchmark (default 2)
#
# Rust: criterion, `cargo bench -p ofs-core --bench formats` (rust/benches/formats.rs), warm-up 0.5 s and
# OFS_BENCH_MEASURE s per benchmark; the table shows criterion's median. Python: pytest-benchmark,
# `pytest bench/test_bench_formats.py --benchmark-enable`. The summary goes to stdout; the raw logs
# and JSON stay in a temporary directory whose path is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

measure=${OFS_BENCH_MEASURE:-2}
work=$(mktemp -d "${TMPDIR:-/tmp}/ofs-bench.XXXXXX")
log() { printf '\033[1m==> [%s] %s\033[0m\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# shellcheck disable=SC1091
. .venv/bin/activate

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
started_epoch=$(date +%s)

ext_status="not rebuilt (OFS_BENCH_SKIP_BUILD)"
if [ -z "${OFS_BENCH_SKIP_BUILD:-}" ]; then
    log "building the native extension (release)"
    if maturin develop --release --locked -q >"$work/maturin.log" 2>&1; then
        ext_status="rebuilt (release) by this run"
    else
        ext_status="REBUILD FAILED, measured the extension already installed"
        log "extension build failed (see $work/maturin.log); measuring the one already installed"
    fi
fi

log "cargo bench -p ofs-core --bench formats (warm-up 0.5 s, measurement ${measure} s per benchmark)"
cargo bench -p ofs-core --bench formats -- --warm-up-time 0.5 --measurement-time "$measure" --noplot \
    2>&1 | tee "$work/cargo-bench.log" >&2

log "pytest bench/test_bench_formats.py --benchmark-enable"
pytest bench/test_bench_formats.py -q -p no:cacheprovider --benchmark-enable --benchmark-max-time=1 \
    --benchmark-json="$work/pytest-benchmark.json" 2>&1 | tee "$work/pytest.log" >&2

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
target_dir=$(cargo metadata --no-deps --format-version 1 | python -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

export OFS_BENCH_STARTED="$started" OFS_BENCH_STARTED_EPOCH="$started_epoch" OFS_BENCH_LOAD_BEFORE="$load_before" OFS_BENCH_LOAD_AFTER="$load_after"
export OFS_BENCH_EXT_STATUS="$ext_status" OFS_BENCH_MEASURE_S="$measure" OFS_BENCH_CRITERION="$target_dir/criterion" OFS_BENCH_PYJSON="$work/pytest-benchmark.json"
python - <<'PY'
import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

env = os.environ
crit = Path(env["OFS_BENCH_CRITERION"])

# The reference's published PSDB encode numbers (BharatMLStack docs, benchmarks.md): Apple Silicon,
# Go 1.22.12, compression disabled, Int32 arrays. MB/s is decimal; only 1,000 features has a published
# throughput (975.31 MB/s), the others are derived here as 4 * n bytes / (ns/op).
REFERENCE_NS = {100: 625, 1000: 4056, 10000: 37357}
REFERENCE_MBS_1000 = 975.31


def sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def mem_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "?"


def os_name() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"') + f", kernel {platform.release()}"
    return platform.platform()


def criterion_results() -> dict[str, dict]:
    out = {}
    for est in crit.glob("**/new/estimates.json"):
        if est.stat().st_mtime < float(env["OFS_BENCH_STARTED_EPOCH"]):
            continue  # left over from an earlier run or a benchmark that no longer exists
        bench = json.loads((est.parent / "benchmark.json").read_text())
        e = json.loads(est.read_text())
        out[bench["full_id"]] = {
            "median": e["median"]["point_estimate"],
            "lo": e["median"]["confidence_interval"]["lower_bound"],
            "hi": e["median"]["confidence_interval"]["upper_bound"],
            "throughput": bench.get("throughput") or {},
        }
    return out


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:,.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:,.2f} µs"
    return f"{ns:,.1f} ns"


def fmt_tp(r: dict) -> str:
    tp = r["throughput"]
    if "Bytes" in tp:
        return f"{tp['Bytes'] / r['median'] * 1e3:,.0f} MB/s"
    if "Elements" in tp:
        per_s = tp["Elements"] / r["median"] * 1e9
        if per_s >= 1e9:
            return f"{per_s / 1e9:,.2f} Gelem/s"
        return f"{per_s / 1e6:,.1f} Melem/s" if per_s >= 1e6 else f"{per_s / 1e3:,.1f} Kelem/s"
    return ""


res = criterion_results()
print("## Storage-format benchmarks\n")
print("Command: `bench/run_formats.sh` (criterion: warm-up 0.5 s, measurement "
      f"{env['OFS_BENCH_MEASURE_S']} s per benchmark, median shown; pytest-benchmark: max-time 1 s)\n")
print("| Machine | |\n|---|---|")
print(f"| Date | {env['OFS_BENCH_STARTED']} |")
print(f"| CPU | {cpu_model()}, nproc = {sh('nproc')} |")
print(f"| Memory | {mem_total()} |")
print(f"| OS | {os_name()} |")
print(f"| Rust | {sh('rustc', '--version')} |")
print(f"| Python | {platform.python_version()} |")
print(f"| Load average (1/5/15 min) | before {env['OFS_BENCH_LOAD_BEFORE']}, after {env['OFS_BENCH_LOAD_AFTER']} |")

print("\n### PSDB encode, Int32, compression disabled, versus the reference\n")
print("| Features | ours (median) | ours MB/s | reference ns/op | reference MB/s | speed-up |")
print("|---:|---:|---:|---:|---:|---:|")
for n, ref_ns in REFERENCE_NS.items():
    r = res.get(f"psdb_encode/int32_raw/{n}")
    if r is None:
        continue
    ref_mbs = f"{REFERENCE_MBS_1000:,.0f}" if n == 1000 else f"{4 * n / ref_ns * 1e3:,.0f} (derived)"
    print(f"| {n:,} | {fmt_ns(r['median'])} | {fmt_tp(r)} | {ref_ns:,} | {ref_mbs} | "
          f"{ref_ns / r['median']:.1f}× |")

groups = [
    ("psdb_encode", "PSDB encode (`psdb::encode`); MB/s of raw payload"),
    ("psdb_decode", "PSDB decode (`psdb::decode` + `to_array`); MB/s of raw payload"),
    ("psdb_feature", "One feature (`psdb::decode` + `BlockView::feature` at a pseudo-random position)"),
]
print("\n### PSDB, all cases (raw = compression disabled, zstd = enabled)\n")
for group, title in groups:
    print(f"**{title}**\n")
    print("| Case | 100 | 1,000 | 10,000 |\n|---|---:|---:|---:|")
    for case in ("int32_raw", "int32_zstd", "fp32_raw", "fp32_zstd"):
        cells = []
        for n in (100, 1000, 10000):
            r = res.get(f"{group}/{case}/{n}")
            cells.append("—" if r is None else f"{fmt_ns(r['median'])} ({fmt_tp(r)})")
        print(f"| {case} | " + " | ".join(cells) + " |")
    print()

print("**Float codecs (1M values, `float::*_slice`) and CSDB (10 FG blocks of 100 fp32 features)**\n")
print("| Benchmark | median | 95% CI of median | throughput |\n|---|---:|---:|---:|")
for key in sorted(k for k in res if k.startswith(("float/", "csdb/"))):
    r = res[key]
    print(f"| {key} | {fmt_ns(r['median'])} | {fmt_ns(r['lo'])} – {fmt_ns(r['hi'])} | {fmt_tp(r)} |")

py = Path(env["OFS_BENCH_PYJSON"])
if py.exists():
    import online_feature_store._native as native

    built = datetime.datetime.fromtimestamp(Path(native.__file__).stat().st_mtime, datetime.timezone.utc)
    print("\n### Python API (pytest-benchmark)\n")
    print(f"Extension `{Path(native.__file__).name}` built {built:%Y-%m-%d %H:%M UTC}: {env['OFS_BENCH_EXT_STATUS']}.\n")
    print("| Group | Test | min | median | mean | rounds |\n|---|---|---:|---:|---:|---:|")
    for b in sorted(json.loads(py.read_text())["benchmarks"], key=lambda b: (b["group"] or "", b["name"])):
        s = b["stats"]
        print(f"| {b['group']} | {b['name']} | {fmt_ns(s['min'] * 1e9)} | {fmt_ns(s['median'] * 1e9)} | "
              f"{fmt_ns(s['mean'] * 1e9)} | {s['rounds']:,} |")
PY
log "raw logs and JSON: $work"
