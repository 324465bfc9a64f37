"""``ofs push``: the command line of :func:`~online_feature_store.batch.load.push_files`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from online_feature_store.errors import InvalidInputError

__all__ = ["run"]


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, column = item.partition("=")
        if not sep or not name or not column:
            raise InvalidInputError(f"{flag} {item!r}: expected NAME=COLUMN")
        out[name] = column
    return out


def _mapping_file(path: str) -> dict[str, Any]:
    """A YAML mapping file: ``entity``, ``keys`` (label → column) and ``feature_groups``, a list of FG
    labels or a map of FG label → {feature → column} (features not listed are read by name)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InvalidInputError(f"mapping file {path}: {e}") from e
    unknown = sorted(set(doc) - {"entity", "keys", "feature_groups"})
    if not isinstance(doc, dict) or unknown:
        raise InvalidInputError(
            f"mapping file {path}: expected the keys entity, keys, feature_groups (unknown: {unknown})"
        )
    groups = doc.get("feature_groups") or []
    columns: dict[str, str] = {}
    if isinstance(groups, dict):
        for fg, features in groups.items():
            for feature, column in (features or {}).items():
                columns[f"{fg}.{feature}"] = str(column)
        groups = list(groups)
    keys = {str(k): str(v) for k, v in (doc.get("keys") or {}).items()}
    fgs = [str(g) for g in groups]
    return {"entity": doc.get("entity"), "feature_groups": fgs, "keys": keys, "columns": columns}


@contextlib.contextmanager
def _target(args: argparse.Namespace) -> Iterator[tuple[Any, Any, str]]:
    """``(target, snapshot, sink name)`` for the chosen sink; closes what it opened."""
    from online_feature_store.feature_store import FeatureStore
    from online_feature_store.ingest import GrpcSink, KafkaSink, _snapshot
    from online_feature_store.settings import data_dir, location_given, registry_url

    if args.server is None and args.kafka is None:
        with FeatureStore(args.registry, data_directory=args.data_dir, cache_bytes=0) as fs:
            yield fs, fs.snapshot, f"embedded:{args.registry or data_dir(args.data_dir)}"
        return
    if not location_given(args.registry, args.data_dir):
        raise InvalidInputError("--server and --kafka need the schema: pass --registry URL or --data-dir")
    snapshot = _snapshot(registry_url(args.registry, args.data_dir))
    if args.dry_run:  # nothing is sent: no connection
        yield None, snapshot, "dry-run"
        return
    if args.server is not None:
        token = None
        if args.token_env:
            token = os.environ.get(args.token_env)
            if not token:
                raise InvalidInputError(f"--token-env {args.token_env}: the variable is not set")
        with GrpcSink(args.server, caller_id=args.caller_id, token=token) as sink:
            yield sink, snapshot, f"grpc:{args.server}"
        return
    if not args.topic:
        raise InvalidInputError("--kafka needs --topic")
    with KafkaSink(args.kafka, args.topic) as kafka:
        yield kafka, snapshot, f"kafka:{args.kafka}/{args.topic}"


def run(args: argparse.Namespace) -> int:
    """Runs ``ofs push`` with parsed ``args``; the exit status."""
    mapping = (
        _mapping_file(args.mapping)
        if args.mapping
        else {"entity": None, "feature_groups": [], "keys": {}, "columns": {}}
    )
    entity = args.entity or mapping["entity"]
    if not entity:
        raise InvalidInputError("name the entity: --entity LABEL (or entity: in the --mapping file)")
    groups = list(dict.fromkeys([*mapping["feature_groups"], *args.feature_group]))
    if not groups:
        raise InvalidInputError("name the feature groups to load: -g/--feature-group LABEL (repeatable)")
    keys = {**mapping["keys"], **_pairs(args.key, "--key")}
    columns = {**mapping["columns"], **_pairs(args.column, "--column")}
    if args.server is not None and args.kafka is not None:
        raise InvalidInputError("choose one sink: --server or --kafka (neither: the embedded store)")
    if args.batch_rows < 1:
        raise InvalidInputError(f"--batch-rows must be at least 1, got {args.batch_rows}")
    from online_feature_store.batch.load import push_files

    def say(message: str) -> None:
        print(f"ofs push: {message}", file=sys.stderr)

    with _target(args) as (target, snapshot, sink_name):
        result = push_files(
            args.sources,
            entity,
            feature_groups=groups,
            target=target,
            snapshot=snapshot,
            sink_name=sink_name,
            keys=keys,
            columns=columns,
            format=args.format,
            nulls=args.nulls,
            chunk_rows=args.batch_rows,
            checkpoint=Path(args.checkpoint) if args.checkpoint else None,
            restart=args.restart,
            dry_run=args.dry_run,
            progress=not args.no_progress,
            log=say,
        )
    rate = result.rows / result.seconds if result.seconds > 0 else 0.0
    if result.dry_run:
        print(f"dry run: {result.rows} rows in {result.files} file(s) are valid; nothing was written")
    else:
        skipped = f" ({result.skipped_rows} loaded by an earlier run)" if result.skipped_rows else ""
        print(
            f"pushed {result.rows} rows{skipped} of entity {entity!r} ({', '.join(groups)}) from "
            f"{result.files} file(s) in {result.seconds:.1f} s ({rate:,.0f} rows/s)"
        )
    return 0
