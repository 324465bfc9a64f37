"""Smoke tests of the abuse benchmark (bench/abuse_bench.py, issue #14): every attack runs briefly at tiny
sizes against this checkout's real ``ofs serve`` / ``ofs horizon`` and the bench produces its table.
Nothing here asserts a timing or whether the server withstood an attack: that is what the bench measures
(``python bench/abuse_bench.py``, numbers in bench/RESULTS.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import abuse_bench as ab  # noqa: E402  (bench/ is a directory of scripts, not a package)
from test_grpc_bench import require_h2load  # noqa: E402


def test_encode_query_matches_protobuf() -> None:
    ab.gb.ensure_proto()
    from online_feature_store._proto import retrieve_pb2

    raw = ab.encode_query("user", {"fg0": ["f0", "f1"], "wide": ["v"]}, ["u1", "k" * 200])
    q = retrieve_pb2.Query.FromString(raw)
    assert q.entity_label == "user"
    assert [(g.label, list(g.feature_labels)) for g in q.feature_groups] == [
        ("fg0", ["f0", "f1"]),
        ("wide", ["v"]),
    ]
    assert list(q.keys_schema) == ["user_id"]
    assert [list(k.cols) for k in q.keys] == [["u1"], ["k" * 200]]
    assert q.SerializeToString() == raw


def test_target_resolves_checkout_venv_and_interpreter(tmp_path: Path) -> None:
    assert ab.Target.resolve(None).python == Path(sys.executable)
    venv_python = Path(sys.executable)
    assert ab.Target.resolve(str(venv_python)).python == venv_python.absolute()
    assert (
        ab.Target.resolve(str(venv_python.parent.parent)).python
        == venv_python.parent.parent / "bin" / "python"
    )
    with pytest.raises(SystemExit, match="neither a checkout"):
        ab.Target.resolve(str(tmp_path))


def test_every_attack_produces_its_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_h2load()
    out = tmp_path / "rows.json"
    assert ab.main(["--smoke", "--json", str(out), "--keep", str(tmp_path / "work")]) == 0
    text = capsys.readouterr().out
    assert "| attack | legitimate client | alone: p50 / p99 ms | under attack: p50 / p99 ms |" in text
    rows = json.loads(out.read_text())
    assert [r["attack"] for r in rows] == [
        "a. random tokens",
        "b. login flood",
        "c. idle sockets",
        "d1. wide rows",
        "d2. many keys",
    ]
    for r in rows:
        assert f"| {r['attack']} |" in text
        assert r["attacker"]
        assert r["server"]
