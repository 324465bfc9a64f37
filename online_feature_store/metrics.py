"""The hooks a :class:`~online_feature_store.FeatureStore` reports through (``FeatureStoreMetrics``): the
server plugs Prometheus in (``server/metrics.py``); every hook is a no-op here, so the library itself has
no metrics dependency."""

from __future__ import annotations

__all__ = ["FeatureStoreMetrics"]


class FeatureStoreMetrics:
    """What a :class:`~online_feature_store.FeatureStore` reports to whoever embeds it (the server exports
    it to Prometheus). Every hook is a no-op here, so the library itself has no metrics dependency."""

    def request(self, entity: str, rows: int) -> None:
        """A retrieve or persist of ``rows`` keys of ``entity`` passed planning."""

    def time_left(self) -> float | None:
        """Seconds the current call has left to start store I/O (None: no deadline). The native read path
        asks once per request, before the call, and fails with ``DeadlineExceededError`` rather than read
        past it; the Python path checks the deadline in :meth:`request` instead."""
        return None

    def store_call(self, store_id: str, op: str, seconds: float, failed: bool) -> None:
        """One ``read`` or ``write`` call to store ``store_id`` took ``seconds`` (``failed``: it raised)."""

    def feature_status(self, entity: str, feature_group: str, found: int, missing: int, expired: int) -> None:
        """Rows of a retrieve answered with stored data, with defaults (nothing stored) or expired data."""

    def cache_lookup(self, tier: str, entity: str, hits: int, misses: int) -> None:
        """Keys of one read of ``entity`` found (``hits``) or not in cache tier ``tier`` (``in_process``,
        ``distributed``)."""

    def cache_error(self, tier: str, op: str) -> None:
        """A call ``op`` (``read``, ``backfill``, ``invalidate``, …) to cache tier ``tier`` failed or was
        refused by its open circuit breaker; the request went on without the tier."""

    def cache_breaker(self, tier: str, state: str) -> None:
        """The circuit breaker of cache tier ``tier`` moved to ``state`` (``closed``, ``half-open``,
        ``open``)."""

    def cache_dropped(self, tier: str, op: str) -> None:
        """Background cache work ``op`` was dropped (its queue was full, or it was too old to be safe)."""
