"""Caller tokens: stored as salted scrypt hashes, never in plain text."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

__all__ = ["TokenVerifier", "hash_token", "new_token", "verify_token"]

# n=2**14, r=8 is the interactive-login strength of the scrypt paper (~16 MiB, tens of ms): tokens are checked
# once per connection or cached by the services, not on every request.
_N, _R, _P = 1 << 14, 8, 1
_SCHEME = "scrypt"


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$<salt hex>$<hash hex>`` of ``token`` with a fresh 16-byte salt."""
    if not token:
        raise ValueError("empty token")
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(token.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"{_SCHEME}${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_token(token: str, token_hash: str) -> bool:
    """True when ``token`` hashes to ``token_hash`` (constant-time compare); False for a malformed hash."""
    parts = token_hash.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME or not token:
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, want = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
        got = hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=len(want), maxmem=1 << 26)
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def is_token_hash(value: str) -> bool:
    """True when ``value`` looks like a hash made by :func:`hash_token`."""
    parts = value.split("$")
    return len(parts) == 6 and parts[0] == _SCHEME


class TokenVerifier:
    """:func:`verify_token` with a memory, for checking a token on every request.

    scrypt costs ~50 ms of CPU by design, which is right for a stored secret and ruinous per call, so each
    (stored hash, token) pair is checked once and its answer kept in a bounded LRU table; bad tokens are
    remembered too, so repeating one costs nothing either. The table never holds a token: its keys are a
    BLAKE2b of the token keyed with a random per-process secret. A changed or revoked token has a new stored
    hash, so old answers simply stop matching."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._secret = secrets.token_bytes(32)
        self._known: OrderedDict[tuple[str, bytes], bool] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def _key(self, token: str, token_hash: str) -> tuple[str, bytes]:
        return token_hash, hashlib.blake2b(token.encode(), key=self._secret, digest_size=32).digest()

    def known(self, token: str, token_hash: str) -> bool | None:
        """The remembered answer for this pair, or None when it was not checked yet (cheap: no scrypt)."""
        key = self._key(token, token_hash)
        with self._lock:
            answer = self._known.get(key)
            if answer is not None:
                self._known.move_to_end(key)
            return answer

    def verify(self, token: str, token_hash: str) -> bool:
        """True when ``token`` hashes to ``token_hash``; scrypt runs only the first time a pair is seen."""
        answer = self.known(token, token_hash)
        if answer is not None:
            return answer
        answer = verify_token(token, token_hash)
        with self._lock:
            self._known[self._key(token, token_hash)] = answer
            while len(self._known) > self._max:
                self._known.popitem(last=False)
        return answer
