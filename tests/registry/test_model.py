"""Pure parts of the registry: key ordering, tokens, YAML parsing and export."""

from __future__ import annotations

import pytest

from online_feature_store import InvalidInputError, NotFoundError
from online_feature_store.registry import RegistryState, Snapshot, hash_token, reconcile, verify_token
from online_feature_store.registry.yaml_io import dump_yaml, parse_spec, state_to_dict

from .helpers import base, spec


def snapshot() -> Snapshot:
    return Snapshot(reconcile(RegistryState(), spec()), 7)


def test_canonical_key_order() -> None:
    snap = snapshot()
    assert snap.canonical_key_order("catalog", ["catalog_id", "region"]) == [0, 1]
    assert snap.canonical_key_order("catalog", ["region", "catalog_id"]) == [1, 0]
    with pytest.raises(InvalidInputError, match=r"missing \['region'\]"):
        snap.canonical_key_order("catalog", ["catalog_id"])
    with pytest.raises(InvalidInputError, match=r"unknown \['zone'\]"):
        snap.canonical_key_order("catalog", ["catalog_id", "region", "zone"])
    with pytest.raises(NotFoundError, match="unknown entity 'nope'"):
        snap.canonical_key_order("nope", [])


def test_lookups() -> None:
    snap = snapshot()
    assert snap.revision == 7
    with pytest.raises(NotFoundError, match="entity 'user' has no feature group 'x'"):
        snap.feature_group("user", "x")
    with pytest.raises(NotFoundError, match="has no version 5"):
        snap.block_meta("user", "activity", 5)


def test_token_hashing() -> None:
    h1, h2 = hash_token("secret"), hash_token("secret")
    assert h1 != h2  # per-token salt
    assert "secret" not in h1
    assert verify_token("secret", h1)
    assert verify_token("secret", h2)
    assert not verify_token("Secret", h1)
    assert not verify_token("secret", "plain")
    with pytest.raises(ValueError, match="empty token"):
        hash_token("")


def test_export_round_trips() -> None:
    state = reconcile(RegistryState(), spec())
    doc = state_to_dict(state)
    assert reconcile(state, parse_spec(doc)) == state
    assert "DataTypeFP16Vector" in dump_yaml(state)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"entitys": []}, r"registry file: unknown field\(s\) \['entitys'\]"),
        (
            {"entities": [{"label": "u", "keys": [{"label": "k"}], "feature_groups": [{"label": "g"}]}]},
            "missing field 'data_type'",
        ),
        ({"entities": [{"label": "u", "keys": "k"}]}, "field 'keys' must be list"),
        (
            {
                "entities": [
                    {
                        "label": "u",
                        "keys": [],
                        "feature_groups": [
                            {"label": "g", "data_type": "fp32", "ttl_seconds": "1h", "features": []}
                        ],
                    }
                ]
            },
            "field 'ttl_seconds' must be int",
        ),
        (
            {
                "entities": [
                    {
                        "label": "u",
                        "keys": [],
                        "feature_groups": [
                            {
                                "label": "g",
                                "data_type": "fp32",
                                "features": [{"label": "f", "string_length": 4}],
                            }
                        ],
                    }
                ]
            },
            "string_length is only for string types",
        ),
    ],
)
def test_yaml_errors(doc: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        reconcile(RegistryState(), parse_spec(doc))


def test_base_document_is_valid() -> None:
    assert reconcile(RegistryState(), parse_spec(base())).entity("user") is not None
