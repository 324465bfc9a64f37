"""The interface every registry backend implements, the shared apply logic, and ``open_registry(url)``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from online_feature_store.errors import InvalidInputError, NotFoundError
from online_feature_store.registry.model import RegistryState
from online_feature_store.registry.serde import state_docs
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.validate import HasData, validate_change

__all__ = [
    "Change",
    "RegistryBackend",
    "data_dir",
    "default_registry_url",
    "open_registry",
    "plan_docs",
    "registry_url",
    "sqlite_url",
]

Change = Callable[[RegistryState], RegistryState] | RegistryState
"""What :meth:`RegistryBackend.apply` takes: the desired state, or a function of the current state.

A function is re-run on the latest state when a concurrent apply wins the race, so it should compute the
change from its argument (``lambda s: s.with_entity(...)``), never from a state read earlier.
"""


class RegistryBackend(Protocol):
    """A place the registry lives (SQLite file, etcd cluster). The rest of the code only sees this."""

    @property
    def url(self) -> str:
        """The URL that opens this backend again (``sqlite:///…``, ``etcd://…``)."""
        ...

    def load(self) -> Snapshot:
        """The current state and its revision, compiled."""
        ...

    def revision(self) -> int:
        """The current revision, cheaply (a change always increases it)."""
        ...

    def apply(self, change: Change, *, has_data: HasData | None = None) -> int:
        """Validate and apply ``change`` atomically (all of it or nothing); return the new revision.

        ``has_data(entity)`` tells whether an entity has stored rows, which forbids changing its keys.
        Nothing changes (and the revision stays) when the change is a no-op.
        """
        ...

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from a background thread) soon after the registry may have changed."""
        ...

    def close(self) -> None:
        """Stop watches and release connections. Idempotent."""
        ...


def plan_docs(
    current: RegistryState, change: Change, has_data: HasData | None
) -> tuple[RegistryState, dict[tuple[str, str], str], list[tuple[str, str]]]:
    """Run and validate ``change`` on ``current``: the new state, the documents to write and to delete."""
    new = change(current) if callable(change) else change
    if not isinstance(new, RegistryState):
        raise InvalidInputError(f"a registry change must produce a RegistryState, not {type(new).__name__}")
    validate_change(current, new, has_data or _no_data)
    Snapshot(new, 0)  # every version must compile to a BlockMeta before it is stored
    before, after = state_docs(current), state_docs(new)
    puts = {k: v for k, v in after.items() if before.get(k) != v}
    deletes = [k for k in before if k not in after]
    return new, puts, deletes


def _no_data(entity: str) -> bool:
    return False


def data_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The data directory, as an absolute path: ``directory``; else ``$OFS_DATA_DIR``; else
    ``~/.local/share/online-feature-store``. A relative one is taken from the working directory, so
    ``OFS_DATA_DIR=.`` and ``--data-dir data`` mean the same place in every command and in
    :class:`~online_feature_store.FeatureStore` (the one rule: every place that picks the data
    directory calls this)."""
    chosen = os.fspath(directory) if directory is not None else ""
    chosen = chosen or os.environ.get("OFS_DATA_DIR") or ""
    path = Path(chosen).expanduser() if chosen else Path.home() / ".local" / "share" / "online-feature-store"
    return Path(os.path.abspath(path))


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """``sqlite:///<absolute path>`` of the registry file ``path`` (a relative path is taken from the
    working directory)."""
    return f"sqlite://{os.path.abspath(os.fspath(path))}"


def registry_url(registry: str | None = None, data_directory: str | os.PathLike[str] | None = None) -> str:
    """The registry to open, as an absolute URL: ``registry``; else ``$OFS_REGISTRY``; else the SQLite
    file ``registry.db`` in :func:`data_dir` of ``data_directory``. A relative SQLite path
    (``sqlite:data/registry.db``) is taken from the working directory. Every command and
    :class:`~online_feature_store.FeatureStore` choose their registry through this."""
    url = registry or os.environ.get("OFS_REGISTRY")
    if not url:
        return sqlite_url(data_dir(data_directory) / "registry.db")
    path = _sqlite_path(url)
    return url if path is None else sqlite_url(path)


def default_registry_url() -> str:
    """``$OFS_REGISTRY``, else the SQLite file ``registry.db`` in :func:`data_dir`: :func:`registry_url`."""
    return registry_url()


def _sqlite_path(url: str) -> str | None:
    """The file of a SQLite registry URL, ``None`` for another scheme. ``sqlite:///abs/path`` and
    ``sqlite:////abs/path`` are absolute; ``sqlite:rel/path`` and ``sqlite://rel/path`` relative."""
    if not url.startswith("sqlite:"):
        return None
    rest = url[len("sqlite:") :]
    rest = rest[2:] if rest.startswith("//") else rest
    if not rest:
        raise InvalidInputError(
            f"registry URL {url!r} has no path "
            "(sqlite:///abs/path/registry.db or sqlite:rel/path/registry.db)"
        )
    return "/" + rest.lstrip("/") if rest.startswith("/") else rest


def open_registry(url: str | None = None, *, create: bool = True) -> RegistryBackend:
    """Open ``sqlite:///path/registry.db`` or ``etcd://host:port[,host:port…][/prefix/]`` (default:
    :func:`registry_url`). Without ``create``, a SQLite registry file that does not exist is a
    :class:`~online_feature_store.errors.NotFoundError` instead of a new, empty registry."""
    url = registry_url(url)
    path = _sqlite_path(url)
    if path is not None:
        from online_feature_store.registry.sqlite import SqliteRegistry

        if not create and not Path(path).is_file():
            raise NotFoundError(
                f"no registry at {path}: apply one first (ofs registry apply -f FILE), or choose another "
                "with --data-dir / $OFS_DATA_DIR or --registry / $OFS_REGISTRY"
            )
        return SqliteRegistry(path)
    if url.startswith("etcd://"):
        from online_feature_store.registry.etcd import DEFAULT_PREFIX, EtcdRegistry

        rest = url[len("etcd://") :]
        hosts, slash, prefix = rest.partition("/")
        if not hosts:
            raise InvalidInputError(f"registry URL {url!r} has no endpoints (etcd://host:port[,host:port])")
        prefix = "/" + prefix if slash and prefix else DEFAULT_PREFIX
        return EtcdRegistry(hosts.split(","), prefix=prefix)
    raise InvalidInputError(f"unsupported registry URL {url!r}: use sqlite:///path or etcd://host:port")
