"""The contract every BlockStore keeps, run against SQLite, Redis, Redis Cluster and Cassandra."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from online_feature_store.errors import InvalidInputError
from online_feature_store.registry.model import Entity
from online_feature_store.store.base import BlockStore, BlockWrite
from tests.store.conftest import Opener, make_block, make_entity, poll


def test_round_trip_many_keys_duplicates_and_missing(store: BlockStore, entity: Entity) -> None:
    keys = [(f"user{i}", "eu" if i % 2 else "us") for i in range(1000)]
    writes = [
        BlockWrite(k, fg, make_block(i * 10 + fg))
        for i, k in enumerate(keys)
        for fg in (1, 2, 3)
        if (i + fg) % 4  # some (key, FG) pairs are never written
    ]
    store.write(entity, writes)
    missing = ("nobody", "us")
    request = [*keys, keys[3], missing, keys[0], keys[3]]
    got = store.read(entity, request, [3, 1, 2, 99])
    assert len(got) == len(request)
    for key, row in zip(request, got, strict=False):
        assert len(row) == 4
        if key == missing:
            assert row == [b"", b"", b"", b""]
            continue
        i = keys.index(key)
        for fg, block in zip((3, 1, 2), row, strict=False):
            assert block == (make_block(i * 10 + fg) if (i + fg) % 4 else b"")
        assert row[3] == b""  # an FG never written anywhere


def test_single_column_keys(store: BlockStore) -> None:
    entity = make_entity(n_keys=1)
    store.ensure([entity])
    keys = [(f"id{i}",) for i in range(230)]
    store.write(entity, [BlockWrite(k, fg, make_block(i + fg)) for i, k in enumerate(keys) for fg in (1, 3)])
    request = [("absent",), *keys, keys[5], keys[5], ("",)]
    expected = [[b"", b"", b""]] + [[make_block(i + 1), b"", make_block(i + 3)] for i in range(len(keys))]
    expected += [expected[6], expected[6], [b"", b"", b""]]
    assert store.read(entity, request, [1, 2, 3]) == expected


def test_empty_requests(store: BlockStore, entity: Entity) -> None:
    store.write(entity, [])
    assert store.read(entity, [], [1, 2]) == []
    assert store.read(entity, [("a", "b")], []) == [[]]


def test_overwrite_one_fg_leaves_the_others(store: BlockStore, entity: Entity) -> None:
    key = ("u1", "eu")
    store.write(entity, [BlockWrite(key, fg, make_block(fg)) for fg in (1, 2, 3)])
    store.write(entity, [BlockWrite(key, 2, make_block(200))])
    assert store.read(entity, [key], [1, 2, 3]) == [[make_block(1), make_block(200), make_block(3)]]
    # the last write of a (key, FG) in one call wins
    store.write(entity, [BlockWrite(key, 1, make_block(7)), BlockWrite(key, 1, make_block(8))])
    assert store.read(entity, [key], [1, 2, 3]) == [[make_block(8), make_block(200), make_block(3)]]


def test_concurrent_writers_of_different_fgs_lose_nothing(open_store: Opener, entity: Entity) -> None:
    keys = [(f"hot{i}", "eu") for i in range(4)]
    rounds = 40
    errors: list[BaseException] = []

    def writer(fg: int) -> None:
        store = open_store()
        try:
            for rnd in range(1, rounds + 1):
                store.write(entity, [BlockWrite(k, fg, make_block(rnd * 10 + fg)) for k in keys])
                # a lost update would show as this writer's own FG reverting under another writer
                for row in store.read(entity, keys, [fg]):
                    assert row == [make_block(rnd * 10 + fg)]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(fg,)) for fg in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    final = open_store().read(entity, keys, [1, 2, 3])
    assert final == [[make_block(rounds * 10 + fg) for fg in (1, 2, 3)] for _ in keys]


def test_expired_blocks_are_purged(store: BlockStore, entity: Entity, backend: str) -> None:
    mixed, expiring = ("mixed", "eu"), ("expiring", "eu")
    expiry = int(time.time()) + 2
    store.write(
        entity,
        [
            BlockWrite(mixed, 1, make_block(1, expiry_at=expiry), expiry),
            BlockWrite(mixed, 2, make_block(2)),
            BlockWrite(expiring, 1, make_block(3, expiry_at=expiry), expiry),
            BlockWrite(expiring, 2, make_block(4, expiry_at=expiry), expiry),
        ],
    )
    assert store.read(entity, [expiring], [1, 2]) == [
        [make_block(3, expiry_at=expiry), make_block(4, expiry_at=expiry)]
    ]
    # a key whose blocks all expired is gone from the store itself (Redis key TTL, Cassandra cell TTL,
    # SQLite hides it on read and purges it)
    assert poll(lambda: store.read(entity, [expiring], [1, 2]) == [[b"", b""]], timeout=30)
    # the expired FG of a key with a live FG is dropped at the latest on the next write of that key
    store.write(entity, [BlockWrite(mixed, 3, make_block(5))])
    assert store.read(entity, [mixed], [1, 2, 3]) == [[b"", make_block(2), make_block(5)]]


@pytest.mark.parametrize(
    "keys",
    [
        [("a|b", "c"), ("a", "b|c"), ("a\\", "|c"), ("a\\|", "c"), ("a", "\\|c")],
        [("a:b", "c"), ("a", "b:c"), ("", "a:"), (":", ""), ("", ":")],
        [("", ""), ("|", ""), ("", "|"), ("\\", ""), ("", "\\"), ("||", "")],
        [("ключ", "é"), ("🔑", "🔑"), ("a b", " c"), ("a\x00", "b"), ("a", "\x00b")],
    ],
)
def test_keys_with_separator_characters_never_collide(
    store: BlockStore, entity: Entity, keys: list[tuple[str, str]]
) -> None:
    store.write(entity, [BlockWrite(k, 1, make_block(i)) for i, k in enumerate(keys)])
    assert store.read(entity, keys, [1]) == [[make_block(i)] for i in range(len(keys))]


def test_block_over_64_kib_round_trips(store: BlockStore, entity: Entity) -> None:
    key = ("big", "eu")
    big = make_block(1, n=18_000, compress=False)  # 72 kB: needs CSDB layout 2 in Redis
    assert len(big) > 70_000
    store.write(entity, [BlockWrite(key, 1, big), BlockWrite(key, 2, make_block(2))])
    assert store.read(entity, [key], [1, 2]) == [[big, make_block(2)]]
    store.write(entity, [BlockWrite(key, 3, make_block(3))])
    assert store.read(entity, [key], [1, 2, 3]) == [[big, make_block(2), make_block(3)]]
    store.write(entity, [BlockWrite(key, 1, make_block(4))])
    assert store.read(entity, [key], [1, 2, 3]) == [[make_block(4), make_block(2), make_block(3)]]


def test_empty_block_is_stored_as_is(store: BlockStore, entity: Entity) -> None:
    key = ("neg", "eu")
    store.write(entity, [BlockWrite(key, 1, make_block(1)), BlockWrite(key, 2, b"")])
    assert store.read(entity, [key], [1, 2]) == [[make_block(1), b""]]


def test_entities_do_not_share_keys(store: BlockStore) -> None:
    a, b = make_entity(), make_entity()
    store.ensure([a, b])
    key = ("same", "key")
    store.write(a, [BlockWrite(key, 1, make_block(1))])
    store.write(b, [BlockWrite(key, 1, make_block(2))])
    assert store.read(a, [key], [1]) == [[make_block(1)]]
    assert store.read(b, [key], [1]) == [[make_block(2)]]


def test_bad_input_is_rejected_before_any_io(store: BlockStore, entity: Entity) -> None:
    with pytest.raises(InvalidInputError, match="2 key columns"):
        store.read(entity, [("only-one",)], [1])
    with pytest.raises(InvalidInputError, match="FG id"):
        store.read(entity, [("a", "b")], [70_000])
    with pytest.raises(InvalidInputError, match="expires_at"):
        store.write(entity, [BlockWrite(("a", "b"), 1, b"x", -1)])
    with pytest.raises(InvalidInputError, match="2 key columns"):
        store.write(entity, [BlockWrite(("a", "b"), 1, b"x"), BlockWrite(("a", "b", "c"), 1, b"x")])
    assert store.read(entity, [("a", "b")], [1]) == [[b""]]  # nothing of the bad call was written


def test_ensure_is_idempotent_and_additive(store: BlockStore) -> None:
    e1 = make_entity(fg_ids=(1,))
    store.ensure([e1])
    store.ensure([e1])
    store.write(e1, [BlockWrite(("k", "r"), 1, make_block(1))])
    e2 = make_entity(e1.label, fg_ids=(1, 5))
    store.ensure([e2])
    store.write(e2, [BlockWrite(("k", "r"), 5, make_block(5))])
    assert store.read(e2, [("k", "r")], [1, 5]) == [[make_block(1), make_block(5)]]


def test_ping(store: BlockStore) -> None:
    store.ping()


def test_read_round_trips_are_batched(store: BlockStore, entity: Entity) -> None:
    """Reading every FG of hundreds of keys, twice over, agrees with per-key reads."""
    keys = [(f"u{i}", "x") for i in range(300)]
    store.write(entity, [BlockWrite(k, fg, make_block(i + fg)) for i, k in enumerate(keys) for fg in (1, 2)])
    request = list(itertools.chain(keys, reversed(keys)))
    got = store.read(entity, request, [1, 2])
    assert got == [store.read(entity, [k], [1, 2])[0] for k in request]
