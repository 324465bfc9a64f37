"""Producer SDK: push features to Kafka (for ``ofs consume``) or straight to the gRPC Persist API.

Rows of one entity, for one or more of its feature groups, are packed many to a ``persist.Query``
message, each kept under the sink's size limit, and sent::

    from online_feature_store.ingest import KafkaSink, push

    with KafkaSink("127.0.0.1:9092", "ofs-persist") as sink:
        push(sink, "user", ["u1", "u2"], {"activity": np.array([[0.1, 3, 9.5], [0.2, 4, 1.0]])},
             registry="sqlite:///data/registry.db")

Inputs: numpy arrays (:func:`push`), a pandas DataFrame or a pyarrow Table (:func:`push_frame`), or a Spark
DataFrame through :func:`spark_partition_writer` and ``DataFrame.foreachPartition``. Each FG's data type
and feature labels come from the registry (a :class:`~online_feature_store.feature_store.FeatureStore`, a
snapshot, a backend or a registry URL) or from explicit ``data_types`` / ``features`` arguments.

On Kafka, rows are routed to partitions by a hash of their key, so every update of a key goes through the
same partition and the consumer, which keeps each partition's order, stores the newest one last.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from online_feature_store import _native
from online_feature_store.contract import PERSIST, call_message
from online_feature_store.errors import InvalidInputError, OfsError, UnavailableError
from online_feature_store.keys import key_rows
from online_feature_store.limits import DEFAULT_MAX_ROWS_PER_PERSIST
from online_feature_store.types import DataType

if TYPE_CHECKING:
    from online_feature_store.registry.snapshot import Snapshot

__all__ = [
    "PERSIST_METHOD",
    "EmbeddedSink",
    "FeatureGroupValues",
    "GrpcSink",
    "KafkaSink",
    "PushResult",
    "Sink",
    "encode_query",
    "pack",
    "push",
    "push_frame",
    "spark_partition_writer",
]

PERSIST_METHOD = PERSIST.path
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
"""Under Kafka's default ``message.max.bytes`` (1 MiB + 12) with room for the record overhead."""


@dataclass(frozen=True)
class FeatureGroupValues:
    """The rows of one feature group: ``values`` is a numpy array of shape ``(rows, features)`` (``(rows,
    features, length)`` for vector types); for strings a flat row-major list of ``rows * features`` str
    (string vectors: of lists of str)."""

    label: str
    data_type: DataType
    features: Sequence[str]
    values: Any

    def rows(self) -> int:
        """Number of rows held."""
        if isinstance(self.values, np.ndarray):
            return int(self.values.shape[0])
        return len(self.values) // max(len(self.features), 1)

    def take(self, start: int, stop: int) -> FeatureGroupValues:
        """Rows ``start:stop``."""
        if isinstance(self.values, np.ndarray):
            return FeatureGroupValues(self.label, self.data_type, self.features, self.values[start:stop])
        n = len(self.features)
        return FeatureGroupValues(
            self.label, self.data_type, self.features, self.values[start * n : stop * n]
        )

    def select(self, rows: np.ndarray) -> FeatureGroupValues:
        """The rows at the positions ``rows`` (a 1-D integer array), in that order."""
        if isinstance(self.values, np.ndarray):
            return FeatureGroupValues(self.label, self.data_type, self.features, self.values[rows])
        n = len(self.features)
        vals = self.values
        picked = [vals[r * n + j] for r in rows.tolist() for j in range(n)]
        return FeatureGroupValues(self.label, self.data_type, self.features, picked)


# -- encoding: the one place that builds persist.Query bytes -----------------------------------------
def encode_query(
    entity: str,
    keys_schema: Sequence[str],
    keys: Sequence[Sequence[str]],
    feature_groups: Sequence[FeatureGroupValues],
) -> bytes:
    """A serialized ``persist.Query`` of ``keys`` (rows of key values in ``keys_schema`` order) and the
    aligned rows of every FG in ``feature_groups``, built natively from the arrays (no Python object per
    value; bad shapes or out-of-range values raise :class:`InvalidInputError`)."""
    return _native.encode_persist_query(
        entity,
        list(keys_schema),
        keys,
        [(g.label, int(g.data_type), list(g.features), g.values) for g in feature_groups],
    )


def pack(
    entity: str,
    keys_schema: Sequence[str],
    keys: Sequence[Sequence[str]],
    feature_groups: Sequence[FeatureGroupValues],
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    rows_per_message: int | None = None,
) -> Iterator[tuple[bytes, int]]:
    """Messages ``(payload, rows)`` carrying every row, in order, each at most ``max_message_bytes`` long
    (``rows_per_message`` caps the rows; by default as many as fit, up to the servers' and consumer's
    default ``max_rows_per_persist``). A single row over the limit is an :class:`InvalidInputError`."""
    total = len(keys)
    for g in feature_groups:
        if g.rows() != total:
            raise InvalidInputError(f"feature group {g.label!r} has {g.rows()} rows for {total} keys")
    if total == 0:
        return

    def encode(a: int, b: int) -> bytes:
        return encode_query(entity, keys_schema, keys[a:b], [g.take(a, b) for g in feature_groups])

    # Rows per message from the encoded size of a sample; chunks still over the limit are halved.
    probe = min(total, 256)
    per_row = max(len(encode(0, probe)) / probe, 1.0)
    step = max(1, int(max_message_bytes * 0.9 / per_row))
    cap = DEFAULT_MAX_ROWS_PER_PERSIST if rows_per_message is None else rows_per_message
    step = max(1, min(step, cap))
    start = 0
    while start < total:
        stop = min(start + step, total)
        payload = encode(start, stop)
        while len(payload) > max_message_bytes:
            if stop - start == 1:
                raise InvalidInputError(
                    f"row {start} (key {list(keys[start])}) encodes to {len(payload)} bytes, over the "
                    f"message limit of {max_message_bytes}"
                )
            stop = start + (stop - start) // 2
            payload = encode(start, stop)
        yield payload, stop - start
        start = stop


# -- sinks ------------------------------------------------------------------------------------------
class Sink(Protocol):
    """Where :func:`push` sends messages."""

    max_message_bytes: int

    def partitions(self) -> int:
        """How many partitions rows are spread over by key (1: no routing)."""
        ...

    def send(self, payload: bytes, partition: int | None) -> None:
        """Sends one serialized ``persist.Query`` (may return before it is acknowledged)."""
        ...

    def flush(self) -> None:
        """Waits until everything sent is acknowledged; raises the first failure."""
        ...


class KafkaSink:
    """Sends messages to ``topic`` (``acks=all``, idempotent). ``producer_options`` go to kafka-python's
    ``KafkaProducer`` (security, compression, …).

    Idempotence is what keeps the last value of a key the newest one when a broker dies: the producer
    retries a batch the old leader never acknowledged, and without sequence numbers a retried batch can
    land after a later one of the same partition (``max_in_flight_requests_per_connection`` is 5), so
    an older version would overwrite a newer one; retries also stop duplicating a batch whose
    acknowledgement was lost. With ``acks=all`` a send is acknowledged once every in-sync replica has it
    (at least the topic's ``min.insync.replicas``), so the loss of one broker loses no acknowledged row."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        topic: str,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        **producer_options: Any,
    ) -> None:
        try:
            from kafka import KafkaProducer
        except ImportError as exc:
            raise ModuleNotFoundError(
                "KafkaSink needs kafka-python: pip install 'online-feature-store[consumer]'", name="kafka"
            ) from exc

        servers = bootstrap_servers.split(",") if isinstance(bootstrap_servers, str) else bootstrap_servers
        self.topic = topic
        self.max_message_bytes = max_message_bytes
        options: dict[str, Any] = {
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 10,
            "batch_size": max_message_bytes + 4096,
            "max_request_size": max_message_bytes + 4096,
            **producer_options,
        }
        self._producer = KafkaProducer(bootstrap_servers=list(servers), **options)
        self._futures: list[Any] = []
        self._sent = False

    def partitions(self) -> int:
        found = self._producer.partitions_for(self.topic)
        return max(len(found or ()), 1)

    def send(self, payload: bytes, partition: int | None) -> None:
        self._sent = True
        self._futures.append(self._producer.send(self.topic, value=payload, partition=partition))

    def flush(self) -> None:
        from kafka.errors import KafkaError

        self._producer.flush()
        futures, self._futures = self._futures, []
        for f in futures:
            try:
                f.get(timeout=60)
            except KafkaError as e:
                raise UnavailableError(f"kafka topic {self.topic!r}: send failed: {e}") from e

    def close(self) -> None:
        """Flushes, then closes the producer."""
        try:
            self.flush()
        finally:
            # kafka-python (2.3): an idempotent producer that never sent waits for a producer id in
            # close() without end; it holds nothing then, so it is closed at once.
            self._producer.close(timeout=None if self._sent else 0)

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GrpcSink:
    """Calls ``persist.FeatureService/PersistFeatures`` at ``target`` (or on ``channel``) through a
    :class:`~online_feature_store.client.Client` (one call per message, no retries), keeping up to
    ``max_in_flight`` calls outstanding; ``caller_id`` / ``token`` go in the metadata the server's auth
    checks. A failed call raises the client's error, its message ``PersistFeatures: STATUS: details``."""

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: Any = None,
        caller_id: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        max_in_flight: int = 4,
        max_message_bytes: int = 4 * 1024 * 1024 - 1024,
    ) -> None:
        try:
            from online_feature_store.client import Client
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "GrpcSink needs grpcio: pip install 'online-feature-store[client]'", name="grpc"
            ) from exc

        if (target is None) == (channel is None):
            raise InvalidInputError("GrpcSink needs exactly one of target, channel")
        # Sent as packed (each message under max_message_bytes), each once: a retried message could
        # land after a later one for the same keys.
        self._client = Client(
            target or "",
            caller_id,
            token,
            channel=channel,
            timeout=timeout,
            retries=0,
            max_message_bytes=max_message_bytes,
        )
        self._max_in_flight = max(1, max_in_flight)
        self._calls = ThreadPoolExecutor(self._max_in_flight, thread_name_prefix="ofs-grpc-sink")
        self._in_flight: list[Future[None]] = []
        self.max_message_bytes = max_message_bytes

    def partitions(self) -> int:
        return 1

    def send(self, payload: bytes, partition: int | None) -> None:
        if len(self._in_flight) >= self._max_in_flight:
            self._wait(self._in_flight.pop(0))
        self._in_flight.append(self._calls.submit(self._client.persist_wire, payload))

    @staticmethod
    def _wait(future: Future[None]) -> None:
        try:
            future.result()
        except OfsError as err:
            message = call_message(err, PERSIST.name)
            if message == str(err):
                raise
            again = type(err)(message)
            again.status = err.status
            raise again from err

    def flush(self) -> None:
        futures, self._in_flight = self._in_flight, []
        for i, f in enumerate(futures):
            try:
                self._wait(f)
            except BaseException:
                for rest in futures[i + 1 :]:
                    rest.cancel()
                raise

    def close(self) -> None:
        """Waits for outstanding calls, then closes the client (and the channel, if this sink opened it)."""
        try:
            self.flush()
        finally:
            self._calls.shutdown(wait=True)
            self._client.close()

    def __enter__(self) -> GrpcSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmbeddedSink:
    """Writes into a feature store in this process (``FeatureStore(registry, data_directory=…)``, or
    ``fs``): :func:`push` / :func:`push_frame` messages through :meth:`FeatureStore.persist_wire`;
    the batch loaders (:func:`online_feature_store.batch.push_arrow`, the Spark partition writer) write
    their blocks straight into the stores."""

    def __init__(
        self,
        data_directory: str | None = None,
        *,
        registry: str | None = None,
        fs: Any = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        from online_feature_store.feature_store import FeatureStore

        self._own = fs is None
        self.fs: FeatureStore = (
            FeatureStore(registry, data_directory=data_directory, cache_bytes=0) if fs is None else fs
        )
        self.max_message_bytes = max_message_bytes

    def partitions(self) -> int:
        return 1

    def send(self, payload: bytes, partition: int | None) -> None:
        self.fs.persist_wire(payload)

    def flush(self) -> None:
        pass  # each persist_wire is durable when it returns

    def close(self) -> None:
        """Closes the feature store if this sink opened it."""
        if self._own:
            self.fs.close()

    def __enter__(self) -> EmbeddedSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- pushing ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PushResult:
    """What a push sent."""

    rows: int
    messages: int
    bytes: int


RegistrySource = Any
"""A FeatureStore, a Snapshot, a RegistryBackend or a registry URL."""


def _snapshot(registry: RegistrySource) -> Snapshot | None:
    if registry is None:
        return None
    if isinstance(registry, str):
        from online_feature_store.registry.connect import open_registry

        backend = open_registry(registry)
        try:
            return backend.load()
        finally:
            backend.close()
    if hasattr(registry, "snapshot"):  # a FeatureStore
        snap: Snapshot = registry.snapshot
        return snap
    if hasattr(registry, "load"):  # a registry backend
        loaded: Snapshot = registry.load()
        return loaded
    return registry  # type: ignore[no-any-return]  # a Snapshot


def _schema(
    entity: str,
    fgs: Iterable[str],
    *,
    features: Mapping[str, Sequence[str]] | None,
    data_types: Mapping[str, DataType | str | int] | None,
    keys_schema: Sequence[str] | None,
    registry: RegistrySource,
) -> tuple[list[str], dict[str, tuple[DataType, list[str]]]]:
    """Key labels and, per FG, its data type and feature labels: explicit arguments first, then the
    registry (the active version's features)."""
    snap = _snapshot(registry)
    out: dict[str, tuple[DataType, list[str]]] = {}
    for fg in fgs:
        labels = list(features[fg]) if features and fg in features else None
        dtype = DataType.parse(data_types[fg]) if data_types and fg in data_types else None
        if labels is None or dtype is None:
            if snap is None:
                raise InvalidInputError(
                    f"feature group {fg!r}: pass its data type and features, or a registry to read them from"
                )
            g = snap.feature_group(entity, fg)
            dtype = dtype if dtype is not None else g.data_type
            labels = labels if labels is not None else [f.label for f in g.features]
        out[fg] = (dtype, labels)
    if keys_schema is None:
        if snap is None:
            raise InvalidInputError(f"entity {entity!r}: pass keys_schema, or a registry to read it from")
        keys_schema = [k.label for k in snap.entity(entity).keys]
    return list(keys_schema), out


def _key_rows(keys: Any, width: int) -> list[tuple[str, ...]]:
    """Key rows as text by the rule every path follows (:mod:`online_feature_store.keys`)."""
    return key_rows(keys.tolist() if isinstance(keys, np.ndarray) else keys, width)


def _partition_of(keys: Sequence[Sequence[str]], keys_schema: Sequence[str], partitions: int) -> np.ndarray:
    """Partition of each row: a CRC32 of its key values in key-label order, so producers that list the
    keys in different orders still agree."""
    order = sorted(range(len(keys_schema)), key=lambda i: keys_schema[i])
    out = np.empty(len(keys), dtype=np.int64)
    for r, key in enumerate(keys):
        out[r] = zlib.crc32("\x1f".join(key[i] for i in order).encode()) % partitions
    return out


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: no bar without it
        return None
    return tqdm(total=total, unit="rows", desc=desc)


def push(
    sink: Sink,
    entity: str,
    keys: Any,
    values: Mapping[str, Any],
    *,
    features: Mapping[str, Sequence[str]] | None = None,
    data_types: Mapping[str, DataType | str | int] | None = None,
    keys_schema: Sequence[str] | None = None,
    registry: RegistrySource = None,
    rows_per_message: int | None = None,
    progress: bool = False,
    flush: bool = True,
) -> PushResult:
    """Sends one row per key of ``entity`` for every FG in ``values`` (``{fg: rows}``, each as described
    in :class:`FeatureGroupValues`; numeric rows may be any array-like). ``keys`` are rows of key values in
    ``keys_schema`` order (plain values for single-key entities). Data types, feature labels and the
    key schema come from the arguments, else from ``registry``. With ``progress`` (and tqdm installed) a
    progress bar counts rows. Waits for every message to be acknowledged unless ``flush`` is False."""
    schema, types = _schema(
        entity, values, features=features, data_types=data_types, keys_schema=keys_schema, registry=registry
    )
    rows = _key_rows(keys, len(schema))
    groups = []
    for fg, vals in values.items():
        dtype, labels = types[fg]
        if not dtype.is_string:
            vals = np.ascontiguousarray(vals)
            want = 3 if dtype.is_vector else 2
            if vals.ndim != want or (len(vals) and vals.shape[1] != len(labels)):
                raise InvalidInputError(
                    f"feature group {fg!r}: values of shape {vals.shape}, expected "
                    f"({len(rows)}, {len(labels)}{', length' if dtype.is_vector else ''})"
                )
        groups.append(FeatureGroupValues(fg, dtype, labels, vals))
    return _send(sink, entity, schema, rows, groups, rows_per_message, progress, flush)


def _send(
    sink: Sink,
    entity: str,
    schema: list[str],
    rows: list[tuple[str, ...]],
    groups: list[FeatureGroupValues],
    rows_per_message: int | None,
    progress: bool,
    flush: bool,
) -> PushResult:
    partitions = sink.partitions()
    shards: list[tuple[int | None, np.ndarray]]
    if partitions > 1:
        part = _partition_of(rows, schema, partitions)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(partitions + 1))
        shards = [
            (p, order[bounds[p] : bounds[p + 1]]) for p in range(partitions) if bounds[p + 1] > bounds[p]
        ]
    else:
        shards = [(None, np.arange(len(rows)))]
    bar = _progress(len(rows), progress, f"push {entity}")
    messages = sent = 0
    try:
        for p, idx in shards:
            whole = len(shards) == 1
            shard_rows = rows if whole else [rows[i] for i in idx.tolist()]
            shard_groups = groups if whole else [g.select(idx) for g in groups]
            for payload, n in pack(
                entity,
                schema,
                shard_rows,
                shard_groups,
                max_message_bytes=sink.max_message_bytes,
                rows_per_message=rows_per_message,
            ):
                sink.send(payload, p)
                messages += 1
                sent += len(payload)
                if bar is not None:
                    bar.update(n)
        if flush:
            sink.flush()
    finally:
        if bar is not None:
            bar.close()
    return PushResult(len(rows), messages, sent)


def _frame_column(frame: Any, fg: str, label: str) -> Any:
    for name in (f"{fg}.{label}", label):
        if name in frame.columns:
            return frame[name]
    raise InvalidInputError(f"no column {fg + '.' + label!r} or {label!r} for feature {label!r} of {fg!r}")


def push_frame(
    sink: Sink,
    entity: str,
    frame: Any,
    *,
    feature_groups: Sequence[str] | Mapping[str, Sequence[str]],
    data_types: Mapping[str, DataType | str | int] | None = None,
    keys_schema: Sequence[str] | None = None,
    registry: RegistrySource = None,
    rows_per_message: int | None = None,
    progress: bool = False,
    flush: bool = True,
) -> PushResult:
    """Sends a pandas DataFrame (or a pyarrow Table) with one row per key: key columns named by
    ``keys_schema`` (default the entity's key labels) and, per FG, one column per feature named
    ``"<fg>.<feature>"`` or ``"<feature>"`` (vector features: one list or array per cell).
    ``feature_groups`` lists the FGs (all their registry features must be present) or maps each FG to
    the feature labels to send."""
    if hasattr(frame, "column_names") and hasattr(frame, "to_pandas"):  # a pyarrow Table
        frame = frame.to_pandas()
    fgs = list(feature_groups)
    features = dict(feature_groups) if isinstance(feature_groups, Mapping) else None
    schema, types = _schema(
        entity, fgs, features=features, data_types=data_types, keys_schema=keys_schema, registry=registry
    )
    missing = [k for k in schema if k not in frame.columns]
    if missing:
        raise InvalidInputError(f"the frame has no key column(s) {missing}")
    rows = _key_rows(frame[schema].to_numpy(dtype=object).tolist(), len(schema))
    groups = []
    for fg in fgs:
        dtype, labels = types[fg]
        cols = [_frame_column(frame, fg, label) for label in labels]
        vals: Any
        if dtype.is_string:
            cells = [c.tolist() for c in cols]
            if dtype.is_vector:
                cells = [[list(v) for v in col] for col in cells]
            vals = [cell for row in zip(*cells, strict=False) for cell in row]
        elif dtype.is_vector:
            vals = np.stack([np.stack(c.to_numpy()) for c in cols], axis=1) if len(frame) else None
            if vals is None:
                vals = np.empty((0, len(labels), 0))
        else:
            vals = np.column_stack([c.to_numpy() for c in cols]) if labels else np.empty((len(frame), 0))
        groups.append(FeatureGroupValues(fg, dtype, labels, vals))
    return _send(sink, entity, schema, rows, groups, rows_per_message, progress, flush)


def spark_partition_writer(
    sink_factory: Callable[[], Any],
    entity: str,
    *,
    feature_groups: Sequence[str] | Mapping[str, Sequence[str]],
    registry: str,
    keys: Mapping[str, str] | None = None,
    columns: Mapping[str, str] | None = None,
    nulls: str = "error",
    chunk_rows: int = 4096,
) -> Callable[[Iterable[Any]], int]:
    """A function for Spark's ``DataFrame.foreachPartition`` (it returns the partition's row count,
    which ``foreachPartition`` ignores): on the executor it opens a sink with
    ``sink_factory`` (a picklable callable, e.g. ``functools.partial(KafkaSink, servers, topic)``,
    ``functools.partial(GrpcSink, target)`` or ``functools.partial(EmbeddedSink, data_dir)``) and writes
    the partition's rows (``pyspark.sql.Row`` objects or mappings), ``chunk_rows`` at a time, through
    :func:`online_feature_store.batch.push_rows`: columns mapped by name (or ``keys`` / ``columns``),
    every chunk checked against the registry's schema before any of it is sent, nulls per ``nulls``
    (``"error"``: the task fails naming the partition, row and column; ``"default"``: the feature's
    default is written). ``registry`` is the registry URL (a string survives pickling). The rows reach
    it as ``Row`` objects, a Python object per value: on Spark 3.3+ prefer
    :func:`online_feature_store.batch.push_dataframe`, which hands the writers Arrow batches."""
    from online_feature_store.batch.spark import check_writer_args, partition

    check_writer_args("spark_partition_writer", registry, nulls)

    def write(rows: Iterable[Any]) -> int:
        from online_feature_store.batch.load import push_rows

        _, source = partition()
        snapshot = _snapshot(registry)  # once per partition
        sink = sink_factory()
        try:
            return push_rows(
                sink,
                entity,
                (row.asDict(recursive=True) if hasattr(row, "asDict") else row for row in rows),
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

    return write
