"""The RPC contract of ``ofs serve``, in one place for the server and every client of it.

What a caller and the server must agree on, beyond the ``.proto`` messages: the metadata that carries a
caller's credentials, the methods (path and the caller role each needs) and how a library error travels as
a gRPC status and comes back as the same class. Plain data and two small functions, no ``grpc`` import:
the server converts a status name with ``grpc.StatusCode[name]``, :class:`~online_feature_store.client.Client`
(the one gRPC client of the package: ``ingest.GrpcSink`` and Horizon's try-it call through it) reads
``code().name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from online_feature_store.errors import (
    AuthError,
    CorruptBlockError,
    DeadlineExceededError,
    InvalidInputError,
    NotFoundError,
    OfsError,
    ResourceExhaustedError,
    UnavailableError,
)

__all__ = [
    "CALLER_HEADER",
    "ERROR_OF",
    "PERSIST",
    "PERSIST_SERVICE",
    "RETRIEVE",
    "RETRIEVE_DECODED",
    "RETRIEVE_SERVICE",
    "RPCS",
    "STATUS_OF",
    "TOKEN_HEADER",
    "Rpc",
    "call_message",
    "credentials",
    "error_of",
    "status_of",
]

CALLER_HEADER = "online-feature-store-caller-id"
"""Metadata (gRPC) / header (HTTP) naming the caller: a caller id of the registry."""
TOKEN_HEADER = "online-feature-store-auth-token"
"""Metadata / header carrying that caller's token."""

RETRIEVE_SERVICE = "retrieve.FeatureService"
PERSIST_SERVICE = "persist.FeatureService"


@dataclass(frozen=True)
class Rpc:
    """One method of the API: its service, its name, the least caller role it needs (with auth on) and
    whether it is ``idempotent``: a call that may have reached a server can be sent again, to the same
    replica or another, without changing what it does (a retrieve; a persist is not: sent again after a
    later write of the same keys, it would put the older values back)."""

    service: str
    name: str
    role: str
    idempotent: bool

    @property
    def path(self) -> str:
        """The gRPC path, ``/package.Service/Method``."""
        return f"/{self.service}/{self.name}"


RETRIEVE = Rpc(RETRIEVE_SERVICE, "RetrieveFeatures", "reader", idempotent=True)
RETRIEVE_DECODED = Rpc(RETRIEVE_SERVICE, "RetrieveDecodedResult", "reader", idempotent=True)
PERSIST = Rpc(PERSIST_SERVICE, "PersistFeatures", "writer", idempotent=False)
RPCS: Mapping[str, Rpc] = {r.name: r for r in (RETRIEVE, RETRIEVE_DECODED, PERSIST)}
"""The API's methods by name."""

STATUS_OF: tuple[tuple[type[OfsError], str], ...] = (
    (DeadlineExceededError, "DEADLINE_EXCEEDED"),
    (NotFoundError, "NOT_FOUND"),
    # A stored block that does not decode is the server's data problem, not the caller's input.
    (CorruptBlockError, "DATA_LOSS"),
    (InvalidInputError, "INVALID_ARGUMENT"),
    (UnavailableError, "UNAVAILABLE"),
    # Over a request limit (keys, rows, response bytes), refused before the work; or out of memory.
    (ResourceExhaustedError, "RESOURCE_EXHAUSTED"),
    (OfsError, "INTERNAL"),
)
"""Library error → gRPC status name, the server's one table (first match wins). A refused caller is
answered by the server's auth check itself (``UNAUTHENTICATED``, ``PERMISSION_DENIED``)."""

ERROR_OF: Mapping[str, type[OfsError]] = {
    "INVALID_ARGUMENT": InvalidInputError,
    "NOT_FOUND": NotFoundError,
    "UNAVAILABLE": UnavailableError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "UNAUTHENTICATED": AuthError,
    "PERMISSION_DENIED": AuthError,
    "RESOURCE_EXHAUSTED": ResourceExhaustedError,
}
"""gRPC status name → the library error a client raises (the inverse of :data:`STATUS_OF`, plus the auth
statuses); any other status is an :class:`OfsError` naming it."""


def status_of(exc: BaseException) -> str | None:
    """The status name :data:`STATUS_OF` gives ``exc`` (None: not a library error)."""
    for cls, status in STATUS_OF:
        if isinstance(exc, cls):
            return status
    return None


def error_of(status: str, details: str, method: str) -> OfsError:
    """The library error for a call of ``method`` that ended with gRPC status ``status`` (a name) and
    ``details``: the server's message as it is, or for a status without a class ``METHOD: STATUS: details``.
    The error's ``status`` is set to ``status``."""
    cls = ERROR_OF.get(status, OfsError)
    message = details or status
    err = cls(message) if cls is not OfsError else OfsError(f"{method}: {status}: {message}")
    err.status = status
    return err


def call_message(err: OfsError, method: str) -> str:
    """``METHOD: STATUS: details``, the message of an error a call of ``method`` ended with as a sink or
    a proxy reports it. An error the server did not send (no ``status``: the client's own, which names
    the method already), or one of a status without a class (already in this form), reads as it is."""
    if err.status is None or err.status not in ERROR_OF:
        return str(err)
    return f"{method}: {err.status}: {err}"


def credentials(caller_id: str | None, token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying ``caller_id`` and ``token`` (each left out when None)."""
    pairs = ((CALLER_HEADER, caller_id), (TOKEN_HEADER, token))
    return tuple((name, value) for name, value in pairs if value is not None)
