"""Quick start, part 2: persist sample features through the gRPC API and read them back.

Uses the wire contract in proto/ (generated into ``online_feature_store._proto``), exactly as any gRPC client
of the reference would. Run by ``./scripts/run`` against ``ofs serve`` on 127.0.0.1:8089.
"""

from __future__ import annotations

import os
import struct
import sys

import grpc
import numpy as np

from online_feature_store._proto import persist_pb2, retrieve_pb2

ADDRESS = os.environ.get("OFS_ADDRESS", "127.0.0.1:8089")
USERS = {"u1": (0.031, 12, 410.5), "u2": (0.002, 3, 19.0), "u3": (0.120, 40, 1210.25)}


def main() -> int:
    channel = grpc.insecure_channel(ADDRESS)
    persist = channel.unary_unary(
        "/persist.FeatureService/PersistFeatures",
        request_serializer=persist_pb2.Query.SerializeToString,
        response_deserializer=persist_pb2.Result.FromString,
    )
    retrieve = channel.unary_unary(
        "/retrieve.FeatureService/RetrieveFeatures",
        request_serializer=retrieve_pb2.Query.SerializeToString,
        response_deserializer=retrieve_pb2.Result.FromString,
    )
    activity = persist_pb2.FeatureGroupSchema(
        label="activity", feature_labels=["ctr_7d", "sessions_7d", "spend_30d"]
    )
    embedding = persist_pb2.FeatureGroupSchema(label="embedding", feature_labels=["user_emb"])
    rows = []
    for i, (user, values) in enumerate(USERS.items()):
        emb = persist_pb2.Values(
            vector=[
                persist_pb2.Vector(
                    values=persist_pb2.Values(fp32_values=list(np.linspace(-1, 1, 8) * (i + 1)))
                )
            ]
        )
        rows.append(
            persist_pb2.Data(
                key_values=[user],
                feature_values=[
                    persist_pb2.FeatureValues(values=persist_pb2.Values(fp32_values=list(values))),
                    persist_pb2.FeatureValues(values=emb),
                ],
            )
        )
    reply = persist(
        persist_pb2.Query(
            entity_label="user",
            keys_schema=["user_id"],
            feature_group_schema=[activity, embedding],
            data=rows,
        ),
        timeout=10,
    )
    print(f"persisted {len(rows)} users: {reply.message}")

    query = retrieve_pb2.Query(
        entity_label="user",
        keys_schema=["user_id"],
        keys=[retrieve_pb2.Keys(cols=[u]) for u in ("u1", "u3", "unknown")],
        feature_groups=[
            retrieve_pb2.FeatureGroup(label="activity", feature_labels=["spend_30d", "ctr_7d"]),
            retrieve_pb2.FeatureGroup(label="embedding", feature_labels=["user_emb@DataTypeFP8E4M3Vector"]),
        ],
    )
    result = retrieve(query, timeout=10)
    labels = [f.label for s in result.feature_schemas for f in s.features]
    print(f"first retrieval from {ADDRESS}: {labels}")
    for row in result.rows:
        spend, ctr = (struct.unpack("<f", c)[0] for c in row.columns[:2])
        emb = np.frombuffer(row.columns[2], dtype=np.uint8)
        status = ["found" if s == 0 else "defaults" for s in row.fg_status]
        print(
            f"  {row.keys[0]:>8}: spend_30d={spend:9.2f} ctr_7d={ctr:.3f} user_emb(fp8)={emb.tolist()}",
            status,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
