"""What a client process loads: ``online_feature_store.client`` needs the result types, the limits and the
RPC contract, never the embedded store (registry, stores, caches). Checked in a fresh interpreter, since
this test process has loaded everything already."""

from __future__ import annotations

import subprocess
import sys

EMBEDDED = (
    "online_feature_store.feature_store",
    "online_feature_store.registry",
    "online_feature_store.store",
)


def loaded_by(statement: str) -> set[str]:
    """The package's modules a fresh interpreter holds after ``statement``."""
    listing = "print('\\n'.join(m for m in sys.modules if m.startswith('online_feature_store')))"
    code = f"{statement}; import sys; {listing}"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_client_loads_no_part_of_the_embedded_store() -> None:
    loaded = loaded_by("from online_feature_store.client import Client")
    assert "online_feature_store.results" in loaded
    embedded = {m for m in loaded if m.startswith(EMBEDDED) or m.startswith("online_feature_store.cache")}
    assert not embedded, sorted(embedded)


def test_the_top_level_names_still_resolve() -> None:
    # FeatureStore and Client load on first use; the result types are the same classes either way.
    loaded = loaded_by(
        "import online_feature_store as ofs, online_feature_store.client as c; "
        "assert ofs.Client is c.Client and ofs.RetrieveResult is c.RetrieveResult; "
        "from online_feature_store import FeatureStore; "
        "assert FeatureStore.__module__ == 'online_feature_store.feature_store'"
    )
    assert "online_feature_store.feature_store" in loaded
