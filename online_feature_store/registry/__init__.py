"""The feature registry: entities, keys, feature groups and their versions, stores and callers.

Backends (``SqliteRegistry``, ``EtcdRegistry``) store it behind one interface (:class:`RegistryBackend`);
readers use an immutable compiled :class:`Snapshot`, kept current by a :class:`RegistryWatcher`. The YAML
file format and ``ofs registry`` are described in docs/registry.md. Only stdlib and the native core are
imported here: PyYAML and etcd-sdk-python load when the YAML or etcd parts are used.
"""

from __future__ import annotations

from online_feature_store.errors import ConflictError, UnavailableError
from online_feature_store.registry.backend import Change, RegistryBackend
from online_feature_store.registry.connect import open_registry
from online_feature_store.registry.etcd import EtcdRegistry
from online_feature_store.registry.model import (
    CachePolicy,
    Caller,
    Entity,
    Feature,
    FeatureGroup,
    Key,
    RegistryState,
    Store,
)
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.spec import (
    CallerSpec,
    EntitySpec,
    FeatureGroupSpec,
    FeatureSpec,
    RegistrySpec,
    diff_states,
    reconcile,
)
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.tokens import hash_token, new_token, verify_token
from online_feature_store.registry.validate import validate_change, validate_state
from online_feature_store.registry.watcher import RegistryWatcher
from online_feature_store.settings import default_registry_url

__all__ = [
    "CachePolicy",
    "Caller",
    "CallerSpec",
    "Change",
    "ConflictError",
    "Entity",
    "EntitySpec",
    "EtcdRegistry",
    "Feature",
    "FeatureGroup",
    "FeatureGroupSpec",
    "FeatureSpec",
    "Key",
    "RegistryBackend",
    "RegistrySpec",
    "RegistryState",
    "RegistryWatcher",
    "Snapshot",
    "SqliteRegistry",
    "Store",
    "UnavailableError",
    "default_registry_url",
    "diff_states",
    "hash_token",
    "new_token",
    "open_registry",
    "reconcile",
    "validate_change",
    "validate_state",
    "verify_token",
]
