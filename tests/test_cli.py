"""``ofs --help`` as a user reads it: every flag that an environment variable also sets names that variable,
no help text sends the reader to a ``docs/*.md`` file (a pip install has none), and ``ofs rpc`` without
arguments asks for what it needs."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields

from online_feature_store.cli import build_parser
from online_feature_store.consumer.config import ENV_PREFIX as CONSUMER_PREFIX
from online_feature_store.consumer.config import ConsumerConfig
from online_feature_store.horizon.config import ENV_PREFIX as HORIZON_PREFIX
from online_feature_store.horizon.config import HorizonConfig
from online_feature_store.server.main import ENV as SERVE_ENV

STORE = {"data_dir": ["OFS_DATA_DIR"], "registry": ["OFS_REGISTRY"]}
"""Where every command reads the data directory and the registry from."""


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _env_vars(path: tuple[str, ...], dest: str) -> list[str]:
    """The environment variables that set what option ``dest`` of command ``path`` sets, from the
    settings modules themselves (so a new setting with a flag is held to this too)."""
    if path[:1] == ("serve",):
        if dest in SERVE_ENV:
            return [SERVE_ENV[dest]]
        return {"workers": ["OFS_WORKERS"], **STORE}.get(dest, [])
    if path[:1] == ("consume",):
        known = {f.name for f in fields(ConsumerConfig)} | set(STORE)
        return [CONSUMER_PREFIX + dest.upper(), *STORE.get(dest, [])] if dest in known else []
    if path[:1] == ("horizon",):
        own = [HORIZON_PREFIX + dest.upper()] if dest in {f.name for f in fields(HorizonConfig)} else []
        return own + (STORE["data_dir"] if dest == "data_dir" else [])
    return STORE.get(dest, [])


def test_every_flag_names_its_environment_variable() -> None:
    missing = []
    checked = 0
    for path, parser in _commands(build_parser()):
        for action in parser._actions:
            if not action.option_strings:
                continue
            for var in _env_vars(path, action.dest):
                checked += 1
                if f"${var}" not in (action.help or ""):
                    missing.append(f"ofs {' '.join(path)} {action.option_strings[-1]}: ${var}")
    assert not missing, missing
    assert checked > 30  # the walk reached every command


def test_no_help_points_into_docs() -> None:
    for path, parser in _commands(build_parser()):
        texts = [parser.description or "", parser.format_help()]
        assert not any("docs/" in t for t in texts), f"ofs {' '.join(path)}"


def test_metrics_port_flag_and_help_through_the_command() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", "serve", "--help"],
        capture_output=True, text=True, timeout=60, check=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert "--metrics-port METRICS_PORT" in shown.stdout
    assert "$OFS_METRICS_PORT" in shown.stdout


def test_rpc_without_arguments_asks_for_address_and_command() -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", "rpc"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 2
    assert ran.stderr.endswith("ofs rpc: error: the following arguments are required: address, command\n")
