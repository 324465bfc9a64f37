"""Embedding types (our extensions, docs/embeddings.md): Q8 (int8 + per-vector scale) against a numpy
transcription of its rule, bf16 against ``ml_dtypes``, and the embedded ``FeatureStore`` storing and serving
them: stored BF16/Q8 feature groups, retrieval-time ``@BF16`` / ``@Q8`` from fp32 and fp16 vectors, the
``embeddings="float32" | "native"`` forms (cache hits and store reads alike) and the decoded strings."""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from online_feature_store import DataType, InvalidInputError, Q8Values, formats
from online_feature_store._proto import retrieve_pb2
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.results import FOUND, MISSING
from online_feature_store.store.sqlite import SqliteStore

DIM = 8


def q8_reference(x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """The rule, row by row: s = max|x| / 127 (float32), q = rint(clip(x / s, -127, 127)), s = 0 → zeros."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    scales = (np.max(np.abs(x), axis=1, initial=np.float32(0)) / np.float32(127)).astype(np.float32)
    safe = np.where(scales == 0, np.float32(1), scales)[:, None]
    q = np.rint(np.clip(x / safe, np.float32(-127), np.float32(127)))
    q = np.where(scales[:, None] == 0, 0, q).astype(np.int8)
    return q, scales


def q8_dequantize(q: npt.NDArray[np.int8], scales: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (q.astype(np.float32) * scales[..., None]).astype(np.float32)


def bf16_round(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(x, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


# -- codecs ------------------------------------------------------------------------------------------------

finite32 = st.floats(-(2.0**100), 2.0**100, width=32) | st.sampled_from(
    [0.0, -0.0, 1e-40, -3e-39, 127.0, 0.5]
)
matrices = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40), elements=finite32
)


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40), elements=finite32
    )
)
def test_q8_encode_matches_the_numpy_rule(x: npt.NDArray[np.float32]) -> None:
    codes, scales = formats.q8_encode(x)
    want_q, want_s = q8_reference(x)
    assert codes.dtype == np.int8
    assert scales.dtype == np.float32
    assert np.array_equal(scales.view(np.uint32), want_s.view(np.uint32))
    assert np.array_equal(codes, want_q)
    back = formats.q8_decode(codes, scales)
    assert np.array_equal(back, q8_dequantize(want_q, want_s))
    # At most half a step from the input (plus float32 rounding of the division and product); vectors
    # below 127 x 2^-150 in magnitude have a scale that underflows to 0 and store zeros.
    slack = np.abs(x) * 1e-6 + 2.0**-142
    assert (np.abs(back - x) <= want_s[:, None] * 0.500001 + slack).all()


def test_q8_refuses_non_finite_unless_saturating() -> None:
    x = np.array([[1.0, 2.0, 3.0], [0.5, np.nan, 1.0]], dtype=np.float32)
    with pytest.raises(InvalidInputError, match=r"row 1 element 1: NaN cannot be quantized to Q8"):
        formats.q8_encode(x)
    codes, scales = formats.q8_encode(
        np.array([[np.inf, 2.0, np.nan, -1.0, -np.inf]], np.float32), saturate=True
    )
    assert codes.tolist() == [[127, 127, -128, -64, -127]]
    assert scales[0] == np.float32(2.0) / np.float32(127)
    back = formats.q8_decode(codes, scales)
    assert np.isnan(back[0, 2])
    # One vector, all zero: scale 0, zero codes, read back as +0.
    codes, scales = formats.q8_encode(np.array([0.0, -0.0, 0.0], np.float32))
    assert (codes.tolist(), scales.tolist()) == ([[0, 0, 0]], [0.0])
    assert not np.signbit(formats.q8_decode(codes, scales)).any()
    with pytest.raises(InvalidInputError, match="2 scales for 1 rows"):
        formats.q8_decode(codes, np.zeros(2, np.float32))
    with pytest.raises(InvalidInputError, match="expected one vector or a"):
        formats.q8_encode(np.zeros((2, 2, 2), np.float32))


def test_bf16_codec_is_ml_dtypes() -> None:
    x = np.random.default_rng(1).standard_normal(10_000).astype(np.float32) * 1e3
    x[:4] = [np.nan, -np.nan, np.inf, 3.4e38]
    codes = formats.bf16_encode(x)
    want = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    assert np.array_equal(codes, want)
    assert np.array_equal(
        formats.bf16_decode(codes)[4:], want[4:].view(ml_dtypes.bfloat16).astype(np.float32)
    )
    assert formats.bf16_encode(np.float32([3.4e38]), saturate=True).tolist() == [0x7F7F]


def test_type_numbers_names_and_shapes() -> None:
    assert (DataType.BF16, DataType.BF16_VECTOR, DataType.Q8_VECTOR) == (31, 32, 33)
    assert DataType.Q8_VECTOR.type_name == "DataTypeQ8Vector"
    assert DataType.parse("q8") == DataType.Q8_VECTOR  # Q8 exists only as a vector
    assert DataType.parse("bf16") == DataType.BF16
    assert DataType.BF16_VECTOR.is_vector
    assert not DataType.BF16.is_vector
    assert DataType.Q8_VECTOR.is_extension
    assert not DataType.BOOL_VECTOR.is_extension
    assert formats.parse_feature_label("emb@BF16") == ("emb", 31)
    # A Q8 block header: the 5-bit type field reads 31, the nibble of byte 8 the offset 2.
    meta = formats.BlockMeta(int(DataType.Q8_VECTOR), 1, vector_lengths=[3])
    block = formats.encode_block(meta, np.float32([1.0, -0.5, 0.25]), now=1_772_000_000)
    assert (block[7], block[8]) == (0x11, 0xF2)
    assert formats.read_header(block).data_type == 33
    assert len(block) == 9 + 4 + 3


# -- the embedded store ------------------------------------------------------------------------------------

DOC: dict[str, Any] = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
    "entities": [
        {
            "label": "item",
            "keys": [{"label": "item_id", "column": "iid"}],
            "feature_groups": [
                {
                    "label": "emb32",
                    "data_type": "fp32vector",
                    "store": "main",
                    "features": [
                        {"label": "a", "vector_length": DIM, "default": [0.0] * DIM},
                        {"label": "b", "vector_length": DIM, "default": [1.0] + [0.0] * (DIM - 1)},
                    ],
                },
                {
                    "label": "emb16",
                    "data_type": "fp16vector",
                    "store": "main",
                    "features": [{"label": "a", "vector_length": DIM}],
                },
                {
                    "label": "embq",
                    "data_type": "q8vector",
                    "store": "main",
                    "features": [
                        {"label": "a", "vector_length": DIM, "default": [-127.0] + [0.0] * (DIM - 1)},
                        {"label": "short", "vector_length": 3},
                    ],
                },
                {
                    "label": "embb",
                    "data_type": "bf16vector",
                    "store": "main",
                    "features": [{"label": "a", "vector_length": DIM, "default": [0.5] * DIM}],
                },
                {
                    "label": "scalars",
                    "data_type": "bf16",
                    "store": "main",
                    "features": [{"label": "x", "default": 1.5}, {"label": "y"}],
                },
            ],
        }
    ],
}


def cached_doc() -> dict[str, Any]:
    doc = copy.deepcopy(DOC)
    doc["entities"][0]["cache"] = {"in_process": {"enabled": True, "ttl_seconds": 60, "jitter_percent": 0}}
    for fg in doc["entities"][0]["feature_groups"]:
        fg["in_process_cache"] = True
    return doc


def make(tmp_path: Path, doc: dict[str, Any], **kw: Any) -> tuple[FeatureStore, SqliteRegistry, SqliteStore]:
    registry = SqliteRegistry(tmp_path / "registry.db")
    spec = parse_spec(doc, env={})
    registry.apply(lambda state: reconcile(state, spec))
    store = SqliteStore(tmp_path / "store.db")
    return FeatureStore(registry, stores={"main": store}, **kw), registry, store


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FeatureStore]:
    store, registry, blocks = make(tmp_path, DOC, cache_bytes=0)
    yield store
    store.close()
    blocks.close()
    registry.close()


def vectors(n: int, seed: int = 7) -> npt.NDArray[np.float32]:
    """(n, 2, DIM) fp32 values: an anisotropic pair of features."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 2, DIM)) * np.geomspace(3.0, 0.01, DIM)).astype(np.float32)


KEYS = ["i0", "i1", "i2"]


def test_retrieval_time_bf16_and_q8_from_fp32(fs: FeatureStore) -> None:
    x = vectors(3)
    fs.persist("item", "emb32", KEYS, x)
    keys = [*KEYS, "none"]
    full = np.concatenate([x, np.stack([np.zeros(DIM), np.eye(DIM)[0]])[None].astype(np.float32)])
    # "@BF16" on a vector feature means the vector form; the long name works too.
    for label in ("a@BF16", "a@DataTypeBF16Vector", "a@bf16vector"):
        r = fs.retrieve("item", keys, {"emb32": [label]})
        got = r.values["emb32"]
        assert got.dtype == np.float32
        assert got.shape == (4, 1, DIM)
        assert np.array_equal(got[:, 0], bf16_round(full[:, 0]))
        assert r.status["emb32"].tolist() == [FOUND, FOUND, FOUND, MISSING]
    r = fs.retrieve("item", keys, {"emb32": ["a@Q8", "b@Q8"]})
    q, s = q8_reference(full.reshape(-1, DIM))
    assert np.array_equal(r.values["emb32"], q8_dequantize(q, s).reshape(4, 2, DIM))
    # Native: bf16 as ml_dtypes.bfloat16, Q8 as codes + scales, same numbers.
    nb = fs.retrieve("item", keys, {"emb32": ["a@BF16", "b@BF16"]}, embeddings="native").values["emb32"]
    assert nb.dtype == ml_dtypes.bfloat16
    assert np.array_equal(nb.astype(np.float32), bf16_round(full))
    nq = fs.retrieve("item", keys, {"emb32": ["a@Q8", "b@Q8"]}, embeddings="native").values["emb32"]
    assert isinstance(nq, Q8Values)
    assert nq.codes.shape == (4, 2, DIM)
    assert nq.scales.shape == (4, 2)
    assert np.array_equal(nq.codes, q.reshape(4, 2, DIM))
    assert np.array_equal(nq.scales, s.reshape(4, 2))
    assert np.array_equal(nq.dequantize(), r.values["emb32"])
    codes_b, scales_b = nq.feature(1)
    assert np.array_equal(codes_b, q.reshape(4, 2, DIM)[:, 1])
    assert np.array_equal(scales_b, s.reshape(4, 2)[:, 1])
    # int8 dot products give the cosine of the dequantized vectors.
    dots = codes_b.astype(np.int32) @ codes_b[0].astype(np.int32) * scales_b * scales_b[0]
    deq = nq.dequantize()[:, 1]
    assert np.allclose(dots, deq @ deq[0], rtol=1e-5)


def test_retrieval_time_from_fp16_and_refused_targets(fs: FeatureStore) -> None:
    x = vectors(3)[:, :1]
    fs.persist("item", "emb16", KEYS, x)
    half = x.astype(np.float16).astype(np.float32)
    r = fs.retrieve("item", KEYS, {"emb16": ["a@BF16"]})
    assert np.array_equal(r.values["emb16"], bf16_round(half))
    r = fs.retrieve("item", KEYS, {"emb16": ["a@Q8"]})
    q, s = q8_reference(half.reshape(-1, DIM))
    assert np.array_equal(r.values["emb16"], q8_dequantize(q, s).reshape(3, 1, DIM))
    with pytest.raises(InvalidInputError, match="cannot quantize DataTypeQ8Vector to DataTypeBF16Vector"):
        fs.retrieve("item", KEYS, {"embq": ["a@BF16"]})
    with pytest.raises(InvalidInputError, match="cannot quantize DataTypeBF16 to DataTypeQ8Vector"):
        fs.retrieve("item", KEYS, {"scalars": ["x@Q8"]})


def test_stored_q8_and_bf16_groups(fs: FeatureStore) -> None:
    x = vectors(3)
    short = np.float32([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [3.0, 3.0, -3.0]])
    fs.persist("item", "embq", KEYS, [[x[i, 0], short[i]] for i in range(3)])
    fs.persist("item", "embb", KEYS, x[:, :1])
    fs.persist("item", "scalars", KEYS, np.float32([[1.0, 2.0**100], [-0.1, 0.0], [3.0, -1e-20]]))
    keys = [*KEYS, "none"]
    r = fs.retrieve("item", keys, {"embq": ["a", "short"], "embb": ["a"], "scalars": ["y", "x"]})
    qa, sa = q8_reference(x[:, 0])
    qs, ss = q8_reference(short)
    got = r.values["embq"]  # ragged lengths: (keys, 8 + 3)
    assert got.shape == (4, DIM + 3)
    assert np.array_equal(got[:3, :DIM], q8_dequantize(qa, sa))
    assert np.array_equal(got[:3, DIM:], q8_dequantize(qs, ss))
    assert got[3].tolist() == [-127.0] + [0.0] * (DIM - 1) + [0.0] * 3  # the defaults
    assert np.array_equal(r.values["embb"][:3, 0], bf16_round(x[:, 0]))
    assert r.values["embb"][3, 0].tolist() == [0.5] * DIM
    assert np.array_equal(
        r.values["scalars"][:3],
        bf16_round(np.float32([[2.0**100, 1.0], [0.0, -0.1], [-1e-20, 3.0]])),
    )
    assert r.values["scalars"][3].tolist() == [0.0, 1.5]
    nq = fs.retrieve("item", keys, {"embq": ["a", "short"]}, embeddings="native").values["embq"]
    assert nq.codes.shape == (4, DIM + 3)
    assert nq.lengths == (DIM, 3)
    assert np.array_equal(nq.codes[:3, :DIM], qa)
    assert np.array_equal(nq.codes[:3, DIM:], qs)
    assert np.array_equal(nq.scales[:3], np.stack([sa, ss], axis=1))
    assert np.array_equal(nq.dequantize(), got)
    assert np.array_equal(nq.feature(1)[0], nq.codes[:, DIM:])
    nb = fs.retrieve("item", keys, {"embb": ["a"]}, embeddings="native").values["embb"]
    assert nb.dtype == ml_dtypes.bfloat16
    assert nb.shape == (4, 1, DIM)
    # Q8 narrows further to FP8 at retrieval; to_pandas dequantizes native Q8.
    r8 = fs.retrieve("item", KEYS, {"embq": ["short@FP8E4M3"]})
    want8 = formats.fp8_e4m3_decode(formats.fp8_e4m3_encode(q8_dequantize(qs, ss).ravel())).reshape(3, 1, 3)
    assert np.array_equal(r8.values["embq"], want8, equal_nan=True)
    df = fs.retrieve("item", KEYS, {"embq": ["a"]}, embeddings="native").to_pandas()
    assert np.array_equal(np.stack(df["embq.a"].to_list()), q8_dequantize(qa, sa))


def test_q8_writes_refuse_non_finite_values(fs: FeatureStore) -> None:
    x = vectors(2)[:, :1].copy()
    x[1, 0, 3] = np.inf
    with pytest.raises(
        InvalidInputError, match=r"row 1 .*feature 0 element 3: inf cannot be stored as DataTypeQ8Vector"
    ):
        fs.persist("item", "embq", ["k0", "k1"], [[x[i, 0], np.zeros(3)] for i in range(2)])
    assert fs.retrieve("item", ["k0"], {"embq": ["a"]}).status["embq"].tolist() == [MISSING]
    fs.persist("item", "embq", ["k0", "k1"], [[x[i, 0], np.zeros(3)] for i in range(2)], saturate=True)
    got = fs.retrieve("item", ["k1"], {"embq": ["a"]}).values["embq"][0, 0]
    scale = np.max(np.abs(np.delete(x[1, 0], 3))) / np.float32(127)
    assert got[3] == np.float32(127) * scale  # +Inf saturates to the vector's largest magnitude


def test_native_form_errors(fs: FeatureStore, monkeypatch: pytest.MonkeyPatch) -> None:
    fs.persist("item", "emb32", KEYS, vectors(3))
    with pytest.raises(InvalidInputError, match="embeddings='int8': expected one of 'float32', 'native'"):
        fs.retrieve("item", KEYS, {"emb32": ["a@Q8"]}, embeddings="int8")  # type: ignore[arg-type]
    # Q8 codes and float32 values cannot share one array: asked separately, both work.
    with pytest.raises(InvalidInputError, match="request them separately"):
        fs.retrieve("item", KEYS, {"emb32": ["a@Q8", "b"]}, embeddings="native")
    assert fs.retrieve("item", KEYS, {"emb32": ["a@Q8", "b"]}).values["emb32"].shape == (3, 2, DIM)
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(InvalidInputError, match=r"need the ml_dtypes package \(pip install ml_dtypes\)"):
        fs.retrieve("item", KEYS, {"emb32": ["a@BF16"]}, embeddings="native")
    # Without ml_dtypes the default form still works, and so does native Q8.
    assert fs.retrieve("item", KEYS, {"emb32": ["a@BF16"]}).values["emb32"].dtype == np.float32
    assert isinstance(
        fs.retrieve("item", KEYS, {"emb32": ["a@Q8"]}, embeddings="native").values["emb32"], Q8Values
    )


def test_cache_hits_serve_the_same_forms(tmp_path: Path) -> None:
    cached, registry, store = make(tmp_path, cached_doc())
    plain = FeatureStore(registry, stores={"main": store}, cache_bytes=0)
    try:
        x = vectors(3)
        cached.persist("item", "emb32", KEYS, x)
        cached.persist("item", "embq", KEYS, [[x[i, 0], x[i, 1, :3]] for i in range(3)])
        cached.persist("item", "embb", KEYS, x[:, :1])
        request = {"emb32": ["b@Q8", "a@Q8"], "embq": ["short", "a"], "embb": ["a"]}
        for form in ("float32", "native"):
            cached.retrieve("item", KEYS, request, embeddings=form)  # fills the cache
            hit = cached.retrieve("item", KEYS, request, embeddings=form)
            want = plain.retrieve("item", KEYS, request, embeddings=form)
            for fg in request:
                g, w = hit.values[fg], want.values[fg]
                if isinstance(w, Q8Values):
                    assert isinstance(g, Q8Values)
                    assert g.lengths == w.lengths
                    assert np.array_equal(g.codes, w.codes)
                    assert np.array_equal(g.scales, w.scales)
                else:
                    assert g.dtype == w.dtype, fg
                    assert g.tobytes() == w.tobytes(), fg
    finally:
        cached.close()
        plain.close()
        store.close()
        registry.close()


def test_wire_retrieve_serves_the_bytes_and_renders_the_values(fs: FeatureStore) -> None:
    x = np.float32([[[0.5, -1.0, 0.25, 0.0, 2.0, -2.0, 1.5, 0.125], [1.0] * DIM]])
    fs.persist("item", "emb32", ["w"], x)
    query = retrieve_pb2.Query(
        entity_label="item",
        keys_schema=["item_id"],
        keys=[retrieve_pb2.Keys(cols=["w"])],
        feature_groups=[retrieve_pb2.FeatureGroup(label="emb32", feature_labels=["a@Q8", "a@BF16"])],
    ).SerializeToString()
    res = retrieve_pb2.Result.FromString(fs.retrieve_wire(query))
    features = res.feature_schemas[0].features
    assert [(f.data_type, f.vector_length) for f in features] == [(33, DIM), (32, DIM)]
    q, s = q8_reference(x[0, :1])
    assert res.rows[0].columns[0] == s.astype("<f4").tobytes() + q.tobytes()
    assert res.rows[0].columns[1] == x[0, 0].astype(ml_dtypes.bfloat16).tobytes()
    decoded = retrieve_pb2.DecodedResult.FromString(fs.retrieve_wire(query, decoded=True))
    q8_text, bf16_text = decoded.rows[0].columns
    assert np.array_equal(np.array(q8_text.split(":"), dtype=np.float32), q8_dequantize(q, s)[0])
    assert bf16_text.split(":") == ["0.5", "-1", "0.25", "0", "2", "-2", "1.5", "0.125"]


def test_registry_yaml_knows_the_types(tmp_path: Path) -> None:
    from online_feature_store.registry.model import RegistryState
    from online_feature_store.registry.yaml_io import dump_yaml, state_to_dict

    spec = parse_spec(copy.deepcopy(DOC), env={})
    fgs = {fg.label: fg for fg in spec.entities[0].feature_groups}
    assert fgs["embq"].data_type == DataType.Q8_VECTOR
    assert fgs["embb"].data_type == DataType.BF16_VECTOR
    assert fgs["scalars"].data_type == DataType.BF16
    # Exported and applied back: a no-op, defaults included (Q8's read back exactly).
    state = reconcile(RegistryState(), spec)
    assert reconcile(state, parse_spec(state_to_dict(state))) == state
    text = dump_yaml(state)
    assert "data_type: DataTypeQ8Vector" in text
    assert "data_type: DataTypeBF16" in text
    embq = next(fg for fg in state_to_dict(state)["entities"][0]["feature_groups"] if fg["label"] == "embq")
    assert embq["features"][0]["default"] == [-127.0] + [0.0] * (DIM - 1)
    bad = copy.deepcopy(DOC)
    bad["entities"][0]["feature_groups"][2]["features"][0]["default"] = [float("nan")] * DIM
    with pytest.raises(InvalidInputError, match="cannot be stored as DataTypeQ8Vector"):
        reconcile(RegistryState(), parse_spec(bad, env={}))
