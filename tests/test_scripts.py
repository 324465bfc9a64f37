"""What a newcomer sees from the scripts: ``scripts/run`` refuses a port it would not own,
``scripts/bootstrap`` drops pip's 60+ ``Ignoring …`` lines but no failure, service scripts say what they
mean, and the quick start's first example runs from anywhere."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _services import require_service

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "scripts" / "services"


def _listen(port: int = 0) -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    return listener


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another server holds (a listener); 1000 below it is a free port (for the metrics test)."""
    while True:
        listener = _listen()
        port: int = listener.getsockname()[1]
        try:
            _listen(port - 1000).close()
            break
        except (OSError, OverflowError):
            listener.close()
    with listener:
        yield port


def _run_script(*args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFS_")}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "run"), *args],
        cwd=ROOT, env={**env, **env_vars}, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_run_refuses_a_taken_port(taken: int) -> None:
    """Today's failure: with the port served by another server, the demo talked to that one."""
    ran = _run_script("--once", OFS_PORT=str(taken))
    assert ran.returncode == 1
    assert ran.stderr == (
        f"scripts/run: port {taken} on 127.0.0.1 is already in use (another ofs serve or scripts/run?): "
        f"stop it, or pick another port, e.g. OFS_PORT={taken + 10} scripts/run\n"
    )
    assert ran.stdout == ""  # nothing ran: no bootstrap, no demo


def test_run_moves_the_metrics_port_with_its_port(taken: int) -> None:
    ran = _run_script("--once", OFS_PORT=str(taken - 1000))
    assert ran.returncode == 1
    assert ran.stderr == (
        f"scripts/run: the metrics port {taken} on 127.0.0.1 is already in use: pick another with "
        "OFS_METRICS_PORT=... (0: no metrics), or another OFS_PORT\n"
    )


def test_run_rejects_a_port_that_is_not_a_number() -> None:
    ran = _run_script("--once", OFS_PORT="80a")
    assert (ran.returncode, ran.stderr) == (2, "scripts/run: OFS_PORT must be a port number, not '80a'\n")


def _fake_checkout(tmp_path: Path, maturin_status: int) -> tuple[Path, dict[str, str]]:
    """The real scripts/bootstrap in a copy of the checkout whose tools are stand-ins: dependencies
    already installed (its stamp), and a ``maturin`` that prints what ``maturin develop`` prints through
    pip (the ``Ignoring`` lines among others) and exits with ``maturin_status``."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("pyproject.toml", "scripts/bootstrap"):
        shutil.copy(ROOT / name, checkout / name)
    (checkout / "scripts" / "gen-proto").write_text("#!/bin/sh\n")
    venv = checkout / ".venv" / "bin"
    venv.mkdir(parents=True)
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "scripts/bootstrap").read_bytes())
    (checkout / ".venv" / ".deps-stamp").write_text(f"{want.hexdigest()} run\n")
    (venv / "activate").write_text(f'PATH="{venv}:$PATH"\n')
    stubs = {
        "python": "#!/bin/sh\necho 'online_feature_store 0 ready' >&2\n",
        "maturin": "#!/bin/sh\n"
        "echo 'Looking in links: /somewhere'\n"
        'echo "Ignoring pytest: markers \'extra == \\"test\\"\' don\'t match your environment"\n'
        'echo "Ignoring ruff: markers \'extra == \\"test\\"\' don\'t match your environment"\n'
        "echo 'Requirement already satisfied: numpy>=1.22'\n"
        "echo 'WARNING: pip says something' >&2\n"
        f"exit {maturin_status}\n",
        "rustup": "#!/bin/sh\nprintf 'clippy\\nrustfmt\\n'\n",
    }
    for name, text in stubs.items():
        (venv / name).write_text(text)
        (venv / name).chmod(0o755)
    (checkout / "scripts" / "gen-proto").chmod(0o755)
    env = {**os.environ, "PATH": f"{venv}:{os.environ['PATH']}", "OFS_BOOTSTRAP": "run"}
    return checkout, env


@pytest.mark.parametrize("maturin_status", [0, 7])
def test_bootstrap_drops_only_the_ignoring_lines(tmp_path: Path, maturin_status: int) -> None:
    checkout, env = _fake_checkout(tmp_path, maturin_status)
    ran = subprocess.run(
        ["bash", str(checkout / "scripts" / "bootstrap")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.stdout == "Looking in links: /somewhere\nRequirement already satisfied: numpy>=1.22\n"
    assert "WARNING: pip says something" in ran.stderr
    # a failing maturin fails the bootstrap (pipefail), and nothing runs after it
    assert ran.returncode == maturin_status
    assert ("online_feature_store 0 ready" in ran.stderr) == (maturin_status == 0)


def test_services_all_status_reports_every_service(tmp_path: Path) -> None:
    env = {**os.environ, "OFS_SERVICES_DIR": str(tmp_path / "services")}  # none of them runs here
    ran = subprocess.run(
        [str(SERVICES / "all"), "status", "redis", "etcd"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 1
    assert ran.stdout.splitlines()[0::2] == ["== redis status", "== etcd status"]
    assert ran.stderr == "all: not running: redis etcd\n"


def test_cassandra_start_says_what_it_prints() -> None:
    """Run against the shared Cassandra, which is running: ``start`` is idempotent and leaves it be."""
    require_service("cassandra", [("127.0.0.1", 19042)], "scripts/services/cassandra start")
    ran = subprocess.run(
        [str(SERVICES / "cassandra"), "start"], capture_output=True, text=True, timeout=300, check=False
    )
    assert ran.returncode == 0, ran.stderr
    line = ran.stdout.strip()
    assert line.startswith("cassandra already running pid "), line
    assert line.endswith(", CQL at 127.0.0.1:19042"), line


def test_quickstart_example_runs_from_anywhere(tmp_path: Path) -> None:
    source = (ROOT / "examples" / "quickstart.py").read_text()
    assert "milestone" not in source  # it is the quick start's first step, not a preview
    ran = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "profile block:" in ran.stdout
