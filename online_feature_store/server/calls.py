"""One API call, whatever the transport: auth, deadline, the error table and metrics.

The gRPC handlers (:mod:`.app`) and the HTTP/JSON endpoints (:mod:`.http`) both go through
:meth:`Calls.run` with the request as ``retrieve.Query`` / ``persist.Query`` bytes, so auth, deadlines and
the mapping of library errors to status codes exist once. Header names, methods and the error table are
the contract's (:mod:`online_feature_store.contract`, shared with the client). The work itself is
:class:`~online_feature_store.feature_store.FeatureStore`'s; nothing here knows about features.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from online_feature_store import contract
from online_feature_store.contract import CALLER_HEADER, TOKEN_HEADER
from online_feature_store.errors import DeadlineExceededError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.metrics import FeatureStoreMetrics
from online_feature_store.registry.model import role_allows
from online_feature_store.registry.tokens import TokenCheckRefusedError, TokenVerifier
from online_feature_store.server.metrics import ANONYMOUS, UNKNOWN, ServerMetrics

__all__ = [
    "CALLER_HEADER",
    "METHODS",
    "STATUS_OF",
    "TOKEN_HEADER",
    "CallError",
    "Calls",
    "DeadlineExceededError",
    "ServerHooks",
    "check_deadline",
    "deadline_scope",
    "grpc_peer_host",
]

log = logging.getLogger("online_feature_store.server")

STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = tuple(
    (cls, grpc.StatusCode[name]) for cls, name in contract.STATUS_OF
)
"""The contract's error table (:data:`online_feature_store.contract.STATUS_OF`) as gRPC codes."""


@dataclass(frozen=True)
class Method:
    """An API method: the role its caller needs and the :class:`Calls` function doing the work."""

    name: str
    role: str
    run: Callable[[Calls, bytes], bytes]


class CallError(Exception):
    """A call that ends with gRPC status ``code`` (never ``OK``)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_local = threading.local()


@contextmanager
def deadline_scope(at: float | None) -> Iterator[None]:
    """Sets this thread's deadline (``time.monotonic()`` value; None: none) for :func:`check_deadline`."""
    _local.deadline = at
    try:
        yield
    finally:
        _local.deadline = None


def grpc_peer_host(peer: str) -> str:
    """The client address of a gRPC ``context.peer()`` string without its port: ``ipv4:10.0.0.7:5123`` →
    ``10.0.0.7``, ``ipv6:[::1]:5123`` → ``::1`` (anything else as it is)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]") or rest
    return peer


def check_deadline(what: str) -> None:
    """Raises :class:`DeadlineExceededError` when this thread's call has no time left for ``what``."""
    at: float | None = getattr(_local, "deadline", None)
    if at is not None and time.monotonic() >= at:
        raise DeadlineExceededError(f"deadline exceeded before {what}")


class ServerHooks(FeatureStoreMetrics):
    """The :class:`FeatureStore` hooks of a server process: the deadline check, then the metrics (if any).

    :meth:`request` is called once a request is planned, right before its store reads or writes, which is
    the last moment a call can be dropped without having done any I/O."""

    def __init__(self, metrics: ServerMetrics | None) -> None:
        self.metrics = metrics

    def request(self, entity: str, rows: int) -> None:
        check_deadline(f"the store calls for {rows} keys of {entity!r}")
        if self.metrics is not None:
            self.metrics.request(entity, rows)

    def time_left(self) -> float | None:
        at: float | None = getattr(_local, "deadline", None)
        return None if at is None else at - time.monotonic()

    def store_call(self, store_id: str, op: str, seconds: float, failed: bool) -> None:
        if self.metrics is not None:
            self.metrics.store_call(store_id, op, seconds, failed)

    def feature_status(self, entity: str, feature_group: str, found: int, missing: int, expired: int) -> None:
        if self.metrics is not None:
            self.metrics.feature_status(entity, feature_group, found, missing, expired)


class Calls:
    """Runs API calls against ``fs``: auth (when ``auth``), deadline, error mapping and metrics."""

    def __init__(self, fs: FeatureStore, *, auth: bool, metrics: ServerMetrics | None) -> None:
        self.fs = fs
        self.auth = auth
        self.metrics = metrics
        self.tokens = TokenVerifier()
        fs.metrics = ServerHooks(metrics)

    def retrieve(self, request: bytes) -> bytes:
        """``retrieve.Query`` bytes → ``retrieve.Result`` bytes."""
        return self.fs.retrieve_wire(request)

    def retrieve_decoded(self, request: bytes) -> bytes:
        """``retrieve.Query`` bytes → ``retrieve.DecodedResult`` bytes."""
        return self.fs.retrieve_wire(request, decoded=True)

    def persist(self, request: bytes) -> bytes:
        """``persist.Query`` bytes → ``persist.Result`` bytes."""
        from online_feature_store._proto import persist_pb2

        self.fs.persist_wire(request)
        reply: bytes = persist_pb2.Result(message="Data Persisted Successfully").SerializeToString()
        return reply

    def authorize(self, metadata: Mapping[str, str], role: str, peer: str = "") -> str:
        """The caller's metrics label (a registry caller id, ``anonymous`` or ``unknown``); raises
        :class:`CallError` when auth is on and the call may not go ahead. ``metadata`` keys are lower case;
        ``peer`` is the client's address (the limiter of legacy scrypt hashes counts by it, see
        :class:`TokenVerifier`)."""
        caller_id, token = metadata.get(CALLER_HEADER), metadata.get(TOKEN_HEADER)
        caller = self.fs.snapshot.callers.get(caller_id) if caller_id else None
        label = ANONYMOUS if not caller_id else caller.id if caller is not None else UNKNOWN
        if not self.auth:
            return label
        if not caller_id or not token:
            raise _DeniedError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata {CALLER_HEADER!r} and {TOKEN_HEADER!r} are required",
                label,
            )
        try:
            good = caller is not None and self.tokens.verify(caller.id, token, caller.token_hash, peer)
        except TokenCheckRefusedError as refused:
            code = grpc.StatusCode.UNAVAILABLE if refused.busy else grpc.StatusCode.RESOURCE_EXHAUSTED
            raise _DeniedError(code, str(refused), label) from None
        if caller is None or not good:
            raise _DeniedError(
                grpc.StatusCode.UNAUTHENTICATED, f"unknown caller or bad token for {caller_id!r}", label
            )
        if not role_allows(caller.role, role):
            raise _DeniedError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller_id!r} is a {caller.role}, not a {role}",
                label,
            )
        return label

    def run(
        self,
        method: Method,
        request: bytes,
        metadata: Mapping[str, str],
        *,
        deadline: float | None = None,
        peer: str = "",
    ) -> bytes:
        """The reply bytes of ``method`` for ``request``, or :class:`CallError`. ``deadline`` is a
        ``time.monotonic()`` value: the call is refused when it has passed on arrival, before the store
        calls and before the reply is handed back. ``peer`` is the client's address (no port)."""
        metrics = self.metrics
        started = time.perf_counter()
        if metrics is not None:
            metrics.begin()
        # Anything escaping the except clauses below (a BaseException) is counted as INTERNAL.
        caller, code, message = ANONYMOUS, grpc.StatusCode.INTERNAL, "internal error"
        try:
            with deadline_scope(deadline):
                check_deadline("starting the call")
                caller = self.authorize(metadata, method.role, peer)
                reply = method.run(self, request)
                check_deadline("sending the reply")
            code = grpc.StatusCode.OK
            return reply
        except _DeniedError as denied:
            caller, code, message = denied.caller, denied.code, denied.message
        except Exception as exc:
            code, message = _status_of(exc)
            if (
                code != grpc.StatusCode.DEADLINE_EXCEEDED
                and deadline is not None
                and time.monotonic() >= deadline
            ):
                # The caller has already seen its deadline pass; say so rather than what came after it.
                code, message = grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded ({message})"
        finally:
            if metrics is not None:
                metrics.finish(method.name, caller, code.name, time.perf_counter() - started)
        raise CallError(code, message)


class _DeniedError(CallError):
    """An auth failure, with the caller label to count it under."""

    def __init__(self, code: grpc.StatusCode, message: str, caller: str) -> None:
        super().__init__(code, message)
        self.caller = caller


_RUN: dict[str, Callable[[Calls, bytes], bytes]] = {
    contract.RETRIEVE.name: Calls.retrieve,
    contract.RETRIEVE_DECODED.name: Calls.retrieve_decoded,
    contract.PERSIST.name: Calls.persist,
}
METHODS = {name: Method(name, rpc.role, _RUN[name]) for name, rpc in contract.RPCS.items()}
"""The API's methods by gRPC method name."""


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    status = contract.status_of(exc)
    if status is not None:
        return grpc.StatusCode[status], str(exc)
    log.exception("unexpected error")
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
