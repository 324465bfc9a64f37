"""Settings of ``ofs consume``: a YAML file, then ``OFS_CONSUMER_*`` environment variables, then flags.

Every setting of :class:`ConsumerConfig` can be given in the file under its own name and in the environment
as ``OFS_CONSUMER_<NAME>`` (``OFS_CONSUMER_BOOTSTRAP_SERVERS=host:9092``). ``registry`` and ``data_dir``
choose the feature store as for ``ofs serve`` (``$OFS_REGISTRY`` and ``$OFS_DATA_DIR`` also apply).
``kafka`` (file only) passes extra settings to kafka-python's consumer and producer (security, SASL, …).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from online_feature_store.errors import InvalidInputError
from online_feature_store.limits import DEFAULT_MAX_ROWS_PER_PERSIST
from online_feature_store.settings import Settings, StoreSettings, build, gather, setting

__all__ = ["BLOCKS", "CACHE_MODES", "ENV_PREFIX", "ConsumerConfig", "load_config"]

ENV_PREFIX = "OFS_CONSUMER_"
CACHE_MODES = ("strong", "eventual")


@dataclass(frozen=True)
class ConsumerConfig(Settings):
    """Settings of one consumer process (all processes of a group normally share them)."""

    bootstrap_servers: str = setting("127.0.0.1:9092", doc="Kafka brokers, `host:port[,host:port]`")
    topic: str = setting("ofs-persist", doc="topic of `persist.Query` messages")
    group_id: str = setting(
        "ofs-consumer",
        doc="consumer group; processes of one group share the partitions",
    )
    dlq_topic: str = setting(
        "",
        shown_default="`<topic>.dlq`",
        doc="dead-letter topic for messages that can never be stored (reason in the `ofs-error` header)",
    )
    client_id: str = setting("ofs-consumer", doc="Kafka client id")
    cache_mode: str = setting(
        "strong",
        doc="`strong`: drop written keys from the caches; `eventual`: let cached copies expire",
    )
    saturate: bool = setting(
        False,
        doc="clamp out-of-range numbers to the type's range instead of dead-lettering the message",
    )
    max_rows_per_persist: int = setting(
        DEFAULT_MAX_ROWS_PER_PERSIST,
        doc="rows one message may carry (counted before it is decoded); a message with more is "
        "dead-lettered (`ResourceExhaustedError`)",
    )
    batch_max_messages: int = setting(
        64,
        doc="a batch is written when it holds this many messages, when no more messages are waiting …",
    )
    batch_max_seconds: float = setting(
        0.2, doc="… or at the latest this long after its first message arrived"
    )
    workers: int = setting(
        2,
        doc="threads validating messages and building their blocks; one more thread writes each batch in "
        "one store call, in offset order per partition",
    )
    max_poll_records: int = setting(500, doc="records per poll")
    auto_offset_reset: str = setting(
        "earliest",
        doc="where a group without committed offsets starts (`earliest` or `latest`)",
    )
    session_timeout_ms: int = setting(10_000, doc="Kafka group session timeout")
    heartbeat_interval_ms: int = setting(3_000, doc="Kafka heartbeat interval")
    max_poll_interval_ms: int = setting(
        300_000, doc="longest time between polls before the group drops the consumer"
    )
    fetch_max_bytes: int = setting(52_428_800, doc="Kafka fetch size")
    max_partition_fetch_bytes: int = setting(8_388_608, doc="Kafka fetch size per partition")
    backoff_initial_seconds: float = setting(
        0.5, doc="first wait after a failed store write; doubled per failure …"
    )
    backoff_max_seconds: float = setting(30.0, doc="… up to this")
    lag_interval_seconds: float = setting(5.0, doc="refresh interval of the per-partition lag gauges")
    health_host: str = setting("127.0.0.1", doc="address of the health and metrics HTTP server")
    health_port: int = setting(
        8090,
        doc="`/health/self`, `/health/ready`, `/metrics` (`0`: any free port; `-1`: none)",
    )
    kafka: dict[str, Any] = setting(
        factory=dict,
        env=False,
        doc="file only: extra kafka-python settings for the consumer and the dead-letter producer "
        "(`security_protocol`, `sasl_mechanism`, …)",
    )

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


BLOCKS = (ConsumerConfig, StoreSettings)
"""What ``ofs consume`` reads from its file, its ``OFS_CONSUMER_<NAME>`` variables and its flags."""


def load_config(path: str | None, overrides: dict[str, Any]) -> tuple[ConsumerConfig, dict[str, Any]]:
    """Settings from ``path`` (YAML), the ``OFS_CONSUMER_*`` environment and ``overrides`` (flags; ``None``
    values are ignored), later sources winning. Returns the checked config and the feature-store settings
    (``registry``, ``data_dir``, ``distributed_cache``: the Redis URL of the distributed cache, so strong
    mode also invalidates it; ``$OFS_DISTRIBUTED_CACHE`` when none of those gave it) that were given."""
    doc = gather(BLOCKS, path, overrides, prefix=ENV_PREFIX, label="ofs consume")
    return build(ConsumerConfig, doc).check(), build(StoreSettings, doc).given()
