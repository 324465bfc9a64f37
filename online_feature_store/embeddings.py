"""How embedding features come back from a retrieve: the ``embeddings=`` option of
:meth:`FeatureStore.retrieve <online_feature_store.feature_store.FeatureStore.retrieve>` and
:meth:`Client.retrieve <online_feature_store.client.Client.retrieve>`, and :class:`Q8Values`, the native
form of a Q8 (int8 with a per-vector scale) feature group. See ``docs/embeddings.md``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from online_feature_store.errors import InvalidInputError

__all__ = ["EMBEDDING_FORMS", "Embeddings", "Q8Values", "is_native"]

Embeddings = Literal["float32", "native"]
"""``"float32"`` (default): every float narrower than float32 widened to float32 (bf16 exactly, Q8
dequantized as ``code * scale``). ``"native"``: bf16 as ``ml_dtypes.bfloat16`` arrays (needs the
``ml_dtypes`` package), Q8 as :class:`Q8Values` (int8 codes plus per-vector scales, for int8 dot
products); other types as with ``"float32"``."""

EMBEDDING_FORMS: tuple[str, ...] = ("float32", "native")


def is_native(embeddings: str) -> bool:
    """Whether ``embeddings`` asks for the native forms; ``InvalidInputError`` for an unknown form."""
    if embeddings not in EMBEDDING_FORMS:
        raise InvalidInputError(
            f"embeddings={embeddings!r}: expected one of {', '.join(repr(f) for f in EMBEDDING_FORMS)}"
        )
    return embeddings == "native"


@dataclass(frozen=True)
class Q8Values:
    """A Q8 feature group's values as stored, one row per key: ``codes`` int8 of shape
    ``(keys, features, length)`` (``(keys, Σ lengths)`` when the features' lengths differ) and ``scales``
    float32 ``(keys, features)``; value = code * scale. ``lengths`` are the features' vector lengths.

    The dot product of two Q8 vectors is ``int32(codes_a · codes_b) * scale_a * scale_b``. Code -128 means
    NaN (written only when a NaN is stored with ``saturate``)."""

    codes: npt.NDArray[np.int8]
    scales: npt.NDArray[np.float32]
    lengths: tuple[int, ...]

    @classmethod
    def from_native(cls, part: Any) -> Q8Values:
        """From the ``(codes, scales, lengths)`` the native core returns."""
        codes, scales, lengths = part
        return cls(codes, scales, tuple(int(n) for n in lengths))

    def dequantize(self) -> npt.NDArray[np.float32]:
        """float32 values, shaped like ``codes`` (what ``embeddings="float32"`` returns)."""
        codes = self.codes.astype(np.float32)
        if self.codes.ndim == 3:
            scales = self.scales[:, :, None]
        else:  # ragged lengths: each feature's scale repeated over its length
            scales = np.repeat(self.scales, self.lengths, axis=1)
        out: npt.NDArray[np.float32] = np.where(
            self.codes == -128, np.float32(np.nan), codes * scales
        ).astype(np.float32)
        return out

    def feature(self, i: int) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
        """``(codes (keys, length), scales (keys,))`` of the ``i``-th requested feature."""
        if self.codes.ndim == 3:
            return self.codes[:, i, :], self.scales[:, i]
        start = sum(self.lengths[:i])
        return self.codes[:, start : start + self.lengths[i]], self.scales[:, i]

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @staticmethod
    def concatenate(parts: Sequence[Q8Values]) -> Q8Values:
        """The rows of several results of the same request, in order (a batched client call)."""
        return Q8Values(
            np.concatenate([p.codes for p in parts]),
            np.concatenate([p.scales for p in parts]),
            parts[0].lengths,
        )
