"""``registry.compiled``: the registry compiled for the native engine once per revision."""

from __future__ import annotations

from pathlib import Path

from online_feature_store.registry.compiled import CompiledRegistry
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec


def spec(features: list[str]) -> dict[str, object]:
    return {
        "stores": [{"id": "main", "kind": "sqlite"}],
        "entities": [
            {
                "label": "user",
                "keys": [{"label": "user_id"}],
                "feature_groups": [
                    {
                        "label": "g",
                        "data_type": "fp32",
                        "store": "main",
                        "features": [{"label": f} for f in features],
                    }
                ],
            }
        ],
    }


def test_a_revision_is_compiled_once_and_a_new_one_again(tmp_path: Path) -> None:
    with SqliteRegistry(tmp_path / "registry.db") as registry:
        registry.apply(lambda s: reconcile(s, parse_spec(spec(["a"]), env={})))
        compiled = CompiledRegistry()
        first = registry.load()
        catalog = compiled.catalog(first)
        assert catalog.revision == first.revision
        assert compiled.catalog(registry.load()) is catalog  # the same revision loaded again
        registry.apply(lambda s: reconcile(s, parse_spec(spec(["a", "b"]), env={})))
        second = registry.load()
        compiled.precompile(second)
        assert compiled.catalog(second) is not catalog
        assert compiled.catalog(second).revision == second.revision > first.revision
        assert compiled.catalog(second).feature_group("user", "g")[4] == 2  # values per row: a, b
