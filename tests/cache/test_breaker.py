"""The circuit breaker's state machine (pure logic, with a fake clock)."""

from __future__ import annotations

import threading

import pytest

from online_feature_store.cache.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 3, reset: float = 2.0) -> tuple[CircuitBreaker, Clock, list[str]]:
    clock, changes = Clock(), []
    return (
        CircuitBreaker(
            failure_threshold=threshold, reset_seconds=reset, on_change=changes.append, clock=clock
        ),
        clock,
        changes,
    )


def test_opens_after_consecutive_failures_only() -> None:
    b, _, changes = make()
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.allow()
    b.success()  # a success resets the count
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == CLOSED
    assert b.allow()
    b.failure()
    assert b.state == OPEN
    assert changes == [OPEN]
    assert not b.allow()


def test_half_open_admits_one_trial_then_closes() -> None:
    b, clock, changes = make(threshold=1)
    b.allow()
    b.failure()
    clock.now += 1.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow()  # the trial
    assert b.state == HALF_OPEN
    assert not b.allow()  # only one trial at a time
    b.success()
    assert b.state == CLOSED
    assert b.allow()
    assert changes == [OPEN, HALF_OPEN, CLOSED]


def test_failed_trial_reopens_for_a_full_period() -> None:
    b, clock, changes = make(threshold=1)
    b.allow()
    b.failure()
    clock.now += 2.5
    assert b.allow()
    b.failure()
    assert b.state == OPEN
    clock.now += 1.0
    assert not b.allow()
    clock.now += 1.5
    assert b.allow()
    assert changes == [OPEN, HALF_OPEN, OPEN, HALF_OPEN]


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="reset_seconds"):
        CircuitBreaker(reset_seconds=0)


def test_concurrent_callers_get_one_trial() -> None:
    b, clock, _ = make(threshold=1)
    b.allow()
    b.failure()
    clock.now += 3
    admitted = []
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait()
        admitted.append(b.allow())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 1
