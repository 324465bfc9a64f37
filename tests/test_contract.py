"""The RPC contract is defined once (:mod:`online_feature_store.contract`): the header names and method
paths appear as strings in no other module of the package, ``AuthError`` is one class, and the server's
error table and the client's inverse agree."""

from __future__ import annotations

import ast
from pathlib import Path

import grpc
import pytest

import online_feature_store
from online_feature_store import contract
from online_feature_store.errors import AuthError, OfsError
from online_feature_store.server.calls import STATUS_OF as SERVER_STATUS_OF

PACKAGE = Path(online_feature_store.__file__).parent
CONTRACT_STRINGS = {
    contract.CALLER_HEADER,
    contract.TOKEN_HEADER,
    contract.RETRIEVE_SERVICE,
    contract.PERSIST_SERVICE,
    *(rpc.path for rpc in contract.RPCS.values()),
}


def _sources() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_proto" in path.parts:  # generated from proto/
            continue
        out.append((str(path.relative_to(PACKAGE)), ast.parse(path.read_text(encoding="utf-8"))))
    return out


def test_only_the_contract_module_spells_the_headers_and_paths() -> None:
    assert contract.CALLER_HEADER == "online-feature-store-caller-id"
    assert contract.TOKEN_HEADER == "online-feature-store-auth-token"
    found = []
    for name, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in CONTRACT_STRINGS and name != "contract.py":
                found.append(f"{name}:{node.lineno}: {node.value}")
    assert not found, found


def test_one_auth_error_class() -> None:
    defined = [
        name
        for name, tree in _sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name == "AuthError"
    ]
    assert defined == ["errors.py"]


def test_the_tables_are_inverse() -> None:
    for status, cls in contract.ERROR_OF.items():
        assert hasattr(grpc.StatusCode, status)
        if cls is not AuthError:  # the server's auth check answers those itself
            assert contract.status_of(cls("x")) == status
    for cls, status in contract.STATUS_OF:
        assert contract.ERROR_OF.get(status, OfsError) in (cls, OfsError)
    assert [(cls, code.name) for cls, code in SERVER_STATUS_OF] == list(contract.STATUS_OF)


@pytest.mark.parametrize(
    ("status", "cls", "message"),
    [
        ("NOT_FOUND", "NotFoundError", "no entity 'x'"),
        ("UNAUTHENTICATED", "AuthError", "no entity 'x'"),
        ("DEADLINE_EXCEEDED", "DeadlineExceededError", "no entity 'x'"),
        ("DATA_LOSS", "OfsError", "PersistFeatures: DATA_LOSS: no entity 'x'"),
    ],
)
def test_error_of(status: str, cls: str, message: str) -> None:
    err = contract.error_of(status, "no entity 'x'", "PersistFeatures")
    assert (type(err).__name__, str(err), err.status) == (cls, message, status)
    if cls == "OfsError":
        assert contract.call_message(err, "PersistFeatures") == message
    else:
        assert contract.call_message(err, "PersistFeatures") == f"PersistFeatures: {status}: {message}"
