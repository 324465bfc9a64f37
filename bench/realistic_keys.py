"""Keys and values of the realistic benchmark (bench/realistic_bench.py, issue #17): which entities a
request names, and what each entity's features hold.

Used on both sides of the bench: by the harness (this checkout's interpreter) and by the worker that runs
inside the system under test (``bench/realistic_worker.py``, any checkout's interpreter), so it imports
numpy only. The Go load generator (``bench/loadgen``) draws keys by the same rules, given the same
permutation parameters as flags.

- Entity ``i`` (0 <= i < N) has the key ``u%06d``.
- Popularity is by rank: rank 0 is the most popular under Zipf. The entity of rank ``r`` is
  ``(A * r + B) mod N`` (A coprime to N), so hot entities are spread over the key space and the stores'
  partitions instead of being the first rows written.
- The keys of one request are distinct (a caller asks for a list of different entities): a key drawn
  twice for one request is drawn again.
- Feature ``j`` of entity ``i`` (``j`` counted across FGs, 64 per FG) is a hash of ``(i, j)`` mapped to
  a float32 in [-4, 4): incompressible like real embeddings, and recomputable for any key, so a check
  can compare what a store returns with what was loaded without keeping the data.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

N_FEATURES = 64
"""fp32 features per feature group."""
ZIPF_S = 1.1
"""The Zipf exponent of the issue (P(rank r) ∝ (1 + r)^-s, as Go's ``rand.NewZipf(r, s, 1, N-1)``)."""
DISTRIBUTIONS = ("uniform", "zipf")


def key(i: int) -> str:
    """The key of entity ``i``."""
    return f"u{i:06d}"


def perm_params(n: int) -> tuple[int, int]:
    """(A, B) of the rank -> entity permutation over ``n`` entities: A near n / golden ratio, coprime
    to n."""
    if n < 1:
        raise ValueError(f"{n} entities: at least 1")
    a = max(1, int(n * 0.6180339887498949))
    while math.gcd(a, n) != 1:
        a += 1
    return a, n // 3


def entities_of_ranks(ranks: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    """The entity ids of popularity ranks ``ranks`` (a bijection of 0..n-1)."""
    a, b = perm_params(n)
    return (ranks.astype(np.int64) * a + b) % n


class Sampler:
    """Draws the entity ids of requests: ``dist`` ``uniform`` or ``zipf`` over ``n`` entities."""

    def __init__(self, dist: str, n: int, s: float = ZIPF_S) -> None:
        if dist not in DISTRIBUTIONS:
            raise ValueError(f"key distribution {dist!r}: one of {', '.join(DISTRIBUTIONS)}")
        self.dist, self.n = dist, n
        self._cdf: npt.NDArray[np.float64] | None = None
        if dist == "zipf":
            if s <= 1:
                raise ValueError(f"Zipf exponent {s}: must be > 1")
            weights = np.arange(1, n + 1, dtype=np.float64) ** -s
            cdf = np.cumsum(weights)
            self._cdf = cdf / cdf[-1]

    def _ranks(self, rng: np.random.Generator, size: int) -> npt.NDArray[np.int64]:
        if self._cdf is None:
            return rng.integers(0, self.n, size=size, dtype=np.int64)
        found = np.searchsorted(self._cdf, rng.random(size), side="right")
        return np.minimum(found, self.n - 1).astype(np.int64)

    def draw(self, rng: np.random.Generator, requests: int, keys: int) -> npt.NDArray[np.int64]:
        """``requests`` rows of ``keys`` distinct entity ids each."""
        limit = self.n if self.dist == "uniform" else self.n // 2
        if not 1 <= keys <= limit:
            raise ValueError(f"{keys} distinct keys per request from {self.n:,} entities ({self.dist})")
        ranks = self._ranks(rng, requests * keys).reshape(requests, keys)
        if keys > 1:
            ordered = np.sort(ranks, axis=1)
            for r in np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1)):
                ranks[r] = self._distinct(rng, ranks[r])
        return entities_of_ranks(ranks, self.n)

    def _distinct(self, rng: np.random.Generator, row: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """``row`` with every repeated rank drawn again (the first occurrence is kept)."""
        seen: set[int] = set()
        out: list[int] = []
        for r in row.tolist():
            if r not in seen:
                seen.add(r)
                out.append(r)
        while len(out) < len(row):
            for r in self._ranks(rng, 2 * (len(row) - len(out))).tolist():
                if r not in seen and len(out) < len(row):
                    seen.add(r)
                    out.append(r)
        return np.array(out, dtype=np.int64)


def hot_first(n: int, count: int) -> npt.NDArray[np.int64]:
    """The ``count`` most popular entities under Zipf (any ``count`` entities are as good for uniform)."""
    return entities_of_ranks(np.arange(min(count, n), dtype=np.int64), n)


def values(ids: npt.NDArray[np.int64], n_fgs: int) -> npt.NDArray[np.float32]:
    """The stored features of entities ``ids``: shape (len(ids), n_fgs * 64), FG after FG."""
    cols = n_fgs * N_FEATURES
    x = ids.astype(np.uint64).reshape(-1, 1) * np.uint64(cols) + np.arange(cols, dtype=np.uint64)
    # murmur3's 64-bit finaliser; uint64 arrays wrap silently
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return ((x >> np.uint64(40)).astype(np.float32) * np.float32(8.0 / (1 << 24)) - np.float32(4.0)).astype(
        np.float32
    )
