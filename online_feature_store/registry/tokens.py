"""Caller tokens: generated high-entropy secrets, stored only as salted hashes.

A token is made by ``ofs registry new-token`` (:func:`new_token`: 256 random bits) and stored as
``hmac-sha256$<salt hex>$<digest hex>``: HMAC-SHA256 of the token keyed with a fresh 16-byte salt. Checking
one costs about two microseconds, so a server can check every token of every call, and a flood of wrong
tokens costs next to nothing.

Why a fast hash, and why no server pepper: a slow KDF (scrypt, argon2) exists to make guessing a secret
chosen by a person expensive once its hash is stolen. A caller token is not chosen by a person: it is at
least :data:`MIN_TOKEN_CHARS` characters (``ofs registry apply`` refuses shorter ones) and in practice
``new_token``'s 256 random bits, and searching even 2**128 candidates is out of reach at any hash speed.
A KDF adds nothing against a stolen registry and, checked on the request path, gives anyone who knows a
caller id (Horizon lists them) a ~100 ms CPU lever per request. A pepper (a server-wide secret key) would
only help low-entropy secrets, and it would have to reach every process that applies or checks tokens
(each ``ofs serve`` worker, the consumer, Horizon, the CLI) and be rotated with all of them; losing it
would lock every caller out. The per-hash salt keeps equal tokens from having equal hashes.

Hashes made before this scheme (``scrypt$n$r$p$<salt>$<hash>``) still verify, through
:class:`TokenVerifier`, which puts a limiter in front of the KDF. Re-applying the caller with its token
(``ofs registry apply``) replaces such a hash with a fast one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from online_feature_store.errors import AuthError, InvalidInputError

__all__ = [
    "MIN_TOKEN_CHARS",
    "TokenCheckRefusedError",
    "TokenVerifier",
    "check_token_strength",
    "hash_token",
    "is_legacy_hash",
    "is_token_hash",
    "new_token",
    "verify_token",
]

MIN_TOKEN_CHARS = 32
"""Shortest token ``ofs registry apply`` accepts (``new_token`` makes 43 characters)."""

_SCHEME = "hmac-sha256"
_SALT_BYTES = 16
_LEGACY = "scrypt"


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe, 43 characters)."""
    return secrets.token_urlsafe(32)


def check_token_strength(caller_id: str, token: str, source: str = "") -> None:
    """Raises :class:`InvalidInputError` when ``token`` is too short to be a generated secret."""
    if len(token) < MIN_TOKEN_CHARS:
        where = f" (from {source})" if source else ""
        raise InvalidInputError(
            f"caller {caller_id!r}: the token{where} has {len(token)} characters; a caller token must be a "
            f"random secret of at least {MIN_TOKEN_CHARS} characters: make one with `ofs registry new-token`"
        )


def _digest(token: str, salt: bytes) -> bytes:
    return hmac.new(salt, token.encode(), hashlib.sha256).digest()


def hash_token(token: str, *, salt: bytes | None = None) -> str:
    """``hmac-sha256$<salt hex>$<digest hex>`` of ``token`` with a fresh 16-byte salt."""
    if not token:
        raise ValueError("empty token")
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    return f"{_SCHEME}${salt.hex()}${_digest(token, salt).hex()}"


def _hex(value: str, size: int) -> bytes | None:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if len(raw) == size else None


def _parse_fast(token_hash: str) -> tuple[bytes, bytes] | None:
    parts = token_hash.split("$")
    if len(parts) != 3 or parts[0] != _SCHEME:
        return None
    salt, want = _hex(parts[1], _SALT_BYTES), _hex(parts[2], hashlib.sha256().digest_size)
    return None if salt is None or want is None else (salt, want)


def is_legacy_hash(token_hash: str) -> bool:
    """True for a ``scrypt$…`` hash (made before the fast scheme; checked through a KDF)."""
    parts = token_hash.split("$")
    return len(parts) == 6 and parts[0] == _LEGACY


def is_token_hash(value: str) -> bool:
    """True when ``value`` looks like a hash made by :func:`hash_token` (or a legacy scrypt hash)."""
    return _parse_fast(value) is not None or is_legacy_hash(value)


def _verify_scrypt(token: str, token_hash: str) -> bool:
    parts = token_hash.split("$")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, want = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
        got = hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=len(want), maxmem=1 << 26)
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def verify_token(token: str, token_hash: str) -> bool:
    """True when ``token`` hashes to ``token_hash`` (constant-time compare); False for a malformed hash.
    A legacy scrypt hash costs a KDF run here: services check tokens through :class:`TokenVerifier`."""
    if not token:
        return False
    fast = _parse_fast(token_hash)
    if fast is not None:
        salt, want = fast
        return hmac.compare_digest(_digest(token, salt), want)
    if is_legacy_hash(token_hash):
        return _verify_scrypt(token, token_hash)
    return False


class TokenCheckRefusedError(AuthError):
    """An unseen token against a legacy scrypt hash that is not checked now: the limiter's budget is
    spent (``busy`` False: ``RESOURCE_EXHAUSTED``), or another token's KDF is running (``busy`` True:
    ``UNAVAILABLE``, retry shortly)."""

    def __init__(self, message: str, *, busy: bool, retry_after: float) -> None:
        super().__init__(message)
        self.busy = busy
        self.retry_after = retry_after


@dataclass(frozen=True)
class Budget:
    """A token bucket: ``burst`` checks at once, then one more every ``every`` seconds."""

    burst: int
    every: float

    def describe(self) -> str:
        return f"{self.burst} at once, then one per {self.every:g} s"


PER_CALLER = Budget(burst=4, every=5.0)
"""Unseen-token KDF checks per caller id (a caller's token needs one check per process)."""
PER_PEER = Budget(burst=4, every=5.0)
"""Unseen-token KDF checks per client address."""
OVERALL = Budget(burst=8, every=0.5)
"""Unseen-token KDF checks per process, all callers and addresses together (at most ~25 % of one core)."""


class _Buckets:
    """Token buckets by key, at most ``max_keys`` of them (the least recently used is forgotten, which
    only gives its key a full bucket again)."""

    def __init__(self, budget: Budget, max_keys: int) -> None:
        self.budget = budget
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._max = max_keys

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may check again (0: now)."""
        tokens, _ = self._level(key, now)
        return 0.0 if tokens >= 1 else (1 - tokens) * self.budget.every

    def take(self, key: str, now: float) -> None:
        tokens, _ = self._level(key, now)
        self._state[key] = (tokens - 1, now)
        self._state.move_to_end(key)
        while len(self._state) > self._max:
            self._state.popitem(last=False)

    def _level(self, key: str, now: float) -> tuple[float, float]:
        tokens, at = self._state.get(key, (float(self.budget.burst), now))
        return min(float(self.budget.burst), tokens + (now - at) / self.budget.every), at


class _Flight:
    """One KDF check in progress; threads presenting the same token wait for its answer."""

    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer = False


class TokenVerifier:
    """Checks a caller's token on every request, cheaply whatever the caller sends.

    A fast hash (:func:`hash_token`) is simply checked: microseconds, nothing remembered. A legacy
    scrypt hash costs ~100 ms of CPU per check, so:

    - a token that verified is kept in a table of its own, one entry per caller id (so bounded by the
      callers of the registry): nothing a stranger sends can evict it;
    - a wrong token is remembered in a bounded LRU of failures (repeating it costs nothing);
    - an unseen token runs the KDF only within the :data:`PER_PEER`, :data:`PER_CALLER` and
      :data:`OVERALL` budgets, and one KDF at a time in the process (a check of the same token waits for
      the running one; another token is refused as busy): a flood of random tokens costs at most a
      bounded slice of one thread, and the refused calls get :class:`TokenCheckRefusedError`.

    The tables never hold a token: they keep a BLAKE2b of it keyed with a random per-process secret. A
    changed or revoked token has a new stored hash, so old answers simply stop matching."""

    def __init__(
        self,
        max_failures: int = 4096,
        *,
        per_caller: Budget = PER_CALLER,
        per_peer: Budget = PER_PEER,
        overall: Budget = OVERALL,
    ) -> None:
        self._secret = secrets.token_bytes(32)
        self._good: dict[str, tuple[str, bytes]] = {}  # caller id -> (stored hash, token digest)
        self._bad: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._max_bad = max_failures
        self._flights: dict[tuple[str, bytes], _Flight] = {}
        self._callers = _Buckets(per_caller, max_keys=65536)
        self._peers = _Buckets(per_peer, max_keys=65536)
        self._overall = _Buckets(overall, max_keys=1)
        self._lock = threading.Lock()
        self.kdf_runs = 0
        """KDF checks run so far (for tests and metrics)."""

    def _digest(self, token: str) -> bytes:
        return hashlib.blake2b(token.encode(), key=self._secret, digest_size=32).digest()

    def verify(self, caller_id: str, token: str, token_hash: str, peer: str = "") -> bool:
        """True when ``token`` is the token of ``token_hash`` (the stored hash of caller ``caller_id``);
        ``peer`` is the client's address. Raises :class:`TokenCheckRefusedError` for an unseen token of a
        legacy hash that the limiter does not check now."""
        if not is_legacy_hash(token_hash):
            return verify_token(token, token_hash)
        key = (token_hash, self._digest(token))
        with self._lock:
            if self._good.get(caller_id) == key:
                return True
            if key in self._bad:
                self._bad.move_to_end(key)
                return False
            flight = self._flights.get(key)
            mine = flight is None
            if flight is None:
                self._admit(caller_id, peer)
                flight = self._flights[key] = _Flight()
                self.kdf_runs += 1
        if not mine:
            flight.done.wait()
            return flight.answer
        try:
            flight.answer = verify_token(token, token_hash)
        finally:
            with self._lock:
                del self._flights[key]
                if flight.answer:
                    self._good[caller_id] = key
                else:
                    self._bad[key] = None
                    while len(self._bad) > self._max_bad:
                        self._bad.popitem(last=False)
            flight.done.set()
        return flight.answer

    def known(self, caller_id: str, token: str, token_hash: str) -> bool | None:
        """The remembered answer for a legacy hash, or None when this token was not checked yet."""
        key = (token_hash, self._digest(token))
        with self._lock:
            if self._good.get(caller_id) == key:
                return True
            return False if key in self._bad else None

    def _admit(self, caller_id: str, peer: str) -> None:
        """Takes one check from every budget (holding the lock), or raises why not."""
        if self._flights:
            raise TokenCheckRefusedError(
                f"caller {caller_id!r}: another token is being checked against an old scrypt hash (one "
                "such check at a time); retry shortly, or re-apply the caller's token to store a fast hash",
                busy=True,
                retry_after=0.2,
            )
        now = time.monotonic()
        limits = (
            (self._peers, peer, f"from {peer or 'this client'}"),
            (self._callers, caller_id, f"for caller {caller_id!r}"),
            (self._overall, "", "on this server"),
        )
        for buckets, bucket_key, scope in limits:
            wait = buckets.wait(bucket_key, now)
            if wait > 0:
                raise TokenCheckRefusedError(
                    f"too many unseen tokens checked {scope} against caller {caller_id!r}'s old scrypt hash "
                    f"(limit {buckets.budget.describe()}); retry in {wait:.1f} s, or re-apply the caller's "
                    "token (`ofs registry apply`) to store a fast hash that has no such limit",
                    busy=False,
                    retry_after=wait,
                )
        for buckets, bucket_key, _ in limits:
            buckets.take(bucket_key, now)
