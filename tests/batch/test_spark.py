"""A real Spark job (pyspark in local mode, on the machine's Java 17) pushing a DataFrame read from
Parquet into each sink — the embedded store, a real ``ofs serve``, and Kafka read by a real ``ofs
consume`` — by each path: Arrow batches (``push_dataframe``: ``mapInArrow``) and ``Row`` objects
(``push_dataframe(arrow=False)`` / ``foreachPartition(spark_partition_writer(...))``); nulls refused or
defaulted; and the spark-submit recipe of docs/ingestion.md (a venv packed with venv-pack, shipped with
``--archives``)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from online_feature_store.batch import push_dataframe
from online_feature_store.feature_store import FeatureStore
from online_feature_store.ingest import EmbeddedSink, GrpcSink, KafkaSink, spark_partition_writer

from .conftest import (
    BOOTSTRAP,
    FEATURE_GROUPS,
    TOKEN,
    assert_stored,
    consuming,
    keys_of,
    serving,
    stored_count,
    table,
    wait_stored,
)

try:
    import pyspark  # noqa: F401  (the test extra has it; CI must run these tests)
except ImportError:  # pragma: no cover - a local install without the test extra
    if os.environ.get("CI"):
        raise
    pytest.skip("pyspark is not installed (it is in the test extra)", allow_module_level=True)


# mapInArrow goes through pyspark's pandas_udf machinery, which warns about pandas 3 (pandas is not used
# on our path: batches stay Arrow)
pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas >= 3.0.0:FutureWarning"
)


def _java() -> None:
    if shutil.which("java") is None:
        message = "Spark needs Java 17+ on PATH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A short-lived local Spark (2 threads, 1 GB driver, no UI) whose Python workers run this
    interpreter."""
    _java()
    from pyspark.sql import SparkSession

    saved = {k: os.environ.get(k) for k in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("ofs-tests")
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.local.dir", str(tmp_path_factory.mktemp("spark-local")))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _frame(spark: Any, tmp_path: Path, start: int, n: int, rows: list[dict[str, Any]] | None = None) -> Any:
    path = tmp_path / f"input-{start}.parquet"
    t = table(start, n) if rows is None else pa.Table.from_pylist(rows, schema=table(0, 1).schema)
    pq.write_table(t, path, row_group_size=1000)
    return spark.read.parquet(str(path)).repartition(4)


def _writer(factory: Any, data_dir: Path, **kwargs: Any) -> Any:
    return spark_partition_writer(
        factory,
        "user",
        feature_groups=FEATURE_GROUPS,
        registry=f"sqlite:///{data_dir / 'registry.db'}",
        **kwargs,
    )


PATHS = ["arrow", "rows"]


def _load(df: Any, factory: Any, data_dir: Path, path: str, **kwargs: Any) -> None:
    """Writes ``df`` by ``path``: ``arrow`` (mapInArrow), ``rows`` (Row objects, counted),
    ``foreachPartition`` (the Row writer as the docs show it)."""
    if path == "foreachPartition":
        df.foreachPartition(_writer(factory, data_dir, **kwargs))
        return
    written = push_dataframe(
        df,
        factory,
        "user",
        feature_groups=FEATURE_GROUPS,
        registry=f"sqlite:///{data_dir / 'registry.db'}",
        arrow=path == "arrow",
        **kwargs,
    )
    assert written == df.count()


@pytest.mark.parametrize("path", [*PATHS, "foreachPartition"])
def test_spark_to_the_embedded_store(spark: Any, data_dir: Path, tmp_path: Path, path: str) -> None:
    df = _frame(spark, tmp_path, 0, 6000)
    _load(df, functools.partial(EmbeddedSink, str(data_dir)), data_dir, path)
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert_stored(fs, 0, 6000)


@pytest.mark.parametrize("path", PATHS)
def test_spark_to_ofs_serve(spark: Any, data_dir: Path, tmp_path: Path, path: str) -> None:
    df = _frame(spark, tmp_path, 0, 6000)
    with serving(data_dir, tmp_path / "serve.log") as address:
        factory = functools.partial(GrpcSink, address, caller_id="loader", token=TOKEN)
        _load(df, factory, data_dir, path)
        with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
            assert_stored(fs, 0, 6000)


@pytest.mark.parametrize("path", PATHS)
def test_spark_to_kafka_for_ofs_consume(
    spark: Any, data_dir: Path, tmp_path: Path, kafka_topic: str, path: str
) -> None:
    df = _frame(spark, tmp_path, 0, 6000)
    _load(df, functools.partial(KafkaSink, BOOTSTRAP, kafka_topic), data_dir, path)
    log = tmp_path / "consume.log"
    with (
        consuming(data_dir, kafka_topic, log) as proc,
        FeatureStore(data_directory=data_dir, cache_bytes=0) as fs,
    ):
        wait_stored(fs, 0, 6000, proc, log)
        assert_stored(fs, 0, 6000)


@pytest.mark.parametrize("path", PATHS)
def test_spark_nulls_fail_the_job_naming_the_row_or_take_defaults(
    spark: Any, data_dir: Path, tmp_path: Path, path: str
) -> None:
    rows = table(0, 40).to_pylist()
    rows[13]["clicks"] = None
    rows[21]["v"] = None
    df = _frame(spark, tmp_path, 0, 40, rows).coalesce(1)
    sink = functools.partial(EmbeddedSink, str(data_dir))
    with pytest.raises(
        Exception,
        match=r"Spark partition 0, row \d+, column '(clicks|v)' \(feature (counts.clicks|vec.v)\): null",
    ):
        _load(df, sink, data_dir, path)
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert stored_count(fs, 0, 40) == 0  # the partition's one chunk was refused whole
    _load(df, sink, data_dir, path, nulls="default")
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        got = fs.retrieve("user", keys_of(0, 40), {"counts": ["clicks", "views"], "vec": ["v"]})
        assert got.values["counts"][13].tolist() == [-7, -13]
        assert got.values["vec"][21].tolist() == [[0.5, 0.5, 0.5]]
        assert got.values["counts"][12].tolist() == [36, -12]


def test_arrow_batches_are_gathered_before_they_are_written(
    spark: Any, data_dir: Path, tmp_path: Path
) -> None:
    """Spark hands mapInArrow batches of maxRecordsPerBatch rows (10,000 by default; 7 here): the writer
    gathers them into larger record batches, so rows of different Spark batches share a store write,
    and errors still name the row of the partition."""
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7")
    try:
        df = _frame(spark, tmp_path, 0, 500).coalesce(1)
        _load(df, functools.partial(EmbeddedSink, str(data_dir)), data_dir, "arrow")
        with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
            assert_stored(fs, 0, 500)
        rows = table(0, 100).to_pylist()
        rows[95]["clicks"] = 2**40  # over int32, in the 14th Spark batch
        pq.write_table(pa.Table.from_pylist(rows, schema=table(0, 1).schema), tmp_path / "bad.parquet")
        bad = spark.read.parquet(str(tmp_path / "bad.parquet"))  # one partition, in file order
        where = r"Spark partition 0, row 95, column 'clicks' \(feature counts.clicks\)"
        with pytest.raises(Exception, match=where):
            _load(bad, functools.partial(EmbeddedSink, str(data_dir)), data_dir, "arrow")
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")


JOB = """\
import functools, sys
from pyspark.sql import SparkSession
from online_feature_store.batch import push_dataframe
from online_feature_store.ingest import EmbeddedSink

data_dir, source = sys.argv[1], sys.argv[2]
spark = SparkSession.builder.appName("ofs-push").getOrCreate()
rows = push_dataframe(
    spark.read.parquet(source).repartition(3),
    functools.partial(EmbeddedSink, data_dir),
    "user",
    feature_groups=["emb", "vec", "tags", "flags", "counts"],
    registry=f"sqlite:///{data_dir}/registry.db",
)
print("rows written", rows)
where = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("online_feature_store").__file__)
print("executor imports", where.first())
spark.stop()
"""


@pytest.mark.slow
def test_spark_submit_with_a_packed_environment(data_dir: Path, tmp_path: Path) -> None:
    """The recipe of docs/ingestion.md: the package and its dependencies in a virtualenv, packed with
    venv-pack, shipped to the executors with ``--archives``; executors run ``./environment/bin/python``.
    ``local-cluster`` runs real executor processes in working directories of their own (plain ``local``
    runs the tasks in the driver's directory, where the archive is not unpacked). Here the package is
    copied in from this checkout, as ``pip install online-feature-store[spark]`` would install it."""
    _java()
    from pyspark.find_spark_home import _find_spark_home

    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "numpy", "pyarrow", "pandas", "pyyaml", "venv-pack"],
        check=True,
        timeout=600,
    )
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    package = Path(__file__).resolve().parents[2] / "online_feature_store"
    shutil.copytree(package, site / "online_feature_store", ignore=shutil.ignore_patterns("__pycache__"))
    archive = tmp_path / "environment.tar.gz"
    subprocess.run(
        [str(env_dir / "bin" / "venv-pack"), "-p", str(env_dir), "-o", str(archive), "-q"],
        check=True,
        timeout=600,
    )
    (tmp_path / "job.py").write_text(textwrap.dedent(JOB))
    pq.write_table(table(0, 3000), tmp_path / "in.parquet", row_group_size=1000)
    # local-cluster's worker works in $SPARK_HOME/work: a SPARK_HOME of links keeps that out of the venv
    spark_home = str(tmp_path / "spark-home")
    os.mkdir(spark_home)
    for entry in Path(_find_spark_home()).iterdir():
        if entry.name != "work":
            os.symlink(entry, Path(spark_home) / entry.name)
    environment = {
        **os.environ,
        "SPARK_HOME": spark_home,
        "PYSPARK_PYTHON": "./environment/bin/python",
        "PYSPARK_DRIVER_PYTHON": str(py),
        "SPARK_LOCAL_DIRS": str(tmp_path / "local"),
    }
    done = subprocess.run(
        [f"{spark_home}/bin/spark-submit", "--master", "local-cluster[1,1,1024]", "--driver-memory", "1g",
         "--conf", "spark.ui.enabled=false", "--archives", f"{archive}#environment",
         str(tmp_path / "job.py"), str(data_dir), str(tmp_path / "in.parquet")],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    assert "rows written 3000" in done.stdout, done.stdout
    # the executor imported the package from the unpacked archive, not from this checkout
    executor = [line for line in done.stdout.splitlines() if line.startswith("executor imports")]
    assert executor, done.stdout
    assert "/environment/lib/" in executor[0]
    assert executor[0].startswith(f"executor imports {spark_home}/work/app-")
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
        assert_stored(fs, 0, 3000)
