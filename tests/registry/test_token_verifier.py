"""Caller tokens: fast salted hashes for generated tokens, legacy scrypt hashes behind a limiter, and a
table of good answers that no flood of bad tokens can evict."""

from __future__ import annotations

import hashlib
import secrets
import threading
from typing import Any

import pytest

from online_feature_store.errors import InvalidInputError
from online_feature_store.registry import tokens
from online_feature_store.registry.model import Caller, RegistryState
from online_feature_store.registry.spec import CallerSpec, RegistrySpec, diff_states, reconcile
from online_feature_store.registry.tokens import (
    MIN_TOKEN_CHARS,
    Budget,
    TokenCheckRefusedError,
    TokenVerifier,
    check_token_strength,
    hash_token,
    is_legacy_hash,
    is_token_hash,
    new_token,
    verify_token,
)

GENEROUS = Budget(burst=1000, every=0.001)


def legacy_hash(token: str) -> str:
    """A hash as registries stored them before the fast scheme (scrypt n=2**14, r=8, p=1)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=1 << 14, r=8, p=1, dklen=32)
    return f"scrypt${1 << 14}$8$1${salt.hex()}${digest.hex()}"


@pytest.fixture
def kdf_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every hashlib.scrypt call made from here on (the KDF of legacy hashes)."""
    calls: list[bytes] = []
    real = hashlib.scrypt

    def counted(password: bytes, **kwargs: Any) -> bytes:
        calls.append(password)
        return real(password, **kwargs)

    monkeypatch.setattr(tokens.hashlib, "scrypt", counted)
    return calls


def test_new_hashes_are_fast_and_salted(kdf_calls: list[bytes]) -> None:
    token = new_token()
    assert len(token) >= MIN_TOKEN_CHARS
    stored = hash_token(token)
    scheme, salt, digest = stored.split("$")
    assert (scheme, len(salt), len(digest)) == ("hmac-sha256", 32, 64)
    assert is_token_hash(stored)
    assert not is_legacy_hash(stored)
    assert hash_token(token) != stored  # a fresh salt each time
    assert verify_token(token, stored)
    assert not verify_token(token + "x", stored)
    assert not verify_token("", stored)
    assert kdf_calls == []


@pytest.mark.parametrize(
    "value",
    ["", "hmac-sha256$00$00", "hmac-sha256$" + "0" * 32 + "$zz", "scrypt$1$2$3$4", "sha1$ab$cd", "plain"],
)
def test_malformed_hashes_are_not_hashes(value: str) -> None:
    assert not is_token_hash(value)
    assert not verify_token("some-token", value)


def test_a_wrong_token_for_a_fast_hash_runs_no_kdf(kdf_calls: list[bytes]) -> None:
    token = new_token()
    stored = hash_token(token)
    verifier = TokenVerifier(per_caller=Budget(1, 1000.0), per_peer=Budget(1, 1000.0))
    for _ in range(1000):
        assert not verifier.verify("ranker", new_token(), stored, "10.0.0.9")
    assert verifier.verify("ranker", token, stored, "10.0.0.9")
    assert kdf_calls == []
    assert verifier.kdf_runs == 0


def test_legacy_hashes_still_verify_once_per_token(kdf_calls: list[bytes]) -> None:
    stored = legacy_hash("an-old-short-token")
    kdf_calls.clear()
    assert verify_token("an-old-short-token", stored)
    assert is_token_hash(stored)
    assert is_legacy_hash(stored)
    verifier = TokenVerifier()
    assert verifier.known("ranker", "an-old-short-token", stored) is None
    assert [verifier.verify("ranker", "an-old-short-token", stored) for _ in range(3)] == [True] * 3
    assert [verifier.verify("ranker", "bad", stored) for _ in range(3)] == [False] * 3
    assert kdf_calls == [b"an-old-short-token"] * 2 + [b"bad"]  # verify_token above, then one each
    assert verifier.known("ranker", "an-old-short-token", stored) is True
    assert verifier.known("ranker", "bad", stored) is False


def test_a_new_stored_hash_is_checked_afresh() -> None:
    """Rotating a caller's token changes its stored hash: the old token stops working at once."""
    verifier = TokenVerifier(per_caller=GENEROUS, per_peer=GENEROUS, overall=GENEROUS)
    old_hash = legacy_hash("old")
    assert verifier.verify("ranker", "old", old_hash)
    new_hash = legacy_hash("new")
    assert not verifier.verify("ranker", "old", new_hash)
    assert verifier.verify("ranker", "new", new_hash)
    assert verifier.known("ranker", "old", old_hash) is None  # one good entry per caller: the newest


def test_a_flood_of_random_tokens_never_evicts_a_good_one(kdf_calls: list[bytes]) -> None:
    stored = legacy_hash("the-good-token")
    kdf_calls.clear()
    verifier = TokenVerifier(max_failures=4, per_caller=GENEROUS, per_peer=GENEROUS, overall=GENEROUS)
    assert verifier.verify("ranker", "the-good-token", stored)
    for i in range(20):
        assert not verifier.verify("ranker", f"random-{i}", stored)
    assert verifier.known("ranker", "the-good-token", stored) is True
    assert verifier.verify("ranker", "the-good-token", stored)
    assert kdf_calls.count(b"the-good-token") == 1
    assert len(verifier._bad) == 4  # failures are bounded on their own
    assert verifier.known("ranker", "random-0", stored) is None  # the oldest failure was forgotten


def test_the_limiter_refuses_unseen_tokens_over_budget(kdf_calls: list[bytes]) -> None:
    stored = legacy_hash("the-good-token")
    kdf_calls.clear()
    verifier = TokenVerifier(per_peer=Budget(2, 1000.0), per_caller=Budget(3, 1000.0), overall=GENEROUS)
    assert verifier.verify("ranker", "the-good-token", stored, "10.0.0.1")  # takes one of each budget
    assert not verifier.verify("ranker", "bad-1", stored, "10.0.0.1")
    with pytest.raises(TokenCheckRefusedError) as info:  # the peer's budget is spent
        verifier.verify("ranker", "bad-2", stored, "10.0.0.1")
    assert not info.value.busy
    assert info.value.retry_after > 0
    assert "from 10.0.0.1" in str(info.value)
    assert "2 at once, then one per 1000 s" in str(info.value)
    assert "re-apply the caller's token" in str(info.value)
    # Known answers cost nothing and are never limited.
    assert verifier.verify("ranker", "the-good-token", stored, "10.0.0.1")
    assert not verifier.verify("ranker", "bad-1", stored, "10.0.0.1")
    assert not verifier.verify("ranker", "bad-3", stored, "10.0.0.2")  # another peer: the caller's third
    with pytest.raises(TokenCheckRefusedError) as info:  # the caller's budget is spent, whatever the peer
        verifier.verify("ranker", "bad-4", stored, "10.0.0.3")
    assert "for caller 'ranker'" in str(info.value)
    assert kdf_calls == [b"the-good-token", b"bad-1", b"bad-3"]
    assert verifier.verify("ranker", "the-good-token", stored, "10.0.0.3")


def test_the_overall_budget_bounds_the_process(kdf_calls: list[bytes]) -> None:
    stored = {c: legacy_hash(c) for c in ("a", "b", "c")}
    kdf_calls.clear()
    verifier = TokenVerifier(per_peer=GENEROUS, per_caller=GENEROUS, overall=Budget(2, 1000.0))
    assert not verifier.verify("a", "x", stored["a"], "p1")
    assert not verifier.verify("b", "x", stored["b"], "p2")
    with pytest.raises(TokenCheckRefusedError, match="on this server"):
        verifier.verify("c", "x", stored["c"], "p3")
    assert len(kdf_calls) == 2


def test_one_kdf_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """While one unseen token is checked, another is refused as busy and the same one waits for the
    running check's answer (so a client's first calls in parallel all succeed)."""
    stored = legacy_hash("the-good-token")
    started, release = threading.Event(), threading.Event()
    real = tokens.verify_token
    runs: list[str] = []

    def slow(token: str, token_hash: str) -> bool:
        runs.append(token)
        started.set()
        release.wait(10)
        return real(token, token_hash)

    monkeypatch.setattr(tokens, "verify_token", slow)
    verifier = TokenVerifier()
    answers: list[bool] = []

    def check() -> None:
        answers.append(verifier.verify("ranker", "the-good-token", stored))

    first = threading.Thread(target=check)
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=check)
    second.start()
    with pytest.raises(TokenCheckRefusedError) as info:
        verifier.verify("ranker", "another", stored)
    assert info.value.busy
    assert "one such check at a time" in str(info.value)
    release.set()
    first.join(10)
    second.join(10)
    assert answers == [True, True]
    assert runs == ["the-good-token"]


def test_no_token_is_kept_in_the_tables() -> None:
    verifier = TokenVerifier()
    stored = legacy_hash("secret-token")
    verifier.verify("ranker", "secret-token", stored)
    verifier.verify("ranker", "other-secret", stored)
    kept = [digest for _, digest in verifier._good.values()] + [digest for _, digest in verifier._bad]
    assert len(kept) == 2
    assert all(b"secret" not in digest for digest in kept)


def test_short_tokens_are_refused() -> None:
    check_token_strength("ranker", "x" * MIN_TOKEN_CHARS)
    with pytest.raises(InvalidInputError) as info:
        check_token_strength("ranker", "r-secret", "environment variable OFS_READER_TOKEN")
    message = str(info.value)
    assert "caller 'ranker'" in message
    assert "OFS_READER_TOKEN" in message
    assert "8 characters" in message
    assert f"at least {MIN_TOKEN_CHARS}" in message
    assert "ofs registry new-token" in message


def _apply(state: RegistryState, token: str | None = None, token_hash: str | None = None) -> RegistryState:
    caller = CallerSpec("ranker", "reader", token=token, token_hash=token_hash, token_source="env T")
    return reconcile(state, RegistrySpec(callers=(caller,)))


def test_apply_refuses_short_tokens_and_keeps_the_hash_of_the_same_token() -> None:
    with pytest.raises(
        InvalidInputError, match=r"caller 'ranker': the token \(from env T\) has 5 characters"
    ):
        _apply(RegistryState(), token="short")
    token = new_token()
    first = _apply(RegistryState(), token=token)
    (caller,) = first.callers
    assert caller.token_hash.startswith("hmac-sha256$")
    assert verify_token(token, caller.token_hash)
    assert _apply(first, token=token) == first  # idempotent: the same token keeps its hash
    assert diff_states(first, _apply(first, token=token)) == []
    rotated = _apply(first, token=new_token())
    assert diff_states(first, rotated) == ["~ caller ranker: new token"]


def test_reapplying_a_token_over_its_legacy_hash_upgrades_it(kdf_calls: list[bytes]) -> None:
    token = new_token()
    old = RegistryState(callers=(Caller("ranker", "reader", legacy_hash(token)),))
    kdf_calls.clear()
    upgraded = _apply(old, token=token)
    (caller,) = upgraded.callers
    assert not is_legacy_hash(caller.token_hash)
    assert verify_token(token, caller.token_hash)
    assert diff_states(old, upgraded) == ["~ caller ranker: new token hash (scrypt → hmac-sha256)"]
    assert kdf_calls == []  # no need to check the old hash: a valid new token replaces it either way
    assert _apply(upgraded, token=token) == upgraded
    # A legacy hash given as token_hash is kept as it is (e.g. a restored backup).
    kept = _apply(RegistryState(), token_hash=old.callers[0].token_hash)
    assert kept.callers == old.callers
