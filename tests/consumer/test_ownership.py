"""Partition ownership epochs and the offsets committed from them (pure logic, no broker)."""

from __future__ import annotations

from kafka import TopicPartition

from online_feature_store.consumer.daemon import Message, _Ownership, offsets_to_commit

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


def _messages(tp: TopicPartition, offsets: range, epoch: int) -> list[Message]:
    return [Message(tp, o, None, b"x", (), epoch) for o in offsets]


def test_commit_only_for_partitions_owned_under_the_same_epoch() -> None:
    changes: list[int] = []
    own = _Ownership(lambda: changes.append(1))
    own.on_partitions_assigned([P0, P1])
    e0, e1 = own.epoch(P0), own.epoch(P1)
    assert e0 is not None
    assert e1 is not None
    batch = _messages(P0, range(5, 9), e0) + _messages(P1, range(0, 3), e1)
    assert offsets_to_commit(batch, own) == {P0: 9, P1: 3}

    # P1 moves away mid-batch: nothing of it may be committed any more.
    own.on_partitions_revoked([P0, P1])
    own.on_partitions_assigned([P0])
    new_e0 = own.epoch(P0)
    assert new_e0 is not None
    assert new_e0 != e0
    assert own.epoch(P1) is None
    assert offsets_to_commit(batch, own) == {}
    # Re-fetched from the last commit under the new epoch: only those count.
    again = batch + _messages(P0, range(5, 7), new_e0)
    assert offsets_to_commit(again, own) == {P0: 7}
    assert sorted(own.owned()) == [P0]
    assert len(changes) == 3  # assigned, revoked, assigned

    own.on_partitions_lost([P0])
    assert own.owned() == []
