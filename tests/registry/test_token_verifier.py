"""TokenVerifier: scrypt once per (stored hash, token), the same answers as verify_token."""

from __future__ import annotations

import pytest

from online_feature_store.registry import tokens
from online_feature_store.registry.tokens import TokenVerifier, hash_token


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = tokens.verify_token

    def counted(token: str, token_hash: str) -> bool:
        calls.append(token)
        return real(token, token_hash)

    monkeypatch.setattr(tokens, "verify_token", counted)
    return calls


def test_each_pair_is_checked_once(scrypt_calls: list[str]) -> None:
    stored = hash_token("good")
    verifier = TokenVerifier()
    assert verifier.known("good", stored) is None
    assert [verifier.verify("good", stored) for _ in range(3)] == [True, True, True]
    assert [verifier.verify("bad", stored) for _ in range(3)] == [False, False, False]
    assert scrypt_calls == ["good", "bad"]  # a repeated bad token costs nothing either
    assert verifier.known("good", stored) is True
    assert verifier.known("bad", stored) is False


def test_a_new_stored_hash_is_checked_afresh(scrypt_calls: list[str]) -> None:
    """Rotating a caller's token changes its stored hash: the old token stops working at once."""
    verifier = TokenVerifier()
    old_hash = hash_token("old")
    assert verifier.verify("old", old_hash)
    new_hash = hash_token("new")
    assert not verifier.verify("old", new_hash)
    assert verifier.verify("new", new_hash)
    assert verifier.verify("old", old_hash)  # still true for the hash it was checked against
    assert scrypt_calls == ["old", "old", "new"]


def test_the_table_is_bounded(scrypt_calls: list[str]) -> None:
    stored = hash_token("t0")
    verifier = TokenVerifier(max_entries=2)
    for token in ("t0", "x1", "x2"):  # t0 is the oldest and is evicted by the third
        verifier.verify(token, stored)
    assert verifier.known("t0", stored) is None
    assert verifier.verify("t0", stored)
    assert scrypt_calls == ["t0", "x1", "x2", "t0"]


def test_no_token_is_kept_in_the_table() -> None:
    verifier = TokenVerifier()
    stored = hash_token("secret-token")
    verifier.verify("secret-token", stored)
    assert all(b"secret-token" not in digest for _, digest in verifier._known)
