"""``store.opened.OpenStores``: the stores one FeatureStore uses, on real SQLite stores — opened on first
use from the registry's spec, given ones used as they are, every call reported to the metrics hooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from online_feature_store.errors import InvalidInputError, UnavailableError
from online_feature_store.metrics import FeatureStoreMetrics
from online_feature_store.registry.model import RegistryState
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.store.base import BlockWrite
from online_feature_store.store.opened import OpenStores
from online_feature_store.store.sqlite import SqliteStore

SPEC = {
    "stores": [
        {"id": "a", "kind": "sqlite", "settings": {"path": "a.db"}},
        {"id": "b", "kind": "sqlite", "settings": {"path": "b.db"}},
    ],
    "entities": [
        {
            "label": "user",
            "keys": [{"label": "user_id"}],
            "feature_groups": [
                {"label": "ga", "data_type": "int8", "store": "a", "features": [{"label": "x"}]},
                {"label": "gb", "data_type": "int8", "store": "b", "features": [{"label": "y"}]},
            ],
        }
    ],
}


class Calls(FeatureStoreMetrics):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []

    def store_call(self, store_id: str, op: str, seconds: float, failed: bool) -> None:
        self.calls.append((store_id, op, failed))


def snapshot() -> Snapshot:
    return Snapshot(reconcile(RegistryState(), parse_spec(SPEC, env={})), 1)


def test_each_store_opens_once_and_is_read_and_written_through_the_hooks(tmp_path: Path) -> None:
    snap, hooks = snapshot(), Calls()
    stores = OpenStores(None, tmp_path, lambda: hooks)
    ent = snap.entity("user")
    ga, gb = (snap.feature_group("user", g).id for g in ("ga", "gb"))
    assert stores.get(snap, "a") is stores.get(snap, "a")
    assert (tmp_path / "a.db").exists()  # a relative path, under the data directory
    stores.write(snap, "a", ent, [BlockWrite(("u1",), ga, b"block-a", 0)])
    stores.write(snap, "b", ent, [BlockWrite(("u1",), gb, b"block-b", 0)])
    # One read per store involved, blocks back key-major in the order asked for.
    assert stores.read(snap, ent, [("u1",), ("u2",)], [gb, ga]) == [b"block-b", b"block-a", b"", b""]
    expected = [("a", "read"), ("a", "write"), ("b", "read"), ("b", "write")]
    assert sorted(hooks.calls) == [(store, op, False) for store, op in expected]
    opened = stores.get(snap, "a")
    stores.close()
    with pytest.raises(UnavailableError, match="closed"):
        opened.read(ent, [("u1",)], [ga])


def test_a_given_store_is_used_as_it_is_and_left_open(tmp_path: Path) -> None:
    snap, hooks = snapshot(), Calls()
    given = SqliteStore(tmp_path / "given.db")
    given.ensure(snap.state.entities)
    stores = OpenStores({"a": given}, tmp_path, lambda: hooks)
    assert stores.get(snap, "a") is given
    stores.close()
    assert not (tmp_path / "a.db").exists()
    given.ping()  # still open
    given.close()


def test_an_unknown_store_is_refused_by_name(tmp_path: Path) -> None:
    hooks = Calls()
    stores = OpenStores(None, tmp_path, lambda: hooks)
    with pytest.raises(InvalidInputError, match="store 'nowhere' is not in the registry"):
        stores.get(snapshot(), "nowhere")


def test_a_failed_call_is_reported_as_failed(tmp_path: Path) -> None:
    snap, hooks = snapshot(), Calls()
    stores = OpenStores(None, tmp_path, lambda: hooks)
    ent = snap.entity("user")
    stores.get(snap, "a").close()
    with pytest.raises(UnavailableError):
        stores.read(snap, ent, [("u1",)], [snap.feature_group("user", "ga").id])
    assert hooks.calls == [("a", "read", True)]
