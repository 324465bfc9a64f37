"""Horizon change requests are held to the registry's schema size bounds (``registry.validate.size_problems``,
the rule ``ofs registry apply`` uses) and its per-feature rules (``registry.spec.build_feature``): the same
message, reported at the field (or at ``features`` for a row over 4 MiB), and nothing is stored."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from online_feature_store.errors import InvalidInputError
from online_feature_store.registry.model import MAX_VECTOR_LENGTH, Key, RegistryState, Store
from online_feature_store.registry.spec import (
    EntitySpec,
    FeatureGroupSpec,
    FeatureSpec,
    RegistrySpec,
    reconcile,
)
from online_feature_store.registry.validate import size_problems
from online_feature_store.types import DataType

from .conftest import Api, approve, submit

STORE = {"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}
ENTITY = {"label": "user", "keys": [{"label": "user_id", "column": "uid"}]}


def vectors(n: int, first: int = 0) -> list[dict[str, Any]]:
    return [{"label": f"v{i}", "vector_length": MAX_VECTOR_LENGTH} for i in range(first, first + n)]


@pytest.fixture
def editor(api: Api, admin: httpx.Client) -> httpx.Client:
    author = api.user("eve", "editor", admin=admin)
    for kind, payload in (("create_store", STORE), ("create_entity", ENTITY)):
        approve(admin, submit(author, kind, payload)["id"])
    return author


def refused(client: httpx.Client, kind: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    r = client.post("/requests", json={"kind": kind, "payload": payload})
    assert r.status_code == 422, r.text
    detail: list[dict[str, Any]] = r.json()["detail"]
    return detail


def test_a_row_over_4_mib_is_refused_with_the_registry_message(
    editor: httpx.Client, admin: httpx.Client
) -> None:
    fg = {
        "entity": "user",
        "label": "emb",
        "data_type": "fp64vector",
        "store": "main",
        "features": vectors(9),
    }
    (err,) = refused(editor, "create_feature_group", fg)
    lengths = [(f["label"], 0, f["vector_length"]) for f in fg["features"]]
    (rule,) = size_problems("user", "emb", DataType.FP64_VECTOR, lengths)
    assert err["loc"] == ["body", "payload", "features"]
    assert err["msg"] == rule.message
    assert "over the limit of 4194304 bytes per feature group row" in err["msg"]
    # Eight fit; adding a ninth to them is refused the same way.
    approve(admin, submit(editor, "create_feature_group", {**fg, "features": vectors(8)})["id"])
    (err,) = refused(
        editor, "add_features", {"entity": "user", "feature_group": "emb", "features": vectors(1, 8)}
    )
    assert (err["loc"], err["msg"]) == (["body", "payload", "features"], rule.message)


def test_a_string_vector_row_counts_its_booked_lengths(editor: httpx.Client) -> None:
    fg = {
        "entity": "user",
        "label": "tags",
        "data_type": "stringvector",
        "store": "main",
        "features": [{"label": "t", "vector_length": MAX_VECTOR_LENGTH, "string_length": 64}],
    }
    (err,) = refused(editor, "create_feature_group", fg)
    (rule,) = size_problems("user", "tags", DataType.STRING_VECTOR, [("t", 64, MAX_VECTOR_LENGTH)])
    # One feature over the row limit on its own: reported at that feature.
    assert (err["loc"], err["msg"]) == (["body", "payload", "features", 0], rule.message)


def test_a_vector_over_65535_is_refused_at_its_field(editor: httpx.Client) -> None:
    fg = {
        "entity": "user",
        "label": "emb",
        "data_type": "fp32vector",
        "store": "main",
        "features": [{"label": "v", "vector_length": 100_000_000}],
    }
    (err,) = refused(editor, "create_feature_group", fg)
    assert err["loc"] == ["body", "payload", "features", 0, "vector_length"]
    assert "create_feature_group" not in [r["kind"] for r in editor.get("/requests").json()]


def registry_message(data_type: DataType, feature: FeatureSpec) -> str:
    """What ``ofs registry apply`` says of an FG ``user/g`` of one feature ``feature``."""
    fg = FeatureGroupSpec(label="g", data_type=data_type, features=(feature,), store="main")
    spec = RegistrySpec(
        stores=(Store("main", "sqlite", {"path": "store.db"}),),
        entities=(EntitySpec("user", (Key("user_id", "uid"),), (fg,)),),
    )
    with pytest.raises(InvalidInputError) as refusal:
        reconcile(RegistryState(), spec)
    return str(refusal.value)


@pytest.mark.parametrize(
    ("data_type", "feature", "field"),
    [
        (DataType.FP32_VECTOR, {"label": "v"}, "vector_length"),
        (DataType.FP32, {"label": "x", "vector_length": 3}, "vector_length"),
        (DataType.FP32, {"label": "x", "string_length": 4}, "string_length"),
        (DataType.INT8, {"label": "x", "default": 300}, "default"),
        (DataType.STRING, {"label": "x", "string_length": 2, "default": "long"}, "default"),
    ],
)
def test_a_feature_is_refused_by_the_registry_rule_at_its_field(
    editor: httpx.Client, data_type: DataType, feature: dict[str, Any], field: str
) -> None:
    fg = {
        "entity": "user",
        "label": "g",
        "data_type": data_type.type_name,
        "store": "main",
        "features": [feature],
    }
    (err,) = refused(editor, "create_feature_group", fg)
    declared = FeatureSpec(
        feature["label"],
        feature.get("default"),
        feature.get("string_length"),
        feature.get("vector_length", 0),
    )
    assert (err["loc"], err["msg"]) == (
        ["body", "payload", "features", 0, field],
        registry_message(data_type, declared),
    )


def test_a_kept_default_that_no_longer_fits_is_refused_at_the_string_length(
    editor: httpx.Client, admin: httpx.Client
) -> None:
    fg = {
        "entity": "user",
        "label": "g",
        "data_type": "string",
        "store": "main",
        "features": [{"label": "x", "string_length": 8, "default": "pune"}],
    }
    approve(admin, submit(editor, "create_feature_group", fg)["id"])
    edit = {"entity": "user", "feature_group": "g", "features": [{"label": "x", "string_length": 2}]}
    (err,) = refused(editor, "edit_features", edit)
    shrunk = registry_message(DataType.STRING, FeatureSpec("x", "pune", 2))
    assert (err["loc"], err["msg"]) == (["body", "payload", "features", 0, "string_length"], shrunk)
