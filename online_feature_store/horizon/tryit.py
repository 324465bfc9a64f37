"""The try-it call: one ``retrieve.FeatureService/RetrieveDecodedResult`` on the serving API.

The request and response are (de)serialized with the generated ``retrieve_pb2`` messages and sent through
a :class:`~online_feature_store.client.Client` as one raw call, exactly as any client of the serving API
would.
"""

from __future__ import annotations

import threading
from typing import Any

from online_feature_store.client import Client
from online_feature_store.contract import RETRIEVE_DECODED, call_message
from online_feature_store.errors import OfsError
from online_feature_store.horizon.config import HorizonConfig
from online_feature_store.horizon.schemas import TryIn

__all__ = ["ServingClient", "ServingError"]


class ServingError(Exception):
    """The serving API answered with an error (``status``, the gRPC status name; None when the call
    failed before an answer) or could not be reached."""

    def __init__(self, status: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServingClient:
    """A lazily opened :class:`Client` of the serving API at ``config.serving_address``."""

    def __init__(self, config: HorizonConfig) -> None:
        self.config = config
        self.address = config.serving_address
        self._lock = threading.Lock()
        self._client: Client | None = None

    def _open(self) -> Client:
        with self._lock:
            if self._client is None:
                token = self.config.serving_token
                self._client = Client(
                    self.address,
                    self.config.serving_caller_id or None,
                    token.get_secret_value() if token is not None else None,
                    timeout=self.config.serving_timeout_seconds,
                    retries=0,  # one call: the person clicking sees the first answer
                )
            return self._client

    def retrieve_decoded(self, query: TryIn) -> dict[str, Any]:
        """The decoded result as the API's ``TryOut`` shape; :class:`ServingError` on any error."""
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
            raw = self._open().retrieve_wire(request.SerializeToString(), decoded=True)
        except OfsError as exc:
            message = call_message(exc, RETRIEVE_DECODED.name)
            raise ServingError(exc.status, f"serving API at {self.address}: {message}") from None
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
        """Close the client (a later call opens a new one)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
