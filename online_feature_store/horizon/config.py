"""Horizon settings: a YAML file, then ``OFS_HORIZON_*`` environment variables, then command-line flags.

With nothing configured Horizon runs embedded: its own SQLite database and the SQLite registry in the data
directory (the one ``ofs serve --data-dir`` uses), and a signing secret generated once into that directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from online_feature_store.errors import InvalidInputError
from online_feature_store.horizon.db import Role
from online_feature_store.registry import backend

__all__ = ["ENV_PREFIX", "HorizonConfig", "load_config"]

ENV_PREFIX = "OFS_HORIZON_"


class HorizonConfig(BaseModel):
    """Every Horizon setting; each is also ``OFS_HORIZON_<NAME>`` in the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    """Address the HTTP server binds."""
    port: int = Field(default=8082, ge=0, le=65535)
    """HTTP port (0: any free port)."""
    data_dir: Path | None = None
    """Directory of the embedded database, registry and secret (default: ``$OFS_DATA_DIR``, else
    ``~/.local/share/online-feature-store``)."""
    registry: str | None = None
    """Registry URL (default: ``$OFS_REGISTRY``, else the SQLite registry in ``data_dir``)."""
    database_url: str | None = None
    """SQLAlchemy URL of the users / requests / audit database, e.g.
    ``postgresql+psycopg://user:pass@host/db`` (default: ``sqlite:///<data_dir>/horizon.db``)."""
    secret: SecretStr | None = None
    """Key that signs session tokens, at least 32 characters. Required with ``database_url`` (several
    Horizon processes must share it); embedded, one is generated into ``<data_dir>/horizon.secret``."""
    session_ttl_seconds: int = Field(default=8 * 3600, ge=1, le=30 * 24 * 3600)
    """Lifetime of a session token."""
    single_person: bool = False
    """Allow an admin to approve their own requests (a one-person setup)."""
    password_profile: Literal["RFC_9106_LOW_MEMORY", "RFC_9106_HIGH_MEMORY", "CHEAPEST"] = (
        "RFC_9106_LOW_MEMORY"
    )
    """argon2id parameters for new password hashes (argon2-cffi's profiles). ``CHEAPEST`` is for tests
    only: it makes hashes cheap to crack."""
    serving_address: str = "127.0.0.1:8089"
    """``host:port`` of the gRPC serving API that the try-it endpoint calls."""
    serving_caller_id: str | None = None
    """Reader caller id sent to the serving API (when it runs with auth on)."""
    serving_token: SecretStr | None = None
    """That caller's token."""
    serving_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """Deadline of one try-it call."""
    try_role: Role = Role.EDITOR
    """The least role that may use try-it (it reads real feature values with Horizon's own caller)."""
    try_entities: tuple[str, ...] | None = None
    """The entities try-it may read (a list, or comma-separated in the environment); unset: every
    entity. An empty list turns try-it off."""
    allow_self_registration: bool = False
    """Let anyone create an account (a viewer) with ``POST /auth/register``; off, only admins create
    accounts."""
    first_run_registration: bool = True
    """While no user exists, let ``POST /auth/register`` create the first admin (the sign-in page offers
    it). Turn it off when others can reach Horizon before its first admin exists, and create that admin
    with ``ofs horizon create-user --role admin``."""
    max_concurrent_hashes: int = Field(default=2, ge=1, le=64)
    """Password hashes computed at once (sign-in, registration, new accounts): each takes the argon2
    profile's memory (64 MiB for ``RFC_9106_LOW_MEMORY``), so this times that is Horizon's hashing budget."""
    login_attempts_per_ip: int = Field(default=20, ge=1, le=100_000)
    """Sign-in, registration and password-change attempts one client address may make per minute (a
    successful sign-in is not counted); more answer 429 with Retry-After."""
    login_failures_per_user: int = Field(default=10, ge=1, le=100_000)
    """Wrong passwords for one account within ``login_failure_window_seconds`` before its sign-ins answer
    429 (until the oldest failure leaves the window); a successful sign-in clears them."""
    login_failure_window_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    """The window of ``login_failures_per_user``."""
    trusted_proxies: str = ""
    """Comma-separated addresses of reverse proxies whose ``X-Forwarded-For`` names the client (for the
    per-address limit); empty: the peer address is the client, and the header is ignored."""

    @field_validator("try_entities", mode="before")
    @classmethod
    def _entity_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def resolved_data_dir(self) -> Path:
        """``data_dir``, else the library's default data directory; absolute (a relative one is taken from
        the working directory, as everywhere)."""
        return backend.data_dir(self.data_dir)

    def registry_url(self) -> str:
        """The registry to open, as for ``ofs serve --data-dir``: ``registry``; else ``$OFS_REGISTRY``; else
        the SQLite registry in the data directory."""
        return backend.registry_url(self.registry, self.data_dir)

    def embedded(self) -> bool:
        """True when Horizon keeps its own database in the data directory (no ``database_url``)."""
        return not self.database_url

    def resolved_database_url(self) -> str:
        """``database_url``, else the SQLite file ``horizon.db`` in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir() / 'horizon.db'}"


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInputError(f"cannot read Horizon config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path}: not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InvalidInputError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return {str(k): v for k, v in loaded.items()}


def load_config(
    path: str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    env: dict[str, str] | None = None,
) -> HorizonConfig:
    """Settings from ``path`` (YAML), ``OFS_HORIZON_*`` in ``env`` (default ``os.environ``) and
    ``overrides`` (flags; ``None`` values are ignored), later ones winning. ``InvalidInputError`` names
    every bad setting."""
    env = dict(os.environ) if env is None else env
    doc = _read_yaml(path) if path else {}
    known = set(HorizonConfig.model_fields)
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InvalidInputError(f"{path}: unknown settings {unknown} (known: {sorted(known)})")
    for name in known:
        var = ENV_PREFIX + name.upper()
        if var in env:
            doc[name] = env[var]
    doc.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return HorizonConfig.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise InvalidInputError(f"Horizon settings: {problems}") from None
