"""The try-it call: one ``retrieve.FeatureService/RetrieveDecodedResult`` on the serving API over gRPC.

The request and response are (de)serialized with the generated ``retrieve_pb2`` messages and sent as raw
bytes on a plain channel, exactly as any client of the serving API would.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from online_feature_store.horizon.config import HorizonConfig
from online_feature_store.horizon.schemas import TryIn

__all__ = ["ServingClient", "ServingError"]

_METHOD = "/retrieve.FeatureService/RetrieveDecodedResult"
CALLER_HEADER = "online-feature-store-caller-id"
TOKEN_HEADER = "online-feature-store-auth-token"


class ServingError(Exception):
    """The serving API answered with an error (``code``) or could not be reached."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ServingClient:
    """A lazily opened channel to the serving API at ``config.serving_address``."""

    def __init__(self, config: HorizonConfig) -> None:
        self.address = config.serving_address
        self.timeout = config.serving_timeout_seconds
        self._metadata: list[tuple[str, str]] = []
        if config.serving_caller_id:
            self._metadata.append((CALLER_HEADER, config.serving_caller_id))
        if config.serving_token is not None:
            self._metadata.append((TOKEN_HEADER, config.serving_token.get_secret_value()))
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None

    def _call(self) -> Any:
        with self._lock:
            if self._channel is None:
                self._channel = grpc.insecure_channel(self.address)
            return self._channel.unary_unary(_METHOD)  # no (de)serializers: bytes in, bytes out

    def retrieve_decoded(self, query: TryIn) -> dict[str, Any]:
        """The decoded result as the API's ``TryOut`` shape; :class:`ServingError` on any gRPC error."""
        from online_feature_store._proto import retrieve_pb2

        request = retrieve_pb2.Query(
            entity_label=query.entity,
            keys_schema=query.keys_schema,
            keys=[retrieve_pb2.Keys(cols=row) for row in query.keys],
            feature_groups=[
                retrieve_pb2.FeatureGroup(label=g.label, feature_labels=g.feature_labels)
                for g in query.feature_groups
            ],
        )
        try:
            raw = self._call()(
                request.SerializeToString(), timeout=self.timeout, metadata=self._metadata or None
            )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise ServingError(code, f"serving API at {self.address}: {code.name}: {details}") from None
        result = retrieve_pb2.DecodedResult.FromString(raw)
        return {
            "keys_schema": list(result.keys_schema),
            "feature_schemas": [
                {
                    "feature_group_label": fs.feature_group_label,
                    "features": [{"label": f.label, "column_idx": f.column_idx} for f in fs.features],
                }
                for fs in result.feature_schemas
            ],
            "rows": [{"keys": list(r.keys), "columns": list(r.columns)} for r in result.rows],
        }

    def close(self) -> None:
        """Close the channel (a later call opens a new one)."""
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None
