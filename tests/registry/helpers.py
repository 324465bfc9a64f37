"""Small builders for registry specs used across the tests."""

from __future__ import annotations

import copy
from typing import Any

from online_feature_store.registry import RegistrySpec
from online_feature_store.registry.yaml_io import parse_spec

BASE: dict[str, Any] = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "/tmp/x.db"}}],
    "entities": [
        {
            "label": "user",
            "keys": [{"label": "user_id", "column": "uid"}],
            "cache": {"in_process": {"enabled": True, "ttl_seconds": 60, "jitter_percent": 10}},
            "feature_groups": [
                {
                    "label": "activity",
                    "data_type": "fp32",
                    "ttl_seconds": 3600,
                    "store": "main",
                    "features": [{"label": "ctr", "default": 0.5}, {"label": "clicks", "default": 0}],
                },
                {
                    "label": "emb",
                    "data_type": "fp16vector",
                    "store": "main",
                    "features": [{"label": "v", "vector_length": 3, "default": [1, 2, 3]}],
                },
                {
                    "label": "profile",
                    "data_type": "string",
                    "store": "main",
                    "features": [{"label": "city", "string_length": 16, "default": "pune"}],
                },
                {
                    "label": "flags",
                    "data_type": "bool",
                    "store": "main",
                    "features": [{"label": "premium", "default": True}, {"label": "new", "default": False}],
                },
                {
                    "label": "counts",
                    "data_type": "int32",
                    "store": "main",
                    "features": [{"label": "orders", "default": 7}],
                },
            ],
        },
        {
            "label": "catalog",
            "keys": [{"label": "catalog_id", "column": "cid"}, {"label": "region", "column": "rg"}],
            "feature_groups": [
                {
                    "label": "price",
                    "data_type": "fp64",
                    "store": "main",
                    "features": [{"label": "p", "default": 1.25}],
                }
            ],
        },
    ],
}


def base() -> dict[str, Any]:
    """A fresh deep copy of the base document (mutate freely)."""
    return copy.deepcopy(BASE)


def spec(doc: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> RegistrySpec:
    """Parse a document (default: the base) into a spec."""
    return parse_spec(base() if doc is None else doc, env=env or {})


def fg(doc: dict[str, Any], entity: str, label: str) -> dict[str, Any]:
    """The FG dict ``label`` of ``entity`` inside ``doc``."""
    for e in doc["entities"]:
        if e["label"] == entity:
            for g in e["feature_groups"]:
                if g["label"] == label:
                    return g
    raise KeyError((entity, label))
