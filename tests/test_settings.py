"""Settings are declared once (:mod:`online_feature_store.settings`): one loader for every process, one
shared block, the shared variables read in one module, and docs/configuration.md written from the
declarations."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import online_feature_store
from online_feature_store.consumer.config import load_config as consume_config
from online_feature_store.errors import InvalidInputError
from online_feature_store.horizon.config import HorizonConfig
from online_feature_store.horizon.db import Role
from online_feature_store.server.main import load_config as serve_config
from online_feature_store.settings import DATA_DIR_ENV, DISTRIBUTED_CACHE_ENV, REGISTRY_ENV, Secret

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(online_feature_store.__file__).parent


def test_the_configuration_page_is_written_from_the_declarations() -> None:
    ran = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings-doc"), "--check"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr


def test_the_shared_variables_are_read_in_one_module() -> None:
    shared = {DATA_DIR_ENV, REGISTRY_ENV, DISTRIBUTED_CACHE_ENV}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in shared and path.name != "settings.py":
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value}")
            if isinstance(node, ast.FunctionDef) and node.name == "_coerce" and path.name != "settings.py":
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: def _coerce")
    assert not found, found


def test_values_are_coerced_and_checked_however_made() -> None:
    config = HorizonConfig(port="8100", try_entities="user, item", try_role="admin", secret="s" * 32)
    assert (config.port, config.try_entities, config.try_role) == (8100, ("user", "item"), Role.ADMIN)
    assert isinstance(config.secret, Secret)
    assert "s" * 32 not in repr(config)
    with pytest.raises(InvalidInputError) as bad:
        HorizonConfig(port=70000, single_person="maybe", password_profile="FAST")
    message = str(bad.value)
    assert "setting 'port' must be at most 65535, got 70000" in message  # every problem named at once
    assert "setting 'single_person': cannot use 'maybe' as bool" in message
    assert "setting 'password_profile': 'FAST' is not one of" in message


def test_shared_variables_are_below_the_file_in_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("registry: sqlite:///from-file.db\ndistributed_cache: redis://file:6379/0\n")
    monkeypatch.setenv(REGISTRY_ENV, "sqlite:///from-env.db")
    monkeypatch.setenv(DISTRIBUTED_CACHE_ENV, "redis://env:6379/0")
    for load in (serve_config, consume_config):
        extra = load(str(path), {})[1]
        assert (extra["registry"], extra["distributed_cache"]) == (
            "sqlite:///from-file.db",
            "redis://file:6379/0",
        ), load.__module__
        assert load(None, {})[1]["distributed_cache"] == "redis://env:6379/0"
    monkeypatch.setenv("OFS_CONSUMER_DISTRIBUTED_CACHE", "redis://own:6379/0")
    assert consume_config(str(path), {})[1]["distributed_cache"] == "redis://own:6379/0"
