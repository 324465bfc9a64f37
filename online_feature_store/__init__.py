"""online-feature-store: an online feature store for real-time ML.

What a user calls: :class:`FeatureStore` (in process), :class:`Client` (over gRPC), what a retrieve returns
(:class:`RetrieveResult`, :class:`Status`, :class:`Q8Values`), :class:`DataType` and the exceptions. The
storage formats and conversions of the Rust core are :mod:`online_feature_store.formats`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from online_feature_store._native import __version__
from online_feature_store.embeddings import Q8Values
from online_feature_store.errors import (
    AuthError,
    ConflictError,
    CorruptBlockError,
    DeadlineExceededError,
    InvalidInputError,
    NotFoundError,
    OfsError,
    ResourceExhaustedError,
    UnavailableError,
)
from online_feature_store.results import RetrieveResult, Status
from online_feature_store.types import DataType

if TYPE_CHECKING:
    from online_feature_store.client import Client
    from online_feature_store.feature_store import FeatureStore

__all__ = [
    "AuthError",
    "Client",
    "ConflictError",
    "CorruptBlockError",
    "DataType",
    "DeadlineExceededError",
    "FeatureStore",
    "InvalidInputError",
    "NotFoundError",
    "OfsError",
    "Q8Values",
    "ResourceExhaustedError",
    "RetrieveResult",
    "Status",
    "UnavailableError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: Client needs grpc (the [client] extra), so the library works without it, and
    # FeatureStore brings the registry, the stores and the caches, which a client process never loads.
    if name == "Client":
        from online_feature_store.client import Client

        return Client
    if name == "FeatureStore":
        from online_feature_store.feature_store import FeatureStore

        return FeatureStore
    raise AttributeError(f"module 'online_feature_store' has no attribute {name!r}")
