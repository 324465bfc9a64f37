"""Schema size bounds, the one rule (``registry.validate.size_problems``) that the registry, ``ofs registry
apply`` and Horizon share: vector length <= 65535, string length 0..65535, and one FG row <= 4 MiB when
served. Issue 14 #7: ``vector_length: 100000000`` was accepted after 3 minutes and 6.3 GB (its default
built value by value), leaving a 534 MB registry every process had to load."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from online_feature_store.errors import InvalidInputError
from online_feature_store.registry.model import (
    MAX_ROW_BYTES,
    MAX_STRING_LENGTH,
    MAX_VECTOR_LENGTH,
    Feature,
)
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.validate import size_problems, validate_state
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.types import DataType


def doc(features: list[dict[str, Any]], data_type: str = "fp64vector") -> dict[str, Any]:
    return {
        "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
        "entities": [
            {
                "label": "user",
                "keys": [{"label": "user_id", "column": "uid"}],
                "feature_groups": [
                    {"label": "emb", "data_type": data_type, "store": "main", "features": features}
                ],
            }
        ],
    }


def apply(tmp_path: Path, spec: dict[str, Any]) -> None:
    registry = SqliteRegistry(tmp_path / "registry.db")
    try:
        registry.apply(lambda state: reconcile(state, parse_spec(spec, env={})))
    finally:
        registry.close()


def test_the_limits() -> None:
    assert (MAX_VECTOR_LENGTH, MAX_STRING_LENGTH, MAX_ROW_BYTES) == (65_535, 65_535, 4 * 1024 * 1024)


def test_registry_apply_refuses_a_huge_vector_at_once_and_small(tmp_path: Path) -> None:
    """``ofs registry apply`` in a process of its own: the message names the feature, the value and the
    limit, and the process's peak RSS (``VmHWM`` of its own address space, read as it ends) stays small,
    since no default value is built."""
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(doc([{"label": "v", "vector_length": 100_000_000}])))
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    run = (
        "import sys\n"
        "from pathlib import Path\n"
        "from online_feature_store.cli import main\n"
        f"code = main({['registry', 'apply', '-y', '-f', str(tmp_path / 'f.yaml'), '--registry', url]!r})\n"
        "hwm = [l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM:')]\n"
        "print(hwm[0].split()[1])\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", run],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert (
        "entity 'user', feature group 'emb', feature 'v': vector length 100000000 is over the limit of 65535"
        in proc.stderr
    )
    peak_kb = int(proc.stdout.split()[-1])
    assert peak_kb < 300 * 1024, f"peak RSS {peak_kb} KB"
    registry = SqliteRegistry(tmp_path / "registry.db")
    assert registry.load().revision == 0, "nothing applied"
    registry.close()


def test_string_lengths_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as err:
        apply(tmp_path, doc([{"label": "s", "string_length": 70_000}], "string"))
    assert (
        str(err.value)
        == "entity 'user', feature group 'emb', feature 's': string length 70000 does not fit in 0..65535"
    )


def test_one_row_is_at_most_4_mib(tmp_path: Path) -> None:
    # 8 vectors of 65535 fp64 values: 8 x 524280 bytes, just under 4 MiB.
    eight = [{"label": f"v{i}", "vector_length": MAX_VECTOR_LENGTH} for i in range(8)]
    apply(tmp_path, doc(eight))
    nine = [*eight, {"label": "v8", "vector_length": MAX_VECTOR_LENGTH}]
    with pytest.raises(InvalidInputError) as err:
        apply(tmp_path, doc(nine))
    assert str(err.value) == (
        "entity 'user', feature group 'emb': one row takes up to 4718520 bytes (9 features, the largest 'v8' "
        "524280 bytes), over the limit of 4194304 bytes per feature group row"
    )
    # Strings count at their booked length (a string vector: 2 bytes of length and the string per value).
    strings = [{"label": "t", "vector_length": MAX_VECTOR_LENGTH, "string_length": 64}]
    (tmp_path / "strings").mkdir()
    with pytest.raises(
        InvalidInputError, match=r"one row takes up to 4325310 bytes \(1 feature, the largest 't'"
    ):
        apply(tmp_path / "strings", doc(strings, "stringvector"))


def test_the_rule_itself() -> None:
    fine = size_problems("e", "g", DataType.FP32_VECTOR, [("a", 0, 1000), ("b", 0, MAX_VECTOR_LENGTH)])
    assert fine == []
    problems = size_problems("e", "g", DataType.STRING_VECTOR, [("a", -1, 3), ("b", 8, 70_000), ("c", 8, 5)])
    assert [(p.feature, p.field) for p in problems] == [(0, "string_length"), (1, "vector_length")]
    # A string of booked length 0 counts at 65535 (its default may be that long): 65 of them are over.
    many = [(f"s{i}", 0, 0) for i in range(65)]
    (row,) = size_problems("e", "g", DataType.STRING, many)
    assert (row.feature, row.field) == (None, None)
    assert "one row takes up to 4259775 bytes (65 features" in row.message


def test_a_state_over_the_bounds_is_invalid_without_decoding_its_default() -> None:
    """A state built without the spec (Horizon, a restored backup): refused by validate_state, and the
    default of the oversized feature is not decoded (it could be hundreds of MB)."""
    spec = parse_spec(doc([{"label": "v", "vector_length": 4}]), env={})
    from online_feature_store.registry.model import RegistryState

    state = reconcile(RegistryState(), spec)
    fg = state.entities[0].feature_groups[0]
    huge = Feature("v", b"not a cell", 0, MAX_VECTOR_LENGTH + 1)
    bad = dataclasses.replace(fg, versions={1: (huge,)})
    entity = dataclasses.replace(state.entities[0], feature_groups=(bad,))
    with pytest.raises(InvalidInputError) as err:
        validate_state(state.with_entity(entity))
    assert (
        str(err.value)
        == "entity 'user', feature group 'emb', feature 'v': vector length 65536 is over the limit of 65535"
    )
