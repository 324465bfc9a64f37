"""Settings of ``ofs consume``: a YAML file, then ``OFS_CONSUMER_*`` environment variables, then flags.

Every setting of :class:`ConsumerConfig` can be given in the file under its own name and in the environment
as ``OFS_CONSUMER_<NAME>`` (``OFS_CONSUMER_BOOTSTRAP_SERVERS=host:9092``). ``registry`` and ``data_dir``
choose the feature store as for ``ofs serve`` (``$OFS_REGISTRY`` and ``$OFS_DATA_DIR`` also apply).
``kafka`` (file only) passes extra settings to kafka-python's consumer and producer (security, SASL, …).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from online_feature_store.errors import InvalidInputError
from online_feature_store.feature_store import DEFAULT_MAX_ROWS_PER_PERSIST

__all__ = ["CACHE_MODES", "ENV_PREFIX", "ConsumerConfig", "load_config"]

ENV_PREFIX = "OFS_CONSUMER_"
CACHE_MODES = ("strong", "eventual")


@dataclass(frozen=True)
class ConsumerConfig:
    """Settings of one consumer process (all processes of a group normally share them)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list of Kafka brokers."""
    topic: str = "ofs-persist"
    """Topic whose message values are serialized ``persist.Query`` messages."""
    group_id: str = "ofs-consumer"
    """Consumer group: processes with the same group id share the topic's partitions."""
    dlq_topic: str = ""
    """Dead-letter topic for messages that can never be stored (default ``<topic>.dlq``)."""
    client_id: str = "ofs-consumer"
    cache_mode: str = "strong"
    """``strong``: drop written keys from this process's caches; ``eventual``: let cached copies expire."""
    saturate: bool = False
    """Clamp out-of-range numbers to the type's range instead of rejecting the message."""
    max_rows_per_persist: int = DEFAULT_MAX_ROWS_PER_PERSIST
    """Rows one message may carry (counted before it is decoded); a message with more is dead-lettered."""
    batch_max_messages: int = 64
    """A batch is written when it holds this many messages, when no more messages are waiting …"""
    batch_max_seconds: float = 0.2
    """… or at the latest this long after its first message arrived."""
    workers: int = 2
    """Threads validating messages and building their blocks (native, in parallel); one more thread
    writes each batch to the store in one call."""
    max_poll_records: int = 500
    auto_offset_reset: str = "earliest"
    """Where a group without committed offsets starts: ``earliest`` (nothing skipped) or ``latest``."""
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 8_388_608
    backoff_initial_seconds: float = 0.5
    """First wait after a failed store write; doubled per failure up to ``backoff_max_seconds``."""
    backoff_max_seconds: float = 30.0
    lag_interval_seconds: float = 5.0
    """How often the per-partition lag gauges are refreshed."""
    health_host: str = "127.0.0.1"
    health_port: int = 8090
    """HTTP port of ``/health/self``, ``/health/ready`` and ``/metrics`` (0: any free port; -1: none)."""
    kafka: dict[str, Any] = field(default_factory=dict)
    """Extra kafka-python settings, applied to the consumer and the dead-letter producer."""

    @property
    def dead_letter_topic(self) -> str:
        """The dead-letter topic actually used."""
        return self.dlq_topic or f"{self.topic}.dlq"

    @property
    def invalidate(self) -> bool:
        """True in strong cache mode."""
        return self.cache_mode == "strong"

    def check(self) -> ConsumerConfig:
        """Raises :class:`InvalidInputError` naming the first setting that cannot work."""
        if self.cache_mode not in CACHE_MODES:
            raise InvalidInputError(f"setting 'cache_mode': {self.cache_mode!r} is not one of {CACHE_MODES}")
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise InvalidInputError(
                f"setting 'auto_offset_reset': {self.auto_offset_reset!r} is not 'earliest' or 'latest'"
            )
        for name in ("batch_max_messages", "workers", "max_poll_records", "max_rows_per_persist"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"setting {name!r} must be at least 1, got {getattr(self, name)}")
        for name in ("batch_max_seconds", "backoff_initial_seconds", "backoff_max_seconds"):
            if getattr(self, name) <= 0:
                raise InvalidInputError(f"setting {name!r} must be positive, got {getattr(self, name)}")
        if not self.topic or not self.group_id or not self.bootstrap_servers:
            raise InvalidInputError("settings 'topic', 'group_id' and 'bootstrap_servers' must not be empty")
        if self.dead_letter_topic == self.topic:
            raise InvalidInputError("setting 'dlq_topic' must differ from 'topic'")
        return self


_EXTRA = ("registry", "data_dir", "distributed_cache")


def _coerce(name: str, raw: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(raw, str):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                return raw.lower() in ("1", "true", "yes")
            return bool(raw)
        if isinstance(default, dict):
            if not isinstance(raw, dict):
                raise TypeError(raw)
            return dict(raw)
        return type(default)(raw)
    except (TypeError, ValueError):
        raise InvalidInputError(f"setting {name!r}: cannot use {raw!r} as {type(default).__name__}") from None


def load_config(path: str | None, overrides: dict[str, Any]) -> tuple[ConsumerConfig, dict[str, Any]]:
    """Settings from ``path`` (YAML), the ``OFS_CONSUMER_*`` environment and ``overrides`` (flags; ``None``
    values are ignored), later sources winning. Returns the checked config and the feature-store settings
    (``registry``, ``data_dir``, ``distributed_cache``: the Redis URL of the distributed cache, so strong
    mode also invalidates it; ``$OFS_DISTRIBUTED_CACHE`` as for ``ofs serve``) that were given."""
    doc: dict[str, Any] = {}
    if path:
        import yaml

        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise InvalidInputError(f"{path}: expected a mapping of settings")
        doc = dict(loaded or {})
    names = [f.name for f in fields(ConsumerConfig)]
    unknown = sorted(set(doc) - set(names) - set(_EXTRA))
    if unknown:
        raise InvalidInputError(f"{path}: unknown settings {unknown} (known: {sorted([*names, *_EXTRA])})")
    for name in [*names, *_EXTRA]:
        var = ENV_PREFIX + name.upper()
        if var in os.environ and name != "kafka":
            doc[name] = os.environ[var]
    if "distributed_cache" not in doc and os.environ.get("OFS_DISTRIBUTED_CACHE"):
        doc["distributed_cache"] = os.environ["OFS_DISTRIBUTED_CACHE"]
    doc.update({k: v for k, v in overrides.items() if v is not None})
    base = ConsumerConfig()
    values = {n: _coerce(n, doc[n], getattr(base, n)) for n in names if n in doc}
    extra = {k: str(doc[k]) for k in _EXTRA if doc.get(k)}
    return replace(base, **values).check(), extra
