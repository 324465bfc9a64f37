"""Loading Arrow data into an entity: from files (:func:`push_files`, what ``ofs push`` runs) or from
record batches in hand (:func:`push_arrow`, what the Spark partition writer runs).

Each record batch is converted (:mod:`.columns`) and every one of its rows encoded into blocks by the
native encoder (which refuses out-of-range values) before any row of it is written; then it is written
in chunks of ``chunk_rows`` rows (4,096 by default, well under a server's ``max_keys_per_request`` and
``max_rows_per_persist``):

- into an embedded store: the blocks just built, one store write per chunk (all its FGs in one
  transaction where they share a store) through :meth:`FeatureStore.write_prepared`, no protobuf;
- to ``ofs serve`` or Kafka: ``persist.Query`` messages through the ingest sinks (the blocks built
  here only validated the rows; the server builds its own).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from online_feature_store.batch.checkpoint import Checkpoint
from online_feature_store.batch.columns import (
    Batch,
    ColumnPlan,
    Where,
    as_rows,
    check_types,
    convert,
    encode,
    plan_columns,
    take,
)
from online_feature_store.batch.sources import SourceFile, csv_types, discover
from online_feature_store.errors import InvalidInputError, OfsError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.compiled import compile_catalog

if TYPE_CHECKING:
    import pyarrow as pa

    from online_feature_store._native import Catalog, EncodedRows, Limits
    from online_feature_store.registry.snapshot import Snapshot

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_READ_ROWS",
    "EmbeddedWriter",
    "LoadResult",
    "SinkWriter",
    "Writer",
    "push_arrow",
    "push_files",
    "push_rows",
    "writer_for",
]

DEFAULT_CHUNK_ROWS = 4096
"""Rows per store write or message group: well under the servers' 10,000 keys per request."""
DEFAULT_READ_ROWS = 65536
"""Rows per record batch read from a file (each is checked whole before any of it is written)."""
_CHECKPOINT_SECONDS = 5.0
_TRANSACTION_ROWS = 16384
"""Rows an embedded write puts in one transaction (several chunks): each commit waits for an fsync."""
_WRITES_IN_FLIGHT = 2
"""Embedded writes queued behind the one running (each holds its encoded rows until written)."""


# -- writers -----------------------------------------------------------------------------------------------
Chunk = tuple[int, int, "EncodedRows"]
"""Rows ``start:stop`` of a :class:`Batch` and their key names and blocks, encoded natively."""


class Writer(Protocol):
    """Where converted rows go."""

    def write(self, plan: ColumnPlan, batch: Batch, chunks: list[Chunk]) -> None:
        """Writes ``chunks`` of ``batch``."""
        ...

    def flush(self) -> None:
        """Returns once everything written is durable (acknowledged by the sink)."""
        ...

    def after_durable(self, then: Callable[[], None]) -> None:
        """Runs ``then`` once everything written so far is durable (never after a failed write)."""
        ...


class EmbeddedWriter:
    """Writes the encoded rows straight into ``fs``'s stores (:meth:`FeatureStore.write_encoded`: from
    native memory into a native store, no Python object per row), ``_TRANSACTION_ROWS`` rows or more
    per store write (one transaction per store), then strong-mode invalidation of the written keys.

    The writes run in a background thread, at most ``_WRITES_IN_FLIGHT`` queued, while the caller
    reads and encodes the next rows: a commit waits for its fsyncs (the WAL's, and the database's at a
    checkpoint), time the loader now spends working, on one core too. :meth:`flush` returns once every
    write is durable, and raises the first write's error."""

    def __init__(self, fs: FeatureStore, snapshot: Snapshot) -> None:
        self.fs = fs
        self.snapshot = snapshot
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()
        self._failed = False

    def write(self, plan: ColumnPlan, batch: Batch, chunks: list[Chunk]) -> None:
        pending: list[EncodedRows] = []
        rows = 0
        for _start, _stop, encoded in chunks:
            pending.append(encoded)
            rows += len(encoded)
            if rows >= _TRANSACTION_ROWS:
                self._submit(partial(self._write, plan.entity, pending))
                pending, rows = [], 0
        if pending:
            self._submit(partial(self._write, plan.entity, pending))

    def after_durable(self, then: Callable[[], None]) -> None:
        # the one writer thread runs tasks in order: this one after every write submitted before it
        self._submit(lambda: None if self._failed else then())

    def _write(self, entity: str, batches: list[EncodedRows]) -> None:
        if self._failed:  # the load is stopping: nothing more is written
            return
        try:
            self.fs.write_encoded(self.snapshot, entity, batches)
        except BaseException:
            self._failed = True
            raise

    def _submit(self, task: Callable[[], None]) -> None:
        while len(self._pending) >= _WRITES_IN_FLIGHT:
            self._pending.popleft().result()  # a failed write stops the load here
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="ofs-batch-write")
        self._pending.append(self._pool.submit(task))

    def flush(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if self._pool is not None:  # no idle thread left behind (Spark reuses its Python workers)
                self._pool.shutdown(wait=True)
                self._pool = None


class SinkWriter:
    """Sends ``persist.Query`` messages through an ingest sink (:class:`~online_feature_store.ingest.
    GrpcSink`, :class:`~online_feature_store.ingest.KafkaSink`, …)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def write(self, plan: ColumnPlan, batch: Batch, chunks: list[Chunk]) -> None:
        from online_feature_store.ingest import push

        for start, stop, _blocks in chunks:
            push(
                self.sink,
                plan.entity,
                batch.key_rows(start, stop),
                {
                    g.label: as_rows(g, take(g, v, start, stop), stop - start)
                    for g, v in zip(plan.groups, batch.values, strict=True)
                },
                features={g.label: list(g.features) for g in plan.groups},
                data_types={g.label: g.data_type for g in plan.groups},
                keys_schema=list(plan.keys_schema),
                flush=False,
            )

    def flush(self) -> None:
        self.sink.flush()

    def after_durable(self, then: Callable[[], None]) -> None:
        self.flush()
        then()


class _DryRun:
    def write(self, plan: ColumnPlan, batch: Batch, chunks: list[Chunk]) -> None:
        pass

    def flush(self) -> None:
        pass

    def after_durable(self, then: Callable[[], None]) -> None:
        then()


def writer_for(target: Any, snapshot: Snapshot) -> Writer:
    """The writer of ``target``: a :class:`FeatureStore` or an ingest ``EmbeddedSink`` (direct block
    writes), or any other ingest sink (messages)."""
    from online_feature_store.ingest import EmbeddedSink

    if isinstance(target, EmbeddedSink):
        target = target.fs
    if isinstance(target, FeatureStore):
        return EmbeddedWriter(target, snapshot)
    return SinkWriter(target)


@contextlib.contextmanager
def _draining(writer: Writer) -> Iterator[None]:
    """On an error, lets the writes already queued finish (with the checkpoints behind them) before it
    propagates: no write is left running when the caller closes the store, and a queued write's own
    failure is noted on the error that stopped the load."""
    try:
        yield
    except BaseException as e:
        try:
            writer.flush()
        except Exception as later:  # reported on the error being raised, not instead of it
            e.add_note(f"a write queued before it failed too: {later}")
        raise


# -- the per-batch step ------------------------------------------------------------------------------------
@dataclass
class _Loader:
    """Checks, then writes, one record batch at a time."""

    plan: ColumnPlan
    catalog: Catalog
    writer: Writer
    nulls: str
    chunk_rows: int
    limits: Limits | None

    def load(self, record_batch: pa.RecordBatch, where: Where) -> int:
        """Writes every row of ``record_batch`` (each checked and encoded before any is written)."""
        batch = convert(self.plan, record_batch, where, nulls=self.nulls)
        now = int(time.time())
        bounds = [(s, min(s + self.chunk_rows, batch.rows)) for s in range(0, batch.rows, self.chunk_rows)]
        # every chunk encoded (and so checked) before any is written
        chunks = [
            (s, e, encode(self.catalog, self.plan, batch, s, e, now=now, limits=self.limits))
            for s, e in bounds
        ]
        self.writer.write(self.plan, batch, chunks)
        return batch.rows


# -- from Arrow data in hand -------------------------------------------------------------------------------
def push_arrow(
    target: Any,
    entity: str,
    data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
    *,
    feature_groups: Sequence[str] | Mapping[str, Sequence[str]],
    registry: Any,
    keys: Mapping[str, str] | None = None,
    columns: Mapping[str, str] | None = None,
    nulls: str = "error",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    source: str = "input",
    flush: bool = True,
) -> int:
    """Writes Arrow rows (a Table, a RecordBatch or an iterable of them) of ``entity`` into ``target``
    (a :class:`FeatureStore`, an ingest ``EmbeddedSink``, ``GrpcSink`` or ``KafkaSink``): columns
    mapped by name (or ``keys`` / ``columns``), nulls per ``nulls`` (``"error"`` or ``"default"``), each
    record batch checked whole before any of its rows is written (errors name ``source``, the column and
    the row). ``registry``: a FeatureStore, a snapshot, a backend or a registry URL. Returns the rows."""
    import pyarrow as pa

    from online_feature_store.ingest import _snapshot

    snapshot = _snapshot(registry)
    if snapshot is None:
        raise InvalidInputError("push_arrow needs the registry (the schema every row is checked against)")
    writer = writer_for(target, snapshot)
    if isinstance(data, pa.Table):
        batches: Iterable[pa.RecordBatch] = data.to_batches(max_chunksize=DEFAULT_READ_ROWS)
    elif isinstance(data, pa.RecordBatch):
        batches = [data]
    else:
        batches = data
    loader: _Loader | None = None
    rows = 0
    with _draining(writer):
        for record_batch in batches:
            if loader is None:
                plan = plan_columns(
                    snapshot, entity, feature_groups, record_batch.schema.names, keys=keys,
                    columns=columns, source=source,
                )  # fmt: skip
                check_types(plan, record_batch.schema, source)
                loader = _Loader(plan, compile_catalog(snapshot), writer, nulls, chunk_rows, _limits(target))
            rows += loader.load(record_batch, Where(source, first_row=rows))
        if flush or isinstance(writer, EmbeddedWriter):  # its writes run in a thread of the writer's
            writer.flush()
    return rows


def push_rows(
    target: Any,
    entity: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    feature_groups: Sequence[str] | Mapping[str, Sequence[str]],
    registry: Any,
    keys: Mapping[str, str] | None = None,
    columns: Mapping[str, str] | None = None,
    nulls: str = "error",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    source: str = "input",
    flush: bool = True,
) -> int:
    """:func:`push_arrow` for Python rows (mappings of column name to value, such as
    ``pyspark.sql.Row.asDict()``), taken ``chunk_rows`` at a time into record batches of the columns the
    mapping reads (numbers in the widest type of their kind, so range errors name their row). The
    columns are those of the first row. Returns the rows written."""
    from online_feature_store.batch.columns import from_rows
    from online_feature_store.ingest import _snapshot

    snapshot = _snapshot(registry)
    if snapshot is None:
        raise InvalidInputError("push_rows needs the registry (the schema every row is checked against)")
    writer = writer_for(target, snapshot)
    it = iter(rows)
    loader: _Loader | None = None
    done = 0
    with _draining(writer):
        while True:
            chunk = list(itertools.islice(it, chunk_rows))
            if not chunk:
                break
            where = Where(source, first_row=done)
            if loader is None:
                plan = plan_columns(
                    snapshot, entity, feature_groups, list(chunk[0]), keys=keys, columns=columns,
                    source=source,
                )  # fmt: skip
                loader = _Loader(plan, compile_catalog(snapshot), writer, nulls, chunk_rows, _limits(target))
            done += loader.load(from_rows(loader.plan, chunk, where), where)
        if flush or isinstance(writer, EmbeddedWriter):  # its writes run in a thread of the writer's
            writer.flush()
    return done


def _limits(target: Any) -> Limits | None:
    fs = getattr(target, "fs", target)
    return fs.limits if isinstance(fs, FeatureStore) else None


# -- from files --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadResult:
    """What :func:`push_files` did."""

    files: int
    rows: int
    """Rows written (checked, for a dry run) by this run."""
    skipped_rows: int
    """Rows an earlier run had loaded (from the checkpoint), not read again."""
    seconds: float
    checkpoint: Path | None
    dry_run: bool


@contextlib.contextmanager
def gc_for_loading() -> Iterator[None]:
    """Garbage collection every 50,000 allocations instead of 700 while loading: each row of a batch
    holds a few Python objects until it is stored, which the default thresholds scan again and again
    (a tenth of the loader's CPU, as in the Kafka consumer). The thresholds are restored after."""
    before = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _record(cp: Checkpoint, f: SourceFile, rows: int) -> None:
    cp.advance(f, rows)
    cp.save()


def _progress(total: int | None, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the [push] extra brings tqdm; without it, no bar
        return None
    return tqdm(total=total, unit="rows", unit_scale=True, desc=desc, smoothing=0.1, dynamic_ncols=True)


def push_files(
    sources: Sequence[str],
    entity: str,
    *,
    feature_groups: Sequence[str] | Mapping[str, Sequence[str]],
    target: Any,
    snapshot: Snapshot,
    sink_name: str,
    keys: Mapping[str, str] | None = None,
    columns: Mapping[str, str] | None = None,
    format: str | None = None,
    nulls: str = "error",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    read_rows: int = DEFAULT_READ_ROWS,
    checkpoint: Path | None = None,
    restart: bool = False,
    dry_run: bool = False,
    progress: bool = False,
    log: Any = None,
) -> LoadResult:
    """Loads Parquet, CSV or Arrow IPC files (``sources``: files, directories, globs) into ``entity``
    through ``target`` (see :func:`push_arrow`), reading each in record batches of ``read_rows`` rows at
    most. Every file's columns and their types are checked first, before anything is written; then each
    batch is checked whole before any of its rows is written. Progress is kept in a checkpoint
    (``checkpoint``, default ``.ofs-push/<job>.json``; ``sink_name`` identifies the sink in it) saved as
    units (row groups, record batches, CSV blocks) complete, so rerunning the same load after a failure
    continues where it stopped; ``restart`` discards it. ``dry_run`` checks everything and writes
    nothing (and keeps no checkpoint). ``log(message)`` receives progress notes."""
    import pyarrow as pa

    say = log or (lambda _message: None)
    started = time.perf_counter()
    files = discover(sources, format)
    plans: list[ColumnPlan] = []
    for f in files:  # every file's columns and types, before anything is written
        schema = f.schema()
        plan = plan_columns(
            snapshot, entity, feature_groups, schema.names, keys=keys, columns=columns, source=f.path
        )
        if f.format == "csv":  # CSV cells are parsed as the types the plan asks for
            schema = pa.schema(list(csv_types(plan).items()))
        check_types(plan, schema, f.path)
        plans.append(plan)
    job = {
        "entity": entity,
        "mapping": plans[0].describe() if plans else {},
        "sink": sink_name,
        "sources": [str(Path(s).absolute()) for s in sources],
    }
    cp = None if dry_run else Checkpoint.open(checkpoint, job, restart=restart)
    writer: Writer = _DryRun() if dry_run else writer_for(target, snapshot)
    catalog = compile_catalog(snapshot)
    limits = _limits(target)
    done = {f.path: (cp.rows_done(f) if cp else 0) for f in files}
    if cp is not None:
        say(f"checkpoint: {cp.path}")
        if cp.resumed:
            skipped = sum(done.values())
            say(f"resuming: {skipped} rows of {sum(1 for f in files if done[f.path])} file(s) already loaded")
    totals = [f.rows() for f in files]
    known = None if any(t is None for t in totals) else sum(t or 0 for t in totals) - sum(done.values())
    bar = _progress(known, progress, f"push {entity}")
    written = 0
    with contextlib.ExitStack() as stack:
        stack.enter_context(gc_for_loading())
        if bar is not None:
            stack.callback(bar.close)
        stack.enter_context(_draining(writer))
        try:
            for f, plan in zip(files, plans, strict=True):
                if cp is not None and cp.complete(f):
                    continue
                loader = _Loader(plan, catalog, writer, nulls, chunk_rows, limits)
                at = done[f.path]
                last_save = time.monotonic()
                for piece in f.pieces(plan, skip_rows=at, batch_rows=read_rows):
                    where = Where(f.path, f.unit, piece.unit_index, piece.unit_first_row, piece.first_row)
                    n = loader.load(piece.batch, where)
                    written += n
                    at = piece.first_row + n
                    if bar is not None:
                        bar.update(n)
                    due = piece.last_in_unit or time.monotonic() - last_save > _CHECKPOINT_SECONDS
                    if cp is not None and due:  # saved once the rows before are durable
                        writer.after_durable(partial(_record, cp, f, at))
                        last_save = time.monotonic()
                writer.flush()
                if cp is not None:
                    cp.advance(f, at, complete=True)
                    cp.save()
        except (OfsError, OSError) as e:
            if cp is not None and cp.path.exists():
                what = (
                    "nothing of the failing batch was written; " if isinstance(e, InvalidInputError) else ""
                )
                say(f"stopped: {what}the rows loaded before it are recorded in {cp.path}: the same command "
                    "continues from there")  # fmt: skip
            raise
    if cp is not None:
        cp.finish()
    return LoadResult(
        files=len(files),
        rows=written,
        skipped_rows=sum(done.values()),
        seconds=time.perf_counter() - started,
        checkpoint=None if cp is None else cp.path,
        dry_run=dry_run,
    )
