"""The Feast side of the peer benchmark. Runs inside bench/.venv-feast (never in our .venv):

    bench/.venv-feast/bin/python bench/peers/feast_peer.py load --repo DIR --project P --keys 1000 --fvs 20
    bench/.venv-feast/bin/python bench/peers/feast_peer.py sdk --repo DIR --cases 1x1,100x1 --seconds 2
    bench/.venv-feast/bin/python bench/peers/feast_peer.py body --fvs 3 --keys 100 > body.json
    bench/.venv-feast/bin/python bench/peers/feast_peer.py clean --project P

The data is the same as ours: entity ``user`` (join key ``user_id``, the strings ``u000000``...), feature
views ``fg0..`` of 64 Float32 features ``f0..f63`` each, values uniform in [-4, 4). The online store is
the shared Redis on 127.0.0.1:16379 in its own DB (``--db``, default 14), so nothing mixes with our
``ofs:`` keys in DB 0 / 13; every Feast key ends with the project name, which is unique per run, and
``clean`` deletes exactly those keys. Each command prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 64
REDIS_HOST, REDIS_PORT = "127.0.0.1", 16379


def key(i: int) -> str:
    """The i-th entity key (the same strings as bench/grpc_bench.py)."""
    return f"u{i:06d}"


def features(n_fvs: int) -> list[str]:
    """Feature references ``fg<i>:f<j>`` for every feature of the first ``n_fvs`` feature views."""
    return [f"fg{i}:f{j}" for i in range(n_fvs) for j in range(N_FEATURES)]


def _redis(db: int) -> Any:
    import redis

    return redis.Redis(REDIS_HOST, REDIS_PORT, db=db)


def _project_keys(client: Any, project: str) -> list[bytes]:
    # Feast's Redis key is the serialized entity key followed by the project name.
    return list(client.scan_iter(match=f"*{project}", count=1000))


def _memory(client: Any, keys: list[bytes]) -> int:
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    return sum(int(x or 0) for x in pipe.execute())


def write_repo(repo: Path, project: str, db: int) -> None:
    """A Feast repo directory: feature_store.yaml (Redis online store, file offline store)."""
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: redis\n"
        f'  connection_string: "{REDIS_HOST}:{REDIS_PORT},db={db}"\n'
        "offline_store:\n"
        "  type: file\n"
        "entity_key_serialization_version: 3\n"
    )


def frame(keys: list[str], rng: np.random.Generator) -> Any:
    """A DataFrame of rows for ``keys``: user_id, event_timestamp, f0..f63 (float32)."""
    import pandas as pd

    values = rng.uniform(-4.0, 4.0, (len(keys), N_FEATURES)).astype(np.float32)
    df = pd.DataFrame(values, columns=[f"f{j}" for j in range(N_FEATURES)])
    df.insert(0, "event_timestamp", datetime.now(timezone.utc))
    df.insert(0, "user_id", keys)
    return df


def cmd_load(args: argparse.Namespace) -> dict[str, Any]:
    """Defines the entity and feature views, writes every key of every view; ingestion rate and the
    Redis footprint per entity after the first view and after all of them."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32

    repo = Path(args.repo)
    write_repo(repo, args.project, args.db)
    rng = np.random.default_rng(7)
    frame([key(0)], rng).to_parquet(repo / "source.parquet")  # the offline source views must name
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    source = FileSource(path=str(repo / "source.parquet"), timestamp_field="event_timestamp")
    views = [
        FeatureView(
            name=f"fg{i}",
            entities=[user],
            ttl=timedelta(days=1),
            schema=[Field(name=f"f{j}", dtype=Float32) for j in range(N_FEATURES)],
            online=True,
            source=source,
        )
        for i in range(args.fvs)
    ]
    store = FeatureStore(repo_path=str(repo))
    store.apply([user, *views])
    client = _redis(args.db)
    keys = [key(i) for i in range(args.keys)]
    rows, spent, footprint = 0, 0.0, {}
    for i in range(args.fvs):
        for start in range(0, len(keys), args.batch):
            df = frame(keys[start : start + args.batch], rng)
            began = time.perf_counter()
            store.write_to_online_store(f"fg{i}", df)
            spent += time.perf_counter() - began
            rows += len(df)
        if i == 0 or i == args.fvs - 1:
            stored = _project_keys(client, args.project)
            footprint[str(i + 1)] = {"keys": len(stored), "bytes": _memory(client, stored)}
    client.close()
    import feast

    return {"feast": feast.__version__, "rows_per_s": rows / spent, "rows": rows, "footprint": footprint}


def cmd_sdk(args: argparse.Namespace) -> dict[str, Any]:
    """``get_online_features(...).to_dict()`` latency per case ``<keys>x<fvs>``, one call at a time."""
    from feast import FeatureStore

    store = FeatureStore(repo_path=args.repo)
    out = {}
    for case in args.cases.split(","):
        n_keys, n_fvs = (int(x) for x in case.split("x"))
        refs = features(n_fvs)
        rows = [{"user_id": key(i)} for i in range(n_keys)]
        first = store.get_online_features(features=refs, entity_rows=rows, full_feature_names=True).to_dict()
        values = first[f"fg{n_fvs - 1}__f63"]
        if any(v is None for v in values):  # the data must be there, or we would time misses
            raise SystemExit(f"feast returned missing values for {case}")
        times: list[float] = []
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline or len(times) < args.min_calls:
            began = time.perf_counter()
            store.get_online_features(features=refs, entity_rows=rows, full_feature_names=True).to_dict()
            times.append(time.perf_counter() - began)
            if len(times) >= args.max_calls:
                break
        t = np.array(times) * 1000
        out[case] = {
            "calls": len(times),
            "p50_ms": float(np.percentile(t, 50)),
            "p99_ms": float(np.percentile(t, 99)),
            "mean_ms": float(t.mean()),
        }
    return out


def cmd_body(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON body of a feature-server ``POST /get-online-features`` call."""
    return {
        "features": features(args.fvs),
        "entities": {"user_id": [key(i) for i in range(args.keys)]},
        "full_feature_names": True,
    }


def cmd_clean(args: argparse.Namespace) -> dict[str, Any]:
    """Deletes this project's keys (and only those) from the Feast Redis DB."""
    client = _redis(args.db)
    stored = _project_keys(client, args.project)
    deleted = 0
    for i in range(0, len(stored), 1000):
        deleted += int(client.delete(*stored[i : i + 1000]))
    client.close()
    return {"deleted": deleted}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load")
    load.add_argument("--repo", required=True)
    load.add_argument("--project", required=True)
    load.add_argument("--keys", type=int, default=1000)
    load.add_argument("--fvs", type=int, default=20)
    load.add_argument("--batch", type=int, default=500)
    sdk = sub.add_parser("sdk")
    sdk.add_argument("--repo", required=True)
    sdk.add_argument("--cases", required=True, help="comma-separated <keys>x<feature views>")
    sdk.add_argument("--seconds", type=float, default=2.0)
    sdk.add_argument("--min-calls", type=int, default=5)
    sdk.add_argument("--max-calls", type=int, default=2000)
    body = sub.add_parser("body")
    body.add_argument("--fvs", type=int, required=True)
    body.add_argument("--keys", type=int, required=True)
    clean = sub.add_parser("clean")
    clean.add_argument("--project", required=True)
    for s in (load, clean):
        s.add_argument("--db", type=int, default=14)
    args = p.parse_args()
    result = {"load": cmd_load, "sdk": cmd_sdk, "body": cmd_body, "clean": cmd_clean}[args.command](args)
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
