"""Horizon: the control plane. A REST API (FastAPI) through which people register stores, entities, feature
groups, features and callers as change requests that admins approve into the registry, with users, roles,
an audit log, discovery and a try-it call to the serving API; it serves the TruffleBox web UI at ``/``.

Run it with ``ofs horizon`` (docs/horizon.md). Needs the ``[horizon]`` extra; nothing is imported from the
web stack until :func:`create_app` is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from online_feature_store.horizon.app import create_app
    from online_feature_store.horizon.config import HorizonConfig, load_config

__all__ = ["HorizonConfig", "create_app", "load_config"]


def __getattr__(name: str) -> Any:
    # lazy, so `import online_feature_store.horizon` works without the [horizon] extra installed
    if name == "create_app":
        from online_feature_store.horizon.app import create_app

        return create_app
    if name in ("HorizonConfig", "load_config"):
        from online_feature_store.horizon import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
