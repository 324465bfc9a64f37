"""Input files of a batch load: found from paths, directories and globs (``pyarrow.dataset`` discovery),
and read in bounded pieces: a Parquet file row group by row group (each in batches of at most
``batch_rows``), an Arrow IPC file record batch by record batch, a CSV file block by block.

A *unit* (row group, record batch, CSV block) is what a checkpoint counts in: a file is resumed from the
first row not yet loaded, whole units before it are skipped without being read (CSV blocks are read,
since a CSV file has no index).
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from online_feature_store.batch.columns import wide_types
from online_feature_store.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

    from online_feature_store.batch.columns import ColumnPlan

__all__ = ["FORMATS", "Piece", "SourceFile", "discover"]

FORMATS = ("parquet", "csv", "ipc")
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".arrow": "ipc",
    ".feather": "ipc",
    ".ipc": "ipc",
    ".arrows": "ipc",
}
_CSV_BLOCK_BYTES = 4 << 20


@dataclass(frozen=True)
class Piece:
    """A record batch read from a file: ``batch`` holds source rows ``first_row`` onwards, inside unit
    ``unit_index`` (a row group, record batch or CSV block) whose first row is ``unit_first_row`` and
    which ends at source row ``unit_end`` (exclusive; None while a CSV block's end is unknown)."""

    batch: pa.RecordBatch
    unit_index: int
    unit_first_row: int
    first_row: int
    last_in_unit: bool


@dataclass(frozen=True)
class SourceFile:
    """One input file: its path, format, size and modification time (a checkpoint holds for the file
    only while these stay the same) and its row count when the format tells it without a scan."""

    path: str
    format: str
    size: int
    mtime_ns: int

    @property
    def unit(self) -> str:
        """What one unit of this format is called in messages."""
        return {"parquet": "row group", "ipc": "record batch", "csv": "block"}[self.format]

    def identity(self) -> dict[str, Any]:
        """What a checkpoint records to recognise the same file."""
        return {"size": self.size, "mtime_ns": self.mtime_ns}

    def schema(self) -> pa.Schema:
        """The file's Arrow schema (the footer, the IPC schema, or a CSV file's header and first block)."""
        try:
            if self.format == "parquet":
                import pyarrow.parquet as pq

                return pq.read_schema(self.path)
            if self.format == "ipc":
                with _ipc_reader(self.path) as (reader, _):
                    schema: pa.Schema = reader.schema
                    return schema
            import pyarrow.csv as pcsv

            with pcsv.open_csv(self.path, read_options=pcsv.ReadOptions(block_size=1 << 16)) as r:
                csv_schema: pa.Schema = r.schema
                return csv_schema
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise InvalidInputError(f"{self.path}: not a readable {self.format} file: {e}") from e

    def rows(self) -> int | None:
        """Rows in the file when known without reading the data (Parquet metadata, IPC batch headers)."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(self.path).metadata.num_rows)
        if self.format == "ipc":
            with _ipc_reader(self.path, memory_map=True) as (reader, n):
                if n is None:
                    return None
                return sum(int(reader.get_batch(i).num_rows) for i in range(n))
        return None

    def pieces(self, plan: ColumnPlan, *, skip_rows: int = 0, batch_rows: int = 65536) -> Iterator[Piece]:
        """The file's rows from row ``skip_rows`` on, in record batches of at most ``batch_rows`` rows
        holding only the columns ``plan`` reads."""
        columns = plan.columns()
        if self.format == "parquet":
            yield from self._parquet(columns, skip_rows, batch_rows)
        elif self.format == "ipc":
            yield from self._ipc(columns, skip_rows, batch_rows)
        else:
            yield from self._csv(plan, skip_rows, batch_rows)

    def _parquet(self, columns: list[str], skip: int, batch_rows: int) -> Iterator[Piece]:
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.path) as pf:
            meta = pf.metadata
            first = 0
            for rg in range(meta.num_row_groups):
                n = meta.row_group(rg).num_rows
                end = first + n
                if end > skip and n:
                    at = first
                    batches = pf.iter_batches(
                        batch_size=batch_rows, row_groups=[rg], columns=columns, use_threads=False
                    )
                    for batch in batches:
                        yield from _trimmed(batch, rg, first, at, end, skip)
                        at += batch.num_rows
                first = end

    def _ipc(self, columns: list[str], skip: int, batch_rows: int) -> Iterator[Piece]:
        with _ipc_reader(self.path) as (reader, n):
            first = 0
            index = 0
            while n is None or index < n:
                if n is None:
                    try:
                        whole = reader.read_next_batch()
                    except StopIteration:
                        return
                else:
                    whole = reader.get_batch(index)
                end = first + whole.num_rows
                if end > skip:
                    whole = whole.select(columns)
                    for at in range(first, end, batch_rows):
                        part = whole.slice(at - first, batch_rows)
                        yield from _trimmed(part, index, first, at, end, skip)
                first = end
                index += 1

    def _csv(self, plan: ColumnPlan, skip: int, batch_rows: int) -> Iterator[Piece]:
        import pyarrow.csv as pcsv

        read = pcsv.ReadOptions(block_size=_CSV_BLOCK_BYTES)
        convert = pcsv.ConvertOptions(include_columns=plan.columns(), column_types=csv_types(plan))
        first = 0
        index = 0
        try:
            with pcsv.open_csv(self.path, read_options=read, convert_options=convert) as reader:
                for whole in reader:
                    end = first + whole.num_rows
                    if end > skip:
                        for at in range(first, end, batch_rows):
                            part = whole.slice(at - first, batch_rows)
                            yield from _trimmed(part, index, first, at, end, skip)
                    first = end
                    index += 1
        except ValueError as e:  # ArrowInvalid: a cell that does not parse as its column's type
            raise InvalidInputError(f"{self.path}, block {index} (from row {first}): {e}") from e


def _trimmed(
    batch: pa.RecordBatch, unit: int, unit_first: int, at: int, unit_end: int, skip: int
) -> Iterator[Piece]:
    """``batch`` (source rows ``at`` onwards) less the rows before ``skip``."""
    if at + batch.num_rows <= skip:
        return
    if at < skip:
        batch = batch.slice(skip - at)
        at = skip
    yield Piece(batch, unit, unit_first, at, at + batch.num_rows >= unit_end)


@contextlib.contextmanager
def _ipc_reader(path: str, *, memory_map: bool = False) -> Iterator[tuple[Any, int | None]]:
    """An Arrow IPC file (random access: ``(reader, number of batches)``) or stream (``(reader,
    None)``)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.memory_map(path) if memory_map else pa.OSFile(path) as source:
        try:
            reader = ipc.open_file(source)
            n: int | None = reader.num_record_batches
        except pa.ArrowInvalid:
            source.seek(0)
            reader, n = ipc.open_stream(source), None
        yield reader, n


def csv_types(plan: ColumnPlan) -> dict[str, Any]:
    """Arrow types to parse a CSV file's columns as: keys as strings, numbers in the widest type of
    their kind (so a value out of a feature's range is reported with its row by the encoder), booleans,
    strings. Vector features cannot be held in CSV cells."""
    for g in plan.groups:
        for feature, col in zip(g.features, g.columns, strict=True):
            if col is not None and g.data_type.is_vector:
                raise InvalidInputError(
                    f"column {col!r} (feature {g.label}.{feature}): {g.data_type.type_name} values cannot "
                    "be read from CSV; use Parquet or Arrow IPC for vector features"
                )
    return wide_types(plan, keys_as_strings=True)


def _format_of(path: str, fmt: str | None) -> str | None:
    if fmt is not None:
        return fmt
    return _EXTENSIONS.get(Path(path).suffix.lower())


def discover(sources: Sequence[str], fmt: str | None = None) -> list[SourceFile]:
    """Every input file named by ``sources`` (files, directories searched recursively, glob patterns),
    sorted within each source and each once. The format comes from ``fmt``, else from the extension;
    in directories, files with another extension and hidden or ``_``-prefixed files (``_SUCCESS``,
    ``.crc``) are skipped, as ``pyarrow.dataset`` does."""
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInputError(f"format must be one of {FORMATS}, got {fmt!r}")
    found: dict[str, SourceFile] = {}
    for source in sources:
        if os.path.isdir(source):
            import pyarrow.dataset as ds  # only here: importing it costs ~0.4 s of CPU (it imports pandas)

            dataset = ds.dataset(source, format="parquet", exclude_invalid_files=False)
            paths = [p for p in dataset.files if _format_of(p, fmt) is not None]
        elif os.path.exists(source):
            paths = [source]
        else:
            paths = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
            if not paths:
                raise InvalidInputError(f"{source}: no such file, directory or matching file")
        for p in sorted(paths):
            format_ = _format_of(p, fmt)
            if format_ is None:
                raise InvalidInputError(
                    f"{p}: cannot tell the format from the extension; pass format= / --format "
                    f"({', '.join(FORMATS)})"
                )
            st = os.stat(p)
            resolved = os.path.abspath(p)
            found.setdefault(resolved, SourceFile(resolved, format_, st.st_size, st.st_mtime_ns))
        if os.path.isdir(source) and not paths:
            raise InvalidInputError(f"{source}: no Parquet, CSV or Arrow IPC files in this directory")
    return list(found.values())
