"""Block stores: the embedded SQLite store, Redis and ScyllaDB/Cassandra, behind one interface.

:func:`open_store` turns a registry :class:`~online_feature_store.registry.model.Store` into a
:class:`BlockStore`. Backends are imported on demand, so ``redis`` and ``cassandra-driver`` are needed
only by those who use them (extras ``[redis]`` and ``[scylla]``). See ``docs/stores.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from online_feature_store.errors import InvalidInputError
from online_feature_store.registry.model import Store
from online_feature_store.store.base import BlockStore, BlockWrite, KeyValues
from online_feature_store.store.secrets import credential_errors, resolve_env

__all__ = [
    "NUMERIC_SETTINGS",
    "SETTINGS",
    "BlockStore",
    "BlockWrite",
    "KeyValues",
    "open_store",
    "settings_errors",
]

SETTINGS: dict[str, tuple[str, ...]] = {
    "sqlite": ("path", "busy_timeout", "purge_interval"),
    "redis": (
        "url",
        "cluster_nodes",
        "pool_size",
        "connect_timeout",
        "socket_timeout",
        "retries",
        "username",
        "password_env",
        "wait_replicas",
        "wait_timeout",
    ),
    "scylla": (
        "hosts",
        "port",
        "keyspace",
        "replication_factor",
        "consistency",
        "read_consistency",
        "write_consistency",
        "local_dc",
        "concurrency",
        "connect_timeout",
        "request_timeout",
        "retries",
        "speculative_delay",
        "speculative_max",
    ),
}
"""The settings each store kind accepts (all strings in the registry)."""

NUMERIC_SETTINGS: dict[str, dict[str, type[float] | type[int]]] = {
    "sqlite": {"busy_timeout": float, "purge_interval": float},
    "redis": {
        "pool_size": int,
        "connect_timeout": float,
        "socket_timeout": float,
        "retries": int,
        "wait_replicas": int,
        "wait_timeout": float,
    },
    "scylla": {
        "port": int,
        "replication_factor": int,
        "concurrency": int,
        "connect_timeout": float,
        "request_timeout": float,
        "retries": int,
        "speculative_delay": float,
        "speculative_max": int,
    },
}
"""The settings of each kind that must parse as a number (``int`` or ``float``); the rest are text."""


def settings_errors(kind: str, settings: Mapping[str, str], *, credentials: bool = True) -> dict[str, str]:
    """What :func:`open_store` would refuse in a store's ``settings``, by setting name (``""`` for the
    settings as a whole, e.g. a redis store without ``url``); empty when they are fine. ``kind`` must be
    one of :data:`SETTINGS` (Horizon checks a request before the store exists, so this takes no Store).

    With ``credentials`` (the rule for a store being created or changed) a literal credential is refused
    too (``store.secrets.credential_errors``: a password goes in an environment variable named by
    ``password_env``); :func:`open_store` still opens a store a registry already holds with one."""
    known = SETTINGS[kind]
    errors: dict[str, str] = {}
    for name in sorted(set(settings) - set(known)):
        errors[name] = f"unknown {kind} setting {name!r} (known: {', '.join(known)})"
    if credentials:
        errors.update(credential_errors(settings))
    for name, number in NUMERIC_SETTINGS[kind].items():
        raw = settings.get(name)
        if raw:
            try:
                value = number(raw)
            except ValueError:
                whole = " (a whole number)" if number is int else ""
                errors[name] = f"setting {name}={raw!r} is not a number{whole}"
                continue
            if value < 0:
                errors[name] = f"setting {name}={raw!r} is negative"
    if kind == "redis" and bool(settings.get("url")) == bool(_list(settings.get("cluster_nodes", ""))):
        errors[""] = "a redis store needs exactly one of url, cluster_nodes"
    return errors


def _number(store: Store, name: str, default: float, kind: type[float] | type[int] = float) -> float:
    raw = store.settings.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise InvalidInputError(f"store {store.id!r}: setting {name}={raw!r} is not a number") from None


def _list(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _check_settings(store: Store) -> Mapping[str, str]:
    known = SETTINGS.get(store.kind)
    if known is None:
        raise InvalidInputError(
            f"store {store.id!r}: unknown kind {store.kind!r} (one of {', '.join(SETTINGS)})"
        )
    errors = settings_errors(store.kind, store.settings, credentials=False)
    if errors:
        raise InvalidInputError(f"store {store.id!r}: " + "; ".join(errors.values()))
    return store.settings


def open_store(store: Store, *, data_directory: str | os.PathLike[str] | None = None) -> BlockStore:
    """The backend described by ``store`` (``kind`` ``sqlite``, ``redis`` or ``scylla``), not yet connected
    for Redis and Cassandra (they connect on first use, so a server can start while they are down).

    A SQLite ``path`` that is relative (or missing: ``store-<id>.db``) is taken inside ``data_directory``
    (default: ``$OFS_DATA_DIR``, else ``~/.local/share/online-feature-store``). A redis ``password_env``
    is read from this process's environment now (``UnavailableError`` when it is not set)."""
    s = _check_settings(store)
    if store.kind == "sqlite":
        from online_feature_store.settings import data_dir
        from online_feature_store.store.sqlite import SqliteStore

        base = data_dir(data_directory)
        return SqliteStore(
            base / (s.get("path") or f"store-{store.id}.db"),
            busy_timeout=_number(store, "busy_timeout", 10.0),
            purge_interval=_number(store, "purge_interval", 60.0),
        )
    if store.kind == "redis":
        from online_feature_store.store.redis_store import RedisStore

        url, nodes = s.get("url"), _list(s.get("cluster_nodes", ""))
        if bool(url) == bool(nodes):
            raise InvalidInputError(
                f"store {store.id!r}: a redis store needs exactly one of url, cluster_nodes"
            )
        return RedisStore(
            url or None,
            cluster_nodes=nodes or None,
            username=s.get("username") or None,
            password=resolve_env(store.id, "password_env", s.get("password_env")),
            pool_size=int(_number(store, "pool_size", 32, int)),
            connect_timeout=_number(store, "connect_timeout", 2.0),
            socket_timeout=_number(store, "socket_timeout", 2.0),
            retries=int(_number(store, "retries", 2, int)),
            wait_replicas=int(_number(store, "wait_replicas", 0, int)),
            wait_timeout=_number(store, "wait_timeout", 1.0),
        )
    from online_feature_store.store.cassandra_store import CassandraStore

    consistency = s.get("consistency") or "LOCAL_QUORUM"
    return CassandraStore(
        _list(s.get("hosts", "")) or ["127.0.0.1"],
        int(_number(store, "port", 9042, int)),
        s.get("keyspace") or "ofs",
        replication_factor=int(_number(store, "replication_factor", 1, int)),
        read_consistency=s.get("read_consistency") or consistency,
        write_consistency=s.get("write_consistency") or consistency,
        local_dc=s.get("local_dc") or None,
        concurrency=int(_number(store, "concurrency", 64, int)),
        connect_timeout=_number(store, "connect_timeout", 5.0),
        request_timeout=_number(store, "request_timeout", 10.0),
        retries=int(_number(store, "retries", 2, int)),
        speculative_delay=_number(store, "speculative_delay", 0.0),
        speculative_max=int(_number(store, "speculative_max", 2, int)),
    )
