"""``Client``: the feature store over gRPC, with the call shapes of the embedded
:class:`~online_feature_store.feature_store.FeatureStore`, so switching between in-process and remote is
one line::

    fs = FeatureStore()                         # in-process
    fs = Client("features.internal:8089", "ranker", token)   # remote
    result = fs.retrieve("user", ["u1", "u2"], {"activity": ["ctr", "clicks"]}, keys_schema=["user_id"])

Requests and responses are raw bytes built and decoded by the native core (``retrieve.Query`` /
``persist.Query`` in, ``retrieve.Result`` out as one numpy array per feature group), so no protobuf or
Python object is made per feature value. Large key lists are split into batches sent in parallel and
reassembled in order. Several servers (a list of addresses, or one DNS name resolving to several) share the
calls through gRPC's ``round_robin`` policy; a retrieve that fails with ``UNAVAILABLE`` is retried, on
another replica when one is up, with exponential backoff and jitter within the call's deadline (a persist
only when it was never sent). See ``docs/client.md``.
"""

from __future__ import annotations

import ipaddress
import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

try:
    import grpc
except ImportError as exc:  # the client's one dependency beyond the core
    raise ModuleNotFoundError(
        "online_feature_store.Client needs grpcio: pip install 'online-feature-store[client]'", name="grpc"
    ) from exc

from online_feature_store._native import (
    decode_decoded_result,
    decode_retrieve_result,
    encode_persist_query,
    encode_retrieve_query,
)
from online_feature_store.contract import PERSIST, RETRIEVE, RETRIEVE_DECODED, RPCS, credentials, error_of
from online_feature_store.embeddings import Embeddings, Q8Values, is_native
from online_feature_store.errors import AuthError, DeadlineExceededError, InvalidInputError, OfsError
from online_feature_store.keys import key_rows
from online_feature_store.limits import (
    DEFAULT_MAX_KEYS_PER_REQUEST,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_ROWS_PER_PERSIST,
    make_limits,
)
from online_feature_store.results import RetrieveResult
from online_feature_store.types import DataType

__all__ = [
    "AuthError",
    "Client",
    "DeadlineExceededError",
    "DecodedResult",
    "channel_target",
    "open_channel",
]

UNKNOWN_REVISION = -1
"""``RetrieveResult.revision`` of a remote result: the server does not report its registry revision."""

_T = TypeVar("_T")
# Generic only in the type stubs, so the alias is a string evaluated by type checkers alone.
_Stub: TypeAlias = "grpc.UnaryUnaryMultiCallable[bytes, bytes]"


ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
"""The service config of every channel :func:`open_channel` makes: calls spread over every address the
target resolves to that has a ready connection (gRPC's default, ``pick_first``, sends them all to one)."""

_UNSENT = (
    "failed to connect to all addresses",  # pick_first: no connection could be made
    "connections to all backends failing",  # round_robin: no ready replica
    "empty address list",  # the name resolved to no address
    "DNS resolution failed",
)
"""How gRPC's ``UNAVAILABLE`` begins when its load-balancing policy had no connection to put the call on,
so no server can have seen it (the only case where a persist is sent again). Pinned against the installed
grpcio by ``tests/client/test_replicas.py``; a wording gRPC changes makes persists fail instead of being
retried, never the other way round."""


_TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def channel_target(address: str | Sequence[str]) -> str:
    """The gRPC target of ``address``: one ``host:port`` (a DNS name may resolve to several replicas) or a
    gRPC target URI as it is; several addresses (a sequence, or one string separated by commas) as one
    ``ipv4:`` / ``ipv6:`` target listing them all. Several addresses must be ``IP:port`` literals of one
    family: a host name in a list would be resolved once and never again, so replicas known by name are
    given as one DNS name that resolves to each of them (gRPC resolves it again as they come and go)."""
    if isinstance(address, str) and address.startswith(_TARGET_SCHEMES):
        return address  # a gRPC target URI: its scheme has its own syntax (ipv4: lists use commas too)
    entries = [e.strip() for e in address.split(",")] if isinstance(address, str) else list(address)
    if not entries or any(not isinstance(e, str) or not e.strip() for e in entries):
        raise InvalidInputError(
            f"address {address!r}: expected host:port, or several IP:port separated by commas"
        )
    if len(entries) == 1:
        return entries[0].strip()
    literals: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
    for entry in entries:
        host, sep, port = entry.strip().rpartition(":")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInputError(f"address {entry!r} (of {len(entries)}): expected IP:port, port 1-65535")
        try:
            ip = ipaddress.ip_address(bare)
        except ValueError:
            raise InvalidInputError(
                f"address {entry!r} (of {len(entries)}): several addresses must be IP:port literals "
                "(10.0.0.1:8089, [fd00::1]:8089); give replicas known by name as one DNS name that "
                "resolves to each of them (host:port alone)"
            ) from None
        literals.append((ip, int(port)))
    versions = {ip.version for ip, _ in literals}
    if len(versions) > 1:
        raise InvalidInputError(f"address {address!r}: IPv4 and IPv6 addresses cannot be mixed in one list")
    if versions == {4}:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in literals)
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in literals)


def open_channel(
    address: str | Sequence[str],
    *,
    tls: bool = False,
    root_certificates: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to one or several servers (:func:`channel_target`) balancing calls over them with gRPC's
    ``round_robin`` (:data:`ROUND_ROBIN`), unless ``options`` hold a ``grpc.service_config`` of their
    own. With ``tls`` (or ``root_certificates``) a TLS channel, each server's certificate checked against
    the host of ``address`` (a list of IPs: the first one, unless ``grpc.default_authority`` in
    ``options`` names what the certificates carry)."""
    target = channel_target(address)
    opts = list(options)
    if not any(name == "grpc.service_config" for name, _ in opts):  # gRPC keeps the first of two
        opts.insert(0, ("grpc.service_config", ROUND_ROBIN))
    listed = target.startswith(("ipv4:", "ipv6:")) and "," in target
    if listed and not any(name == "grpc.default_authority" for name, _ in opts):
        # gRPC's default `:authority` for a list is the whole list, commas and all: not an authority
        # HTTP/2 servers must take (`ofs serve`'s front refuses it with PROTOCOL_ERROR). The first
        # address stands for them all.
        opts.append(("grpc.default_authority", target.split(":", 1)[1].split(",", 1)[0]))
    if tls or root_certificates is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.secure_channel(target, creds, options=opts)
    return grpc.insecure_channel(target, options=opts)


def _unsent(err: grpc.RpcError) -> bool:
    """True when gRPC failed the call before putting it on any connection (:data:`_UNSENT`)."""
    details = err.details() if isinstance(err, grpc.Call) else None
    return bool(details) and str(details).startswith(_UNSENT)


def _error(err: grpc.RpcError, method: str) -> OfsError:
    """The library error of a failed call (:func:`online_feature_store.contract.error_of`)."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = err.details() if isinstance(err, grpc.Call) else str(err)
    return error_of(code.name, details or "", method)


@dataclass(frozen=True)
class DecodedResult:
    """Features per FG rendered as the server's strings: ``values[fg]`` has one row per requested key (in
    request order) and one string per requested feature."""

    entity: str
    features: Mapping[str, Sequence[str]]
    values: Mapping[str, list[list[str]]]

    def to_pandas(self) -> Any:
        """One row per key, one column ``"<fg>.<feature>"`` per feature."""
        import pandas as pd  # optional dependency

        columns: dict[str, Any] = {}
        for fg, labels in self.features.items():
            rows = self.values[fg]
            for i, label in enumerate(labels):
                columns[f"{fg}.{label.split('@')[0]}"] = [row[i] for row in rows]
        return pd.DataFrame(columns)


@dataclass(frozen=True)
class _Schema:
    """What the client knows of one FG: its stored data type (from a retrieve, or given)."""

    data_type: DataType


class Client:
    """A connection to ``ofs serve`` gRPC servers: ``address`` is one ``host:port`` (a DNS name may
    resolve to several replicas) or several ``IP:port`` (a list, or one string separated by commas), the
    calls balanced over them round-robin (:func:`open_channel`).

    ``caller_id`` / ``token`` go out as the ``online-feature-store-caller-id`` /
    ``online-feature-store-auth-token`` metadata (leave them out for a server running without auth).
    ``tls`` (or ``root_certificates``, PEM bytes; default: the system roots) makes a TLS channel.
    ``channel`` is an open gRPC channel to call on instead of one to ``address`` (``tls``,
    ``root_certificates`` and ``options`` then do not apply, and :meth:`close` leaves it open).
    ``timeout`` is each call's deadline in seconds, retries and batches included. Key lists longer than
    ``batch_size`` go out as several requests, up to ``max_workers`` at a time. A retrieve answered
    ``UNAVAILABLE`` is tried up to ``retries`` more times (round-robin puts each try on the next ready
    replica), waiting a random time up to ``backoff · 2^attempt`` seconds (at most ``max_backoff``) in
    between; a persist only when gRPC never sent it (no server was reachable), since one that reached a
    server may have been written. ``max_message_bytes`` bounds
    each request and response: a batch whose request is over it is refused
    (:class:`~online_feature_store.errors.ResourceExhaustedError`) before it is sent. ``batch_size`` may
    not exceed the server's ``max_keys_per_request`` (default 10,000; docs/serving.md#limits).
    """

    def __init__(
        self,
        address: str | Sequence[str],
        caller_id: str | None = None,
        token: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = 5.0,
        batch_size: int = 500,
        max_workers: int = 4,
        retries: int = 4,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        keys_schemas: Mapping[str, Sequence[str]] | None = None,
        options: Sequence[tuple[str, Any]] = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel: grpc.Channel | None = None,
    ) -> None:
        if batch_size < 1 or max_workers < 1 or retries < 0 or timeout <= 0:
            raise InvalidInputError("batch_size and max_workers must be >= 1, retries >= 0 and timeout > 0")
        # The client's own limits: requests it builds are checked against them before they are sent.
        self._limits = make_limits(
            DEFAULT_MAX_KEYS_PER_REQUEST, DEFAULT_MAX_ROWS_PER_PERSIST, max_message_bytes
        )
        self.address = address if isinstance(address, str) else ",".join(address)
        self.timeout = timeout
        self.batch_size = batch_size
        self.max_workers = max_workers
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        channel_options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Reconnect soon after a server restart, so retries are not answered by a channel that is
            # still backing off from the last failed connection attempt.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            *options,
        ]
        self._own_channel = channel is None
        if channel is not None:
            self._channel = channel
        else:
            self._channel = open_channel(
                address, tls=tls, root_certificates=root_certificates, options=channel_options
            )
        self._metadata = credentials(caller_id, token)
        # Raw-bytes methods: no serializer, the native core builds and reads the bytes.
        self._retrieve: _Stub = self._channel.unary_unary(RETRIEVE.path)
        self._retrieve_decoded: _Stub = self._channel.unary_unary(RETRIEVE_DECODED.path)
        self._persist: _Stub = self._channel.unary_unary(PERSIST.path)
        self._keys_schemas: dict[str, list[str]] = {e: list(k) for e, k in (keys_schemas or {}).items()}
        self._schemas: dict[tuple[str, str], _Schema] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # -- plumbing ---------------------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="ofs-client")
            return self._pool

    def _call(self, method: str, stub: _Stub, request: bytes, deadline: float) -> bytes:
        """One RPC, retried on ``UNAVAILABLE`` while the deadline allows (a method that is not idempotent
        only when the call was never sent); errors mapped. A request over ``max_message_bytes`` is
        refused here, unsent. The retry is ours rather than gRPC's retry policy: a policy cannot tell a
        persist that never left the client from one a server answered or dropped, and this loop keeps
        one deadline over the batches and tries of a call, on a channel given by the caller too."""
        self._limits.check_bytes(len(request), f"{method} request")
        idempotent = RPCS[method].idempotent
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError(f"{method}: deadline exceeded after {attempt} attempt(s)")
            try:
                reply: bytes = stub(request, timeout=remaining, metadata=self._metadata)
                return reply
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                retry = idempotent or _unsent(err)
                if code == grpc.StatusCode.UNAVAILABLE and retry and attempt < self.retries:
                    # Full jitter: spreads the retries of many clients after a server restart.
                    delay = random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
                    if time.monotonic() + delay >= deadline:
                        # Retries left but no time: the deadline is what ran out (this is also how a
                        # server that accepts connections but never answers ends).
                        raise DeadlineExceededError(
                            f"{method}: deadline exceeded while the server was unavailable "
                            f"({_error(err, method)})"
                        ) from err
                    attempt += 1
                    time.sleep(delay)
                    continue
                raise _error(err, method) from err

    def _batched(self, n: int, run: Callable[[int, int], _T]) -> list[_T]:
        """``run(start, stop)`` over ``range(n)`` in batches of ``batch_size``, in parallel, in order."""
        bounds = [(i, min(i + self.batch_size, n)) for i in range(0, max(n, 1), self.batch_size)]
        if len(bounds) == 1:
            return [run(*bounds[0])]
        return list(self._executor().map(lambda b: run(*b), bounds))

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _keys_schema(self, entity: str, keys_schema: Sequence[str] | None) -> list[str]:
        """The key labels a request names: given with the call, else the entity's from the constructor's
        ``keys_schemas``, else none (an empty ``keys_schema``: our server then reads the keys in the
        entity's own key order, as :class:`FeatureStore` does). A call's labels are never remembered:
        the next call without labels must not read its keys in another call's order."""
        if keys_schema is not None:
            return list(keys_schema)
        return list(self._keys_schemas.get(entity, []))

    @staticmethod
    def _key_rows(keys: Sequence[Any], width: int) -> list[str | tuple[str, ...]]:
        """Key rows as text by the rule ``FeatureStore`` follows (:mod:`online_feature_store.keys`);
        ``width`` 0 (no keys_schema): the server checks the count against the entity. One-value rows
        go to the encoder as a ``str`` (its fast case)."""
        return [row[0] if len(row) == 1 else row for row in key_rows(keys, width)]

    def _learn(self, entity: str, request: Mapping[str, Sequence[str]], groups: list[Any]) -> None:
        """Remembers each FG's stored type from the served type of a feature asked without ``@Type``."""
        for (fg, labels), (_label, _features, types, _lengths, _values, _status) in zip(
            request.items(), groups, strict=False
        ):
            for label, t in zip(labels, types, strict=False):
                if "@" not in label:
                    self._schemas[(entity, fg)] = _Schema(DataType(t))
                    break

    def _fan_out(
        self,
        method: str,
        stub: _Stub,
        decode: Callable[[bytes], list[Any]],
        entity: str,
        keys: Sequence[Any],
        features: Mapping[str, Sequence[str]],
        keys_schema: Sequence[str] | None,
        timeout: float | None,
    ) -> tuple[list[tuple[str, list[str]]], list[list[Any]]]:
        """One retrieve ``method`` per batch of keys, in parallel: the request's FGs and, per batch in key
        order, ``decode(reply)`` (the per-FG part of the response)."""
        schema = self._keys_schema(entity, keys_schema)
        rows = self._key_rows(keys, len(schema))
        request = [(fg, list(labels)) for fg, labels in features.items()]
        deadline = self._deadline(timeout)

        def run(start: int, stop: int) -> list[Any]:
            query = encode_retrieve_query(entity, schema, rows[start:stop], request)
            return decode(self._call(method, stub, query, deadline))

        return request, self._batched(len(rows), run)

    # -- API --------------------------------------------------------------------------------------
    def retrieve(
        self,
        entity: str,
        keys: Sequence[Any],
        features: Mapping[str, Sequence[str]],
        *,
        keys_schema: Sequence[str] | None = None,
        timeout: float | None = None,
        embeddings: Embeddings = "float32",
    ) -> RetrieveResult:
        """Features of ``keys`` as :meth:`FeatureStore.retrieve
        <online_feature_store.feature_store.FeatureStore.retrieve>` returns them: ``values[fg]`` one row per
        key (request order, duplicates kept), ``status[fg]`` found / missing / expired per key.
        ``keys_schema`` names the key columns of ``keys`` (default: the constructor's ``keys_schemas``,
        else the entity's own key order; see the class doc).
        ``embeddings`` as for ``FeatureStore.retrieve``: ``"native"`` keeps bf16 as ``ml_dtypes.bfloat16``
        and Q8 as :class:`~online_feature_store.embeddings.Q8Values` (the bytes on the wire are the same)."""
        native = is_native(embeddings)
        request, parts = self._fan_out(
            RETRIEVE.name,
            self._retrieve,
            lambda r: decode_retrieve_result(r, native=native)[3],
            entity,
            keys,
            features,
            keys_schema,
            timeout,
        )
        self._learn(entity, features, parts[0])
        values: dict[str, Any] = {}
        status: dict[str, npt.NDArray[np.uint8]] = {}
        for f, (fg, _labels) in enumerate(request):
            chunks = [p[f][4] for p in parts]
            if isinstance(chunks[0], list):
                values[fg] = [row for c in chunks for row in c]
            elif isinstance(chunks[0], tuple):  # Q8 codes, scales, lengths (embeddings="native")
                values[fg] = Q8Values.concatenate([Q8Values.from_native(c) for c in chunks])
            else:
                values[fg] = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            sts = [p[f][5] for p in parts]
            status[fg] = sts[0] if len(sts) == 1 else np.concatenate(sts)
        return RetrieveResult(entity, dict(features), values, status, UNKNOWN_REVISION)

    def retrieve_decoded(
        self,
        entity: str,
        keys: Sequence[Any],
        features: Mapping[str, Sequence[str]],
        *,
        keys_schema: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> DecodedResult:
        """As :meth:`retrieve`, with every value rendered as a string by the server
        (``RetrieveDecodedResult``, the reference's string forms)."""
        request, parts = self._fan_out(
            RETRIEVE_DECODED.name,
            self._retrieve_decoded,
            lambda r: decode_decoded_result(r)[2],
            entity,
            keys,
            features,
            keys_schema,
            timeout,
        )
        values = {fg: [row for p in parts for row in p[f][2]] for f, (fg, _) in enumerate(request)}
        return DecodedResult(entity, dict(features), values)

    def persist(
        self,
        entity: str,
        feature_group: str,
        keys: Sequence[Any],
        values: Any,
        *,
        keys_schema: Sequence[str] | None = None,
        features: Sequence[str] | None = None,
        data_type: DataType | int | str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Writes one row of ``feature_group`` per key, as :meth:`FeatureStore.persist
        <online_feature_store.feature_store.FeatureStore.persist>` does; features not given keep their
        defaults. ``values``: an array ``(keys, features[, vector_length])`` in the order of ``features``
        (required for arrays: the server does not publish the registry), a list of rows for strings, a
        pandas DataFrame or a ``{feature: column}`` dict (labels from the columns), or a list of
        ``{feature: value}`` dicts, one per key. ``data_type`` is the FG's type; without it the type
        learnt from an earlier :meth:`retrieve` of the FG is used, else one key of the FG is retrieved
        to learn it (a writer-only token cannot: pass ``data_type``). Key lists longer than
        ``batch_size`` are written in parallel batches: each batch is validated and written whole, but
        a failed batch does not undo the others. Returns the number of rows."""
        schema = self._keys_schema(entity, keys_schema)
        rows = self._key_rows(keys, len(schema))
        if not rows:
            return 0
        labels, values = _columns(values, features)
        deadline = self._deadline(timeout)
        dtype = self._data_type(entity, feature_group, schema, rows, labels, data_type, deadline)
        flat = _wire_values(values, dtype, len(rows), len(labels))

        def run(start: int, stop: int) -> None:
            part = (
                flat[start * len(labels) : stop * len(labels)] if isinstance(flat, list) else flat[start:stop]
            )
            query = encode_persist_query(
                entity, schema, rows[start:stop], [(feature_group, int(dtype), labels, part)]
            )
            self._call(PERSIST.name, self._persist, query, deadline)

        self._batched(len(rows), run)
        return len(rows)

    def _data_type(
        self,
        entity: str,
        fg: str,
        schema: list[str],
        rows: list[Any],
        labels: list[str],
        given: DataType | int | str | None,
        deadline: float,
    ) -> DataType:
        if given is not None:
            dtype = DataType.parse(given)
            self._schemas[(entity, fg)] = _Schema(dtype)
            return dtype
        known = self._schemas.get((entity, fg))
        if known is not None:
            return known.data_type
        query = encode_retrieve_query(entity, schema, rows[:1], [(fg, labels[:1])])
        try:
            reply = self._call(RETRIEVE.name, self._retrieve, query, deadline)
        except AuthError as err:
            raise InvalidInputError(
                f"the data type of {entity}/{fg} is unknown and this caller may not retrieve it to learn "
                f"it ({err}): pass data_type="
            ) from err
        (_l, _f, types, _lengths, _v, _s) = decode_retrieve_result(reply)[3][0]
        dtype = DataType(types[0])
        self._schemas[(entity, fg)] = _Schema(dtype)
        return dtype

    def retrieve_wire(self, query: bytes, *, decoded: bool = False, timeout: float | None = None) -> bytes:
        """A serialized ``retrieve.Query`` sent as it is, in one call: the serialized ``retrieve.Result``
        (with ``decoded``, a ``retrieve.DecodedResult``), as :meth:`FeatureStore.retrieve_wire
        <online_feature_store.feature_store.FeatureStore.retrieve_wire>` answers in process."""
        if decoded:
            return self._call(RETRIEVE_DECODED.name, self._retrieve_decoded, query, self._deadline(timeout))
        return self._call(RETRIEVE.name, self._retrieve, query, self._deadline(timeout))

    def persist_wire(self, query: bytes, *, timeout: float | None = None) -> None:
        """A serialized ``persist.Query`` sent as it is, in one call (what ``ingest.pack`` builds)."""
        self._call(PERSIST.name, self._persist, query, self._deadline(timeout))

    def close(self) -> None:
        """Closes the batch thread pool and the channel (unless it was given)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self._own_channel:
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _columns(values: Any, features: Sequence[str] | None) -> tuple[list[str], Any]:
    """(feature labels, values as an array / list of rows) from any accepted ``values`` form."""
    if hasattr(values, "columns") and hasattr(values, "to_numpy"):  # a pandas DataFrame
        labels = [str(c) for c in values.columns] if features is None else list(features)
        return labels, _stack([values[c].to_numpy() for c in labels])
    if isinstance(values, Mapping):
        labels = [str(c) for c in values] if features is None else list(features)
        return labels, _stack([values[c] for c in labels])
    if isinstance(values, Sequence) and values and isinstance(values[0], Mapping):
        labels = list(values[0]) if features is None else list(features)
        try:
            return labels, _stack([[rec[c] for rec in values] for c in labels])
        except KeyError as err:
            raise InvalidInputError(f"a record lacks feature {err.args[0]!r}") from None
    if features is None:
        raise InvalidInputError(
            "pass features=[...] with array values (the server does not publish the registry), "
            "or give a DataFrame or a {feature: column} dict"
        )
    return list(features), values


def _stack(columns: list[Any]) -> Any:
    """Columns (one per feature) to rows x features: a numpy array for numbers (vectors stacked to
    ``(rows, features, length)``), a list of rows for strings."""
    if not columns:
        raise InvalidInputError("no features given")
    first = columns[0]
    sample = first[0] if len(first) else None
    if isinstance(sample, str) or (
        isinstance(sample, (list, tuple, np.ndarray)) and len(sample) and isinstance(sample[0], str)
    ):
        return [list(r) for r in zip(*columns, strict=False)]
    arrays = [
        np.stack(list(c)) if isinstance(sample, (list, tuple, np.ndarray)) else np.asarray(c) for c in columns
    ]
    return np.stack(arrays, axis=1)


def _wire_values(values: Any, dtype: DataType, rows: int, n: int) -> Any:
    """The ``encode_persist_query`` form: arrays as they are; strings flattened to ``rows x n`` cells."""
    if not dtype.is_string:
        arr = np.asarray(values)
        if arr.dtype == object:
            raise InvalidInputError(f"values for {dtype.type_name} must be numeric, got {arr.dtype}")
        return arr
    if isinstance(values, np.ndarray):
        values = values.tolist()
    flat: list[Any] = []
    for r, row in enumerate(values):
        if isinstance(row, str) or len(row) != n:
            raise InvalidInputError(f"row {r}: expected {n} string cells, got {row!r}")
        flat.extend(row)
    if len(flat) != rows * n:
        raise InvalidInputError(f"{len(flat) // max(n, 1)} rows of values for {rows} keys")
    return flat
