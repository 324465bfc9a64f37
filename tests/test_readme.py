"""The README's snippets run as written, in a fresh directory outside the checkout: its setup step, then
every ```python block in order, each in its own interpreter; the ``Client`` snippet against the
README's own ``ofs serve`` command, which must serve the data the embedded snippet wrote."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

README = Path(__file__).resolve().parents[1] / "README.md"
ADDRESS = "127.0.0.1:8089"
"""The server address the README's snippets use; the test's server runs on a free port instead."""

BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def blocks(lang: str) -> list[str]:
    return [code for kind, code in BLOCK.findall(README.read_text(encoding="utf-8")) if kind == lang]


def setup_block() -> str:
    """The one bash block the README marks as the setup step (the block after "**Setup**")."""
    text = README.read_text(encoding="utf-8")
    after = text[text.index("**Setup**") :]
    match = BLOCK.search(after)
    assert match is not None, "no block after **Setup**"
    assert match.group(1) == "bash", "the block after **Setup** is not bash"
    return match.group(2)


def serve_command() -> list[str]:
    """The README's ``ofs serve`` command line (comment stripped)."""
    lines = [ln for code in blocks("bash") for ln in code.splitlines() if ln.startswith("ofs serve")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0], comments=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A user's environment: the venv's commands on PATH, no OFS_* settings inherited from the test run."""
    bin_dir = str(Path(sys.executable).parent)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OFS_")}
    return {**clean, "PATH": f"{bin_dir}{os.pathsep}{clean.get('PATH', '')}", "HOME": str(tmp_path / "home")}


def run_python(code: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"snippet failed:\n{code}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@contextlib.contextmanager
def served(cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """The README's ``ofs serve`` command, run in ``cwd`` on a free port (set through OFS_PORT, so the
    command line itself is the README's)."""
    port = _free_port()
    log = cwd / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            serve_command(),
            cwd=cwd,
            env={**env, "OFS_PORT": str(port), "OFS_METRICS_PORT": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"ofs serve did not start:\n{log.read_text()}"
            with grpc.insecure_channel(address) as channel:
                try:
                    health = health_pb2_grpc.HealthStub(channel)
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    pass
            time.sleep(0.1)
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_readme_python_snippets_run_as_written(tmp_path: Path, env: dict[str, str]) -> None:
    work = tmp_path / "anywhere"
    work.mkdir()
    setup = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", setup_block()],
        cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert setup.returncode == 0, f"setup failed:\n{setup.stdout}\n{setup.stderr}"

    snippets = blocks("python")
    assert len(snippets) == 3, "the README's Python snippets changed: update this test's expectations"
    embedded, remote, storage = snippets
    assert "FeatureStore(" in embedded
    assert "Client(" in remote
    assert ADDRESS in remote

    wrote = run_python(embedded, work, env)
    assert "[0 1]" in wrote, wrote  # u9 found (it was just persisted), u1 defaults
    with served(work, env) as address:
        read = run_python(remote.replace(ADDRESS, address), work, env)
    # The server serves the data the embedded snippet wrote: the same values and statuses.
    assert read == wrote

    blocks_out = run_python(storage, work, env)
    assert "BlockHeader(version=1" in blocks_out
    assert "[ 1.   2.5 -3. ]" in blocks_out
