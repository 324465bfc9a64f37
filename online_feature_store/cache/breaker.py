"""A circuit breaker for the distributed cache: closed → open → half-open → closed.

Why not a library: pybreaker (the best kept one) holds one lock for the whole guarded call, so every
request thread would queue behind a single slow Redis call, the very failure a breaker is there to
contain; ``circuitbreaker`` lets every concurrent call through in half-open and has no state-change hook
for the metric. This one holds its lock only for state changes, never during I/O, and admits exactly one
trial call in half-open.

- **closed**: calls go through; ``failure_threshold`` consecutive failures open the breaker.
- **open**: calls are refused (the caller skips the cache tier) until ``reset_seconds`` have passed.
- **half-open**: one trial call is admitted, the others are still refused; its success closes the
  breaker, its failure opens it for another ``reset_seconds``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED, HALF_OPEN, OPEN = "closed", "half-open", "open"


class CircuitBreaker:
    """Thread-safe breaker; ``on_change(state)`` is called (outside the lock) on every transition.
    ``clock`` is a monotonic clock in seconds (injectable for tests)."""

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        reset_seconds: float = 2.0,
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_seconds <= 0:
            raise ValueError(f"reset_seconds must be > 0, got {reset_seconds}")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (an open breaker whose reset time has passed reports
        ``open`` until a call is admitted as the trial)."""
        return self._state

    def allow(self) -> bool:
        """May a call go ahead? A ``True`` must be followed by :meth:`success` or :meth:`failure`."""
        if self._state == CLOSED:  # the common case, read without the lock
            return True
        changed = False
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._trial_running or self._clock() - self._opened_at < self.reset_seconds:
                return False
            self._trial_running = True
            changed = self._state != HALF_OPEN
            self._state = HALF_OPEN
        if changed:
            self._notify(HALF_OPEN)
        return True

    def success(self) -> None:
        """The admitted call worked."""
        if self._state == CLOSED and self._failures == 0:
            return
        with self._lock:
            changed = self._state != CLOSED
            self._state, self._failures, self._trial_running = CLOSED, 0, False
        if changed:
            self._notify(CLOSED)

    def failure(self) -> None:
        """The admitted call failed (error or timeout)."""
        with self._lock:
            self._failures += 1
            self._trial_running = False
            if self._state == OPEN or (self._state == CLOSED and self._failures < self.failure_threshold):
                if self._state == OPEN:
                    self._opened_at = self._clock()
                return
            self._state, self._opened_at = OPEN, self._clock()
        self._notify(OPEN)

    def _notify(self, state: str) -> None:
        if self._on_change is not None:
            self._on_change(state)
