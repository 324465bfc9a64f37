"""Batch loading: Parquet, CSV and Arrow IPC files (``ofs push``), Arrow tables and Python rows (the
Spark partition writer) into an entity, checked before anything is written, in bounded memory, and
resumable from a checkpoint. See docs/ingestion.md."""

from __future__ import annotations

from online_feature_store.batch.columns import NULL_POLICIES, ColumnPlan, plan_columns
from online_feature_store.batch.load import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_READ_ROWS,
    LoadResult,
    push_arrow,
    push_files,
    push_rows,
)

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_READ_ROWS",
    "NULL_POLICIES",
    "ColumnPlan",
    "LoadResult",
    "plan_columns",
    "push_arrow",
    "push_files",
    "push_rows",
]
