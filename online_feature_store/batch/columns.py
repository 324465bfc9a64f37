"""Arrow columns into an entity's feature groups: which column feeds which key and feature, and the
conversion of one Arrow record batch into numpy rows, checked before anything of it is written.

One rule for every batch path (``ofs push`` from files, the Spark partition writer, :func:`push_arrow`):

- a key is read from the column named by ``keys`` (label → column), else the column named like the key
  label, else like the key's registry column;
- a feature from the column named by ``columns`` (``"fg.feature"`` → column), else ``"<fg>.<feature>"``,
  else ``"<feature>"``;
- a null key is always an error; a null feature value is an error (``nulls="error"``, the default) or
  takes the feature's registry default (``nulls="default"``; for a vector, a null cell takes the whole
  default vector and a null element the default's element at that position);
- types must fit the feature group: integers for integer FGs, integers or floats for float FGs, booleans
  for bool FGs, strings for string FGs, lists of those for vector FGs (each exactly ``vector_length``
  long); values out of the type's range are refused by the same native encoder the servers use.

Every error names where: the source (file, row group), the column (and the feature it feeds) and the row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from online_feature_store._native import decode_cell
from online_feature_store.errors import InvalidInputError, NotFoundError
from online_feature_store.types import DataType

if TYPE_CHECKING:
    import pyarrow as pa

    from online_feature_store._native import Catalog, EncodedRows, Limits
    from online_feature_store.registry.snapshot import Snapshot

__all__ = [
    "NULL_POLICIES",
    "Batch",
    "ColumnPlan",
    "FeatureColumns",
    "Where",
    "plan_columns",
    "string_buffers",
]

NULL_POLICIES = ("error", "default")
_INTS = {
    DataType.INT8: (-(2**7), 2**7 - 1),
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT8: (0, 2**8 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


def element_type(dtype: DataType) -> DataType:
    """The scalar type of one value of ``dtype`` (``FP16_VECTOR`` → ``FP16``; ``Q8_VECTOR`` as is)."""
    return dtype.scalar


@dataclass(frozen=True)
class Where:
    """Where a batch came from, for error messages: ``source`` (a file, a Spark partition), the unit of
    the source it belongs to (``unit`` e.g. ``"row group"`` and ``unit_index``; ``unit_first_row``: the
    source row of the unit's first row) and ``first_row``, the source row of the batch's first row."""

    source: str
    unit: str | None = None
    unit_index: int = 0
    unit_first_row: int = 0
    first_row: int = 0

    def row(self, batch_row: int) -> str:
        """``"row group 3, row 70123 (row 123 of the row group)"``: where the batch's row ``batch_row``
        is in the source."""
        at = self.first_row + batch_row
        if self.unit is None:
            return f"row {at}"
        return f"{self.unit} {self.unit_index}, row {at} (row {at - self.unit_first_row} of the {self.unit})"

    def at(self, column: str, what: str, batch_row: int | None = None) -> str:
        """The full location of a problem in ``column`` (feeding ``what``), at ``batch_row`` if known."""
        if batch_row is not None:
            place = f"{self.source}, {self.row(batch_row)}"
        elif self.unit is not None:
            place = f"{self.source}, {self.unit} {self.unit_index}"
        else:
            place = self.source
        return f"{place}, column {column!r} ({what})"


@dataclass(frozen=True)
class FeatureColumns:
    """One feature group's columns: ``columns[i]`` feeds feature ``features[i]`` (None: not loaded,
    the feature's default is written)."""

    label: str
    fg_id: int
    data_type: DataType
    features: tuple[str, ...]
    columns: tuple[str | None, ...]
    defaults: tuple[Any, ...]
    """Per feature: the decoded default (a list of one value for scalars, of ``vector_length`` values
    for vectors)."""
    string_lengths: tuple[int, ...]
    vector_lengths: tuple[int, ...]
    store_id: str
    ttl_seconds: int


@dataclass(frozen=True)
class ColumnPlan:
    """How the columns of a source feed ``entity``: key columns in the entity's key order, and each FG."""

    entity: str
    keys_schema: tuple[str, ...]
    key_columns: tuple[str, ...]
    groups: tuple[FeatureColumns, ...]

    def columns(self) -> list[str]:
        """Every source column read, each once, keys first."""
        out = dict.fromkeys(self.key_columns)
        for g in self.groups:
            out.update(dict.fromkeys(c for c in g.columns if c is not None))
        return list(out)

    def describe(self) -> dict[str, Any]:
        """The mapping as plain data (what a checkpoint is tied to)."""
        return {
            "entity": self.entity,
            "keys": dict(zip(self.keys_schema, self.key_columns, strict=True)),
            "feature_groups": {g.label: dict(zip(g.features, g.columns, strict=True)) for g in self.groups},
        }


def plan_columns(
    snapshot: Snapshot,
    entity: str,
    feature_groups: Sequence[str] | Mapping[str, Sequence[str]],
    available: Sequence[str],
    *,
    keys: Mapping[str, str] | None = None,
    columns: Mapping[str, str] | None = None,
    source: str = "input",
) -> ColumnPlan:
    """The :class:`ColumnPlan` of ``feature_groups`` of ``entity`` for a source with columns
    ``available``. ``feature_groups`` lists FGs (every feature of each needs a column) or maps an FG to
    the features to load (the others get their defaults). A missing column, or a mapping naming an
    unknown key, FG or feature, is an :class:`InvalidInputError` naming ``source``."""
    ent = snapshot.entity(entity)
    have = set(available)
    keys = dict(keys or {})
    columns = dict(columns or {})
    labels = [k.label for k in ent.keys]
    unknown_keys = sorted(set(keys) - set(labels))
    if unknown_keys:
        raise InvalidInputError(f"entity {entity!r} has no key(s) {unknown_keys} (its keys: {labels})")
    key_columns = []
    for k in ent.keys:
        tried = [keys[k.label]] if k.label in keys else list(dict.fromkeys([k.label, k.column]))
        found = next((c for c in tried if c in have), None)
        if found is None:
            raise InvalidInputError(
                f"{source}: no column {' or '.join(map(repr, tried))} for key {k.label!r} of entity "
                f"{entity!r} (map one with keys={{{k.label!r}: COLUMN}} / --key {k.label}=COLUMN)"
            )
        key_columns.append(found)
    if not feature_groups:
        raise InvalidInputError(f"entity {entity!r}: name at least one feature group to load")
    subset = dict(feature_groups) if isinstance(feature_groups, Mapping) else None
    groups = []
    used: set[str] = set()
    for label in feature_groups:
        fg = snapshot.feature_group(entity, label)
        wanted = set(subset[label]) if subset is not None else None
        names = [f.label for f in fg.features]
        if wanted is not None and wanted - set(names):
            raise NotFoundError(
                f"feature group {entity}/{label} has no feature(s) {sorted(wanted - set(names))}"
            )
        cols: list[str | None] = []
        for f in fg.features:
            if wanted is not None and f.label not in wanted:
                cols.append(None)
                continue
            mapped = f"{label}.{f.label}"
            used.add(mapped)
            tried = [columns[mapped]] if mapped in columns else [mapped, f.label]
            found = next((c for c in tried if c in have), None)
            if found is None:
                raise InvalidInputError(
                    f"{source}: no column {' or '.join(map(repr, tried))} for feature {f.label!r} of "
                    f"feature group {entity}/{label} (map one with columns={{{mapped!r}: COLUMN}} / "
                    f"--column {mapped}=COLUMN)"
                )
            cols.append(found)
        groups.append(
            FeatureColumns(
                label=label,
                fg_id=fg.id,
                data_type=fg.data_type,
                features=tuple(names),
                columns=tuple(cols),
                defaults=tuple(
                    decode_cell(int(fg.data_type), f.default, vector_length=f.vector_length)
                    for f in fg.features
                ),
                string_lengths=tuple(f.string_length for f in fg.features),
                vector_lengths=tuple(f.vector_length for f in fg.features),
                store_id=fg.store_id,
                ttl_seconds=fg.ttl_seconds,
            )
        )
    stray = sorted(set(columns) - used)
    if stray:
        raise InvalidInputError(
            f"column mapping names feature(s) {stray} that are not among the loaded feature groups' "
            f"features ({', '.join(f'{g.label}.{f}' for g in groups for f in g.features)})"
        )
    return ColumnPlan(entity, tuple(labels), tuple(key_columns), tuple(groups))


# -- types ----------------------------------------------------------------------------------------------
def _type_problem(dtype: DataType, t: pa.DataType) -> str | None:
    """Why Arrow type ``t`` cannot feed a value of scalar type ``dtype`` (None: it can)."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    if dtype in _INTS:
        ok = pa.types.is_integer(t)
    elif dtype == DataType.BOOL:
        ok = pa.types.is_boolean(t)
    elif dtype == DataType.STRING:
        ok = pa.types.is_string(t) or pa.types.is_large_string(t)
    else:  # floats
        ok = pa.types.is_floating(t) or pa.types.is_integer(t)
    return None if ok else f"wrong type: {t} cannot hold {dtype.type_name} values"


def check_types(plan: ColumnPlan, schema: pa.Schema, source: str) -> None:
    """Raises :class:`InvalidInputError` naming ``source`` and the column when a column's Arrow type
    cannot feed its key or feature (checked once per source, before any row is read)."""
    import pyarrow as pa

    for label, col in zip(plan.keys_schema, plan.key_columns, strict=True):
        t = schema.field(col).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not _is_key_type(t):
            raise InvalidInputError(
                f"{source}, column {col!r} (key {label!r}): wrong type: {t}; keys must be strings, "
                "integers or (UTF-8) binary"
            )
    for g in plan.groups:
        for feature, column in zip(g.features, g.columns, strict=True):
            if column is None:
                continue
            col = column
            t = schema.field(col).type
            what = f"feature {g.label}.{feature}"
            if g.data_type.is_vector:
                if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
                    raise InvalidInputError(
                        f"{source}, column {col!r} ({what}): wrong type: {t}; a {g.data_type.type_name} "
                        "feature needs a list column"
                    )
                t = t.value_type
            problem = _type_problem(element_type(g.data_type), t)
            if problem is not None:
                raise InvalidInputError(f"{source}, column {col!r} ({what}): {problem}")


def _wide_type(dtype: DataType) -> pa.DataType:
    import pyarrow as pa

    if dtype == DataType.STRING:
        return pa.string()
    if dtype == DataType.BOOL:
        return pa.bool_()
    if dtype == DataType.UINT64:
        return pa.uint64()
    if dtype in _INTS:
        return pa.int64()
    return pa.float64()


def wide_types(plan: ColumnPlan, *, keys_as_strings: bool) -> dict[str, Any]:
    """Arrow types to read untyped values (CSV text, Python objects) as, per column: numbers in the
    widest type of their kind (a value out of a feature's range is then reported by the encoder, with
    its row), booleans, strings, lists of those; keys as strings, or inferred (None)."""
    import pyarrow as pa

    types: dict[str, Any] = {c: pa.string() if keys_as_strings else None for c in plan.key_columns}
    for g in plan.groups:
        wide = _wide_type(element_type(g.data_type))
        for col in g.columns:
            if col is not None:
                types[col] = pa.list_(wide) if g.data_type.is_vector else wide
    return types


def from_rows(plan: ColumnPlan, rows: Sequence[Mapping[str, Any]], where: Where) -> pa.RecordBatch:
    """Python rows (mappings of column → value, e.g. ``pyspark.sql.Row.asDict()``) as a record batch of
    the columns ``plan`` reads; a value that does not fit its column's kind is an error naming it."""
    import pyarrow as pa

    arrays = []
    names = []
    for col, t in wide_types(plan, keys_as_strings=False).items():
        values = [r.get(col) for r in rows]
        try:
            arrays.append(pa.array(values, type=t))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            for i, v in enumerate(values):  # find the row (only on this error path)
                try:
                    pa.array([v], type=t)
                except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as one:
                    raise InvalidInputError(
                        where.at(col, _feeds(plan, col), i) + f": {v!r} does not fit {t}: {one}"
                    ) from e
            raise InvalidInputError(where.at(col, _feeds(plan, col)) + f": {e}") from e
        names.append(col)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _feeds(plan: ColumnPlan, col: str) -> str:
    for label, c in zip(plan.keys_schema, plan.key_columns, strict=True):
        if c == col:
            return f"key {label!r}"
    fed = [
        f"{g.label}.{f}" for g in plan.groups for f, c in zip(g.features, g.columns, strict=True) if c == col
    ]
    return "feature " + ", ".join(fed)


# -- conversion -------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """One record batch converted: the key columns (Arrow strings, in the entity's key order, checked:
    no nulls, no empty values) and per FG the values as the encoders take them (scalar numeric and bool:
    one 1-D array per feature, all of one dtype; vectors: an array of shape ``(rows, features,
    length)``; strings: a flat row-major list of str, or of lists of str for string vectors)."""

    rows: int
    key_columns: list[pa.Array]
    values: list[Any]
    where: Where

    def key_rows(self, start: int = 0, stop: int | None = None) -> list[tuple[str, ...]]:
        """Key tuples (entity key order) of rows ``start:stop``, as Python values (for the sinks that
        send messages; the embedded store's writes never build them)."""
        stop = self.rows if stop is None else stop
        cols = [c.slice(start, stop - start).to_pylist() for c in self.key_columns]
        return list(zip(*cols, strict=True))

    def key_buffers(self, start: int, stop: int) -> list[tuple[Any, Any]]:
        """The key columns' rows ``start:stop`` as Arrow string buffers ``(offsets, data)`` (numpy views,
        no copy): what ``Catalog.encode_batch`` names the rows from."""
        return [string_buffers(c, start, stop) for c in self.key_columns]


def string_buffers(col: pa.Array, start: int, stop: int) -> tuple[Any, Any]:
    """Rows ``start:stop`` of a string (or large string) array as numpy views of its offsets and data."""
    import pyarrow as pa

    wide = pa.types.is_large_string(col.type)
    _validity, offsets, data = col.buffers()
    first = col.offset + start
    view = np.frombuffer(offsets, dtype=np.int64 if wide else np.int32)[first : first + (stop - start) + 1]
    return view, (np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8))


def _first(mask: Any) -> int:
    return int(np.flatnonzero(mask)[0])


def _numpy(col: pa.Array) -> Any:
    """A numeric or boolean Arrow array without nulls as numpy, read from its buffers (a view where the
    type allows). ``Array.to_numpy`` does the same, but its first call imports pandas (~0.4 s of CPU,
    ~1 s on a busy machine: a tenth of a million-row load); other arrays still go through it."""
    import pyarrow as pa

    t = col.type
    if col.null_count == 0 and (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        buffer = col.buffers()[1]
        if pa.types.is_boolean(t):
            if buffer is None:
                return np.zeros(0, dtype=bool)
            bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little")
            return bits[col.offset : col.offset + len(col)].astype(bool)
        kind = "f" if pa.types.is_floating(t) else "i" if pa.types.is_signed_integer(t) else "u"
        dtype = np.dtype(f"<{kind}{t.bit_width // 8}")
        if buffer is None:
            return np.zeros(0, dtype=dtype)
        return np.frombuffer(buffer, dtype=dtype)[col.offset : col.offset + len(col)]
    return col.to_numpy(zero_copy_only=False)


def _is_key_type(t: pa.DataType) -> bool:
    """Whether an Arrow column of type ``t`` can hold key values (the rule of
    :mod:`online_feature_store.keys` by type: strings, integers, binary that must be UTF-8)."""
    import pyarrow as pa

    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


def _key_strings(col: pa.Array, where: Where, name: str, label: str) -> pa.Array:
    """A key column as strings by the rule of :mod:`online_feature_store.keys`, by column type: strings
    as they are, integers as their decimal digits, binary decoded as UTF-8 (a value that is not UTF-8 is
    refused naming its row); floats, booleans and other types refused."""
    import pyarrow as pa

    from online_feature_store.keys import key_text

    if not _is_key_type(col.type):
        raise InvalidInputError(
            where.at(name, f"key {label!r}") + f": a {col.type} key column: key values are str, int or "
            "UTF-8 bytes (cast the column first)"
        )
    try:
        return col.cast(pa.string())
    except pa.ArrowInvalid:  # binary that is not UTF-8
        for row, value in enumerate(col.to_pylist()):  # find the row (only on this error path)
            try:
                key_text(value)
            except InvalidInputError as e:
                raise InvalidInputError(where.at(name, f"key {label!r}", row) + f": {e}") from None
        raise


def _keys(plan: ColumnPlan, batch: pa.RecordBatch, where: Where) -> list[pa.Array]:
    """The key columns as strings, in the entity's key order: nulls and empty values refused naming
    their row. Their canonical names are built natively, when the rows are encoded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = []
    for label, name in zip(plan.keys_schema, plan.key_columns, strict=True):
        col = batch.column(name)
        if col.null_count:
            row = _first(col.is_null().to_numpy(zero_copy_only=False))
            raise InvalidInputError(where.at(name, f"key {label!r}", row) + ": null key value")
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        col = _key_strings(col, where, name, label)
        # no Python scalar handed to pyarrow.compute: pyarrow checks it against pandas types, importing
        # pandas (~1 s) on the first one
        lengths = pc.binary_length(col)
        if len(col) and pc.min(lengths).as_py() == 0:
            row = _first(lengths.to_numpy(zero_copy_only=False) == 0)
            raise InvalidInputError(where.at(name, f"key {label!r}", row) + ": empty key value")
        cols.append(col)
    return cols


def _fill_nulls(col: pa.Array, default: Any, where: Where, name: str, what: str, nulls: str) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if col.null_count and nulls == "error":
        row = _first(col.is_null().to_numpy(zero_copy_only=False))
        raise InvalidInputError(
            where.at(name, what, row) + ": null value (nulls='error'; load with nulls='default' / "
            "--nulls default to store the feature's default instead)"
        )
    if col.null_count:
        col = pc.if_else(col.is_null(), pa.scalar(default, type=col.type), col)
    return col


def _scalar_column(col: pa.Array, g: FeatureColumns, i: int, where: Where, nulls: str) -> Any:
    import pyarrow as pa

    name = g.columns[i] or ""
    what = f"feature {g.label}.{g.features[i]}"
    default = g.defaults[i][0]
    col = _fill_nulls(col, default, where, name, what, nulls)
    if g.data_type == DataType.STRING:
        return col.cast(pa.string()).to_pylist()
    arr = _numpy(col)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return arr


def _vector_column(col: pa.Array, g: FeatureColumns, i: int, where: Where, nulls: str) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    name = g.columns[i] or ""
    what = f"feature {g.label}.{g.features[i]}"
    length = g.vector_lengths[i]
    default = list(g.defaults[i])
    col = _fill_nulls(col, default, where, name, what, nulls)
    lengths = _numpy(pc.list_value_length(col))
    bad = lengths != length
    if bad.any():
        row = _first(bad)
        raise InvalidInputError(
            where.at(name, what, row) + f": a vector of {int(lengths[row])} values, the feature's "
            f"vector_length is {length}"
        )
    flat = col.flatten()
    if pa.types.is_dictionary(flat.type):
        flat = flat.dictionary_decode()
    if flat.null_count:
        mask = flat.is_null().to_numpy(zero_copy_only=False)
        if nulls == "error":
            at = _first(mask)
            raise InvalidInputError(
                where.at(name, what, at // length) + f": null at element {at % length} (nulls='error'; "
                "load with nulls='default' / --nulls default to store the default's element instead)"
            )
        fill = pa.array(np.resize(np.array(default, dtype=object), len(flat)).tolist(), type=flat.type)
        flat = pc.if_else(mask, fill, flat)
    if g.data_type == DataType.STRING_VECTOR:
        values = flat.cast(pa.string()).to_pylist()
        return [values[r * length : (r + 1) * length] for r in range(len(col))]
    arr = _numpy(flat)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return arr.reshape(len(col), length)


def _constant(g: FeatureColumns, i: int, rows: int) -> Any:
    """Feature ``i`` at its default on every row (a feature the mapping does not load); ``None`` for a
    scalar numeric feature (filled in the FG's dtype by :func:`_one_dtype`)."""
    default = g.defaults[i]
    if g.data_type == DataType.STRING:
        return [default[0]] * rows
    if g.data_type == DataType.STRING_VECTOR:
        return [list(default)] * rows
    if g.data_type.is_vector:
        return np.broadcast_to(np.asarray(default), (rows, len(default)))
    return None


def convert(plan: ColumnPlan, batch: pa.RecordBatch, where: Where, *, nulls: str = "error") -> Batch:
    """``batch`` as a :class:`Batch`: keys checked (no nulls, no empty values) and named, values checked
    for nulls (per ``nulls``) and vector lengths and laid out for the encoders. Ranges are checked when
    the rows are encoded (:func:`encode`)."""
    if nulls not in NULL_POLICIES:
        raise InvalidInputError(f"nulls must be one of {NULL_POLICIES}, got {nulls!r}")
    rows = batch.num_rows
    keys = _keys(plan, batch, where)
    values: list[Any] = []
    for g in plan.groups:
        cols = []
        for i, name in enumerate(g.columns):
            if name is None:
                cols.append(_constant(g, i, rows))
            elif g.data_type.is_vector:
                cols.append(_vector_column(batch.column(name), g, i, where, nulls))
            else:
                cols.append(_scalar_column(batch.column(name), g, i, where, nulls))
        if g.data_type.is_string:
            values.append([cell for row in zip(*cols, strict=True) for cell in row])
        elif g.data_type.is_vector:
            if len(cols) == 1:  # a view: one feature's (rows, length) array is already row-major
                values.append(cols[0][:, None, :] if rows else np.empty((0, 1, 0)))
            else:
                values.append(np.stack(cols, axis=1) if rows else np.empty((0, len(cols), 0)))
        else:
            values.append(_one_dtype(g, cols, rows))
    return Batch(rows, keys, values, where)


def _by_columns(g: FeatureColumns) -> bool:
    """Whether :func:`convert` keeps ``g``'s values as columns (scalar numeric and bool FGs): the
    encoder interleaves them into rows natively, cheaper than numpy's ``column_stack``."""
    return not g.data_type.is_string and not g.data_type.is_vector


def _one_dtype(g: FeatureColumns, cols: list[Any], rows: int) -> list[Any]:
    """A scalar FG's columns (numpy arrays, or ``None`` for a feature at its default) in one dtype, as
    the native encoder takes them: the loaded columns' (views, no copy, when they share one), the
    defaults filled in it, and a common one when they differ (int and float columns, a default the
    loaded type cannot hold)."""
    loaded = [c.dtype for c in cols if isinstance(c, np.ndarray)]
    out = []
    for i, c in enumerate(cols):
        if not isinstance(c, np.ndarray):
            default = g.defaults[i][0]
            c = np.full(rows, default, dtype=np.result_type(*loaded, np.min_scalar_type(default)))
        out.append(c)
    common = np.result_type(*out) if out else np.dtype(np.float64)
    return [c if c.dtype == common else c.astype(common) for c in out]


def take(g: FeatureColumns, values: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of one FG's values from :func:`convert` (in the same form)."""
    if isinstance(values, np.ndarray):
        return values[start:stop]
    if _by_columns(g):
        return [c[start:stop] for c in values]
    n = len(g.features)
    return values[start * n : stop * n]


def as_rows(g: FeatureColumns, values: Any, rows: int) -> Any:
    """One FG's values (from :func:`take`) as the producer SDK takes them: a numeric FG's as an array
    of shape ``(rows, features)``."""
    if _by_columns(g):
        return np.column_stack(values) if values and rows else np.empty((rows, len(values)))
    return values


def flat_values(g: FeatureColumns, values: Any) -> Any:
    """One FG's values as ``Catalog.encode_batch`` takes them: columns (scalar FGs), or row-major and
    flat."""
    if _by_columns(g):
        return values
    if isinstance(values, np.ndarray):
        return np.ascontiguousarray(values).reshape(-1)
    if g.data_type == DataType.STRING_VECTOR:
        return [s for cell in values for s in cell]
    return values


_NATIVE_ROW = re.compile(r'^row (\d+) of feature group "([^"]*)": (.*)$', re.S)
_NATIVE_FEATURE = re.compile(r"^feature (\d+)(?: element (\d+))?: (.*)$", re.S)


def encode(
    catalog: Catalog,
    plan: ColumnPlan,
    batch: Batch,
    start: int,
    stop: int,
    *,
    now: int,
    limits: Limits | None,
) -> EncodedRows:
    """Rows ``start:stop`` of every FG encoded natively (``Catalog.encode_batch``: key names and one
    block per row and FG, in native memory), which refuses values out of their type's range; its
    error is re-raised naming the column and the row."""
    groups = [
        (g.label, flat_values(g, take(g, values, start, stop)))
        for g, values in zip(plan.groups, batch.values, strict=True)
    ]
    try:
        return catalog.encode_batch(
            plan.entity, batch.key_buffers(start, stop), groups, now=now, limits=limits
        )
    except InvalidInputError as e:
        raise InvalidInputError(_where_in(plan, batch, start, stop, str(e))) from e


def _where_in(plan: ColumnPlan, batch: Batch, start: int, stop: int, message: str) -> str:
    """The native encoder's ``message`` about rows ``start:stop``, naming the source, column and row."""
    m = _NATIVE_ROW.match(message)
    group = next((g for g in plan.groups if m is not None and g.label == m.group(2)), None)
    f = _NATIVE_FEATURE.match(m.group(3)) if m is not None else None
    if m is None or group is None or f is None:
        return (
            f"{batch.where.source}, {batch.where.row(start)} to row {batch.where.first_row + stop - 1}: "
            f"{message}"
        )
    row, feature = start + int(m.group(1)), int(f.group(1))
    element = f"element {f.group(2)}: " if f.group(2) is not None else ""
    column = group.columns[feature] or "(default)"
    return batch.where.at(column, f"feature {group.label}.{group.features[feature]}", row) + (
        f": {element}{f.group(3)}"
    )
