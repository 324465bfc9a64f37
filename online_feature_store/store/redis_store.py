"""Redis (standalone or Redis Cluster) as a store: one CSDB value per entity key holding all its FGs.

The value of ``ofs:s:<entity>:<key>`` (see :func:`~online_feature_store.store.keys.namespaced_key`) is a
CSDB: ``[layout][fg id u16][len u16|u32][PSDB]…``. A write replaces FG entries inside that value with a
server-side Lua script, atomically, so concurrent writers of different FGs of one key never lose each
other's update (the reference's client-side read-modify-write can). The script also drops expired
entries and sets the key's expiry to the latest entry expiry (none when an entry never expires), so
Redis itself purges a key once all its FGs have expired. Reads are one MGET per request (Redis Cluster:
one pipelined round trip per node) and ``csdb_lookup`` per value.

Durability is Redis's own: configure AOF (``appendfsync always``) when Redis is the system of record.
``redis`` and ``hiredis`` are imported when the store is created, so the package works without them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from online_feature_store._native import csdb_lookup
from online_feature_store.errors import CorruptBlockError, UnavailableError
from online_feature_store.registry.model import Entity
from online_feature_store.store import redis_pipeline
from online_feature_store.store._checks import check_fg_ids, check_keys, check_writes
from online_feature_store.store.base import BlockWrite, KeyValues
from online_feature_store.store.keys import namespaced_key
from online_feature_store.store.secrets import redact_text

if TYPE_CHECKING:
    from redis.commands.core import Script

__all__ = ["MERGE_SCRIPT", "RedisStore"]

_T = TypeVar("_T")

NAMESPACE = "s"
"""Key namespace of stored values (``ofs:s:…``); the distributed cache uses ``ofs:c:…``."""

MERGE_SCRIPT = r"""
-- Replaces FG entries of one CSDB value atomically.
-- KEYS[1]: the value. ARGV[1]: now (unix s). Then per FG: id, expires_at (unix s, 0 = never), PSDB.
-- Expired entries are dropped; the key expires when its last entry does (never if one never expires).
local now = tonumber(ARGV[1])
local floor = math.floor
local function u16(s, i) return string.byte(s, i) + string.byte(s, i + 1) * 256 end
local function u32(s, i) return u16(s, i) + u16(s, i + 2) * 65536 end
local function le(n, width)
  local t = {}
  for i = 1, width do t[i] = n % 256; n = floor(n / 256) end
  return string.char(unpack(t))
end
-- A PSDB's expiry from header bytes 2-6: u32 LE of packed >> 8, then packed & 0xFF, where
-- packed = year << 26 | day_of_year << 17 | second_of_day (all zero = never).
local function expiry(block)
  if #block < 9 then return 0 end
  local hi, lo = u32(block, 3), string.byte(block, 7)
  if hi == 0 and lo == 0 then return 0 end
  local packed = hi * 256 + lo
  local year = floor(packed / 67108864)
  local day = floor(packed / 131072) % 512
  local sec = packed % 131072
  local y1 = year - 1
  -- days from 1970-01-01 to January 1st of `year` (477 leap days before 1970)
  local days = 365 * (year - 1970) + floor(y1 / 4) - floor(y1 / 100) + floor(y1 / 400) - 477
  return (days + day) * 86400 + sec
end

local order, blocks, exps = {}, {}, {}
local old = redis.call('GET', KEYS[1])
if old then
  local layout = string.byte(old, 1)
  local lw
  if layout == 1 then lw = 2 elseif layout == 2 then lw = 4
  else return redis.error_reply('OFSCORRUPT CSDB layout ' .. tostring(layout)) end
  local pos, n = 2, #old
  while pos <= n do
    if pos + 1 + lw > n then return redis.error_reply('OFSCORRUPT CSDB entry header truncated') end
    local id = u16(old, pos)
    local len
    if lw == 2 then len = u16(old, pos + 2) else len = u32(old, pos + 2) end
    local s = pos + 2 + lw
    if s + len - 1 > n then return redis.error_reply('OFSCORRUPT CSDB entry truncated') end
    if blocks[id] == nil then order[#order + 1] = id end
    blocks[id] = string.sub(old, s, s + len - 1)
    exps[id] = expiry(blocks[id])
    pos = s + len
  end
end
for i = 2, #ARGV, 3 do
  local id = tonumber(ARGV[i])
  if blocks[id] == nil then order[#order + 1] = id end
  exps[id] = tonumber(ARGV[i + 1])
  blocks[id] = ARGV[i + 2]
end

local live, big, forever, latest = {}, false, false, 0
for _, id in ipairs(order) do
  local e = exps[id]
  if e == 0 or e >= now then
    live[#live + 1] = id
    if #blocks[id] > 65535 then big = true end
    if e == 0 then forever = true elseif e > latest then latest = e end
  end
end
if #live == 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
local lw = big and 4 or 2
local parts = {string.char(big and 2 or 1)}
for _, id in ipairs(live) do
  parts[#parts + 1] = le(id, 2) .. le(#blocks[id], lw)
  parts[#parts + 1] = blocks[id]
end
redis.call('SET', KEYS[1], table.concat(parts))
if not forever then redis.call('PEXPIREAT', KEYS[1], (latest + 1) * 1000) end
return #live
"""


class RedisStore:
    """FG blocks in Redis, standalone (``url``) or Redis Cluster (``cluster_nodes``: ``host:port`` seeds).

    ``pool_size`` bounds the connections (per node for a cluster); callers wait up to ``socket_timeout``
    for a free one. Connection failures are retried ``retries`` times with a short backoff, then raise
    ``UnavailableError``. The client connects on first use, so a store can be opened while Redis is down.
    ``username`` and ``password`` (Redis ACL / ``requirepass``) are sent apart from the URL, which is
    shown in errors: a password still written into ``url`` is redacted there.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        cluster_nodes: Sequence[str] | None = None,
        pool_size: int = 32,
        connect_timeout: float = 2.0,
        socket_timeout: float = 2.0,
        retries: int = 2,
        username: str | None = None,
        password: str | None = None,
    ):
        if (url is None) == (not cluster_nodes):
            raise ValueError("RedisStore needs exactly one of url or cluster_nodes")
        self.url = url
        self.cluster_nodes = tuple(cluster_nodes or ())
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._retries = retries
        self._credentials = {"username": username, "password": password}
        self._lock = threading.Lock()
        self._client: Any = None
        self._script: Script | None = None
        self._closed = False

    @property
    def _where(self) -> str:
        return redact_text(self.url) if self.url else "cluster " + ",".join(self.cluster_nodes)

    def _connect(self) -> tuple[Any, Script]:
        if self._closed:
            raise UnavailableError(f"redis store {self._where} is closed")
        if self._client is not None and self._script is not None:
            return self._client, self._script
        try:
            import redis
        except ImportError as exc:  # a ModuleNotFoundError still: never mistaken for Redis being down
            raise ModuleNotFoundError(
                "Redis stores and caches need redis-py: pip install 'online-feature-store[redis]'",
                name="redis",
            ) from exc
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        with self._lock, self._errors("connect"):
            if self._client is None:
                retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), self._retries)
                common: dict[str, Any] = {
                    "socket_connect_timeout": self._connect_timeout,
                    "socket_timeout": self._socket_timeout,
                    "retry": retry,
                    "max_connections": self._pool_size,
                    **{k: v for k, v in self._credentials.items() if v is not None},
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
                self._script = self._client.register_script(MERGE_SCRIPT)
            assert self._script is not None
            return self._client, self._script

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from redis.exceptions import RedisClusterException, RedisError, ResponseError

        try:
            yield
        except ResponseError as e:
            if "OFSCORRUPT" in str(e):
                raise CorruptBlockError(f"redis store {self._where}: {what}: {e}") from e
            raise UnavailableError(f"redis store {self._where}: {what} failed: {e}") from e
        except (RedisError, RedisClusterException) as e:  # connection, timeout, cluster down, pool full, …
            raise UnavailableError(f"redis store {self._where}: {what} failed: {e}") from e
        except OSError as e:
            raise UnavailableError(f"redis store {self._where}: {what} failed: {e}") from e

    # -- BlockStore -----------------------------------------------------------------------------------

    def ensure(self, entities: Sequence[Entity]) -> None:
        """Nothing to create: values appear on first write."""

    def read(self, entity: Entity, keys: Sequence[KeyValues], fg_ids: Sequence[int]) -> list[list[bytes]]:
        """One MGET of the distinct keys (one round trip per node on a cluster); expired blocks are
        returned as stored, for the decoder to reject."""
        check_keys(entity, keys)
        check_fg_ids(entity, fg_ids)
        names = [namespaced_key(NAMESPACE, entity.label, k) for k in keys]
        if not names:
            return []
        unique = list(dict.fromkeys(names))
        client, _ = self._connect()
        with self._errors("read"):
            # a cluster's MGET must stay in one slot: one MGET per slot, packed, one round trip per node
            values = redis_pipeline.cluster_mget(client, unique) if self.url is None else client.mget(unique)
        by_name: dict[str, list[bytes]] = {}
        empty = [b""] * len(fg_ids)
        for name, value in zip(unique, values, strict=False):
            if value is None or not fg_ids:
                by_name[name] = empty
            else:
                by_name[name] = [b if b is not None else b"" for b in csdb_lookup(value, fg_ids)]
        return [list(by_name[n]) for n in names]

    def write(self, entity: Entity, writes: Sequence[BlockWrite]) -> None:
        """One merge-script call per distinct key, packed and pipelined (one round trip per node); later
        writes of the same (key, FG) in one call win."""
        check_writes(entity, writes)
        if not writes:
            return
        now = int(time.time())
        args: dict[str, list[Any]] = {}
        prefix = namespaced_key(NAMESPACE, entity.label, ())  # "ofs:s:<entity>:", then the key string
        for w in writes:
            name = namespaced_key(NAMESPACE, entity.label, w.key) if w.name is None else prefix + w.name
            args.setdefault(name, [now]).extend((w.fg_id, w.expires_at, w.block))
        client, script = self._connect()
        with self._errors("write"):
            try:
                self._write_packed(client, script, args)
            except redis_pipeline.RedirectedError:
                # A cluster slot moved: redis-py's pipeline follows the redirection and refreshes the slot
                # map. Merging the same blocks again is harmless for the keys already written.
                self._write_pipelined(client, script, args)

    def _write_packed(self, client: Any, script: Script, args: dict[str, list[Any]]) -> None:
        """The merge-script calls packed by :mod:`~online_feature_store.store.redis_pipeline`."""
        head = (b"EVALSHA", script.sha.encode(), b"1")
        commands = []
        for name, values in args.items():
            key = name.encode()
            parts = [*head, key]
            parts.extend(v if type(v) is bytes else b"%d" % v for v in values)
            commands.append((key, redis_pipeline.resp(*parts)))
        cluster = self.url is None
        self._merge(
            client,
            commands,
            lambda cs: redis_pipeline.send(client, cs, cluster=cluster, raise_on_error=False),
        )

    def _write_pipelined(self, client: Any, script: Script, args: dict[str, list[Any]]) -> None:
        """The merge-script calls through redis-py's pipeline, which follows cluster redirections."""

        def run(names: list[str]) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.execute_command("EVALSHA", script.sha, 1, name, *args[name])
            return list(pipe.execute(raise_on_error=False))

        self._merge(client, list(args), run)

    @staticmethod
    def _merge(client: Any, pending: list[_T], run: Callable[[list[_T]], list[Any]]) -> None:
        """``run(pending)`` (one merge-script call each, replies in order, error replies as exceptions);
        if every failure is a node that forgot the script (Redis restarted, a new node), loads it and
        runs those again once. Raises the first other error."""
        from redis.exceptions import NoScriptError

        for attempt in range(2):
            replies = run(pending)
            failed = [(p, r) for p, r in zip(pending, replies, strict=True) if isinstance(r, Exception)]
            if not failed:
                return
            if attempt == 0 and all(isinstance(r, NoScriptError) for _, r in failed):
                client.script_load(MERGE_SCRIPT)
                pending = [p for p, _ in failed]
                continue
            raise next((r for _, r in failed if not isinstance(r, NoScriptError)), failed[0][1])

    def ping(self) -> None:
        """Raises ``UnavailableError`` unless Redis (every cluster primary) answers."""
        client, _ = self._connect()
        with self._errors("ping"):
            client.ping()

    def close(self) -> None:
        """Closes the connection pool(s)."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()
