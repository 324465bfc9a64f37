"""Cache tiers in front of the stores: the distributed (Redis) cache, its circuit breaker and the
cross-process invalidation of in-process caches. The in-process cache itself is native
(:class:`online_feature_store._native.BlockCache`). See docs/caching.md."""

from online_feature_store.cache.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from online_feature_store.cache.invalidation import (
    InvalidationBus,
    RedisInvalidationBus,
    SqliteInvalidationLog,
)
from online_feature_store.cache.redis_cache import CacheListener, DistributedCache, Lookup

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "CacheListener",
    "CircuitBreaker",
    "DistributedCache",
    "InvalidationBus",
    "Lookup",
    "RedisInvalidationBus",
    "SqliteInvalidationLog",
]
