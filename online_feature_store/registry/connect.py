"""``open_registry(url)``: the registry backend a URL names (``sqlite:…``, ``etcd://…``).

Kept apart from :mod:`.backend`, which the backends import, so that the modules form no circle: this
module imports the backends, the backends import the interface.
"""

from __future__ import annotations

from pathlib import Path

from online_feature_store.errors import InvalidInputError, NotFoundError
from online_feature_store.registry.backend import RegistryBackend
from online_feature_store.registry.etcd import DEFAULT_PREFIX, EtcdRegistry
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.settings import registry_url, sqlite_path

__all__ = ["open_registry"]


def open_registry(url: str | None = None, *, create: bool = True) -> RegistryBackend:
    """Open ``sqlite:///path/registry.db`` or ``etcd://host:port[,host:port…][/prefix/]`` (default:
    :func:`registry_url`). Without ``create``, a SQLite registry file that does not exist is a
    :class:`~online_feature_store.errors.NotFoundError` instead of a new, empty registry."""
    url = registry_url(url)
    path = sqlite_path(url)
    if path is not None:
        if not create and not Path(path).is_file():
            raise NotFoundError(
                f"no registry at {path}: apply one first (ofs registry apply -f FILE), or choose another "
                "with --data-dir / $OFS_DATA_DIR or --registry / $OFS_REGISTRY"
            )
        return SqliteRegistry(path)
    if url.startswith("etcd://"):
        rest = url[len("etcd://") :]
        hosts, slash, prefix = rest.partition("/")
        if not hosts:
            raise InvalidInputError(f"registry URL {url!r} has no endpoints (etcd://host:port[,host:port])")
        prefix = "/" + prefix if slash and prefix else DEFAULT_PREFIX
        return EtcdRegistry(hosts.split(","), prefix=prefix)
    raise InvalidInputError(f"unsupported registry URL {url!r}: use sqlite:///path or etcd://host:port")
