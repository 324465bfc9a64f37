"""Horizon's own database: users, change requests, the audit log and revoked sessions (SQLAlchemy Core).

SQLite (a file in the data directory) by default; any SQLAlchemy URL for production, tested against
PostgreSQL (``postgresql+psycopg://…``). The registry itself is not here: approved changes go to the
registry backend, and only who decided what, when and at which registry revision is recorded here.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from online_feature_store.errors import InvalidInputError, UnavailableError

__all__ = [
    "ROLES",
    "USERNAME_INDEX",
    "Role",
    "State",
    "audit",
    "connect",
    "metadata",
    "record",
    "requests",
    "revoked_sessions",
    "settings",
    "to_utc",
    "users",
    "utcnow",
]


class Role(str, enum.Enum):
    """A Horizon user's role; each includes the rights of the ones before it."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"


ROLES: tuple[str, ...] = tuple(r.value for r in Role)
_RANK = {r: i for i, r in enumerate(Role)}


def role_at_least(role: str, needed: Role) -> bool:
    """True when ``role`` includes the rights of ``needed``."""
    return _RANK[Role(role)] >= _RANK[needed]


class State(str, enum.Enum):
    """Where a change request is in its lifecycle. Only PENDING requests can be decided; APPLYING is the
    short step of an approval between claiming the request and recording the registry's answer."""

    PENDING = "PENDING"
    APPLYING = "APPLYING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


metadata = sa.MetaData()

# Enums are stored as strings with a CHECK constraint (native_enum=False): the same on every database,
# and a value outside the enum can never be written, whatever writes it.
_role = sa.Enum(
    Role,
    native_enum=False,
    create_constraint=True,
    name="horizon_role",
    length=16,
    values_callable=lambda e: [m.value for m in e],
)
_state = sa.Enum(
    State,
    native_enum=False,
    create_constraint=True,
    name="horizon_state",
    length=16,
    values_callable=lambda e: [m.value for m in e],
)
_time = sa.DateTime(timezone=True)

users = sa.Table(
    "horizon_users",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", _role, nullable=False),
    sa.Column("created_at", _time, nullable=False),
)

requests = sa.Table(
    "horizon_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("state", _state, nullable=False, index=True),
    sa.Column("author", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", _time, nullable=False),
    sa.Column("decided_by", sa.String(64)),
    sa.Column("decided_at", _time),
    sa.Column("reason", sa.Text),
    sa.Column("revision", sa.BigInteger),
    sa.Column("diff", sa.JSON, nullable=False),
    # create_caller only: the new token's hash (the token itself was shown once and is not kept)
    sa.Column("token_hash", sa.String(255)),
    # APPLYING: the registry objects the approval writes, [[kind, name, canonical JSON or null], …],
    # recorded before the registry commits, so a retry or a restart can tell whether it did
    sa.Column("target", sa.JSON),
)

audit = sa.Table(
    "horizon_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", _time, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False, index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("request_id", sa.Integer, index=True),
    sa.Column("detail", sa.Text, nullable=False),
)

revoked_sessions = sa.Table(
    "horizon_revoked_sessions",
    metadata,
    sa.Column("jti", sa.String(64), primary_key=True),
    sa.Column("expires_at", _time, nullable=False),
)

settings = sa.Table(
    "horizon_settings",
    metadata,
    # one row per one-time event; the primary key makes "first one wins" race-free (first admin)
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def record(conn: Connection, actor: str, action: str, detail: str, request_id: int | None = None) -> None:
    """An audit record, in the caller's transaction."""
    conn.execute(
        audit.insert().values(at=utcnow(), actor=actor, action=action, request_id=request_id, detail=detail)
    )


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def to_utc(value: datetime) -> datetime:
    """A stored time as aware UTC (SQLite hands back naive datetimes that were written as UTC)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


USERNAME_INDEX = "horizon_users_username_ci"
"""The unique index on ``lower(username)``: user names are unique whatever their case."""


def _ensure_username_index(engine: Engine) -> None:
    # Databases made before user names were case-insensitive may hold names that differ only in case;
    # they are reported, never merged: which account is the real one is for an admin to decide.
    with engine.begin() as conn:
        clashes = conn.execute(
            sa.select(sa.func.lower(users.c.username))
            .group_by(sa.func.lower(users.c.username))
            .having(sa.func.count() > 1)
        ).all()
        if clashes:
            names = sorted(
                conn.execute(
                    sa.select(users.c.username).where(
                        sa.func.lower(users.c.username).in_([c[0] for c in clashes])
                    )
                ).scalars()
            )
            raise InvalidInputError(
                f"the Horizon database holds user names that differ only in case: {names}; user names are "
                "case-insensitive now, so keep one account of each and delete the others "
                "(DELETE FROM horizon_users WHERE username = '…') before starting Horizon"
            )
        conn.execute(
            sa.text(f"CREATE UNIQUE INDEX IF NOT EXISTS {USERNAME_INDEX} ON horizon_users (lower(username))")
        )


def connect(url: str) -> Engine:
    """An engine for ``url`` with the schema created (SQLite: the file and its directory too), including
    the case-insensitive unique index on user names (``InvalidInputError`` naming the clashing names when
    an older database holds some)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise InvalidInputError(f"bad Horizon database URL {url!r}: {exc}") from None
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (ImportError, sa.exc.ArgumentError) as exc:
        raise InvalidInputError(f"cannot use Horizon database URL {parsed!r}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    try:
        metadata.create_all(engine)
        _ensure_username_index(engine)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise UnavailableError(f"cannot reach the Horizon database {parsed!r}: {exc.orig}") from None
    except BaseException:
        engine.dispose()
        raise
    return engine
