"""Embedding types over gRPC: ``Client.retrieve(..., embeddings=...)`` against an in-process server gives what
the embedded store gives (bf16 as ``ml_dtypes.bfloat16``, Q8 as ``Q8Values``, batches reassembled), the wire
carries the stored bytes, and the decoded call renders the values."""

from __future__ import annotations

from collections.abc import Iterator

import ml_dtypes
import numpy as np
import pytest
from conftest import VLEN, fg_label

from online_feature_store import InvalidInputError, Q8Values
from online_feature_store.client import Client
from online_feature_store.feature_store import FeatureStore
from online_feature_store.types import DataType

Served = tuple[str, FeatureStore]
FP32V, Q8V, BF16V = (
    fg_label(DataType.FP32_VECTOR),
    fg_label(DataType.Q8_VECTOR),
    fg_label(DataType.BF16_VECTOR),
)
KEYS = [f"e{i}" for i in range(7)]


@pytest.fixture
def client(served: Served) -> Iterator[Client]:
    # batch_size 3: seven keys go out as three requests, reassembled in order.
    with Client(served[0], keys_schemas={"user": ["user_id"]}, batch_size=3) as c:
        yield c


def values(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((len(KEYS), 2, VLEN)).astype(np.float32)


def test_native_forms_match_the_embedded_store(served: Served, client: Client) -> None:
    _, fs = served
    x = values(1)
    client.persist("user", FP32V, KEYS, x, features=["f0", "f1"], data_type=DataType.FP32_VECTOR)
    client.persist("user", Q8V, KEYS, x, features=["f0", "f1"], data_type="q8")
    client.persist("user", BF16V, KEYS, x, features=["f0", "f1"], data_type="bf16vector")
    keys = [*KEYS, "nobody"]
    # (request, whether it is served as bf16)
    requests = [
        ({FP32V: ["f0@Q8", "f1@Q8"]}, False),
        ({FP32V: ["f1@BF16", "f0@DataTypeBF16Vector"]}, True),
        ({Q8V: ["f1", "f0"]}, False),
        ({BF16V: ["f0", "f1"]}, True),
    ]
    for features, bf16 in requests:
        for form in ("float32", "native"):
            remote = client.retrieve("user", keys, features, embeddings=form)
            local = fs.retrieve("user", keys, features, embeddings=form)
            ((fg, got),) = remote.values.items()
            want = local.values[fg]
            assert np.array_equal(remote.status[fg], local.status[fg])
            if isinstance(want, Q8Values):
                assert isinstance(got, Q8Values), features
                assert got.codes.dtype == np.int8
                assert got.codes.shape == (len(keys), 2, VLEN)
                assert got.scales.shape == (len(keys), 2)
                assert np.array_equal(got.codes, want.codes)
                assert np.array_equal(got.scales, want.scales)
                assert got.lengths == want.lengths == (VLEN, VLEN)
            else:
                expected = ml_dtypes.bfloat16 if bf16 and form == "native" else np.float32
                assert got.dtype == want.dtype == expected, (features, form)
                assert got.tobytes() == want.tobytes(), features
    # Stored Q8 values read back within half a step of what was written.
    q = client.retrieve("user", KEYS, {Q8V: ["f0", "f1"]}, embeddings="native").values[Q8V]
    assert isinstance(q, Q8Values)
    assert (np.abs(q.dequantize() - x) <= q.scales[..., None] * 0.500001 + 1e-7).all()


def test_wire_bytes_and_decoded_strings(served: Served, client: Client) -> None:
    x = np.float32([[[1.0, -0.5, 0.25], [127.0, 0.0, -64.0]]])
    client.persist("user", Q8V, ["w1"], x, features=["f0", "f1"], data_type=DataType.Q8_VECTOR)
    client.persist("user", BF16V, ["w1"], x, features=["f0", "f1"], data_type=DataType.BF16_VECTOR)
    decoded = client.retrieve_decoded("user", ["w1"], {Q8V: ["f1"], BF16V: ["f0", "f1"]})
    assert decoded.values[Q8V] == [["127:0:-64"]]  # scale 1: exact
    assert decoded.values[BF16V] == [["1:-0.5:0.25", "127:0:-64"]]
    with pytest.raises(InvalidInputError, match="expected one of 'float32', 'native'"):
        client.retrieve("user", ["w1"], {Q8V: ["f1"]}, embeddings="raw")  # type: ignore[arg-type]


def test_writes_refuse_non_finite_q8_values(client: Client) -> None:
    x = values(2)[:1].copy()
    x[0, 1, 2] = np.nan
    with pytest.raises(InvalidInputError, match=r"NaN cannot be stored as DataTypeQ8Vector"):
        client.persist("user", Q8V, ["bad"], x, features=["f0", "f1"], data_type=DataType.Q8_VECTOR)
    assert client.retrieve("user", ["bad"], {Q8V: ["f0"]}).status[Q8V].tolist() == [1]  # nothing written
