"""Spark DataFrames into an entity over Arrow: :func:`push_dataframe` runs :func:`spark_arrow_writer` on
every partition through ``DataFrame.mapInArrow`` (Spark 3.3+), so each executor hands the writer Arrow
record batches, which :func:`~online_feature_store.batch.push_arrow` checks, encodes natively and writes
— no Python object per row or per value. On older Spark, :func:`push_dataframe` falls back to
``foreachPartition`` with :func:`online_feature_store.ingest.spark_partition_writer`, which takes
``pyspark.sql.Row`` objects (the same rules, several times slower). See docs/ingestion.md#spark."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from online_feature_store.batch.columns import NULL_POLICIES
from online_feature_store.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["WRITTEN_SCHEMA", "push_dataframe", "spark_arrow_writer"]

WRITTEN_SCHEMA = "partition int, rows long"
"""What :func:`spark_arrow_writer` yields per partition (the schema to give ``mapInArrow``)."""

READ_ROWS = 65536
"""Rows gathered from Spark's Arrow batches (``spark.sql.execution.arrow.maxRecordsPerBatch``, 10,000 by
default) before they are checked and written: fewer, larger store transactions, memory still bounded."""


def check_writer_args(writer: str, registry: object, nulls: str) -> None:
    """What both Spark writers refuse on the driver, before any task runs."""
    if not isinstance(registry, str):
        raise InvalidInputError(f"{writer} needs the registry as a URL (it is sent to the executors)")
    if nulls not in NULL_POLICIES:
        raise InvalidInputError(f"nulls must be one of {NULL_POLICIES}, got {nulls!r}")


def partition() -> tuple[int, str]:
    """``(partition id, name for messages)`` of the Spark task running this; ``-1`` outside Spark."""
    try:
        from pyspark import TaskContext
    except ImportError:  # called outside Spark (tests, other engines)
        return -1, "Spark partition"
    context = TaskContext.get()
    if context is None:
        return -1, "Spark partition"
    return context.partitionId(), f"Spark partition {context.partitionId()}"


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    import pyarrow as pa

    if len(batches) == 1:
        return batches[0]
    if hasattr(pa, "concat_batches"):  # pyarrow 19+
        return pa.concat_batches(batches)
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _gathered(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """``batches`` combined into record batches of at least ``rows`` rows (the last may have fewer)."""
    held: list[pa.RecordBatch] = []
    count = 0
    for b in batches:
        if b.num_rows == 0:
            continue
        held.append(b)
        count += b.num_rows
        if count >= rows:
            yield _concat(held)
            held, count = [], 0
    if held:
        yield _concat(held)


def spark_arrow_writer(
    sink_factory: Callable[[], Any],
    entity: str,
    *,
    feature_groups: Sequence[str] | Mapping[str, Sequence[str]],
    registry: str,
    keys: Mapping[str, str] | None = None,
    columns: Mapping[str, str] | None = None,
    nulls: str = "error",
    chunk_rows: int = 4096,
    column_names: Sequence[str] | None = None,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A function for ``DataFrame.mapInArrow(f, WRITTEN_SCHEMA)``: on the executor it opens a sink with
    ``sink_factory`` (a picklable callable: ``functools.partial(EmbeddedSink, data_dir)``,
    ``functools.partial(GrpcSink, target, …)``, ``functools.partial(KafkaSink, servers, topic)``) and
    writes the partition's Arrow record batches through :func:`~online_feature_store.batch.push_arrow`
    (columns mapped by name or by ``keys`` / ``columns``; each batch checked whole before any of it is
    written; nulls per ``nulls``). It yields one row, ``(partition, rows written)``. ``registry`` is the
    registry URL (a string survives pickling). ``column_names``: the names to give the batches' columns
    (in order) before they are mapped. :func:`push_dataframe` runs it for you."""
    check_writer_args("spark_arrow_writer", registry, nulls)

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        from online_feature_store.batch.load import gc_for_loading, push_arrow
        from online_feature_store.ingest import _snapshot

        part, source = partition()
        snapshot = _snapshot(registry)  # once per partition
        sink = sink_factory()
        try:
            with gc_for_loading():
                if column_names is not None:
                    batches = (pa.RecordBatch.from_arrays(b.columns, names=column_names) for b in batches)
                rows = push_arrow(
                    sink,
                    entity,
                    _gathered(batches, READ_ROWS),
                    feature_groups=feature_groups,
                    registry=snapshot,
                    keys=keys,
                    columns=columns,
                    nulls=nulls,
                    chunk_rows=chunk_rows,
                    source=source,
                )
        finally:
            sink.close()
        yield pa.RecordBatch.from_pydict(
            {"partition": pa.array([part], pa.int32()), "rows": pa.array([rows], pa.int64())}
        )

    return write


def push_dataframe(
    df: Any,
    sink_factory: Callable[[], Any],
    entity: str,
    *,
    feature_groups: Sequence[str] | Mapping[str, Sequence[str]],
    registry: str,
    keys: Mapping[str, str] | None = None,
    columns: Mapping[str, str] | None = None,
    nulls: str = "error",
    chunk_rows: int = 4096,
    arrow: bool | None = None,
) -> int:
    """Writes every row of the Spark DataFrame ``df`` into ``entity`` through a sink opened on each
    executor by ``sink_factory`` (see :func:`spark_arrow_writer`), and returns the number of rows
    written. ``arrow``: ``True`` uses ``mapInArrow`` (Spark 3.3+: Arrow batches, no Python object per
    value), ``False`` ``foreachPartition`` over ``Row`` objects
    (:func:`~online_feature_store.ingest.spark_partition_writer`), ``None`` (the default) Arrow where
    the DataFrame has ``mapInArrow``. A bad row fails the job with an error naming the partition, the
    row and the column; rows of other partitions may have been written (rerunning is safe: rows are
    upserts)."""
    options: dict[str, Any] = {
        "feature_groups": feature_groups,
        "registry": registry,
        "keys": keys,
        "columns": columns,
        "nulls": nulls,
        "chunk_rows": chunk_rows,
    }
    if arrow is None:
        arrow = hasattr(df, "mapInArrow")
    if arrow:
        # pyspark's mapInArrow looks the columns up by name, and a dotted one ("emb.f0") does not resolve:
        # Spark sees positional names, the writer gets the real ones back (a rename, no copy)
        names = list(df.columns)
        positional = df.toDF(*(f"_{i}" for i in range(len(names))))
        writer = spark_arrow_writer(sink_factory, entity, column_names=names, **options)
        written = positional.mapInArrow(writer, WRITTEN_SCHEMA)
        return int(sum(row["rows"] for row in written.collect()))
    from online_feature_store.ingest import spark_partition_writer

    write = spark_partition_writer(sink_factory, entity, **options)
    return int(df.rdd.mapPartitions(lambda rows: [write(rows)]).sum())
