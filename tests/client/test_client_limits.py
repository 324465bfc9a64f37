"""``Client`` and the request limits: its batching keeps big key lists under the server's
``max_keys_per_request``, a request over its own ``max_message_bytes`` is refused before it is sent, and
the server's ``RESOURCE_EXHAUSTED`` arrives as :class:`ResourceExhaustedError`."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fg_label

from online_feature_store.client import Client
from online_feature_store.errors import ResourceExhaustedError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.results import FOUND, MISSING
from online_feature_store.types import DataType

Served = tuple[str, FeatureStore]
SCHEMA = {"user": ["user_id"]}


class Counting:
    """Counts the calls that reach the server's FeatureStore (wraps its wire methods)."""

    def __init__(self, fs: FeatureStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        for name in ("retrieve_wire", "persist_wire"):
            real = getattr(fs, name)

            def counted(*args: object, _real: object = real, **kwargs: object) -> object:
                self.calls += 1
                return _real(*args, **kwargs)  # type: ignore[operator]

            monkeypatch.setattr(fs, name, counted)


def test_batching_keeps_a_big_key_list_under_the_server_limit(served: Served) -> None:
    address, _ = served
    fg = fg_label(DataType.FP32)
    keys = [f"big{i}" for i in range(25_000)]
    with Client(address, batch_size=5000, keys_schemas=SCHEMA) as c:
        c.persist(
            "user",
            fg,
            keys[:3],
            np.ones((3, 2), dtype=np.float32),
            features=["f0", "f1"],
            data_type=DataType.FP32,
        )
        got = c.retrieve("user", keys, {fg: ["f0"]})
    assert got.values[fg].shape == (25_000, 1)
    assert got.status[fg][:4].tolist() == [FOUND, FOUND, FOUND, MISSING]


def test_a_batch_over_the_server_key_limit_is_resource_exhausted(served: Served) -> None:
    address, _ = served
    with (
        Client(address, batch_size=20_000, keys_schemas=SCHEMA) as c,
        pytest.raises(ResourceExhaustedError) as err,
    ):
        c.retrieve("user", [f"k{i}" for i in range(20_000)], {fg_label(DataType.FP32): ["f0"]})
    assert str(err.value) == (
        'retrieve for entity "user": 20000 keys, over the limit of 10000 keys (max_keys_per_request)'
    )


def test_a_request_over_the_client_limit_is_not_sent(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    address, fs = served
    counting = Counting(fs, monkeypatch)
    fg = fg_label(DataType.FP32)
    with Client(address, max_message_bytes=1000, keys_schemas=SCHEMA) as c:
        with pytest.raises(
            ResourceExhaustedError, match=r"RetrieveFeatures request: \d+ bytes, over the limit"
        ):
            c.retrieve("user", [f"k{i}" for i in range(200)], {fg: ["f0"]})
        with pytest.raises(
            ResourceExhaustedError, match=r"PersistFeatures request: \d+ bytes, over the limit"
        ):
            c.persist(
                "user",
                fg,
                [f"k{i}" for i in range(200)],
                np.ones((200, 2)),
                features=["f0", "f1"],
                data_type=DataType.FP32,
            )
        assert counting.calls == 0
        # A response over the client's limit: the request is sent and answered (by the front, natively:
        # never through the FeatureStore's Python methods), and gRPC refuses the answer on receipt.
        with pytest.raises(ResourceExhaustedError, match="larger than max"):
            c.retrieve("user", [f"k{i}" for i in range(30)], {fg_label(DataType.FP64_VECTOR): ["f0", "f1"]})
        assert counting.calls == 0
