"""Exact registry backups: every entity with every schema version, stores and callers (token hashes).

``ofs registry export`` writes the declarative YAML (current features only), which re-applies as a no-op on
the same registry but cannot recreate old schema versions: blocks written under them would no longer decode.
A backup holds the registry's own documents, so restoring it brings back every version as it was.
"""

from __future__ import annotations

import json
from typing import Any

from online_feature_store.errors import InvalidInputError
from online_feature_store.registry.model import RegistryState
from online_feature_store.registry.serde import state_docs, state_from_docs

__all__ = ["FORMAT", "dump_backup", "load_backup"]

FORMAT = "online-feature-store/registry-backup"
VERSION = 1


def dump_backup(state: RegistryState, revision: int) -> str:
    """The JSON text of a backup of ``state`` (taken at ``revision``)."""
    documents = [[kind, name, json.loads(text)] for (kind, name), text in sorted(state_docs(state).items())]
    body = {"format": FORMAT, "version": VERSION, "revision": revision, "documents": documents}
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


def load_backup(text: str, *, source: str = "backup") -> RegistryState:
    """The registry state a backup holds; :class:`InvalidInputError` naming what is wrong otherwise."""
    try:
        body: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{source}: not a registry backup (invalid JSON: {exc})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise InvalidInputError(f"{source}: not a registry backup (format is not {FORMAT!r})")
    if body.get("version") != VERSION:
        raise InvalidInputError(f"{source}: backup version {body.get('version')!r} is not supported")
    docs: dict[tuple[str, str], str] = {}
    for i, item in enumerate(body.get("documents") or []):
        if not (isinstance(item, list) and len(item) == 3 and item[0] in ("entity", "store", "caller")):
            raise InvalidInputError(f"{source}: document {i} is not [kind, name, object]")
        docs[(str(item[0]), str(item[1]))] = json.dumps(item[2])
    try:
        return state_from_docs(docs)
    except (KeyError, TypeError, ValueError) as exc:
        message = f"{source}: a document does not describe a registry object ({exc!r})"
        raise InvalidInputError(message) from None
