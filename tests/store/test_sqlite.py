"""SQLite specifics: durability across kill -9, several processes at once, purging, layout."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from online_feature_store.errors import UnavailableError
from online_feature_store.store.base import BlockWrite
from online_feature_store.store.sqlite import SqliteStore
from tests.store.conftest import make_block, make_entity

WORKER = str(Path(__file__).with_name("worker.py"))


def spec(path: Path) -> str:
    return json.dumps({"kind": "sqlite", "settings": {"path": str(path)}})


def test_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    entity = make_entity("durable")
    keys = [(f"k{i}", "r") for i in range(50)]
    for rnd in range(1, 4):
        proc = subprocess.Popen(
            [sys.executable, WORKER, "write-ack", spec(path), entity.label, str(len(keys)), str(rnd)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.send_signal(signal.SIGKILL)  # right after the acknowledgement, no clean shutdown
        proc.wait()
        proc.stdout.close()
        assert line.strip() == f"ack {rnd}"
        store = SqliteStore(path)
        try:
            assert store.read(entity, keys, [1, 2, 3]) == [[make_block(rnd)] * 3 for _ in keys]
        finally:
            store.close()


def test_processes_read_while_one_writes(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    entity = make_entity("shared")
    keys = [(f"k{i}", "r") for i in range(100)]
    store = SqliteStore(path)
    store.write(entity, [BlockWrite(k, fg, make_block(0)) for k in keys for fg in (1, 2, 3)])
    readers = [
        subprocess.Popen(
            [sys.executable, WORKER, "read-loop", spec(path), entity.label, str(len(keys)), "3"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    rnd = 0
    try:
        while any(r.poll() is None for r in readers):
            rnd += 1
            store.write(entity, [BlockWrite(k, 1 + rnd % 3, make_block(rnd)) for k in keys])
    finally:
        outs = [r.communicate(timeout=60)[0] for r in readers]
        store.close()
    assert rnd > 10
    for r, out in zip(readers, outs, strict=False):
        assert r.returncode == 0
        counts = json.loads(out)
        assert counts["reads"] > 10
        assert counts["bad"] == 0


def test_threads_share_one_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    entity = make_entity()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(30):
                store.write(entity, [BlockWrite((f"t{n}", str(i)), 1, make_block(i))])
                assert store.read(entity, [(f"t{n}", str(i))], [1]) == [[make_block(i)]]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert not errors, errors


def test_purge_deletes_expired_rows(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path, purge_interval=0)
    entity = make_entity()
    now = int(time.time())
    store.write(
        entity,
        [
            BlockWrite(("a", "r"), 1, make_block(1), now + 100),
            BlockWrite(("b", "r"), 1, make_block(2), now + 100),
            BlockWrite(("c", "r"), 1, make_block(3)),
        ],
    )
    assert store.purge_expired(now=now + 99) == 0
    # at now + 101 both are expired: hidden at once, deleted by the purge
    assert store.purge_expired(now=now + 101) == 2
    rows = sqlite3.connect(path).execute("SELECT key, fg_id, expires_at FROM blocks").fetchall()
    assert rows == [("c|r", 1, 0)]
    store.close()


def test_opportunistic_purge_on_write(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path, purge_interval=0.01)
    entity = make_entity()
    past = int(time.time()) - 10  # written already expired: hidden, then purged by a later write
    store.write(entity, [BlockWrite(("old", "r"), 1, make_block(1), past)])
    assert store.read(entity, [("old", "r")], [1]) == [[b""]]
    time.sleep(0.02)
    store.write(entity, [BlockWrite(("new", "r"), 1, make_block(2))])
    assert sqlite3.connect(path).execute("SELECT count(*) FROM blocks").fetchone() == (1,)
    store.close()


def test_the_sweep_deletes_expired_rows_a_slice_at_a_time(tmp_path: Path) -> None:
    """Each step looks at the next slice in key order and deletes what expired there; after the last
    row it starts over, so every expired row goes in the end and no live row ever does."""
    path = tmp_path / "store.db"
    store = SqliteStore(path, purge_interval=0)
    entity = make_entity()
    now = int(time.time())
    # keys k00 … k09 in key order; the odd ones expire at now + 10, k04 never, the rest at now + 1000
    writes = [
        BlockWrite((f"k{i:02d}", "r"), 1, make_block(i), 0 if i == 4 else now + (10 if i % 2 else 1000))
        for i in range(10)
    ]
    store.write(entity, writes)

    def keys() -> list[str]:
        return [k for (k,) in sqlite3.connect(path).execute("SELECT key FROM blocks ORDER BY key")]

    later = now + 100
    assert store.sweep_step(now=later, rows=4) == 2  # k00-k03: k01, k03
    assert keys() == [f"k{i:02d}|r" for i in (0, 2, 4, 5, 6, 7, 8, 9)]
    assert store.sweep_step(now=later, rows=4) == 2  # k04-k07: k05, k07
    assert store.sweep_step(now=later, rows=4) == 1  # k08, k09 and the end: k09; starts over next
    assert keys() == [f"k{i:02d}|r" for i in (0, 2, 4, 6, 8)]
    assert store.sweep_step(now=now + 2000, rows=100) == 4  # from the start again: all but k04
    assert keys() == ["k04|r"]
    assert store.sweep_step(now=now + 2000, rows=100) == 0
    store.close()


def test_an_old_expiry_index_is_dropped_on_open(tmp_path: Path) -> None:
    """Files from before the sweep had an index on expires_at that every write paid for."""
    path = tmp_path / "store.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("CREATE INDEX blocks_expiry ON blocks(expires_at) WHERE expires_at > 0")
    conn.commit()
    conn.close()
    SqliteStore(path).close()
    indexes = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    assert ("blocks_expiry",) not in indexes


def test_layout_and_durability_settings(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    store.ping()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'blocks'").fetchone()[0]
    assert "WITHOUT ROWID" in sql
    assert "PRIMARY KEY (entity, key, fg_id)" in sql
    assert store.pragma("synchronous") == "2"  # FULL
    assert store.pragma("journal_mode") == "wal"
    store.close()
    conn.close()


def test_unopenable_file_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UnavailableError, match="sqlite store"):
        SqliteStore(blocker / "store.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(UnavailableError):
        SqliteStore(garbage)


def test_closed_store_raises(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    store.close()
    with pytest.raises(UnavailableError, match="closed"):
        store.read(make_entity(), [("a", "b")], [1])


def test_writes_of_many_rows_and_later_rows_win(tmp_path: Path) -> None:
    # A (key, FG) written twice in one call keeps its later block, whatever the size of the write.
    entity = make_entity("chunks")
    store = SqliteStore(tmp_path / "store.db")
    try:
        for count in (1, 3, 7, 1023, 1024, 1025, 2600):
            keys = [(f"c{count}-{i}", "r") for i in range(count)]
            first = [BlockWrite(k, 1, make_block(1)) for k in keys]
            again = [BlockWrite(k, 1, make_block(2)) for k in keys[: count // 2 + 1]]
            store.write(entity, first + again)
            want = [[make_block(2)] if i <= count // 2 else [make_block(1)] for i in range(count)]
            assert store.read(entity, keys, [1]) == want, count
        (total,) = sqlite3.connect(store.path).execute("SELECT count(*) FROM blocks").fetchone()
        assert total == sum((1, 3, 7, 1023, 1024, 1025, 2600))
    finally:
        store.close()


def test_a_read_of_more_keys_than_sqlite_has_variables(tmp_path: Path) -> None:
    # The keys are bound as one array (``key IN rarray(?)``), so no read meets SQLite's variable limit
    # (999 on old builds, 32766 on new ones) however many keys it asks for.
    store = SqliteStore(tmp_path / "store.db")
    try:
        entity = make_entity("many")
        keys = [(f"k{i}", "r") for i in range(40_000)]
        store.write(entity, [BlockWrite(k, 2, make_block(3)) for k in keys[::2]])
        got = store.read(entity, keys, [2, 1])
        assert got == [[make_block(3), b""] if i % 2 == 0 else [b"", b""] for i in range(len(keys))]
    finally:
        store.close()


ODD_KEYS = [("é", "r"), ("日本", "x"), ("a%b", "'"), ("k\x00z", '"'), ("", "r"), ("%08x", "\\")]
ODD_BLOCKS = [bytes(range(256)) * 3, b"\x00", b"\xff\xfe\x00\xc3", "é".encode() * 40, b"%s%d", b"\x00" * 70]


def test_reads_return_every_byte_of_odd_keys_and_blocks(tmp_path: Path) -> None:
    # Keys and blocks of any bytes come back exactly as written.
    store = SqliteStore(tmp_path / "store.db")
    try:
        entity = make_entity("odd")
        fgs = [1, 2, 65535]
        writes = [
            BlockWrite(k, fg, ODD_BLOCKS[(i + j) % len(ODD_BLOCKS)] + bytes([j]))
            for i, k in enumerate(ODD_KEYS)
            for j, fg in enumerate(fgs)
        ]
        store.write(entity, writes)
        missing = ("absent", "r")
        got = store.read(entity, [*ODD_KEYS, missing, ODD_KEYS[0]], fgs)
        want = [[w.block for w in writes[i * len(fgs) : (i + 1) * len(fgs)]] for i in range(len(ODD_KEYS))]
        assert got == [*want, [b"", b"", b""], want[0]]
    finally:
        store.close()


def test_a_row_that_is_not_what_the_store_writes_is_corrupt(tmp_path: Path) -> None:
    # A block stored as text (not written by this store) is no block: DATA_LOSS, never b"".
    from online_feature_store.errors import CorruptBlockError

    store = SqliteStore(tmp_path / "store.db")
    try:
        entity = make_entity("bad")
        conn = sqlite3.connect(store.path)
        conn.execute("INSERT INTO blocks VALUES (?, 'k|r', 1, 'text', 0)", (entity.label,))
        conn.commit()
        conn.close()
        with pytest.raises(CorruptBlockError, match="sqlite store"):
            store.read(entity, [("k", "r")], [1])
    finally:
        store.close()
