"""Batch loading: Parquet, CSV and Arrow IPC files (``ofs push``), Arrow tables and Spark DataFrames
(``push_dataframe``: Arrow batches; Python rows on old Spark) into an entity, checked before anything
is written, in bounded memory, and resumable from a checkpoint. See docs/ingestion.md."""

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
from online_feature_store.batch.spark import WRITTEN_SCHEMA, push_dataframe, spark_arrow_writer

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_READ_ROWS",
    "NULL_POLICIES",
    "WRITTEN_SCHEMA",
    "ColumnPlan",
    "LoadResult",
    "plan_columns",
    "push_arrow",
    "push_dataframe",
    "push_files",
    "push_rows",
    "spark_arrow_writer",
]
