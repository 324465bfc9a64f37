"""The embedded write path of the batch loaders (``Catalog.encode_batch`` → ``FeatureStore.write_encoded``):
a store written from Python gets ``BlockWrite`` s with the key values, cached keys are invalidated, a
failed background write stops the load with the checkpoint behind it, and the load path imports no
pandas."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from online_feature_store import InvalidInputError, UnavailableError
from online_feature_store.batch import push_arrow, push_files
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.model import Entity
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.store.base import BlockWrite, KeyValues
from online_feature_store.store.keys import encode_key
from online_feature_store.store.sqlite import SqliteStore

from .conftest import DOC, FEATURE_GROUPS, TOKEN, assert_stored, keys_of, stored_count, table


class PythonStore:
    """A store written from Python (no ``native``): the SQLite store behind a plain BlockStore face,
    recording what it is given."""

    def __init__(self, path: Path) -> None:
        self.inner = SqliteStore(path)
        self.writes: list[BlockWrite] = []

    def ensure(self, entities: Sequence[Entity]) -> None:
        self.inner.ensure(entities)

    def read(self, entity: Entity, keys: Sequence[KeyValues], fg_ids: Sequence[int]) -> list[list[bytes]]:
        return self.inner.read(entity, keys, fg_ids)

    def write(self, entity: Entity, writes: Sequence[BlockWrite]) -> None:
        self.writes.extend(writes)
        self.inner.write(entity, writes)

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()


def test_a_store_written_from_python_gets_block_writes(data_dir: Path) -> None:
    store = PythonStore(data_dir / "store.db")
    t = table(0, 300)
    # separators in key values: the names are escaped, the key tuples hold the values as they are
    t = t.set_column(0, "user_id", pa.array([f"u{i}" if i % 2 else f"a|b:{i}" for i in range(300)]))
    with FeatureStore(f"sqlite:///{data_dir / 'registry.db'}", stores={"main": store}, cache_bytes=0) as fs:
        assert push_arrow(fs, "user", t, feature_groups=FEATURE_GROUPS, registry=fs) == 300
        assert len(store.writes) == 300 * len(FEATURE_GROUPS)
        first = store.writes[0]
        assert first.key == ("a|b:0", "r0")
        assert first.name == encode_key(["a|b:0", "r0"])
        assert all(w.name == encode_key(w.key) for w in store.writes)
        got = fs.retrieve("user", [("a|b:2", "r2"), ("u3", "r0")], {"counts": ["clicks"]})
        assert got.values["counts"].tolist() == [[6], [9]]


def test_written_keys_leave_the_in_process_cache(tmp_path: Path) -> None:
    doc = copy.deepcopy(DOC)
    user = doc["entities"][0]
    user["cache"] = {"in_process": {"enabled": True, "ttl_seconds": 600, "jitter_percent": 0}}
    for fg in user["feature_groups"]:
        fg["in_process_cache"] = True
    data = tmp_path / "data"
    data.mkdir()
    registry = SqliteRegistry(data / "registry.db")
    spec = parse_spec(doc, env={"PUSH_TOKEN": TOKEN})
    registry.apply(lambda state: reconcile(state, spec))
    registry.close()
    with FeatureStore(data_directory=data, cache_bytes=1 << 24, invalidation=False) as fs:
        push_arrow(fs, "user", table(0, 50), feature_groups=FEATURE_GROUPS, registry=fs)
        for _ in range(2):  # the second read is served from the in-process cache
            got = fs.retrieve("user", keys_of(0, 50), {"emb": ["f0"]})
            assert got.values["emb"][7].tolist() == [7.0]
        t = table(0, 50)
        t = t.set_column(t.schema.get_field_index("emb.f0"), "emb.f0", pa.array(np.full(50, 0.5, np.float32)))
        push_arrow(fs, "user", t, feature_groups=FEATURE_GROUPS, registry=fs)
        got = fs.retrieve("user", keys_of(0, 50), {"emb": ["f0"]})
        assert got.values["emb"][:, 0].tolist() == [0.5] * 50


def test_a_failed_write_stops_the_load_and_the_checkpoint_stays_behind_it(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pq.write_table(table(0, 6000), tmp_path / "in.parquet", row_group_size=1000)
    calls: list[int] = []
    real = FeatureStore.write_encoded

    def failing(self: FeatureStore, *args: Any, **kwargs: Any) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise UnavailableError("the store went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "write_encoded", failing)
    cp = tmp_path / "cp.json"
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs, pytest.raises(UnavailableError):
        push_files([str(tmp_path / "in.parquet")], "user", feature_groups=FEATURE_GROUPS, target=fs,
                   snapshot=fs.snapshot, sink_name="test", checkpoint=cp)  # fmt: skip
    # one write per row group (1,000 rows): the checkpoint holds the first two, never the failed one
    done = next(iter(json.loads(cp.read_text())["files"].values()))["rows_done"]
    assert done == 2000
    monkeypatch.setattr(FeatureStore, "write_encoded", real)
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert stored_count(fs, 0, 6000) >= 2000
        result = push_files([str(tmp_path / "in.parquet")], "user", feature_groups=FEATURE_GROUPS,
                            target=fs, snapshot=fs.snapshot, sink_name="test", checkpoint=cp)  # fmt: skip
        assert (result.rows, result.skipped_rows) == (4000, 2000)
        assert_stored(fs, 0, 6000)


def test_a_bad_batch_after_queued_writes_leaves_them_written(data_dir: Path) -> None:
    good = table(0, 3000)
    rows = table(3000, 10).to_pylist()
    rows[4]["clicks"] = 2**40
    bad = pa.Table.from_pylist(rows, schema=good.schema)
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        batches = [*good.to_batches(max_chunksize=1000), *bad.to_batches()]
        with pytest.raises(InvalidInputError, match=r"row 3004, column 'clicks' \(feature counts.clicks\)"):
            push_arrow(fs, "user", batches, feature_groups=FEATURE_GROUPS, registry=fs)
        assert_stored(fs, 0, 3000)  # written by the time the error reached the caller
        assert stored_count(fs, 3000, 10) == 0


def test_the_load_path_imports_no_pandas(data_dir: Path, tmp_path: Path) -> None:
    """pyarrow imports pandas (~0.4 s of CPU) on its first ``to_numpy``, Python scalar in a compute
    call, or ``import pyarrow.dataset``: ``ofs push`` of a file avoids all three."""
    pq.write_table(table(0, 100), tmp_path / "in.parquet")
    code = (
        "import sys\n"
        "from online_feature_store.cli import main\n"
        f"rc = main(['push', '--data-dir', {str(data_dir)!r}, '-e', 'user', "
        + "".join(f"'-g', {g!r}, " for g in FEATURE_GROUPS)
        + f"{str(tmp_path / 'in.parquet')!r}, '--no-progress'])\n"
        "print('pandas' in sys.modules)\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
