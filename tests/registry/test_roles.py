"""Caller roles through the registry: a ``readwriter`` caller survives YAML apply, export, re-apply,
backup and restore on SQLite and etcd, and an unknown role is refused naming the roles there are."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from online_feature_store.registry import open_registry
from online_feature_store.registry.model import ROLES, role_allows

from .conftest import ETCD, require_service
from .test_cli import ofs

TOKENS = {
    "R_TOKEN": "r-tok-0123456789abcdef0123456789abcdef",
    "W_TOKEN": "w-tok-0123456789abcdef0123456789abcdef",
    "RW_TOKEN": "rw-tok-0123456789abcdef0123456789abcdef",
}


def _doc(callers: list[dict[str, str]]) -> str:
    return yaml.safe_dump(
        {
            "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
            "callers": callers,
            "entities": [
                {
                    "label": "user",
                    "keys": [{"label": "user_id"}],
                    "feature_groups": [
                        {
                            "label": "g",
                            "data_type": "fp32",
                            "store": "main",
                            "features": [{"label": "a", "default": 0}],
                        }
                    ],
                }
            ],
        }
    )


CALLERS = [
    {"id": "ranker", "role": "reader", "token_env": "R_TOKEN"},
    {"id": "ingest", "role": "writer", "token_env": "W_TOKEN"},
    {"id": "legacy-sdk", "role": "readwriter", "token_env": "RW_TOKEN"},
]


@pytest.fixture(params=["sqlite", "etcd"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'reg' / 'registry.db'}"
        return
    require_service("etcd", [ETCD], "scripts/services/etcd start")
    url = f"etcd://{ETCD[0]}:{ETCD[1]}/ofs-test/{uuid.uuid4().hex}/"
    yield url
    with open_registry(url) as backend:
        backend._client.delete_prefix(backend.prefix)  # type: ignore[attr-defined]


def test_role_allows() -> None:
    assert ROLES == ("reader", "writer", "readwriter")
    for held, needed in [
        ("reader", "reader"),
        ("writer", "writer"),
        ("readwriter", "reader"),
        ("readwriter", "writer"),
    ]:
        assert role_allows(held, needed)
    for held, needed in [("reader", "writer"), ("writer", "reader")]:
        assert not role_allows(held, needed)
    assert not role_allows("readwriter", "admin")


def test_readwriter_round_trips(registry_url: str, tmp_path: Path) -> None:
    source = tmp_path / "features.yaml"
    source.write_text(_doc(CALLERS))
    applied = ofs("registry", "apply", "-y", "-f", str(source), registry=registry_url, **TOKENS)
    assert applied.returncode == 0, applied.stderr
    assert "+ caller legacy-sdk (readwriter)" in applied.stdout
    with open_registry(registry_url) as backend:
        state = backend.load().state
    assert {c.id: c.role for c in state.callers} == {
        "ranker": "reader",
        "ingest": "writer",
        "legacy-sdk": "readwriter",
    }

    exported = tmp_path / "exported.yaml"
    done = ofs("registry", "export", "-o", str(exported), registry=registry_url)
    assert done.returncode == 0, done.stderr
    assert {"id": "legacy-sdk", "role": "readwriter"}.items() <= next(
        c for c in yaml.safe_load(exported.read_text())["callers"] if c["id"] == "legacy-sdk"
    ).items()
    again = ofs("registry", "apply", "-y", "-f", str(exported), registry=registry_url)
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stdout

    backup = tmp_path / "registry.json"
    assert ofs("registry", "backup", "-o", str(backup), registry=registry_url).returncode == 0
    (tmp_path / "restored").mkdir()
    target = f"sqlite://{tmp_path / 'restored' / 'registry.db'}"
    restored = ofs("registry", "restore", "-f", str(backup), registry=target)
    assert restored.returncode == 0, restored.stderr
    with open_registry(target) as backend:
        assert backend.load().state == state

    # A role change is shown as one (and applied).
    changed = [dict(c, role="reader") if c["id"] == "legacy-sdk" else c for c in CALLERS]
    source.write_text(_doc(changed))
    applied = ofs("registry", "apply", "-y", "-f", str(source), registry=registry_url, **TOKENS)
    assert applied.returncode == 0, applied.stderr
    assert "~ caller legacy-sdk: role readwriter → reader" in applied.stdout


def test_unknown_role_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "features.yaml"
    source.write_text(_doc([{"id": "both", "role": "read-write", "token_env": "RW_TOKEN"}]))
    registry = f"sqlite://{tmp_path / 'r.db'}"
    result = ofs("registry", "apply", "-y", "-f", str(source), registry=registry, **TOKENS)
    assert result.returncode == 1
    assert "caller 'both': unknown role 'read-write' (one of reader, writer, readwriter)" in result.stderr
