"""``ofs rpc``: the grpcurl-style client works from server reflection alone (no local protos)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from online_feature_store import InvalidInputError, NotFoundError
from online_feature_store.cli import main
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.rpc import Reflector
from online_feature_store.server.app import ServerConfig, build_server, mark_serving

DOC = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
    "entities": [
        {
            "label": "user",
            "keys": [{"label": "user_id", "column": "uid"}],
            "feature_groups": [
                {
                    "label": "g",
                    "data_type": "fp32",
                    "store": "main",
                    "features": [{"label": "a", "default": 1.5}, {"label": "b", "default": -1.0}],
                }
            ],
        }
    ],
}


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    """A server (its reflection is tonic-reflection's, on the compiled front)."""
    registry = SqliteRegistry(tmp_path / "registry.db")
    spec = parse_spec(DOC, env={})
    registry.apply(lambda s: reconcile(s, spec))
    fs = FeatureStore(registry, data_directory=tmp_path)
    srv, port, health = build_server(fs, ServerConfig(port=0, metrics_port=0))
    srv.start()
    mark_serving(fs, health)
    yield f"127.0.0.1:{port}"
    srv.stop(0).wait()
    fs.close()
    registry.close()


def test_list_describe_and_call_through_reflection(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rpc", address, "list"]) == 0
    services = capsys.readouterr().out.split()
    assert {"retrieve.FeatureService", "persist.FeatureService", "grpc.health.v1.Health"} <= set(services)

    assert main(["rpc", address, "describe", "retrieve.FeatureService"]) == 0
    text = capsys.readouterr().out
    assert "rpc RetrieveDecodedResult(retrieve.Query) returns (retrieve.DecodedResult);" in text
    assert main(["rpc", address, "describe", "persist.Result"]) == 0
    assert "string message = 2;" in capsys.readouterr().out

    persist = {
        "entityLabel": "user",
        "keysSchema": ["user_id"],
        "featureGroupSchema": [{"label": "g", "featureLabels": ["b"]}],
        "data": [{"keyValues": ["u1"], "featureValues": [{"values": {"fp32Values": [2.5]}}]}],
    }
    method = "persist.FeatureService/PersistFeatures"
    assert main(["rpc", address, "call", method, "-d", json.dumps(persist)]) == 0
    assert json.loads(capsys.readouterr().out) == {"message": "Data Persisted Successfully"}
    query = {
        "entityLabel": "user",
        "keysSchema": ["user_id"],
        "keys": [{"cols": ["u1"]}, {"cols": ["u2"]}],
        "featureGroups": [{"label": "g", "featureLabels": ["a", "b"]}],
    }
    method = "retrieve.FeatureService/RetrieveDecodedResult"
    assert main(["rpc", address, "call", method, "-d", json.dumps(query)]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["columns"] for r in rows] == [["1.5", "2.5"], ["1.5", "-1"]]


def test_errors_name_what_is_wrong(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        r = Reflector(channel)
        with pytest.raises(NotFoundError, match=r"no service 'nope\.Service'"):
            r.call("nope.Service/X", "{}")
        with pytest.raises(NotFoundError, match="has no method 'Nope'"):
            r.call("retrieve.FeatureService/Nope", "{}")
        with pytest.raises(InvalidInputError, match=r"not a valid retrieve\.Query"):
            r.call("retrieve.FeatureService/RetrieveFeatures", '{"entityLabel": 5, "bogus": 1}')
        unknown = '{"entityLabel": "nobody", "keysSchema": ["x"], "keys": [{"cols": ["1"]}]}'
        with pytest.raises(NotFoundError, match="NOT_FOUND"):
            r.call("retrieve.FeatureService/RetrieveFeatures", unknown)
