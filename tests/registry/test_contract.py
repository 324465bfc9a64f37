"""The contract every registry backend meets (run on SQLite and on a real etcd)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from online_feature_store import DataType, InvalidInputError
from online_feature_store.formats import MAX_TTL_SECONDS, decode_block, encode_block
from online_feature_store.registry import (
    FeatureGroup,
    RegistryBackend,
    RegistryState,
    RegistryWatcher,
    SqliteRegistry,
    diff_states,
    reconcile,
    verify_token,
)
from online_feature_store.registry.model import Feature

from .conftest import Opener, etcd_raw_values
from .helpers import base, fg, spec


def apply_doc(
    backend: RegistryBackend,
    doc: dict,
    *,
    prune: bool = False,
    has_data: Callable[[str], bool] | None = None,
) -> int:
    s = spec(doc)
    return backend.apply(lambda state: reconcile(state, s, prune=prune), has_data=has_data)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_empty_registry(backend: RegistryBackend) -> None:
    snap = backend.load()
    assert snap.revision == backend.revision() == 0
    assert dict(snap.entities) == {}


def test_apply_then_reapply_is_a_noop(backend: RegistryBackend) -> None:
    rev = apply_doc(backend, base())
    assert rev > 0
    snap = backend.load()
    assert snap.revision == rev == backend.revision()
    user = snap.entity("user")
    assert [k.label for k in user.keys] == ["user_id"]
    assert user.keys[0].column == "uid"
    assert user.in_process_cache.enabled
    assert user.in_process_cache.ttl_seconds == 60
    assert [g.id for g in user.feature_groups] == [0, 1, 2, 3, 4]
    activity = snap.feature_group("user", "activity")
    assert activity.data_type == DataType.FP32
    assert activity.ttl_seconds == 3600
    assert activity.store_id == "main"
    assert snap.feature_group("user", 3).label == "flags"
    assert snap.feature_group("user", "flags").features[0].default == b"\x01"
    assert [k.column for k in snap.entity("catalog").keys] == ["cid", "rg"]
    # the same file again changes nothing, not even the revision
    assert apply_doc(backend, base()) == rev
    assert diff_states(snap.state, reconcile(snap.state, spec())) == []


def test_compiled_block_meta(backend: RegistryBackend) -> None:
    apply_doc(backend, base())
    snap = backend.load()
    meta = snap.block_meta("user", "emb")
    assert (meta.data_type, meta.n_features, meta.vector_lengths, meta.version) == (18, 1, [3], 1)
    assert snap.block_meta("user", "emb") is meta  # compiled once, cached on the snapshot
    assert snap.block_meta("user", "profile").string_lengths == [16]
    block = encode_block(meta, [[1.0, 2.0, 3.0]], ttl=60)
    assert decode_block(meta, block).values.tolist() == [[1.0, 2.0, 3.0]]


def test_add_features_creates_a_version_and_keeps_the_old(backend: RegistryBackend) -> None:
    apply_doc(backend, base())
    v1 = backend.load()
    meta1 = v1.block_meta("user", "activity")
    old_block = encode_block(meta1, [0.25, 3.0])

    doc = base()
    fg(doc, "user", "activity")["features"].append({"label": "spend", "default": -1.0})
    apply_doc(backend, doc)
    v2 = backend.load()
    activity = v2.feature_group("user", "activity")
    assert activity.active_version == 2
    assert sorted(activity.versions) == [1, 2]
    assert [f.label for f in activity.versions[1]] == ["ctr", "clicks"]
    assert [f.label for f in activity.features] == ["ctr", "clicks", "spend"]
    assert v2.block_meta("user", "activity").n_features == 3
    # a block written with v1 still decodes with v1's metadata from the new snapshot
    decoded = decode_block(v2.block_meta("user", "activity", 1), old_block)
    assert decoded.header is not None
    assert decoded.header.version == 1
    assert decoded.values.tolist() == [0.25, 3.0]

    fg(doc, "user", "activity")["features"] = [{"label": "spend", "default": -1.0}]
    apply_doc(backend, doc)
    activity = backend.load().feature_group("user", "activity")
    assert activity.active_version == 3
    assert sorted(activity.versions) == [1, 2, 3]


def test_default_and_string_length_edit_in_place(backend: RegistryBackend) -> None:
    apply_doc(backend, base())
    doc = base()
    fg(doc, "user", "activity")["features"][0]["default"] = 0.75
    fg(doc, "user", "profile")["features"][0].update(string_length=32, default="mumbai")
    fg(doc, "user", "activity")["ttl_seconds"] = 7200
    changes = diff_states(backend.load().state, reconcile(backend.load().state, spec(doc)))
    assert "~ fg user/activity: feature ctr default 0.5 → 0.75" in changes
    assert "~ fg user/profile: feature city string_length 16 → 32" in changes
    assert "~ fg user/activity: ttl 3600s → 7200s" in changes
    apply_doc(backend, doc)
    snap = backend.load()
    activity = snap.feature_group("user", "activity")
    assert activity.active_version == 1
    assert list(activity.versions) == [1]
    assert activity.features[0].default == b"\x00\x00\x40\x3f"  # 0.75 as f32 LE
    assert activity.ttl_seconds == 7200
    profile = snap.feature_group("user", "profile")
    assert profile.active_version == 1
    assert profile.features[0].string_length == 32
    assert profile.features[0].default == b"mumbai"


def test_omitted_objects_are_kept_unless_pruned(backend: RegistryBackend) -> None:
    apply_doc(backend, base())
    doc = base()
    doc["entities"] = [doc["entities"][0]]
    doc["entities"][0]["feature_groups"] = doc["entities"][0]["feature_groups"][:1]
    rev = apply_doc(backend, doc)
    assert rev == backend.revision()
    snap = backend.load()
    assert set(snap.entities) == {"user", "catalog"}
    assert len(snap.entity("user").feature_groups) == 5
    plan = diff_states(snap.state, reconcile(snap.state, spec(doc), prune=True))
    assert "- entity catalog" in plan
    assert "- fg user/flags" in plan
    apply_doc(backend, doc, prune=True)
    snap = backend.load()
    assert set(snap.entities) == {"user"}
    assert [g.label for g in snap.entity("user").feature_groups] == ["activity"]
    # a new FG gets max+1 of the ids in use
    doc["entities"][0]["feature_groups"].append(
        {"label": "more", "data_type": "int8", "store": "main", "features": [{"label": "x"}]}
    )
    apply_doc(backend, doc)
    assert backend.load().feature_group("user", "more").id == 1


def _new_fg(label: str, **kw: Any) -> dict:
    return {"label": label, "data_type": "uint8", "store": "main", "features": [{"label": "x"}], **kw}


def _dup_entity(d: dict) -> None:
    d["entities"].append(base()["entities"][1])


MUTATIONS: dict[str, tuple[Callable[[dict], object], str]] = {
    "duplicate entity": (_dup_entity, "duplicate entity label 'catalog'"),
    "duplicate key": (
        lambda d: d["entities"][1]["keys"].append({"label": "region", "column": "r2"}),
        "entity 'catalog': duplicate key label 'region'",
    ),
    "duplicate fg": (
        lambda d: d["entities"][1]["feature_groups"].append(dict(d["entities"][1]["feature_groups"][0])),
        "entity 'catalog': duplicate feature group label 'price'",
    ),
    "duplicate feature": (
        lambda d: fg(d, "user", "activity")["features"].append({"label": "ctr"}),
        "entity 'user', feature group 'activity': duplicate feature label 'ctr'",
    ),
    "unknown data type": (
        lambda d: fg(d, "user", "counts").update(data_type="int33"),
        "unknown data type 'int33'",
    ),
    "vector length 0": (
        lambda d: fg(d, "user", "emb")["features"][0].update(vector_length=0, default=[]),
        "entity 'user', feature group 'emb', feature 'v': vector length 0",
    ),
    "string length": (
        lambda d: fg(d, "user", "profile")["features"][0].update(string_length=70000),
        "entity 'user', feature group 'profile', feature 'city': string length 70000",
    ),
    "default int8 overflow": (
        lambda d: fg(d, "user", "counts").update(data_type="int8", features=[{"label": "o", "default": 300}]),
        "entity 'user', feature group 'counts', feature 'o': default 300 does not fit DataTypeInt8",
    ),
    "default bool for float": (
        lambda d: fg(d, "user", "activity")["features"][0].update(default=True),
        "feature 'ctr': default True does not fit DataTypeFP32",
    ),
    "default string too long": (
        lambda d: fg(d, "user", "profile")["features"][0].update(default="x" * 17),
        "feature 'city': default 'xxxxxxxxxxxxxxxxx' does not fit DataTypeString",
    ),
    "default wrong vector length": (
        lambda d: fg(d, "user", "emb")["features"][0].update(default=[1, 2]),
        "feature 'v': default [1, 2] does not fit DataTypeFP16Vector",
    ),
    "fg id overflow": (
        lambda d: d["entities"][0]["feature_groups"].append(_new_fg("big", id=65536)),
        "entity 'user', feature group 'big': id 65536 does not fit in 0..65535",
    ),
    "fg id duplicate": (
        lambda d: d["entities"][0]["feature_groups"].extend([_new_fg("a", id=9), _new_fg("b", id=9)]),
        "entity 'user': duplicate feature group id 9",
    ),
    "fg id taken": (
        lambda d: d["entities"][0]["feature_groups"].append(_new_fg("a", id=2)),
        "entity 'user': duplicate feature group id 2",
    ),
    "ttl beyond block limit": (
        lambda d: fg(d, "user", "activity").update(ttl_seconds=MAX_TTL_SECONDS + 1),
        f"entity 'user', feature group 'activity': ttl_seconds {MAX_TTL_SECONDS + 1} exceeds",
    ),
    "unknown store": (
        lambda d: fg(d, "user", "counts").update(store="nope"),
        "entity 'user', feature group 'counts': unknown store 'nope'",
    ),
    "no keys": (lambda d: d["entities"][1].update(keys=[]), "entity 'catalog': has no keys"),
    # Refused at apply: nothing could ever be persisted into it (the first persist used to fail).
    "no store": (
        lambda d: fg(d, "user", "counts").pop("store"),
        "entity 'user', feature group 'counts': names no store; give it `store: <id>` "
        "(the registry's stores: main)",
    ),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_validation_error_applies_nothing(backend: RegistryBackend, case: str) -> None:
    apply_doc(backend, base())
    before = backend.load()
    doc = base()
    fg(doc, "user", "activity")["features"].append({"label": "valid_new_feature"})  # a valid change alongside
    mutate, message = MUTATIONS[case]
    mutate(doc)
    with pytest.raises(InvalidInputError) as err:
        apply_doc(backend, doc)
    assert message in str(err.value)
    after = backend.load()
    assert after.revision == before.revision
    assert after.state == before.state


def _expect_rejected(backend: RegistryBackend, doc: dict, message: str, **kw: Any) -> None:
    before = backend.load()
    with pytest.raises(InvalidInputError, match=message):
        apply_doc(backend, doc, **kw)
    after = backend.load()
    assert after.revision == before.revision
    assert after.state == before.state


def test_transition_rules(backend: RegistryBackend) -> None:
    apply_doc(backend, base())
    doc = base()
    fg(doc, "user", "activity")["features"] = []
    _expect_rejected(backend, doc, r"feature group 'activity': cannot remove the last feature")

    doc = base()
    fg(doc, "user", "emb")["features"][0].update(vector_length=4, default=[0, 0, 0, 0])
    _expect_rejected(backend, doc, r"feature 'v': vector length 3 cannot change to 4")

    doc = base()
    fg(doc, "user", "emb")["features"] = [
        {"label": "w", "vector_length": 2},
        {"label": "v", "vector_length": 4},
    ]
    _expect_rejected(backend, doc, r"feature 'v': vector length 3 cannot change to 4")

    doc = base()
    fg(doc, "user", "counts")["data_type"] = "int64"
    _expect_rejected(backend, doc, r"data type DataTypeInt32 cannot change to DataTypeInt64")

    doc = base()
    doc["entities"][0]["keys"] = [{"label": "user_id", "column": "user_id"}]
    _expect_rejected(
        backend, doc, r"entity 'user': cannot change the key schema", has_data=lambda e: e == "user"
    )
    # without data the key change is fine
    apply_doc(backend, doc)
    assert backend.load().entity("user").keys[0].column == "user_id"

    doc["entities"] = doc["entities"][:1]
    _expect_rejected(
        backend,
        doc,
        r"entity 'catalog': cannot delete an entity that has data",
        prune=True,
        has_data=lambda e: True,
    )


def test_unknown_data_type_in_state(backend: RegistryBackend) -> None:
    bad = FeatureGroup(0, "g", DataType.UNKNOWN, {1: (Feature("f", b""),)})
    state = backend.load().state
    from online_feature_store.registry import Entity, Key

    with pytest.raises(InvalidInputError, match="entity 'e', feature group 'g': unknown data type"):
        backend.apply(state.with_entity(Entity("e", (Key("k", "k"),), (bad,))))
    assert backend.revision() == 0


def test_tokens_are_stored_hashed(backend: RegistryBackend, tmp_path: object) -> None:
    doc = base()
    doc["callers"] = [
        {"id": "ranker", "role": "reader", "token_env": "T_READ"},
        {"id": "ingest", "role": "writer", "token_env": "T_WRITE"},
    ]
    env = {
        "T_READ": "read-secret-token-123-0123456789abcdef",
        "T_WRITE": "write-secret-token-456-0123456789abcdef",
    }
    s = spec(doc, env)
    rev = backend.apply(lambda st: reconcile(st, s))
    snap = backend.load()
    ranker = snap.callers["ranker"]
    assert ranker.role == "reader"
    assert "read-secret" not in ranker.token_hash
    assert verify_token(env["T_READ"], ranker.token_hash)
    assert not verify_token("wrong", ranker.token_hash)
    assert snap.authenticate("ingest", env["T_WRITE"]) is snap.callers["ingest"]
    assert snap.authenticate("ingest", env["T_READ"]) is None
    assert snap.authenticate("nobody", "x") is None
    # same tokens again: hashes are kept, nothing changes
    assert backend.apply(lambda st: reconcile(st, s)) == rev
    if isinstance(backend, SqliteRegistry):
        raw = b"".join(p.read_bytes() for p in backend.path.parent.iterdir() if p.is_file())
    else:
        raw = etcd_raw_values(backend)
    assert b"ranker" in raw
    assert b"read-secret-token-123-0123456789abcdef" not in raw
    assert b"write-secret-token-456-0123456789abcdef" not in raw
    # a caller with no token anywhere is an error naming the variable
    doc["callers"].append({"id": "new", "role": "reader", "token_env": "T_MISSING"})
    with pytest.raises(
        InvalidInputError, match=r"caller 'new': no token given \(environment variable T_MISSING"
    ):
        backend.apply(lambda st: reconcile(st, spec(doc, env)))


def test_watcher_sees_changes_from_another_connection(open_backend: Opener) -> None:
    reader, writer = open_backend(), open_backend()
    apply_doc(writer, base())
    with RegistryWatcher(reader, poll_interval=5.0) as watcher:
        assert watcher.healthy
        assert watcher.snapshot.entity("user")
        for ttl in (100, 200, 300):
            doc = base()
            fg(doc, "user", "activity")["ttl_seconds"] = ttl
            rev = apply_doc(writer, doc)
            # the watch (not the 5 s poll) brings it: well within the generous timeout
            wait_until(lambda rev=rev: watcher.revision == rev, timeout=4.0)
            assert watcher.snapshot.feature_group("user", "activity").ttl_seconds == ttl
        assert watcher.healthy
        assert watcher.last_error is None
        assert watcher.refreshes >= 3


def test_readers_never_see_a_torn_snapshot(open_backend: Opener) -> None:
    reader, writer = open_backend(), open_backend()
    apply_doc(writer, base())
    errors: list[BaseException] = []
    stop = threading.Event()
    reads = [0]

    with RegistryWatcher(reader, poll_interval=5.0) as watcher:

        def read() -> None:
            try:
                while not stop.is_set():
                    snap = watcher.snapshot
                    g = snap.feature_group("user", "activity")
                    assert snap.block_meta("user", "activity").n_features == len(g.features)
                    assert len(g.versions) == g.active_version
                    reads[0] += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        doc = base()
        for i in range(8):
            fg(doc, "user", "activity")["features"].append({"label": f"extra{i}", "default": float(i)})
            rev = apply_doc(writer, doc)
        wait_until(lambda: watcher.revision == rev)
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert reads[0] > 0
    assert watcher.snapshot.feature_group("user", "activity").active_version == 9


def test_concurrent_applies_lose_no_update(open_backend: Opener) -> None:
    first = open_backend()
    apply_doc(first, base())
    backends = [open_backend() for _ in range(6)]
    errors: list[BaseException] = []

    def add(i: int, backend: RegistryBackend) -> None:
        def change(state: RegistryState) -> RegistryState:
            doc = base()
            doc["entities"] = [doc["entities"][1]]
            doc["entities"][0]["feature_groups"] = [
                {
                    "label": f"fg{i}",
                    "data_type": "int16",
                    "store": "main",
                    "features": [{"label": "x", "default": i}],
                }
            ]
            return reconcile(state, spec(doc))

        try:
            backend.apply(change)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i, b)) for i, b in enumerate(backends)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    catalog = first.load().entity("catalog")
    assert sorted(g.label for g in catalog.feature_groups) == sorted(["price"] + [f"fg{i}" for i in range(6)])
    assert sorted(g.id for g in catalog.feature_groups) == list(range(7))
