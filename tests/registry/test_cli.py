"""``ofs registry`` end to end in subprocesses, on SQLite and etcd: apply, show, export, re-apply."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from online_feature_store.registry import RegistryWatcher, open_registry

from .conftest import ETCD, require_service

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "features.yaml"


READER_TOKEN = "r-tok-0123456789abcdef0123456789abcdef"
WRITER_TOKEN = "w-tok-0123456789abcdef0123456789abcdef"


def ofs(*args: str, registry: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OFS_REGISTRY": registry,
        "OFS_READER_TOKEN": READER_TOKEN,
        "OFS_WRITER_TOKEN": WRITER_TOKEN,
        **env_vars,
    }
    return subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture(params=["sqlite", "etcd"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'reg' / 'registry.db'}"
    require_service("etcd", [ETCD], "scripts/services/etcd start")
    return f"etcd://{ETCD[0]}:{ETCD[1]}/ofs-test/{uuid.uuid4().hex}/"


def test_apply_show_export_reapply(registry_url: str, tmp_path: Path) -> None:
    dry = ofs("registry", "apply", "-f", str(EXAMPLE), "--dry-run", registry=registry_url)
    assert dry.returncode == 0, dry.stderr
    assert "+ entity user (keys [user_id:uid])" in dry.stdout
    assert "dry run: nothing applied" in dry.stdout

    backend = open_registry(registry_url)
    try:
        with RegistryWatcher(backend, poll_interval=5.0) as watcher:
            assert watcher.revision == 0
            applied = ofs("registry", "apply", "-f", str(EXAMPLE), registry=registry_url)  # stdin not a tty
            assert applied.returncode == 0, applied.stderr
            assert "+ fg catalog/pricing (DataTypeFP64, id 0, ttl 3600s" in applied.stdout
            assert "applied: revision" in applied.stdout
            # a change made by another process reaches this one's watcher
            deadline = time.monotonic() + 10
            while watcher.revision == 0:
                assert time.monotonic() < deadline, "watcher did not see the CLI's apply"
                time.sleep(0.01)
            assert watcher.snapshot.feature_group("user", "embedding").features[0].vector_length == 8

        show = ofs("registry", "show", "user", registry=registry_url)
        assert show.returncode == 0, show.stderr
        assert "fg flags id 3 DataTypeBool" in show.stdout
        assert "accepts_marketing default True" in show.stdout

        out = tmp_path / "exported.yaml"
        export = ofs("registry", "export", "-o", str(out), registry=registry_url)
        assert export.returncode == 0, export.stderr
        assert READER_TOKEN not in out.read_text()
        assert "hmac-sha256$" in out.read_text()
        again = ofs("registry", "apply", "-f", str(out), "--yes", registry=registry_url)
        assert again.returncode == 0, again.stderr
        assert "no changes" in again.stdout
        again = ofs("registry", "apply", "-f", str(EXAMPLE), registry=registry_url)
        assert "no changes" in again.stdout

        missing = ofs("registry", "show", "nope", registry=registry_url)
        assert missing.returncode == 1
        assert "unknown entity 'nope'" in missing.stderr
    finally:
        if registry_url.startswith("etcd://"):
            backend._client.delete_prefix(backend.prefix)  # type: ignore[attr-defined]
        backend.close()


def test_invalid_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "entities:\n  - label: u\n    keys: [{label: id}]\n    feature_groups:\n"
        "      - {label: g, data_type: int8, features: [{label: f, default: 300}]}\n"
    )
    result = ofs("registry", "apply", "-f", str(bad), registry=f"sqlite://{tmp_path / 'r.db'}")
    assert result.returncode == 1
    assert (
        "entity 'u', feature group 'g', feature 'f': default 300 does not fit DataTypeInt8" in result.stderr
    )


def test_new_token_and_short_tokens_refused(tmp_path: Path) -> None:
    registry = f"sqlite://{tmp_path / 'r.db'}"
    made = {ofs("registry", "new-token", registry=registry).stdout.strip() for _ in range(2)}
    assert len(made) == 2
    assert all(len(t) == 43 for t in made)  # 256 random bits, URL-safe
    result = ofs("registry", "apply", "-y", "-f", str(EXAMPLE), registry=registry, OFS_READER_TOKEN="secret")
    assert result.returncode == 1
    assert (
        "caller 'ranker': the token (from environment variable OFS_READER_TOKEN) has 6 characters; a caller "
        "token must be a random secret of at least 32 characters: make one with `ofs registry new-token`"
    ) in result.stderr
    token = made.pop()
    result = ofs("registry", "apply", "-y", "-f", str(EXAMPLE), registry=registry, OFS_READER_TOKEN=token)
    assert result.returncode == 0, result.stderr
    backend = open_registry(registry)
    try:
        assert backend.load().callers["ranker"].token_hash.startswith("hmac-sha256$")
    finally:
        backend.close()


def test_backup_and_restore_keep_every_schema_version(tmp_path: Path) -> None:
    """An exact backup brings back old schema versions (a YAML export cannot), so old blocks decode."""
    import numpy as np

    from online_feature_store import FeatureStore

    source = f"sqlite://{tmp_path / 'a' / 'registry.db'}"
    (tmp_path / "a").mkdir()
    assert ofs("registry", "apply", "-f", str(EXAMPLE), registry=source).returncode == 0
    with FeatureStore(source, data_directory=tmp_path / "a") as fs:
        fs.persist("user", "counts", ["u1"], np.array([[7, 1]]))  # written with version 1
    grown = tmp_path / "grown.yaml"
    grown.write_text(
        EXAMPLE.read_text().replace(
            "          - {label: returns_total, default: 0}",
            "          - {label: returns_total, default: 0}\n          - {label: refunds_total, default: 0}",
        )
    )
    assert ofs("registry", "apply", "-f", str(grown), registry=source).returncode == 0
    backup = tmp_path / "registry.json"
    done = ofs("registry", "backup", "-o", str(backup), registry=source)
    assert done.returncode == 0, done.stderr
    assert READER_TOKEN not in backup.read_text()

    target_dir = tmp_path / "b"
    target_dir.mkdir()
    target = f"sqlite://{target_dir / 'registry.db'}"
    restored = ofs("registry", "restore", "-f", str(backup), registry=target)
    assert restored.returncode == 0, restored.stderr
    assert "restored: revision" in restored.stdout
    assert "no changes" in ofs("registry", "restore", "-f", str(backup), registry=target).stdout
    with open_registry(source) as a, open_registry(target) as b:
        assert a.load().state == b.load().state
        assert sorted(b.load().feature_group("user", "counts").versions) == [1, 2]

    # The block written under version 1 still decodes through the restored registry.
    with FeatureStore(target, data_directory=tmp_path / "a") as fs:
        got = fs.retrieve("user", ["u1"], {"counts": ["orders_total", "refunds_total"]})
        assert got.values["counts"].tolist() == [[7, 0]]

    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    refused = ofs("registry", "restore", "-f", str(bad), registry=target)
    assert refused.returncode == 1
    assert "not a registry backup" in refused.stderr
