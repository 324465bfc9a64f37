"""Keeps a current :class:`Snapshot` of a registry for readers that must never wait for it.

Readers read ``watcher.snapshot``: a plain attribute holding an immutable object, so a read is one reference
load with no lock. A background thread rebuilds a new snapshot when the backend signals a change (or every
``poll_interval`` as a safety net) and swaps the reference. When the backend fails, the last good snapshot
keeps being served, ``healthy`` turns false with ``last_error`` set, and refreshes retry with backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from online_feature_store.registry.backend import RegistryBackend
from online_feature_store.registry.snapshot import Snapshot

__all__ = ["RegistryWatcher"]


class RegistryWatcher:
    """Serve ``backend``'s latest snapshot; the first load happens in the constructor (and may raise)."""

    def __init__(
        self,
        backend: RegistryBackend,
        *,
        poll_interval: float = 2.0,
        max_backoff: float = 5.0,
        on_change: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.backend = backend
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.on_change = on_change
        self.snapshot: Snapshot = backend.load()
        """The current snapshot: read it once per request and use that object throughout."""
        self.healthy = True
        self.last_error: BaseException | None = None
        self.last_refresh = time.time()
        self.refreshes = 0
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ofs-registry-watcher", daemon=True)
        self._thread.start()
        backend.watch(self._changed.set)

    @property
    def revision(self) -> int:
        """The revision of the snapshot being served."""
        return self.snapshot.revision

    def __enter__(self) -> RegistryWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> bool:
        """Reload if the revision moved; True when a new snapshot was swapped in. Raises backend errors."""
        if self.backend.revision() == self.snapshot.revision:
            return False
        snapshot = self.backend.load()
        if snapshot.revision == self.snapshot.revision:
            return False
        self.snapshot = snapshot  # the swap: one reference store
        self.refreshes += 1
        if self.on_change is not None:
            self.on_change(snapshot)
        return True

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._changed.wait(backoff or self.poll_interval)
            if self._stop.is_set():
                return
            self._changed.clear()
            try:
                self.refresh()
            except Exception as exc:  # keep serving the last good snapshot
                self.healthy = False
                self.last_error = exc
                backoff = min(max(backoff * 2, 0.1), self.max_backoff)
                continue
            self.healthy = True
            self.last_refresh = time.time()
            backoff = 0.0

    def close(self) -> None:
        """Stop refreshing (the backend stays open: its owner closes it)."""
        self._stop.set()
        self._changed.set()
        self._thread.join()
