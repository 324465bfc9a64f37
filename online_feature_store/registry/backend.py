"""The interface every registry backend implements and the shared apply logic (``plan_docs``).

The backends (:mod:`.sqlite`, :mod:`.etcd`) import this module; opening one by URL is :mod:`.connect`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from online_feature_store.errors import InvalidInputError
from online_feature_store.registry.model import RegistryState
from online_feature_store.registry.serde import state_docs
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.validate import HasData, validate_change

__all__ = ["Change", "RegistryBackend", "plan_docs"]

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
