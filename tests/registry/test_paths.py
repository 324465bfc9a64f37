"""One rule for where the data is: a relative data directory or ``sqlite:`` path is taken from the working
directory, the same way by every ``ofs`` command (real subprocesses) and by ``FeatureStore``; ``--data-dir``
on every command that reads or writes the registry; a registry that is not there is not made up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from online_feature_store.errors import InvalidInputError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.horizon.config import load_config
from online_feature_store.registry.connect import open_registry
from online_feature_store.settings import data_dir, registry_url

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "features.yaml"
TOKENS = {
    "OFS_READER_TOKEN": "r-tok-0123456789abcdef0123456789abcdef",
    "OFS_WRITER_TOKEN": "w-tok-0123456789abcdef0123456789abcdef",
}


def ofs(cwd: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    """``ofs ARGS`` in ``cwd``, with neither ``$OFS_REGISTRY`` nor ``$OFS_DATA_DIR`` unless given."""
    env = {k: v for k, v in os.environ.items() if k not in ("OFS_REGISTRY", "OFS_DATA_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", *args],
        cwd=cwd,
        env={**env, **TOKENS, **env_vars},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """``tmp_path/work``, holding a registry applied there with ``OFS_DATA_DIR=.``."""
    work = tmp_path / "work"
    work.mkdir()
    applied = ofs(work, "registry", "apply", "-f", str(EXAMPLE), "--yes", OFS_DATA_DIR=".")
    assert applied.returncode == 0, applied.stderr
    # the working directory, not the filesystem root (it used to be sqlite:/// + "registry.db")
    assert f"registry sqlite://{work}/registry.db at revision 0" in applied.stdout
    assert (work / "registry.db").is_file()
    return work


def test_relative_data_dir_in_every_registry_command(work: Path, tmp_path: Path) -> None:
    by_flag = ofs(tmp_path, "registry", "show", "--data-dir", "work")
    by_env = ofs(tmp_path, "registry", "show", OFS_DATA_DIR="work")
    by_url = ofs(tmp_path, "registry", "show", "--registry", "sqlite:work/registry.db")
    by_env_url = ofs(tmp_path, "registry", "show", OFS_REGISTRY="sqlite://work/registry.db")
    for shown in (by_flag, by_env, by_url, by_env_url):
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"registry sqlite://{work}/registry.db at revision 1\n")
        assert "entity user: keys" in shown.stdout

    exported = ofs(tmp_path, "registry", "export", "--data-dir", "work", "-o", "features.yaml")
    assert exported.returncode == 0, exported.stderr
    again = ofs(tmp_path, "registry", "apply", "-f", "features.yaml", "--data-dir", "work", "--yes")
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stdout

    backup = ofs(tmp_path, "registry", "backup", "--data-dir", "work", "-o", "backup.json")
    assert backup.returncode == 0, backup.stderr
    restored = ofs(tmp_path, "registry", "restore", "-f", "backup.json", "--data-dir", "copy", "--yes")
    assert restored.returncode == 0, restored.stderr
    assert f"registry sqlite://{tmp_path}/copy/registry.db" in restored.stdout
    copy = ofs(tmp_path / "copy", "registry", "export", OFS_DATA_DIR=".")
    assert copy.returncode == 0, copy.stderr
    assert copy.stdout == (tmp_path / "features.yaml").read_text()


def test_feature_store_and_horizon_resolve_the_same_place(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OFS_REGISTRY", raising=False)
    want = f"sqlite://{work}/registry.db"
    with FeatureStore(data_directory="work", cache_bytes=0) as fs:
        assert fs._backend.url == want
        assert "user" in fs.snapshot.entities
    with FeatureStore("sqlite:work/registry.db", data_directory="elsewhere", cache_bytes=0) as fs:
        assert fs._backend.url == want
    monkeypatch.setenv("OFS_DATA_DIR", "work")
    with FeatureStore(cache_bytes=0) as fs:
        assert fs._backend.url == want
    assert data_dir() == work
    assert load_config(None, {}, env={}).registry_url() == want
    config = load_config(None, {}, env={"OFS_HORIZON_DATA_DIR": "work"})
    assert (config.resolved_data_dir(), config.registry_url()) == (work, want)


def test_sqlite_url_forms() -> None:
    assert registry_url("sqlite:///abs/registry.db") == "sqlite:///abs/registry.db"
    assert registry_url("sqlite:////abs/registry.db") == "sqlite:///abs/registry.db"
    assert registry_url("sqlite:rel/registry.db") == f"sqlite://{Path.cwd()}/rel/registry.db"
    assert registry_url("sqlite://rel/registry.db") == f"sqlite://{Path.cwd()}/rel/registry.db"
    assert registry_url("etcd://127.0.0.1:2379/p/") == "etcd://127.0.0.1:2379/p/"
    for bad in ("sqlite:", "sqlite://"):
        with pytest.raises(InvalidInputError, match="has no path"):
            open_registry(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_serving(address: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``address`` answers SERVING (a bound on the wait, not a timing expectation)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"ofs serve did not start:\n{log.read_text()}")


def test_serve_takes_a_relative_data_dir_from_its_working_directory(work: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("OFS_REGISTRY", "OFS_DATA_DIR")}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "serve", "--port", str(port),
             "--metrics-port", "0", "--data-dir", "work"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_serving(f"127.0.0.1:{port}", proc, log)
        called = ofs(
            tmp_path, "rpc", f"127.0.0.1:{port}", "call", "retrieve.FeatureService/RetrieveDecodedResult",
            "-d", '{"entityLabel": "user", "keysSchema": ["user_id"], "keys": [{"cols": ["u1"]}], '
            '"featureGroups": [{"label": "activity", "featureLabels": ["ctr_7d"]}]}',
        )  # fmt: skip
        assert called.returncode == 0, called.stderr  # the entity is known: the registry applied in work/
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert f"registry sqlite://{work}/registry.db, data directory {work}" in log.read_text()
    assert not (tmp_path / "registry.db").exists()


@pytest.mark.parametrize("command", ["show", "export", "backup"])
def test_reading_commands_refuse_a_missing_registry(tmp_path: Path, command: str) -> None:
    ran = ofs(tmp_path, "registry", command, "--data-dir", "nothing-here")
    assert ran.returncode == 1
    assert ran.stderr == (
        f"ofs: error: no registry at {tmp_path}/nothing-here/registry.db: apply one first "
        "(ofs registry apply -f FILE), or choose another with --data-dir / $OFS_DATA_DIR or "
        "--registry / $OFS_REGISTRY\n"
    )
    assert ran.stdout == ""
    assert not (tmp_path / "nothing-here").exists()  # nothing made up on the way
