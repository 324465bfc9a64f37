"""``ofs push`` to the other sinks: a real ``ofs serve --auth`` over gRPC, and a real Kafka topic read by
a real ``ofs consume``; every row read back from the store they write."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from online_feature_store.cli import main
from online_feature_store.feature_store import FeatureStore

from .conftest import (
    BOOTSTRAP,
    FEATURE_GROUPS,
    TOKEN,
    assert_stored,
    consuming,
    serving,
    stored_count,
    table,
    wait_stored,
)

GROUPS = [a for g in FEATURE_GROUPS for a in ("-g", g)]


def test_push_to_ofs_serve(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pq.write_table(table(0, 12_000), tmp_path / "a.parquet", row_group_size=5000)
    with serving(data_dir, tmp_path / "serve.log") as address:
        base = [
            "push",
            "--data-dir",
            str(data_dir),
            "-e",
            "user",
            str(tmp_path / "a.parquet"),
            *GROUPS,
            "--server",
            address,
        ]
        # the server refuses a caller without a token, or with a wrong one; nothing is written
        assert main([*base, "--caller-id", "loader"]) == 1
        assert (
            "metadata 'online-feature-store-caller-id' and 'online-feature-store-auth-token' are required"
            in (capsys.readouterr().err)
        )
        monkeypatch.setenv("WRONG_TOKEN", "not-the-token-of-loader-0123456789")
        assert main([*base, "--caller-id", "loader", "--token-env", "WRONG_TOKEN", "--restart"]) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
            assert stored_count(fs, 0, 12_000) == 0
        assert main([*base, "--caller-id", "loader", "--token-env", "PUSH_TOKEN"]) == 1
        assert "--token-env PUSH_TOKEN: the variable is not set" in capsys.readouterr().err
        monkeypatch.setenv("PUSH_TOKEN", TOKEN)
        assert main([*base, "--caller-id", "loader", "--token-env", "PUSH_TOKEN", "--restart"]) == 0
        assert "pushed 12000 rows" in capsys.readouterr().out
        with FeatureStore(data_directory=data_dir, cache_bytes=0) as fs:
            assert_stored(fs, 0, 12_000)


def test_push_to_kafka_for_ofs_consume(
    data_dir: Path, tmp_path: Path, kafka_topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pq.write_table(table(0, 15_000), tmp_path / "a.parquet", row_group_size=4000)
    registry = f"sqlite:///{data_dir / 'registry.db'}"
    args = ["push", "--registry", registry, "-e", "user", str(tmp_path / "a.parquet"), *GROUPS]
    assert main([*args, "--kafka", BOOTSTRAP]) == 1
    assert "--kafka needs --topic" in capsys.readouterr().err
    assert main([*args, "--kafka", BOOTSTRAP, "--topic", kafka_topic]) == 0
    assert "pushed 15000 rows" in capsys.readouterr().out
    log = tmp_path / "consume.log"
    with (
        consuming(data_dir, kafka_topic, log) as proc,
        FeatureStore(data_directory=data_dir, cache_bytes=0) as fs,
    ):
        wait_stored(fs, 0, 15_000, proc, log)
        assert_stored(fs, 0, 15_000)
        assert stored_count(fs, 15_000, 10) == 0
