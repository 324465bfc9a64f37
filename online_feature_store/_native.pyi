"""Type stubs of the native core (``online_feature_store._native``), checked by ``mypy.stubtest``."""

import os
from collections.abc import Callable, Sequence
from typing import Any, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ERROR_CLASSES",
    "FRONT_METHODS",
    "MAX_TTL_SECONDS",
    "PSDB_HEADER_LEN",
    "BlockCache",
    "BlockHeader",
    "BlockMeta",
    "Catalog",
    "DecodedBlock",
    "EncodedRows",
    "Front",
    "Limits",
    "RedisCache",
    "Store",
    "Tiers",
    "__version__",
    "bf16_decode",
    "bf16_encode",
    "cell_max_len",
    "csdb_encode",
    "csdb_entries",
    "csdb_lookup",
    "data_type_names",
    "decode_block",
    "decode_cell",
    "decode_decoded_result",
    "decode_retrieve_result",
    "encode_block",
    "encode_cell",
    "encode_persist_query",
    "encode_retrieve_query",
    "expiry_decode",
    "expiry_encode",
    "feature_bytes",
    "fp8_e4m3_decode",
    "fp8_e4m3_encode",
    "fp8_e5m2_decode",
    "fp8_e5m2_encode",
    "fp16_decode",
    "fp16_encode",
    "io_threads",
    "parse_data_type",
    "parse_feature_label",
    "q8_decode",
    "q8_encode",
    "quantize",
    "read_header",
    "set_io_threads",
]

__version__: str
PSDB_HEADER_LEN: int
MAX_TTL_SECONDS: int
FRONT_METHODS: list[str]
ERROR_CLASSES: list[str]

@final
class BlockMeta:
    """Layout of one feature-group version (type, feature count, string and vector lengths)."""

    def __new__(
        cls,
        data_type: int,
        n_features: int,
        *,
        version: int = 1,
        string_lengths: Sequence[int] | None = None,
        vector_lengths: Sequence[int] | None = None,
    ) -> BlockMeta: ...
    @property
    def data_type(self) -> int: ...
    @property
    def version(self) -> int: ...
    @property
    def n_features(self) -> int: ...
    @property
    def n_values(self) -> int: ...
    @property
    def string_lengths(self) -> list[int]: ...
    @property
    def vector_lengths(self) -> list[int]: ...

@final
class BlockCache:
    """In-process cache of uncompressed FG blocks per (entity, key), bounded by bytes."""

    def __new__(cls, capacity_bytes: int) -> BlockCache: ...
    def get_many(
        self, entity: str, keys: Sequence[str], fg_ids: Sequence[int]
    ) -> list[list[bytes] | None]: ...
    def put_many(
        self,
        entity: str,
        keys: Sequence[str],
        fg_ids: Sequence[int],
        blocks: Sequence[bytes],
        ttl_seconds: int,
        jitter_percent: int,
    ) -> None: ...
    def invalidate(self, entity: str, keys: Sequence[str]) -> None: ...
    @property
    def weight(self) -> int: ...
    def __len__(self) -> int: ...
    def clear(self) -> None: ...

@final
class Store:
    """A native block store (``ofs_core::store::BlockStore``); one constructor per kind. Every call runs
    with the GIL released; keys are tuples of str in the entity's key-column order."""

    @staticmethod
    def sqlite(path: str, *, busy_timeout: float = 10.0, purge_interval: float = 60.0) -> Store: ...
    @staticmethod
    def cassandra(
        hosts: Sequence[str],
        port: int = 9042,
        keyspace: str = "ofs",
        *,
        replication: Sequence[tuple[str, str]] | None = None,
        replication_factor: int = 1,
        read_consistency: str = "LOCAL_QUORUM",
        write_consistency: str = "LOCAL_QUORUM",
        concurrency: int = 64,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        local_dc: str | None = None,
        retries: int = 2,
        speculative_delay: float = 0.0,
        speculative_max: int = 2,
    ) -> Store: ...
    @staticmethod
    def redis(
        url: str | None = None,
        *,
        cluster_nodes: Sequence[str] | None = None,
        pool_size: int = 32,
        connect_timeout: float = 2.0,
        socket_timeout: float = 2.0,
        retries: int = 2,
        username: str | None = None,
        password: str | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> Store: ...
    def describe(self) -> str: ...
    def ensure(self, entities: Sequence[tuple[str, Sequence[str], Sequence[int]]]) -> None: ...
    def read(
        self, entity: str, key_columns: Sequence[str], keys: Sequence[Sequence[str]], fg_ids: Sequence[int]
    ) -> list[list[bytes]]: ...
    def write(self, entity: str, key_columns: Sequence[str], writes: Sequence[Sequence[Any]]) -> None: ...
    def write_encoded(
        self,
        entity: str,
        key_columns: Sequence[str],
        batches: Sequence[EncodedRows],
        fg_ids: Sequence[int] = ...,
    ) -> None: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...
    def purge_expired(self, now: int | None = None) -> int: ...
    def sweep_step(self, now: int | None = None, rows: int = 50000) -> int: ...
    def pragma(self, name: str) -> str: ...

@final
class RedisCache:
    """The distributed cache tier on Redis / Redis Cluster (``ofs_core::store::redis_cache``): reads with the
    GIL released, backfills on the core's runtime, events drained by :meth:`take_events`."""

    def __new__(
        cls,
        url: str | None = None,
        *,
        cluster_nodes: Sequence[str] | None = None,
        pool_size: int = 32,
        connect_timeout: float = 0.05,
        socket_timeout: float = 0.05,
        failure_threshold: int = 3,
        reset_seconds: float = 2.0,
        backfill_queue: int = 1024,
        backfill_workers: int = 2,
        tombstone_seconds: float = 10.0,
        pending_limit: int = 100000,
        source: str = ...,
    ) -> RedisCache: ...
    def describe(self) -> str: ...
    def get_many(
        self, entity: str, names: Sequence[str], fg_ids: Sequence[int]
    ) -> tuple[list[list[bytes] | None], list[bytes], float] | None: ...
    def backfill(
        self,
        entity: str,
        names: Sequence[str],
        seen: Sequence[bytes],
        at: float,
        fg_ids: Sequence[int],
        blocks: Sequence[bytes],
        ttl_seconds: int,
        jitter_percent: int,
    ) -> None: ...
    def invalidate(
        self,
        entity: str,
        names: Sequence[str],
        channel: str | None = None,
        message_names: Sequence[str] | None = None,
    ) -> bool: ...
    def message(self, entity: str, names: Sequence[str]) -> bytes: ...
    def ping(self) -> bool: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def breaker_state(self) -> str: ...
    @property
    def pending_invalidations(self) -> int: ...
    @property
    def backfills_pending(self) -> int: ...
    @property
    def events_lost(self) -> int: ...
    def take_events(self) -> list[tuple[str, str]]: ...
    def close(self) -> None: ...

@final
class EncodedRows:
    """Rows of a batch load encoded by ``Catalog.encode_batch``: key names and one block per row and
    feature group, held natively until ``Store.write_encoded`` writes them."""

    def __len__(self) -> int: ...
    @property
    def entity(self) -> str: ...
    @property
    def groups(self) -> list[tuple[int, int]]: ...
    def names(self) -> list[str]: ...
    def block_writes(
        self, fg_ids: Sequence[int] = ...
    ) -> list[tuple[tuple[str, ...], int, bytes, int, str]]: ...

@final
class Limits:
    """The limits a request is held to: keys of a retrieve, rows of a persist, and bytes of a retrieve
    response (estimated before any read) or of the blocks one persist builds."""

    def __new__(
        cls, *, max_keys_per_request: int, max_rows_per_persist: int, max_message_bytes: int
    ) -> Limits: ...
    @property
    def max_keys_per_request(self) -> int: ...
    @property
    def max_rows_per_persist(self) -> int: ...
    @property
    def max_message_bytes(self) -> int: ...
    def check_rows(self, rows: int, what: str) -> None: ...
    def check_bytes(self, size: int, what: str) -> None: ...

@final
class Catalog:
    """The registry compiled for serving (one per registry revision; immutable)."""

    def __new__(
        cls,
        revision: int,
        entities: Sequence[tuple[str, Sequence[str]]],
        feature_groups: Sequence[
            tuple[
                str,
                int,
                str,
                int,
                int,
                int,
                Sequence[tuple[int, Sequence[str], Sequence[int], Sequence[int], Sequence[bytes]]],
            ]
        ],
        *,
        in_process_cache: Sequence[tuple[str, int, int, Sequence[int]]] = ...,
        distributed_cache: Sequence[tuple[str, int, int, Sequence[int]]] = ...,
        storage: Sequence[tuple[str, Sequence[str], Sequence[tuple[int, str]]]] = ...,
    ) -> Catalog: ...
    @property
    def revision(self) -> int: ...
    def key_permutation(self, entity: str, keys_schema: Sequence[str]) -> list[int]: ...
    def plan(
        self,
        entity: str,
        keys_schema: Sequence[str],
        fgs: Sequence[tuple[str, Sequence[str]]],
        *,
        keys: int = 0,
        limits: Limits | None = None,
    ) -> list[tuple[int, list[tuple[str, int, int]]]]: ...
    def retrieve(
        self,
        entity: str,
        keys_schema: Sequence[str],
        fgs: Sequence[tuple[str, Sequence[str]]],
        blocks: Sequence[bytes],
        *,
        now: int | None = None,
        limits: Limits | None = None,
        native: bool = False,
    ) -> list[tuple[Any, npt.NDArray[np.uint8]]]: ...
    def retrieve_cached(
        self,
        cache: BlockCache,
        entity: str,
        keys_schema: Sequence[str],
        fgs: Sequence[tuple[str, Sequence[str]]],
        keys: Sequence[Any],
        *,
        now: int | None = None,
        limits: Limits | None = None,
        native: bool = False,
    ) -> list[tuple[Any, npt.NDArray[np.uint8], int, int, int]] | None: ...
    def encode_rows(
        self,
        entity: str,
        fg: str,
        values: Any,
        rows: int,
        *,
        now: int | None = None,
        saturate: bool = False,
        limits: Limits | None = None,
    ) -> list[bytes]: ...
    def encode_batch(
        self,
        entity: str,
        keys: Sequence[tuple[npt.NDArray[Any], npt.NDArray[np.uint8]]],
        groups: Sequence[tuple[str, Any]],
        *,
        now: int | None = None,
        saturate: bool = False,
        limits: Limits | None = None,
    ) -> EncodedRows: ...
    def feature_group(self, entity: str, fg: str) -> tuple[int, int, int, int, int]: ...
    def retrieve_wire(
        self,
        query: bytes,
        read: Callable[[str, list[list[str]], list[int]], Sequence[bytes]],
        *,
        now: int | None = None,
        decoded: bool = False,
        cache: BlockCache | None = None,
        limits: Limits | None = None,
    ) -> tuple[bytes, str, int, list[tuple[str, int, int, int]]]: ...
    def persist_wire(
        self,
        query: bytes,
        *,
        now: int | None = None,
        saturate: bool = False,
        limits: Limits | None = None,
    ) -> tuple[str, list[tuple[tuple[str, ...], int, bytes, int, str]], list[str]]: ...

@final
class Front:
    def __new__(
        cls,
        host: str,
        port: int,
        *,
        fallback: Callable[[str, bytes, list[tuple[str, str]], float | None, str], tuple[int, bytes | str]],
        statuses: dict[str, int],
        descriptors: bytes,
        caller_header: str,
        token_header: str,
        tiers: Tiers | None = None,
        auth: bool = False,
        limits: Limits | None = None,
        max_message_bytes: int = 4_194_304,
        threads: int = 4,
        reuse_port: bool = False,
        caller_labels: tuple[str, str] | None = None,
        latency_buckets: list[float] = ...,
        rows_buckets: list[float] = ...,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
    ) -> Front: ...
    @property
    def port(self) -> int: ...
    def bind_http(
        self,
        host: str,
        port: int,
        *,
        ready: Callable[[], tuple[bool, bytes]],
        statuses: dict[int, tuple[str, int]],
        max_body_bytes: int,
        header_timeout: float,
        idle_timeout: float,
        max_connections_per_peer: int,
        max_head_bytes: int,
        linger_bytes: int,
        linger_seconds: float,
        reuse_port: bool = False,
    ) -> int: ...
    def start_http(self) -> None: ...
    def stop_http(self, grace: float) -> bool: ...
    def take_metrics(
        self,
    ) -> (
        tuple[
            list[tuple[str, str, int, int]],
            list[tuple[str, tuple[list[int], float]]],
            list[tuple[str, str, tuple[list[int], float], tuple[list[int], float]]],
            list[tuple[str, str, int, int, int]],
            list[tuple[str, str, int, int]],
            list[tuple[str, str, tuple[list[int], float], int]],
            int,
        ]
        | None
    ): ...
    def set_serving(self, catalog: Catalog, callers: list[tuple[str, str, str]]) -> None: ...
    def set_health(self, service: str, serving: bool) -> None: ...
    def start(self) -> None: ...
    def stop(self, grace: float) -> bool: ...

@final
class Tiers:
    """The cache tiers and stores one ``FeatureStore`` reads through natively (``rust/src/tiers.rs``)."""

    def __new__(cls, cache: BlockCache | None = None) -> Tiers: ...
    def set_store(self, store_id: str, store: Store) -> None: ...
    def set_writer(self, store_id: str, store: Store) -> None: ...
    def set_bus_channel(self, channel: str) -> None: ...
    def set_bus_log(self, path: str | os.PathLike[str], source: str, retention_seconds: float) -> None: ...
    def set_bus_elsewhere(self) -> None: ...
    def take_bus_errors(self) -> tuple[list[str], int]: ...
    def set_remote(self, cache: RedisCache) -> None: ...
    def set_remote_elsewhere(self) -> None: ...
    def bus_healthy_for(self, seconds: float | None) -> None: ...
    @property
    def bus_healthy(self) -> bool: ...
    def mark(self, entity: str) -> tuple[int, int]: ...
    def invalidate_local(self, entity: str, keys: Sequence[str]) -> None: ...
    def reset_local(self) -> None: ...
    def retrieve(
        self,
        catalog: Catalog,
        entity: str,
        keys_schema: Sequence[str],
        fgs: Sequence[tuple[str, Sequence[str]]],
        keys: Sequence[Any],
        *,
        now: int | None = None,
        limits: Limits | None = None,
        native: bool = False,
        time_left: float | None = None,
    ) -> tuple[
        list[tuple[Any, npt.NDArray[np.uint8], int, int, int]] | None,
        tuple[str, int, tuple[int, int] | None, tuple[int, int] | None, list[tuple[str, str, float, bool]]],
        BaseException | None,
    ]: ...
    def retrieve_wire(
        self,
        catalog: Catalog,
        query: bytes,
        *,
        now: int | None = None,
        decoded: bool = False,
        limits: Limits | None = None,
        time_left: float | None = None,
    ) -> tuple[
        tuple[bytes, str, int, list[tuple[str, int, int, int]]] | None,
        tuple[str, int, tuple[int, int] | None, tuple[int, int] | None, list[tuple[str, str, float, bool]]],
        BaseException | None,
    ]: ...
    def persist_wire(
        self,
        catalog: Catalog,
        query: bytes,
        *,
        now: int | None = None,
        saturate: bool = False,
        limits: Limits | None = None,
        time_left: float | None = None,
    ) -> tuple[
        tuple[str, int, int] | None,
        tuple[str, int, tuple[int, int] | None, tuple[int, int] | None, list[tuple[str, str, float, bool]]],
        BaseException | None,
    ]: ...

@final
class BlockHeader:
    """The 9-byte PSDB header."""

    @property
    def version(self) -> int: ...
    @property
    def expiry_at(self) -> int | None: ...
    @property
    def layout(self) -> int: ...
    @property
    def compression(self) -> int: ...
    @property
    def data_type(self) -> int: ...
    @property
    def bool_last_index(self) -> int: ...

@final
class DecodedBlock:
    """A decoded block: status ``"present"``, ``"missing"`` or ``"expired"``, header and values."""

    @property
    def status(self) -> str: ...
    @property
    def header(self) -> BlockHeader | None: ...
    @property
    def values(self) -> Any: ...
    def feature(self, pos: int) -> bytes | None: ...
    def __len__(self) -> int: ...

def encode_block(
    meta: BlockMeta,
    values: Any,
    *,
    ttl: int = 0,
    expiry_at: int | None = None,
    now: int | None = None,
    compress: bool = True,
    saturate: bool = False,
) -> bytes: ...
def decode_block(meta: BlockMeta, block: bytes, *, now: int | None = None) -> DecodedBlock: ...
def feature_bytes(meta: BlockMeta, block: bytes, pos: int, *, now: int | None = None) -> bytes | None: ...
def read_header(block: bytes) -> BlockHeader: ...
def encode_cell(
    data_type: int,
    values: Any,
    *,
    string_length: int = 65535,
    vector_length: int = 0,
    saturate: bool = False,
) -> bytes: ...
def decode_cell(data_type: int, cell: bytes, *, vector_length: int = 0) -> Any: ...
def cell_max_len(data_type: int, *, string_length: int = 0, vector_length: int = 0) -> int: ...
def expiry_encode(expiry_at: int, *, now: int | None = None) -> bytes: ...
def expiry_decode(raw: bytes) -> int | None: ...
def encode_persist_query(
    entity: str,
    keys_schema: Sequence[str],
    keys: Sequence[str | Sequence[str]],
    feature_groups: Sequence[tuple[str, int, Sequence[str], Any]],
) -> bytes: ...
def encode_retrieve_query(
    entity: str,
    keys_schema: Sequence[str],
    keys: Sequence[str | Sequence[str]],
    feature_groups: Sequence[tuple[str, Sequence[str]]],
) -> bytes: ...
def decode_retrieve_result(
    data: bytes,
    *,
    native: bool = False,
) -> tuple[
    str,
    list[str],
    list[str],
    list[tuple[str, list[str], list[int], list[int], Any, npt.NDArray[np.uint8]]],
]: ...
def decode_decoded_result(
    data: bytes,
) -> tuple[list[str], list[str], list[tuple[str, list[str], list[list[str]]]]]: ...
def csdb_encode(entries: Sequence[tuple[int, bytes]], *, layout: int | None = None) -> bytes: ...
def csdb_entries(value: bytes) -> list[tuple[int, bytes]]: ...
def csdb_lookup(value: bytes, fg_ids: Sequence[int]) -> list[bytes | None]: ...
def fp16_encode(values: npt.ArrayLike, *, saturate: bool = False) -> npt.NDArray[np.uint16]: ...
def fp16_decode(codes: npt.ArrayLike) -> npt.NDArray[np.float32]: ...
def fp8_e4m3_encode(values: npt.ArrayLike, *, saturate: bool = False) -> npt.NDArray[np.uint8]: ...
def fp8_e4m3_decode(codes: npt.ArrayLike) -> npt.NDArray[np.float32]: ...
def fp8_e5m2_encode(values: npt.ArrayLike, *, saturate: bool = False) -> npt.NDArray[np.uint8]: ...
def fp8_e5m2_decode(codes: npt.ArrayLike) -> npt.NDArray[np.float32]: ...
def bf16_encode(values: npt.ArrayLike, *, saturate: bool = False) -> npt.NDArray[np.uint16]: ...
def bf16_decode(codes: npt.ArrayLike) -> npt.NDArray[np.float32]: ...
def q8_encode(
    values: npt.ArrayLike, *, saturate: bool = False
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]: ...
def q8_decode(codes: npt.ArrayLike, scales: npt.ArrayLike) -> npt.NDArray[np.float32]: ...
def quantize(data: bytes, from_type: int, to_type: int) -> bytes: ...
def parse_feature_label(label: str) -> tuple[str, int | None]: ...
def data_type_names() -> list[str]: ...
def parse_data_type(name: str) -> int: ...
def set_io_threads(threads: int) -> None: ...
def io_threads() -> int: ...
