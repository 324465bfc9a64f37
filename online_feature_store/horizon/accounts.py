"""Horizon's accounts: users and their roles, passwords, sessions, and who may create an account.

Nobody can make themselves an account unless the configuration allows it: while no user exists the
first account may register itself as the admin (``first_run_registration``), or ``ofs horizon
create-user`` makes it; after that admins create accounts (``allow_self_registration`` reopens
registration, as viewers). User names are unique whatever their case, down to a unique index on
``lower(username)``. Passwords must pass :func:`~online_feature_store.horizon.auth.password_problem`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from online_feature_store.errors import ConflictError, NotFoundError, OfsError
from online_feature_store.horizon import auth
from online_feature_store.horizon.changes import InvalidFieldsError
from online_feature_store.horizon.config import HorizonConfig
from online_feature_store.horizon.db import Role, record, revoked_sessions, settings, to_utc, users, utcnow
from online_feature_store.horizon.throttle import BadCredentialsError

__all__ = ["Accounts", "ForbiddenError", "SessionError", "WrongPasswordError", "user_json"]


class SessionError(OfsError):
    """No valid Horizon session: not signed in, a bad, expired or revoked session token (HTTP 401). Not
    the serving API's :class:`~online_feature_store.errors.AuthError` (a refused caller id or token)."""


class ForbiddenError(OfsError, PermissionError):
    """A valid session without the right to do this (HTTP 403)."""


class WrongPasswordError(SessionError, BadCredentialsError):
    """A wrong user name or password (HTTP 401); ``account`` names the existing account it was for
    (lower-case), so the sign-in throttle counts the failure against it."""

    def __init__(self, message: str, account: str | None) -> None:
        super().__init__(message)
        self.account = account


def user_json(row: Any, *, detail: bool = False) -> dict[str, Any]:
    """A user as the API shows it (``created_at`` too with ``detail``)."""
    out = {"username": row.username, "role": Role(row.role).value}
    if detail:
        out["created_at"] = to_utc(row.created_at)
    return out


class Accounts:
    """The accounts in Horizon's database ``engine``; sessions signed with ``secret`` (without one, as
    ``ofs horizon create-user`` uses it, accounts can be managed but nobody can sign in). Thread-safe."""

    def __init__(self, config: HorizonConfig, engine: Engine, secret: str | None = None) -> None:
        self.config = config
        self.engine = engine
        self.secret = secret
        self.passwords = auth.Passwords(config.password_profile, max_concurrent=config.max_concurrent_hashes)

    def _signing_key(self) -> str:
        if self.secret is None:
            raise SessionError("these accounts were opened without the session secret: no session here")
        return self.secret

    @staticmethod
    def user_row(conn: Connection, username: str) -> Any:
        """The user row of ``username`` in any case (names are unique case-insensitively), or ``None``."""
        return conn.execute(
            sa.select(users).where(sa.func.lower(users.c.username) == username.lower())
        ).first()

    def _taken(self, username: str) -> ConflictError:
        with self.engine.connect() as conn:
            row = self.user_row(conn, username)
        same = row is not None and row.username != username
        return ConflictError(
            f"username {username!r} is taken"
            + (f" (user names are case-insensitive: {row.username!r} exists)" if same else "")
        )

    def _check_password(self, username: str, password: str, field: str = "password") -> None:
        problem = auth.password_problem(username, password)
        if problem is not None:
            raise InvalidFieldsError(
                [{"loc": ["body", field], "msg": problem, "type": "value_error.password"}]
            )

    def _first_run(self) -> bool:
        """No account exists and the first admin has not been claimed."""
        with self.engine.connect() as conn:
            claimed = conn.execute(sa.select(settings).where(settings.c.name == "first_admin")).first()
            anyone = conn.execute(sa.select(users.c.username).limit(1)).first()
        return claimed is None and anyone is None

    def first_run_open(self) -> bool:
        """Whether ``register`` would make the first admin now (first-run registration is on and nobody
        has an account yet)."""
        return self.config.first_run_registration and self._first_run()

    def registration_open(self) -> bool:
        """Whether ``register`` may create an account now: self-registration is on, or it is the first
        run (no user yet) and first-run registration is on."""
        return self.config.allow_self_registration or self.first_run_open()

    def closed_error(self) -> ForbiddenError:
        """The refusal of a registration while it is closed."""
        return ForbiddenError(
            "self-registration is off: an admin creates accounts (Users page, POST /api/v1/users, or "
            "`ofs horizon create-user`)"
        )

    def register(self, username: str, password: str) -> dict[str, Any]:
        """A new account by its owner, when :meth:`registration_open`: the first one ever is an admin,
        later ones (``allow_self_registration``) viewers. ``ForbiddenError`` when registration is closed,
        ``InvalidFieldsError`` for a weak password, ``ConflictError`` when the name is taken in any case."""
        if not self.registration_open():
            raise self.closed_error()
        self._check_password(username, password)
        password_hash = self.passwords.hash(password)
        for _ in range(3):
            with self.engine.connect() as conn:
                if self.user_row(conn, username) is not None:
                    raise self._taken(username)
            first = self.first_run_open()
            if not first and not self.config.allow_self_registration:
                raise self.closed_error()  # someone else became the first admin meanwhile
            role = Role.ADMIN if first else Role.VIEWER
            try:
                with self.engine.begin() as conn:
                    if first:  # the primary key lets only one registration claim this
                        conn.execute(settings.insert().values(name="first_admin", value=username))
                    conn.execute(
                        users.insert().values(
                            username=username, password_hash=password_hash, role=role, created_at=utcnow()
                        )
                    )
                    record(conn, username, "user.register", f"registered as {role.value}")
            except sa.exc.IntegrityError:
                continue  # lost a race (for the name, or for being first): look again
            return {"username": username, "role": role.value}
        raise self._taken(username)

    def create_user(self, actor: str, username: str, password: str, role: Role) -> dict[str, Any]:
        """A new account made by an admin (``actor``) or by ``ofs horizon create-user``, with ``role``.
        ``InvalidFieldsError`` for a weak password, ``ConflictError`` when the name is taken in any case.
        The first account made this way also closes first-run registration."""
        self._check_password(username, password)
        with self.engine.connect() as conn:
            if self.user_row(conn, username) is not None:
                raise self._taken(username)
        password_hash = self.passwords.hash(password)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    users.insert().values(
                        username=username, password_hash=password_hash, role=role, created_at=utcnow()
                    )
                )
                record(conn, actor, "user.create", f"{username} as {role.value}")
        except sa.exc.IntegrityError:
            raise self._taken(username) from None
        try:
            with self.engine.begin() as conn:
                if conn.execute(sa.select(settings).where(settings.c.name == "first_admin")).first() is None:
                    conn.execute(settings.insert().values(name="first_admin", value=username))
        except sa.exc.IntegrityError:
            pass  # claimed meanwhile: all the same
        with self.engine.connect() as conn:
            return user_json(self.user_row(conn, username), detail=True)

    def login(self, username: str, password: str) -> dict[str, Any]:
        """A new session for valid credentials; :class:`WrongPasswordError` otherwise (not saying which
        part is wrong). The name may be typed in any case; the session is the account's."""
        with self.engine.connect() as conn:
            row = self.user_row(conn, username)
        if not self.passwords.verify(row.password_hash if row else None, password) or row is None:
            raise WrongPasswordError("invalid username or password", row.username.lower() if row else None)
        token, session = auth.issue_token(self._signing_key(), row.username, self.config.session_ttl_seconds)
        return {"token": token, "expires_at": session.expires_at, **user_json(row)}

    def change_password(self, username: str, current: str, new: str) -> None:
        """Set ``username``'s password to ``new`` after checking ``current`` (:class:`WrongPasswordError`)
        and the password rules (``InvalidFieldsError`` at ``new_password``)."""
        with self.engine.connect() as conn:
            row = self.user_row(conn, username)
        if row is None or not self.passwords.verify(row.password_hash, current):
            raise WrongPasswordError("the current password is wrong", row.username.lower() if row else None)
        self._check_password(row.username, new, "new_password")
        password_hash = self.passwords.hash(new)
        with self.engine.begin() as conn:
            conn.execute(
                users.update().where(users.c.username == row.username).values(password_hash=password_hash)
            )
            record(conn, row.username, "user.password", "changed their password")

    def authenticate(self, token: str) -> tuple[dict[str, Any], auth.Session]:
        """The user and session of a bearer token; ``SessionError`` when it is invalid, expired or revoked."""
        try:
            session = auth.read_token(self._signing_key(), token)
        except auth.TokenError as exc:
            raise SessionError(str(exc)) from None
        with self.engine.connect() as conn:
            revoked = conn.execute(
                sa.select(revoked_sessions.c.jti).where(revoked_sessions.c.jti == session.jti)
            ).first()
            row = conn.execute(sa.select(users).where(users.c.username == session.username)).first()
        if revoked is not None:
            raise SessionError("session ended (logged out); log in again")
        if row is None:
            raise SessionError(f"user {session.username!r} no longer exists")
        return user_json(row), session

    def logout(self, session: auth.Session) -> None:
        """Revoke ``session`` (until it would have expired anyway)."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(revoked_sessions.delete().where(revoked_sessions.c.expires_at < now))
            exists = conn.execute(
                sa.select(revoked_sessions.c.jti).where(revoked_sessions.c.jti == session.jti)
            ).first()
            if exists is None:
                conn.execute(revoked_sessions.insert().values(jti=session.jti, expires_at=session.expires_at))

    def users(self) -> list[dict[str, Any]]:
        """Every user."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.username)).all()
        return [user_json(r, detail=True) for r in rows]

    def set_role(self, actor: str, username: str, role: Role) -> dict[str, Any]:
        """Change a user's role; refuses to demote the last admin (``ConflictError``)."""
        with self.engine.begin() as conn:
            before = self.user_row(conn, username)
            if before is None:
                raise NotFoundError(f"unknown user {username!r}")
            username = before.username
            others = (
                sa.select(sa.func.count())
                .select_from(users)
                .where(users.c.role == Role.ADMIN, users.c.username != username)
                .scalar_subquery()
            )
            keeps_an_admin = sa.true() if role == Role.ADMIN else others > 0
            done = conn.execute(
                users.update().where(users.c.username == username, keeps_an_admin).values(role=role)
            )
            if done.rowcount != 1:
                raise ConflictError(f"{username!r} is the last admin; make another user admin first")
            record(conn, actor, "user.role", f"{username}: {Role(before.role).value} -> {role.value}")
            row = conn.execute(sa.select(users).where(users.c.username == username)).one()
        return user_json(row, detail=True)
