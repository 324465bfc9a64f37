"""What a retrieve returns, in process (:class:`~online_feature_store.FeatureStore`) or over gRPC
(:class:`~online_feature_store.Client`): :class:`RetrieveResult` and the per-key :class:`Status` codes.

Plain data with no dependency beyond numpy, so the client SDK uses it without loading the embedded store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from online_feature_store.embeddings import Q8Values

__all__ = ["EXPIRED", "FOUND", "MISSING", "RetrieveResult", "Status"]

FOUND, MISSING, EXPIRED = 0, 1, 2


class Status:
    """Per key and feature group: what the returned values are."""

    FOUND = FOUND
    """Live stored data."""
    MISSING = MISSING
    """Nothing stored: the active version's defaults."""
    EXPIRED = EXPIRED
    """Stored data past its TTL: the active version's defaults."""


@dataclass(frozen=True)
class RetrieveResult:
    """Features per FG: ``values[fg]`` has one row per requested key (in request order, duplicates kept)
    and one column per requested feature: shape ``(keys, features)``, or ``(keys, features, length)``
    for vector FGs; a list of rows for strings; a :class:`~online_feature_store.embeddings.Q8Values` for
    Q8 features retrieved with ``embeddings="native"``. ``status[fg]`` is a uint8 array of
    :class:`Status`."""

    entity: str
    features: Mapping[str, Sequence[str]]
    values: Mapping[str, Any]
    status: Mapping[str, npt.NDArray[np.uint8]]
    revision: int

    def to_pandas(self) -> Any:
        """One row per key, one column ``"<fg>.<feature>"`` per feature (vectors as arrays)."""
        import pandas as pd  # optional dependency

        columns: dict[str, Any] = {}
        for fg, labels in self.features.items():
            vals = self.values[fg]
            if isinstance(vals, Q8Values):
                vals = vals.dequantize()
            for i, label in enumerate(labels):
                col = [row[i] for row in vals] if isinstance(vals, list) else list(vals[:, i])
                columns[f"{fg}.{label.split('@')[0]}"] = col
        return pd.DataFrame(columns)
