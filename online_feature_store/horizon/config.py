"""Horizon settings: a YAML file, then ``OFS_HORIZON_*`` environment variables, then command-line flags.

With nothing configured Horizon runs embedded: its own SQLite database and the SQLite registry in the data
directory (the one ``ofs serve --data-dir`` uses), and a signing secret generated once into that directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from online_feature_store.horizon.db import Role
from online_feature_store.settings import RegistrySettings, Secret, build, gather, setting

__all__ = ["BLOCKS", "ENV_PREFIX", "HorizonConfig", "load_config"]

ENV_PREFIX = "OFS_HORIZON_"

PasswordProfile = Literal["RFC_9106_LOW_MEMORY", "RFC_9106_HIGH_MEMORY", "CHEAPEST"]


@dataclass(frozen=True)
class HorizonConfig(RegistrySettings):
    """Every Horizon setting; each is also ``OFS_HORIZON_<NAME>`` in the environment. ``data_dir`` and
    ``registry`` are the shared block (:class:`~online_feature_store.settings.RegistrySettings`)."""

    host: str = setting("127.0.0.1", doc="address the HTTP server binds")
    port: int = setting(8082, ge=0, le=65535, doc="HTTP port (`0`: any free port)")
    database_url: str | None = setting(
        None,
        shown_default="`sqlite:///<data_dir>/horizon.db`",
        doc="SQLAlchemy URL of users, change requests and audit "
        "(`postgresql+psycopg://user:pass@host/db` in production)",
    )
    secret: Secret | None = setting(
        None,
        shown_default="generated into `<data_dir>/horizon.secret`",
        doc="key signing session tokens, ≥ 32 characters; required with `database_url` (every replica "
        "must share it)",
    )
    session_ttl_seconds: int = setting(
        8 * 3600, ge=1, le=30 * 24 * 3600, doc="session token lifetime (8 h; at most 30 days)"
    )
    single_person: bool = setting(
        False, doc="let an admin approve their own change requests (one-person setups)"
    )
    password_profile: PasswordProfile = setting(
        "RFC_9106_LOW_MEMORY",
        doc="argon2id parameters of new password hashes: `RFC_9106_LOW_MEMORY`, `RFC_9106_HIGH_MEMORY`, "
        "or `CHEAPEST` (tests only: cheap to crack)",
    )
    serving_address: str = setting("127.0.0.1:8089", doc="gRPC serving API the try-it endpoint calls")
    serving_caller_id: str | None = setting(
        None, doc="reader caller id for that call when the server runs with `auth`"
    )
    serving_token: Secret | None = setting(None, doc="that caller's token")
    serving_timeout_seconds: float = setting(5.0, gt=0, le=300, doc="deadline of one try-it call")
    try_role: Role = setting(
        Role.EDITOR,
        doc="the least role that may use try-it (it reads real feature values with Horizon's own caller)",
    )
    try_entities: tuple[str, ...] | None = setting(
        None,
        shown_default="every entity",
        doc="entities try-it may read (a list; comma-separated in the environment; empty: none)",
    )
    allow_self_registration: bool = setting(
        False,
        doc="let anyone create an account (a viewer) with `POST /auth/register`; off, only admins create "
        "accounts",
    )
    first_run_registration: bool = setting(
        True,
        doc="while no user exists, the first registration becomes the admin (turn it off when others can "
        "reach Horizon first, and use `ofs horizon create-user --role admin`)",
    )
    max_concurrent_hashes: int = setting(
        2, ge=1, le=64, doc="password hashes at once (times 64 MiB each with the default profile)"
    )
    login_attempts_per_ip: int = setting(
        20,
        ge=1,
        le=100_000,
        doc="sign-in, registration and password-change attempts per client address per minute "
        "(successful sign-ins not counted); more answer 429 with Retry-After",
    )
    login_failures_per_user: int = setting(
        10,
        ge=1,
        le=100_000,
        doc="wrong passwords per account within `login_failure_window_seconds` before 429",
    )
    login_failure_window_seconds: int = setting(900, ge=1, le=7 * 24 * 3600, doc="that window")
    trusted_proxies: str = setting(
        "",
        shown_default="none",
        doc="comma-separated reverse-proxy addresses whose `X-Forwarded-For` is believed (for the "
        "per-address limit); empty: the peer address is the client",
    )

    def embedded(self) -> bool:
        """True when Horizon keeps its own database in the data directory (no ``database_url``)."""
        return not self.database_url

    def resolved_database_url(self) -> str:
        """``database_url``, else the SQLite file ``horizon.db`` in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir() / 'horizon.db'}"


BLOCKS = (HorizonConfig,)
"""What ``ofs horizon`` reads from its file, its ``OFS_HORIZON_<NAME>`` variables and its flags."""


def load_config(
    path: str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    env: dict[str, str] | None = None,
) -> HorizonConfig:
    """Settings from ``path`` (YAML), ``OFS_HORIZON_*`` in ``env`` (default ``os.environ``) and
    ``overrides`` (flags; ``None`` values are ignored), later ones winning. ``InvalidInputError`` names
    every bad setting."""
    doc = gather(BLOCKS, path, overrides or {}, prefix=ENV_PREFIX, label="Horizon", env=env)
    return build(HorizonConfig, doc)
