"""Sign-in throttling: what a flood of password guesses may cost Horizon.

Three limits, all in this process (several Horizon replicas each keep their own, so the limits a client
meets are per replica):

- **per client address**: a token bucket of ``login_attempts_per_ip`` attempts a minute (sign-in,
  registration, password change); a successful sign-in gives its token back;
- **per account**: ``login_failures_per_user`` wrong passwords within ``login_failure_window_seconds``
  (a sliding window), after which that account's sign-ins answer 429 until the oldest failure leaves the
  window; a successful sign-in clears them. Only accounts that exist are counted, so the table is bounded
  by the number of users;
- **hashing**: at most ``max_concurrent_hashes`` password hashes run at once, on threads of their own
  (so a flood never takes the threads that serve other requests) at the lowest CPU priority (nice
  :data:`HASH_NICE` on Linux, inherited by argon2's lane threads: a flood cannot slow the rest of
  Horizon, while hashing still gets every idle cycle); past :data:`WAITING_PER_SLOT` waiting attempts per
  slot a new one answers 429 at once.

Every refusal is :class:`TooManyRequestsError` (HTTP 429 with ``Retry-After``), decided before any hash.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from online_feature_store.errors import OfsError
from online_feature_store.horizon.config import HorizonConfig

__all__ = [
    "HASH_NICE",
    "MAX_ADDRESSES",
    "WAITING_PER_SLOT",
    "BadCredentialsError",
    "LoginGuard",
    "TooManyRequestsError",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ADDRESSES = 65536
"""Client addresses whose buckets are kept (least recently seen dropped first: a full bucket again)."""
WAITING_PER_SLOT = 16
"""Attempts that may wait for a hashing slot, per slot, before new ones are refused."""
HASH_NICE = 19
"""The nice value of the hashing threads (Linux): they run when nothing else wants the CPU."""


def _lower_priority() -> None:
    # Linux keeps a nice value per thread (setpriority on a thread id); elsewhere it would renice the
    # whole process, so there the hashing threads keep the normal priority
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)
    except OSError:
        _log.warning("could not lower the priority of a password hashing thread", exc_info=True)


class TooManyRequestsError(OfsError):
    """Too many attempts: HTTP 429, to be retried after :attr:`retry_after` seconds (at least 1)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class BadCredentialsError(Exception):
    """Mixed into the service's wrong-password errors: ``account`` is the (lower-case) name of the
    existing account whose password was wrong, ``None`` when there is no such account."""

    account: str | None = None


class _Buckets:
    """A token bucket per key: ``per_minute`` tokens, refilled continuously."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def take(self, key: str) -> float:
        """Takes a token; returns 0, or the seconds until one is there (nothing taken)."""
        now = self.clock()
        tokens = self._level(key, now)
        if tokens < 1:
            return (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > MAX_ADDRESSES:
            self._buckets.popitem(last=False)
        return 0.0

    def give_back(self, key: str) -> None:
        now = self.clock()
        if key in self._buckets:
            self._buckets[key] = (min(self.capacity, self._level(key, now) + 1), now)


class _Failures:
    """The times of each account's recent wrong passwords (a sliding window)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._times: dict[str, deque[float]] = {}

    def wait(self, key: str) -> float:
        """0, or the seconds until ``key`` may try again."""
        times = self._times.get(key)
        if not times:
            return 0.0
        now = self.clock()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._times[key]
            return 0.0
        return times[0] + self.window - now if len(times) >= self.limit else 0.0

    def fail(self, key: str) -> None:
        times = self._times.setdefault(key, deque())
        times.append(self.clock())
        while len(times) > self.limit:
            times.popleft()

    def clear(self, key: str) -> None:
        self._times.pop(key, None)


class LoginGuard:
    """The three limits of one Horizon process (see the module docstring)."""

    def __init__(self, config: HorizonConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()  # the buckets are touched from the event loop and from threads
        self._addresses = _Buckets(config.login_attempts_per_ip, clock)
        self._failures = _Failures(config.login_failures_per_user, config.login_failure_window_seconds, clock)
        self._slots = config.max_concurrent_hashes
        self._pool = ThreadPoolExecutor(
            config.max_concurrent_hashes, thread_name_prefix="horizon-hash", initializer=_lower_priority
        )
        self._pending = 0  # submitted to the pool and not finished: running, then waiting

    @property
    def pending(self) -> int:
        """Password checks running or waiting for a slot."""
        return self._pending

    def close(self) -> None:
        """Stop the hashing threads (waiting checks are cancelled)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def admit(self, address: str, account: str | None = None) -> None:
        """Counts an attempt from ``address`` (for ``account``, a user name as typed); raises
        :class:`TooManyRequestsError` when the address or the account is over its limit."""
        with self._lock:
            if account is not None:
                wait = self._failures.wait(account.lower())
                if wait > 0:
                    raise TooManyRequestsError(
                        f"too many wrong passwords for {account!r}; try again in {math.ceil(wait)} s", wait
                    )
            wait = self._addresses.take(address)
        if wait > 0:
            raise TooManyRequestsError(
                f"too many sign-in attempts from {address}; try again in {math.ceil(wait)} s", wait
            )

    async def hashing(self, call: Callable[[], T]) -> T:
        """``call()`` (which hashes or verifies a password) on a hashing thread once one is free;
        :class:`TooManyRequestsError` at once when too many checks are waiting already."""
        with self._lock:
            if self._pending >= self._slots * (1 + WAITING_PER_SLOT):
                raise TooManyRequestsError("too many password checks are waiting; try again in a second", 1)
            self._pending += 1
        try:
            future: Future[T] = self._pool.submit(call)
        except BaseException:
            self._done()
            raise
        # counted until it finishes, even when the client gave up waiting (a started hash runs on)
        future.add_done_callback(lambda _: self._done())
        return await asyncio.wrap_future(future)

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1

    async def attempt(self, address: str, account: str, call: Callable[[], T]) -> T:
        """A sign-in (or any check of ``account``'s password): admitted, hashed, its outcome counted. A
        :class:`BadCredentialsError` error counts as a failure of its account; a success gives the address
        its token back and clears the account's failures."""
        self.admit(address, account)
        try:
            result = await self.hashing(call)
        except BadCredentialsError as exc:
            if exc.account is not None:
                with self._lock:
                    self._failures.fail(exc.account)
            raise
        with self._lock:
            self._addresses.give_back(address)
            self._failures.clear(account.lower())
        return result
