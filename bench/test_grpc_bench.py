"""Smoke tests of the gRPC / peer benchmarks (bench/grpc_bench.py, bench/peers/): the request frame, one
real ``ofs serve`` loaded by h2load for a fixed number of requests, the RESULTS.md section writer and the
profile summary. The measurements themselves are ``bench/peers/run.sh``; Feast is optional here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "peers"))

import compare as peers  # noqa: E402
import grpc_bench as gb  # noqa: E402  (bench/ is a directory of scripts, not a package)


def require_h2load() -> None:
    if shutil.which("h2load"):
        return
    message = "h2load is not installed: run bench/peers/setup.sh tools (scripts/bootstrap does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_grpc_frame_is_length_prefixed_query() -> None:
    gb.ensure_proto()
    from online_feature_store._proto import retrieve_pb2

    message = gb.query_bytes("user", 3, 2)
    frame = gb.grpc_frame(message)
    assert frame[0] == 0
    assert int.from_bytes(frame[1:5], "big") == len(message) == len(frame) - 5
    q = retrieve_pb2.Query.FromString(frame[5:])
    assert q.entity_label == "user"
    assert [g.label for g in q.feature_groups] == ["fg0", "fg1", "fg2"]
    assert list(q.feature_groups[2].feature_labels) == [f"f{j}" for j in range(64)]
    assert [list(k.cols) for k in q.keys] == [["u000000"], ["u000001"]]


def test_h2load_drives_ofs_serve(tmp_path: Path) -> None:
    require_h2load()
    gb.ensure_proto()
    entity = gb.BenchEntity("smoke", "sqlite", cache=True, n_fgs=1)
    gb.apply_registry(tmp_path, gb.registry_doc([entity]))
    gb.load_data(tmp_path, [entity], n_keys=10)
    with gb.Server(tmp_path, workers=1) as server:
        # prepare(): one checked gRPC call, then 64 h2load requests whose bodies must all match it.
        frame, size = gb.prepare(server, entity, keys=10, fgs=1, work=tmp_path)
        assert frame.read_bytes()[5:] == gb.query_bytes("smoke", 1, 10)
        url = f"http://127.0.0.1:{server.port}{gb.RETRIEVE_PATH}"
        load = gb.run_h2load(
            url,
            frame,
            connections=1,
            streams=1,
            seconds=0,
            warmup=0,
            requests=50,
            expected_body_bytes=size,
            server_pid=server.pid,
        )
    assert load.ok, load.note
    assert load.requests == 50
    assert 0 < load.p50_ms <= load.p99_ms


def test_h2load_reports_grpc_errors_as_failures(tmp_path: Path) -> None:
    require_h2load()
    gb.ensure_proto()
    entity = gb.BenchEntity("smoke", "sqlite", cache=False, n_fgs=1)
    gb.apply_registry(tmp_path, gb.registry_doc([entity]))
    frame = tmp_path / "unknown.grpc"
    frame.write_bytes(gb.grpc_frame(gb.query_bytes("no_such_entity", 1, 1)))
    with gb.Server(tmp_path, workers=1) as server:
        url = f"http://127.0.0.1:{server.port}{gb.RETRIEVE_PATH}"
        load = gb.run_h2load(
            url, frame, connections=1, streams=1, seconds=0, warmup=0, requests=5, expected_body_bytes=100
        )
    # HTTP 200 with NOT_FOUND in the trailers and no body: h2load counts success, the size check does not.
    assert not load.ok
    assert "response bytes" in load.note


def test_write_section_touches_only_its_markers(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmarks\n\nothers' text\n")
    gb.write_section("t", "## Mine", "first", results)
    assert (
        results.read_text()
        == "# Benchmarks\n\nothers' text\n\n---\n\n## Mine\n\n<!-- t:start -->\nfirst\n<!-- t:end -->\n"
    )
    results.write_text(results.read_text() + "\n## Someone else\n\ntheirs\n")
    gb.write_section("t", "## Mine", "second", results)
    text = results.read_text()
    assert "first" not in text
    assert "<!-- t:start -->\nsecond\n<!-- t:end -->" in text
    assert text.endswith("## Someone else\n\ntheirs\n")


def test_profile_summary_separates_blocked_threads() -> None:
    collapsed = "\n".join(
        [
            "process 1;_serve (grpc/_server.py:1);sem_post (libc.so.6) 6",
            "process 1;handler (online_feature_store/server/app.py:82);retrieve_wire (x.py:3);"
            "0xdead (libc.so.6) 3",
            "process 1;_worker (thread.py:83);PyThread_acquire_lock_timed (libpython3.11.so.1.0) 11",
        ]
    )
    text = peers.summarize(collapsed)
    assert "| `sem_post (libc.so.6)` | 66.7 | 66.7 |" in text
    assert "| `retrieve_wire (x.py)` | 33.3 | 33.3 |" in text
    assert "| `handler (online_feature_store/server/app.py)` | 33.3 |" in text
    assert "9 samples (45 % of those taken" in text


def test_feast_request_body() -> None:
    if not peers.FEAST_PY.exists():
        pytest.skip("no bench/.venv-feast (bench/peers/setup.sh feast): the Feast side is optional")
    out = subprocess.run(
        [str(peers.FEAST_PY), str(peers.FEAST_PEER), "body", "--fvs", "2", "--keys", "3"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    body = json.loads(out)
    assert body["entities"] == {"user_id": ["u000000", "u000001", "u000002"]}
    assert len(body["features"]) == 128
    assert body["features"][64] == "fg1:f0"
    assert body["full_feature_names"] is True
