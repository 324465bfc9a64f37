"""The exception tree of online-feature-store.

Every error raised by the library, the native core and the services derives from :class:`OfsError`.
Classes also subclass the builtin whose meaning they share, so ``except ValueError`` catches bad input.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConflictError",
    "CorruptBlockError",
    "DeadlineExceededError",
    "InvalidInputError",
    "NotFoundError",
    "OfsError",
    "PortInUseError",
    "ResourceExhaustedError",
    "UnavailableError",
]


class OfsError(Exception):
    """Base class of every online-feature-store error."""

    status: str | None = None
    """The gRPC status name a remote call ended with, when the error comes from one (set by
    :class:`~online_feature_store.client.Client`, see :mod:`online_feature_store.contract`); None for
    an error of this process's own work."""


class InvalidInputError(OfsError, ValueError):
    """The caller sent something that cannot be accepted; the message names what is wrong."""


class CorruptBlockError(InvalidInputError):
    """Stored or received bytes do not form a valid block or cache value."""


class NotFoundError(OfsError, LookupError):
    """A named entity, feature group or feature does not exist."""


class UnavailableError(OfsError, ConnectionError):
    """A backing service (registry, store, cache) cannot be reached, after its client's retries."""


class PortInUseError(UnavailableError):
    """A port a command is to listen on is taken; the message names it and the setting that moves it."""


class ConflictError(OfsError):
    """A concurrent change won the race; nothing of this change was applied."""


class DeadlineExceededError(OfsError, TimeoutError):
    """A call's deadline passed before it could finish (the server starts no store call after that; a
    client gives up retrying)."""


class AuthError(OfsError, PermissionError):
    """The server refused the caller: unknown caller or bad token (``UNAUTHENTICATED``), or a token of
    the wrong role, e.g. a reader token persisting (``PERMISSION_DENIED``)."""


class ResourceExhaustedError(OfsError):
    """A request over a size limit (keys per retrieve, rows per persist, the bytes of a response or of
    the blocks a persist builds), refused before the work, or memory for it the allocator would not
    give. The message names the size and the limit (``RESOURCE_EXHAUSTED``)."""
