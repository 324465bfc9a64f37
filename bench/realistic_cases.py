"""The cases of the realistic benchmark (bench/realistic_bench.py) and what each measured."""

from __future__ import annotations

import hashlib
import itertools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import realistic_data as rd  # noqa: E402
import realistic_keys as rk  # noqa: E402

BLOCK_BYTES = 265
"""A 64-fp32 block uncompressed (9-byte header + 256), as the in-process cache holds it."""

# -- cases -----------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Case:
    store: str
    cache: int
    """Percent of the working set the in-process cache is sized for (0: no in-process cache)."""
    mode: str
    """``embedded`` or ``grpc``."""
    fgs: int
    dist: str
    keys: int

    @property
    def group(self) -> tuple[str, int, str, int]:
        """Cases sharing one process (and its warm cache)."""
        return (self.store, self.cache, self.mode, self.fgs)

    def name(self) -> str:
        return f"{self.store}/cache {self.cache}%/{self.mode}/{self.fgs} FG/{self.dist}/{self.keys} keys"


ALL = {
    "stores": rd.STORE_KINDS,
    "caches": (0, 10, 50, 100),
    "modes": ("embedded", "grpc"),
    "fgs": (1, 3, 10),
    "dists": rk.DISTRIBUTIONS,
    "keys": (1, 10, 100, 500),
}


def product(
    stores: Sequence[str],
    caches: Sequence[int],
    modes: Sequence[str],
    fgs: Sequence[int],
    dists: Sequence[str],
    keys: Sequence[int],
) -> list[Case]:
    return [Case(*c) for c in itertools.product(stores, caches, modes, fgs, dists, keys)]


GOALS: dict[str, Case] = {
    "1 gRPC": Case("redis", 0, "grpc", 1, "uniform", 100),
    "1 embedded": Case("redis", 0, "embedded", 1, "uniform", 100),
    "2": Case("sqlite", 100, "embedded", 1, "uniform", 100),
    "3 gRPC 10 FGs": Case("redis", 0, "grpc", 10, "uniform", 100),
    "3 embedded 10 FGs": Case("redis", 0, "embedded", 10, "uniform", 100),
    "4": Case("redis", 10, "grpc", 1, "zipf", 100),
    "5": Case("cassandra", 0, "grpc", 1, "uniform", 100),
}
"""The cases the issue's goals are read from (3 compares its 10-FG cases with 1's)."""


def quick_cases() -> list[Case]:
    cases = product(("sqlite", "redis", "cassandra"), (10,), ALL["modes"], (1, 10), rk.DISTRIBUTIONS, (100,))
    cases += product(("sqlite",), (100,), ALL["modes"], (1, 10), rk.DISTRIBUTIONS, (100,))
    cases += product(("redis",), (10,), ("grpc",), (1,), rk.DISTRIBUTIONS, (1,))
    return cases


# -- sizes -----------------------------------------------------------------------------------------


def entry_bytes(label: str, fgs: int) -> int:
    """What the in-process cache counts for one entity with ``fgs`` FGs (docs/capacity.md)."""
    return len(label) + 1 + len(rk.key(0)) + 1 + fgs * (4 + BLOCK_BYTES) + 64


def cache_bytes(case: Case, label: str, entities: int) -> int:
    return entities * entry_bytes(label, case.fgs) * case.cache // 100


@dataclass
class Run:
    """One measured load: the generator's answer (or the embedded worker's, in the same names)."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    cores: float = math.nan
    """The system under test's cores: the server's process tree, or the embedded worker process."""
    store_cores: float = math.nan
    gen_cores: float = math.nan
    hit_ratio: float = math.nan
    target_rate: float = 0.0
    late: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    check_failures: int = 0
    check_error: str = ""
    within_1ms: float = math.nan
    """gRPC: the share of the retrieves that took at most 1 ms inside the server (its
    ``ofs_request_duration_seconds`` histogram over the run, the generator's warm-up included)."""
    inside_p99_ms: float = math.nan
    """gRPC: the upper bound of the server histogram's bucket that holds the 99th percentile."""


@dataclass(frozen=True)
class Settings:
    entities: int = 1_000_000
    seconds: float = 5.0
    warmup: float = 1.0
    threads: int = 4
    ceiling_seconds: float = 3.0
    front: str = ""
    """``ofs serve --front`` of the gRPC cases (empty: the target's default)."""


@dataclass
class Result:
    case: Case
    cache_bytes: int
    sat: Run | None = None
    half: Run | None = None
    floor: Run | None = None
    """gRPC: the half-load open loop against ``loadgen -serve-null`` (no server work at all). Embedded,
    Redis with no in-process cache: one thread sending the same keys' bare ``MGET`` through redis-py
    (hiredis), nothing decoded: the store's own floor under the 1-thread latency."""
    single: Run | None = None
    """Embedded only: one thread back to back."""
    warm_seconds: float = 0.0
    error: str = ""


def seed(case: Case, phase: str) -> int:
    """The random seed of one load of ``case``: the same keys for every target, other keys per phase."""
    return int(hashlib.sha1(f"{case.name()}/{phase}".encode()).hexdigest()[:8], 16)
