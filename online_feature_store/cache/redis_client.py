"""A redis-py client opened on first use, for what the cache still does in Python: the invalidation bus's
subscription (``cache/invalidation.py``) and the distributed cache's calls.

The Redis *store* is native (``rust/src/store/redis.rs``); this holds only connection settings and the
mapping of redis-py's errors to ``UnavailableError`` / ``CorruptBlockError``. ``redis`` and ``hiredis`` are
imported on first use, so the package works without them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from online_feature_store.errors import CorruptBlockError, UnavailableError
from online_feature_store.store.secrets import redact_text

__all__ = ["RedisConnection"]


class RedisConnection:
    """A redis-py client of a standalone Redis (``url``) or a Redis Cluster (``cluster_nodes``).

    ``pool_size`` bounds the connections (per node for a cluster); callers wait up to ``socket_timeout``
    for a free one. Connection failures are retried ``retries`` times with a short backoff."""

    def __init__(
        self,
        url: str | None = None,
        *,
        cluster_nodes: Sequence[str] | None = None,
        pool_size: int = 32,
        connect_timeout: float = 2.0,
        socket_timeout: float = 2.0,
        retries: int = 2,
    ):
        if (url is None) == (not cluster_nodes):
            raise ValueError("a Redis connection needs exactly one of url or cluster_nodes")
        self.url = url
        self.cluster_nodes = tuple(cluster_nodes or ())
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._retries = retries
        self._lock = threading.Lock()
        self._client: Any = None
        self._closed = False

    @property
    def where(self) -> str:
        """Where Redis is, for messages (a password in the URL redacted)."""
        return redact_text(self.url) if self.url else "cluster " + ",".join(self.cluster_nodes)

    def connect(self) -> Any:
        """The redis-py client (``redis.Redis`` or ``redis.cluster.RedisCluster``), created on first use."""
        if self._closed:
            raise UnavailableError(f"redis {self.where} is closed")
        if self._client is not None:
            return self._client
        try:
            import redis
        except ImportError as exc:  # a ModuleNotFoundError still: never mistaken for Redis being down
            raise ModuleNotFoundError(
                "Redis stores and caches need redis-py: pip install 'online-feature-store[redis]'",
                name="redis",
            ) from exc
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        with self._lock, self.errors("connect"):
            if self._client is None:
                retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), self._retries)
                common: dict[str, Any] = {
                    "socket_connect_timeout": self._connect_timeout,
                    "socket_timeout": self._socket_timeout,
                    "retry": retry,
                    "max_connections": self._pool_size,
                }
                if self.url is not None:
                    pool = redis.BlockingConnectionPool.from_url(
                        self.url, timeout=self._socket_timeout, **common
                    )
                    self._client = redis.Redis(connection_pool=pool)
                else:
                    from redis.cluster import ClusterNode, RedisCluster

                    nodes = []
                    for node in self.cluster_nodes:
                        host, _, port = node.rpartition(":")
                        nodes.append(ClusterNode(host or "127.0.0.1", int(port)))  # type: ignore[no-untyped-call]
                    self._client = RedisCluster(startup_nodes=nodes, **common)
            return self._client

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Maps redis-py's errors raised inside to ``UnavailableError`` (``CorruptBlockError`` for a
        script's ``OFSCORRUPT`` reply), cause chained."""
        from redis.exceptions import RedisClusterException, RedisError, ResponseError

        try:
            yield
        except ResponseError as e:
            if "OFSCORRUPT" in str(e):
                raise CorruptBlockError(f"redis {self.where}: {what}: {e}") from e
            raise UnavailableError(f"redis {self.where}: {what} failed: {e}") from e
        except (RedisError, RedisClusterException) as e:  # connection, timeout, cluster down, pool full, …
            raise UnavailableError(f"redis {self.where}: {what} failed: {e}") from e
        except OSError as e:
            raise UnavailableError(f"redis {self.where}: {what} failed: {e}") from e

    def close(self) -> None:
        """Closes the client and its sockets (redis-py's ``close()`` leaves a connection pool it was
        handed open, so a standalone client's sockets are disconnected here)."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()
            if self.url is not None:
                client.connection_pool.disconnect()
