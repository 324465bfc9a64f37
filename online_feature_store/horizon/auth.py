"""Passwords (argon2id, at most a few hashed at once) and what a password must be, the session-signing
secret, and session tokens (JWT, HS256).

A session token names its user (``sub``), expires (``exp``) and has an id (``jti``) that logout records as
revoked. The user's role is not in the token: it is read from the database on every call, so a role change
applies at once.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

from online_feature_store.errors import InvalidInputError
from online_feature_store.horizon.config import HorizonConfig

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "MIN_PASSWORD_SCORE",
    "MIN_SECRET_LENGTH",
    "SECRET_FILE",
    "Passwords",
    "Session",
    "TokenError",
    "issue_token",
    "load_secret",
    "password_problem",
    "read_token",
]

SECRET_FILE = "horizon.secret"
MIN_SECRET_LENGTH = 32
"""HS256 keys shorter than its 256-bit output weaken it (RFC 7518 section 3.2)."""
_ALGORITHM = "HS256"


MIN_PASSWORD_LENGTH = 12
MIN_PASSWORD_SCORE = 3
"""zxcvbn's score (0-4) a password needs: 3 is "safely unguessable" (about 10^10 guesses)."""
_ZXCVBN_MAX = 72  # zxcvbn refuses longer input (its matching is superlinear); the rest only adds strength


def password_problem(username: str, password: str) -> str | None:
    """Why ``password`` is not good enough for ``username``, or ``None``: shorter than
    :data:`MIN_PASSWORD_LENGTH`, containing the user name (whatever the case), or easy to guess by
    zxcvbn's estimate (its lists of common passwords, words and names, keyboard and date patterns,
    and the user name itself) below :data:`MIN_PASSWORD_SCORE`."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters (this one has {len(password)})"
    if username and username.lower() in password.lower():
        return "a password must not contain the user name"
    from zxcvbn import zxcvbn

    result = zxcvbn(password[:_ZXCVBN_MAX], user_inputs=[username])
    if int(result["score"]) >= MIN_PASSWORD_SCORE:
        return None
    warning = str(result["feedback"].get("warning") or "").rstrip(".")
    because = f" ({warning})" if warning else ""
    return (
        f"this password is too easy to guess{because}: it is, or is close to, a common password, word, name "
        "or keyboard pattern; a few unrelated words or a password manager's random password will do"
    )


class Passwords:
    """argon2id password hashes with one of argon2-cffi's parameter profiles (``RFC_9106_LOW_MEMORY``:
    64 MiB, 3 passes, the library's default). Verification reads the parameters from each stored hash, so
    a profile change applies to new passwords without breaking old ones.

    At most ``max_concurrent`` hashes (or verifications) run at once; the others wait. Each holds the
    profile's memory while it runs, so :attr:`memory_budget_bytes` bounds what hashing can take."""

    def __init__(self, profile: str = "RFC_9106_LOW_MEMORY", *, max_concurrent: int = 2) -> None:
        parameters = getattr(profiles, profile)
        self._hasher = PasswordHasher.from_parameters(parameters)
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.max_concurrent = max_concurrent
        self.memory_budget_bytes: int = parameters.memory_cost * 1024 * max_concurrent
        """The profile's memory times ``max_concurrent`` (older, costlier hashes may take more)."""
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        """A salted hash of ``password``."""
        with self._slots:
            return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches ``password_hash``; False for a wrong password or a bad hash.
        With ``None`` (no such user) it spends the same time, so a login does not tell which usernames
        exist."""
        if password_hash is None:
            if self._dummy is None:
                self._dummy = self.hash(secrets.token_urlsafe(16))
            self._verify(self._dummy, password)
            return False
        return self._verify(password_hash, password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            with self._slots:
                return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def load_secret(config: HorizonConfig) -> str:
    """The signing secret: from the configuration; else, embedded, the one in ``<data_dir>/horizon.secret``
    (created once, mode 0600). A shared database without a configured secret is an error."""
    if config.secret is not None:
        value = config.secret.get_secret_value()
        if len(value) < MIN_SECRET_LENGTH:
            raise InvalidInputError(
                f"the Horizon secret (OFS_HORIZON_SECRET) must be at least {MIN_SECRET_LENGTH} characters"
            )
        return value
    if not config.embedded():
        raise InvalidInputError(
            "set a Horizon secret (OFS_HORIZON_SECRET or `secret:` in the config file): with a shared "
            "database every Horizon process must sign sessions with the same key"
        )
    return _secret_file(config.resolved_data_dir() / SECRET_FILE)


def _secret_file(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise InvalidInputError(
                f"{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`"
            ) from None
        value = path.read_text(encoding="ascii").strip()
        if len(value) < MIN_SECRET_LENGTH:
            raise InvalidInputError(
                f"{path} holds no valid secret; delete it to generate a new one"
            ) from None
        return value
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value + "\n")
    return value


class TokenError(Exception):
    """A session token that is missing, malformed, badly signed or expired (the message says which)."""


@dataclass(frozen=True)
class Session:
    """A verified session token's claims."""

    username: str
    jti: str
    expires_at: datetime


def issue_token(secret: str, username: str, ttl_seconds: int) -> tuple[str, Session]:
    """A signed session token for ``username`` valid ``ttl_seconds``, and its claims."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    expires = now + timedelta(seconds=ttl_seconds)
    jti = uuid.uuid4().hex
    claims = {"sub": username, "iat": now, "exp": expires, "jti": jti}
    return jwt.encode(claims, secret, algorithm=_ALGORITHM), Session(username, jti, expires)


def read_token(secret: str, token: str) -> Session:
    """The claims of ``token`` after checking its signature and expiry (``TokenError`` otherwise)."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[_ALGORITHM], options={"require": ["sub", "exp", "jti", "iat"]}
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("session expired; log in again") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid session token: {exc}") from None
    sub, jti, exp = claims.get("sub"), claims.get("jti"), claims.get("exp")
    if not isinstance(sub, str) or not isinstance(jti, str) or not isinstance(exp, (int, float)):
        raise TokenError("invalid session token: malformed claims")
    return Session(sub, jti, datetime.fromtimestamp(exp, timezone.utc))
