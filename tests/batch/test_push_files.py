"""``ofs push`` from files into the embedded store: Parquet, CSV and Arrow IPC; a file, a directory or a
glob; a mapping file; dry runs; schema mismatches refused before anything is written; a checkpoint that
lets a rerun continue after a bad row group, after SIGKILL, and reloads a file that changed; memory that
does not grow with the input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
import yaml

from online_feature_store.cli import main
from online_feature_store.feature_store import FeatureStore

from .conftest import FEATURE_GROUPS, assert_stored, keys_of, stored_count, table

GROUPS = [a for g in FEATURE_GROUPS for a in ("-g", g)]
SCALAR_GROUPS = [a for g in FEATURE_GROUPS if g != "vec" for a in ("-g", g)]


def push(data_dir: Path, *args: str) -> int:
    return main(["push", "--data-dir", str(data_dir), "-e", "user", *args])


def write_parquet(path: Path, start: int, n: int, row_group_size: int = 1000) -> None:
    pq.write_table(table(start, n), path, row_group_size=row_group_size)


def test_parquet_files_from_a_directory_and_a_glob(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "export"
    (src / "part=1").mkdir(parents=True)
    write_parquet(src / "a.parquet", 0, 2500)
    write_parquet(src / "part=1" / "b.parquet", 2500, 1500)
    (src / "_SUCCESS").write_text("")  # what Spark leaves: skipped
    assert push(data_dir, str(src), *GROUPS) == 0
    out = capsys.readouterr()
    assert "pushed 4000 rows of entity 'user' (emb, vec, tags, flags, counts) from 2 file(s)" in out.out
    assert "push user" in out.err  # the progress bar: rows, rate, ETA
    assert "rows/s" in out.err
    assert "checkpoint: .ofs-push/" in out.err
    assert not list((tmp_path / ".ofs-push").glob("*.json"))  # deleted once complete
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert_stored(fs, 0, 4000)
    write_parquet(tmp_path / "c1.parquet", 4000, 10)
    write_parquet(tmp_path / "c2.parquet", 4010, 10)
    assert push(data_dir, str(tmp_path / "c*.parquet"), *GROUPS, "--no-progress") == 0
    assert "from 2 file(s)" in capsys.readouterr().out
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert_stored(fs, 4000, 20)


def test_csv_and_arrow_ipc(data_dir: Path, tmp_path: Path) -> None:
    t = table(0, 3000)
    pcsv.write_csv(t.drop_columns(["v"]), tmp_path / "rows.csv")
    assert push(data_dir, str(tmp_path / "rows.csv"), *SCALAR_GROUPS, "--no-progress") == 0
    feather.write_feather(table(3000, 3000), tmp_path / "rows.arrow", chunksize=700)
    assert push(data_dir, str(tmp_path / "rows.arrow"), *GROUPS, "--no-progress") == 0
    with pa.OSFile(str(tmp_path / "rows.arrows"), "wb") as sink, pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(table(6000, 500), max_chunksize=128)
    assert push(data_dir, str(tmp_path / "rows.arrows"), *GROUPS, "--no-progress") == 0
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        got = fs.retrieve(
            "user", keys_of(0, 3000), {"emb": ["f0", "f3"], "tags": ["city"], "flags": ["active"]}
        )
        assert (got.status["emb"] == 0).all()
        assert got.values["emb"][2999].tolist() == [2999.0, 2999.75]
        assert got.values["tags"][17] == ["c17"]
        assert got.values["flags"][:2].tolist() == [[True], [False]]
        assert_stored(fs, 3000, 3500)


def test_csv_cells_that_do_not_parse_name_file_and_row(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.csv"
    pcsv.write_csv(table(0, 5).drop_columns(["v"]), path)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",6,", ",six,")  # clicks of row 2 (3 * 2)
    path.write_text("\n".join(lines) + "\n")
    assert push(data_dir, str(path), "-g", "counts", "--no-progress") == 1
    err = capsys.readouterr().err
    assert f"{path}, block 0 (from row 0)" in err
    assert "six" in err


def test_mapping_file_and_flags(data_dir: Path, tmp_path: Path) -> None:
    t = table(0, 100).rename_columns(
        ["uid", "rg", "x0", "x1", "x2", "x3", "v", "town", "lang", "active", "premium", "clicks", "views"]
    )
    pq.write_table(t, tmp_path / "m.parquet")
    mapping = {
        "entity": "user",
        "keys": {"user_id": "uid"},
        "feature_groups": {
            "emb": {"f0": "x0", "f1": "x1", "f2": "x2"},
            "tags": {"city": "town"},
            "vec": None,
        },
    }
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(mapping))
    args = ["push", "--data-dir", str(data_dir), str(tmp_path / "m.parquet"), "--mapping", "map.yaml"]
    assert main([*args, "--key", "region=rg", "--column", "emb.f3=x3", "-g", "flags", "-g", "counts"]) == 0
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert_stored(fs, 0, 100)


def test_dry_run_checks_everything_and_writes_nothing(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_parquet(tmp_path / "a.parquet", 0, 3000)
    assert push(data_dir, str(tmp_path / "a.parquet"), *GROUPS, "--dry-run") == 0
    assert "dry run: 3000 rows in 1 file(s) are valid; nothing was written" in capsys.readouterr().out
    rows = table(3000, 3000).to_pylist()
    rows[2500]["clicks"] = 2**40  # out of int32's range, in the third row group
    pq.write_table(
        pa.Table.from_pylist(rows, schema=table(0, 1).schema), tmp_path / "b.parquet", row_group_size=1000
    )
    assert push(data_dir, str(tmp_path / "b.parquet"), *GROUPS, "--dry-run") == 1
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'b.parquet'}, row group 2, row 2500 (row 500 of the row group), column 'clicks' "
        "(feature counts.clicks): value 1099511627776 is out of range for DataTypeInt32"
    ) in err
    assert not (tmp_path / ".ofs-push").exists()
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert stored_count(fs, 0, 6000) == 0


def test_schema_mismatches_stop_before_anything_is_written(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_parquet(tmp_path / "a.parquet", 0, 100)
    pq.write_table(table(100, 100).drop_columns(["lang"]), tmp_path / "b.parquet")
    assert push(data_dir, str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), *GROUPS) == 1
    assert (
        f"{tmp_path / 'b.parquet'}: no column 'tags.lang' or 'lang' for feature 'lang'"
        in capsys.readouterr().err
    )
    wrong = table(100, 100)
    wrong = wrong.set_column(wrong.schema.get_field_index("views"), "views", pa.array(np.zeros(100)))
    pq.write_table(wrong, tmp_path / "b.parquet")
    assert push(data_dir, str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), *GROUPS) == 1
    assert (
        f"{tmp_path / 'b.parquet'}, column 'views' (feature counts.views): wrong type: double cannot hold "
        "DataTypeInt32 values"
    ) in capsys.readouterr().err
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert stored_count(fs, 0, 200) == 0  # not even the good first file


def test_a_rerun_continues_after_a_bad_row_group(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """File a is good; file b's third row group holds a null. The first run stores a and b's first two
    row groups, then stops naming the place; the rerun (accepting nulls as defaults) reads neither a
    nor those row groups again, and finishes."""
    write_parquet(tmp_path / "a.parquet", 0, 2000)
    rows = table(2000, 4000).to_pylist()
    rows[2345]["city"] = None  # b row 2345: row group 2 (1000 rows each)
    pq.write_table(
        pa.Table.from_pylist(rows, schema=table(0, 1).schema), tmp_path / "b.parquet", row_group_size=1000
    )
    sources = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    assert push(data_dir, *sources, *GROUPS, "--checkpoint", "cp.json") == 1
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'b.parquet'}, row group 2, row 2345 (row 345 of the row group), column 'city' "
        "(feature tags.city): null value"
    ) in err
    assert (
        "stopped: nothing of the failing batch was written; the rows loaded before it are recorded in cp.json"
        in err
    )
    saved = json.loads((tmp_path / "cp.json").read_text())["files"]
    assert saved[str(tmp_path / "a.parquet")]["complete"] is True
    assert saved[str(tmp_path / "b.parquet")]["rows_done"] == 2000
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert stored_count(fs, 0, 6000) == 4000
        assert_stored(fs, 0, 4000)
        # Mark a row of a and of b's first row groups: a rerun that wrote them again would undo this.
        fs.persist("user", "counts", [("u5", "r2"), ("u3999", "r0")], np.array([[111, 111], [222, 222]]))
    assert push(data_dir, *sources, *GROUPS, "--checkpoint", "cp.json", "--nulls", "default") == 0
    captured = capsys.readouterr()
    assert "resuming: 4000 rows of 2 file(s) already loaded" in captured.err
    assert "pushed 2000 rows (4000 loaded by an earlier run)" in captured.out
    assert not (tmp_path / "cp.json").exists()
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        got = fs.retrieve("user", [("u5", "r2"), ("u3999", "r0")], {"counts": ["clicks"]})
        assert got.values["counts"].tolist() == [[111], [222]]
        assert_stored(fs, 4000, 345)
        assert fs.retrieve("user", [("u4345", "r1")], {"tags": ["city"]}).values["tags"] == [["nowhere"]]
        assert_stored(fs, 4346, 1654)


def test_a_changed_file_is_loaded_again_from_its_start(data_dir: Path, tmp_path: Path) -> None:
    rows = table(0, 3000).to_pylist()
    rows[2100]["clicks"] = None
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table(0, 1).schema), path, row_group_size=1000)
    assert push(data_dir, str(path), *GROUPS) == 1
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert stored_count(fs, 0, 3000) == 2000
        fs.persist("user", "counts", [("u5", "r2")], np.array([[111, 111]]))
    write_parquet(path, 0, 3000)  # a fixed export: new size and time
    assert push(data_dir, str(path), *GROUPS) == 0
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert_stored(fs, 0, 3000)  # u5 written again


def test_a_checkpoint_of_another_load_is_not_taken(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_parquet(tmp_path / "a.parquet", 0, 10)
    (tmp_path / "cp.json").write_text(json.dumps({"version": 1, "job": {"entity": "other"}, "files": {}}))
    assert push(data_dir, str(tmp_path / "a.parquet"), "-g", "emb", "--checkpoint", "cp.json") == 1
    assert "belongs to another load" in capsys.readouterr().err
    assert (
        push(data_dir, str(tmp_path / "a.parquet"), "-g", "emb", "--checkpoint", "cp.json", "--restart") == 0
    )


def _cli(*args: str, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "push", *args],
            cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_sigkill_midway_then_rerun_continues(data_dir: Path, tmp_path: Path) -> None:
    n = 240_000
    with pq.ParquetWriter(
        tmp_path / "big.parquet",
        table(0, 1).select(["user_id", "region", "emb.f0", "emb.f1", "emb.f2", "emb.f3"]).schema,
    ) as w:
        for s in range(0, n, 20_000):
            w.write_table(
                table(s, 20_000).select(["user_id", "region", "emb.f0", "emb.f1", "emb.f2", "emb.f3"]),
                row_group_size=4000,
            )
    args = ["--data-dir", str(data_dir), "-e", "user", "-g", "emb", str(tmp_path / "big.parquet"),
            "--checkpoint", "cp.json", "--no-progress", "--batch-rows", "256"]  # fmt: skip
    log = tmp_path / "push.log"
    proc = _cli(*args, cwd=tmp_path, log=log)
    cp = tmp_path / "cp.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if cp.exists() and json.loads(cp.read_text())["files"]:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the load finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = next(iter(json.loads(cp.read_text())["files"].values()))["rows_done"]
    assert 0 < done < n
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert stored_count(fs, 0, n) >= done
    log.write_text("")
    proc = _cli(*args, cwd=tmp_path, log=log)
    assert proc.wait(timeout=300) == 0, log.read_text()
    assert f"({done} loaded by an earlier run)" in log.read_text()
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert stored_count(fs, 0, n) == n
        got = fs.retrieve("user", keys_of(n - 3, 3), {"emb": ["f0", "f3"]})
        assert got.values["emb"].tolist() == [[k, k + 0.75] for k in range(n - 3, n)]


def _peak_rss_mb(data_dir: Path, path: Path, cwd: Path) -> float:
    code = (
        "import sys\n"
        "from online_feature_store.cli import main\n"
        f"rc = main(['push', '--data-dir', {str(data_dir)!r}, '-e', 'user', '-g', 'emb', {str(path)!r}, "
        "'--no-progress'])\n"
        # VmHWM: this process's own peak (ru_maxrss would start from pytest's, inherited through fork)
        "print(int([l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]) / 1024)\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


def test_memory_does_not_grow_with_the_input(tmp_path: Path) -> None:
    """Peak RSS of ``ofs push`` for 60k and for 600k rows (10x; 16 MB against 160 MB of fp32 values,
    1 GB against 10 GB scaled to 64 features) differs by far less than the larger input."""
    width = 64
    schema = pa.schema([("user_id", pa.string())] + [(f"f{j}", pa.float32()) for j in range(width)])
    doc_dir = tmp_path / "wide"
    doc_dir.mkdir()
    from online_feature_store.registry.spec import reconcile
    from online_feature_store.registry.sqlite import SqliteRegistry
    from online_feature_store.registry.yaml_io import parse_spec

    sizes = {}
    for rows in (60_000, 600_000):
        data = tmp_path / f"data{rows}"
        data.mkdir()
        registry = SqliteRegistry(data / "registry.db")
        fg = {
            "label": "emb",
            "data_type": "fp32",
            "store": "main",
            "features": [{"label": f"f{j}", "default": 0.0} for j in range(width)],
        }
        entity = {"label": "user", "keys": [{"label": "user_id", "column": "uid"}], "feature_groups": [fg]}
        store = {"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}
        spec = parse_spec({"stores": [store], "entities": [entity]}, env={})
        registry.apply(lambda s, spec=spec: reconcile(s, spec))
        registry.close()
        path = tmp_path / f"in{rows}.parquet"
        rng = np.random.default_rng(rows)
        with pq.ParquetWriter(path, schema) as w:
            for s in range(0, rows, 30_000):
                cols = [pa.array([f"u{i}" for i in range(s, s + 30_000)])]
                cols += [pa.array(rng.random(30_000, dtype=np.float32)) for _ in range(width)]
                w.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=30_000)
        sizes[rows] = _peak_rss_mb(data, path, tmp_path)
    small, large = sizes[60_000], sizes[600_000]
    # The larger input is 140 MB bigger in values alone; a loader that held it would show that.
    print("peak RSS MB", sizes)
    assert large < small + 60, sizes
