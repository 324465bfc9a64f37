"""Holding a SQLite store's write lock from another process.

The store is native: it links its own copy of SQLite (rusqlite, bundled), so a ``sqlite3`` connection in
the test's own process does not exclude it. POSIX advisory locks belong to a process, and each copy of
SQLite keeps its own table of them, so two copies in one process never see each other's locks. The
lock is taken where a real concurrent writer would be: in another process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HOLD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


@contextmanager
def write_lock(path: str | Path) -> Iterator[None]:
    """The write lock of the SQLite database at ``path``, held by another process until the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()
            assert line.strip() == "locked", f"the lock holder failed (exit {proc.poll()})"
            yield
        finally:
            proc.stdin.write("\n")
            proc.stdin.flush()
            proc.wait(timeout=30)
