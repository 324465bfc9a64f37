"""The public surface: the top level holds what a user calls, the storage codecs are
``online_feature_store.formats``, each name re-exported explicitly from its one definition."""

from __future__ import annotations

import online_feature_store as ofs
from online_feature_store import _native, errors, formats

TOP_LEVEL = {
    "FeatureStore",
    "Client",
    "RetrieveResult",
    "Status",
    "Q8Values",
    "DataType",
    "__version__",
    *(name for name in errors.__all__ if name != "PortInUseError"),  # a service's error, not a user's
}


def test_the_top_level_is_what_a_user_calls() -> None:
    assert set(ofs.__all__) == TOP_LEVEL
    for name in ofs.__all__:
        assert getattr(ofs, name) is not None
    assert ofs.__version__ == _native.__version__
    codecs = set(formats.__all__) & set(dir(ofs))
    assert not codecs, f"codecs at the top level: {sorted(codecs)}"


def test_formats_re_exports_the_native_codecs_by_name() -> None:
    assert len(formats.__all__) == len(set(formats.__all__))
    for name in formats.__all__:
        assert getattr(formats, name) is getattr(_native, name), name
    assert {"BlockMeta", "encode_block", "decode_block", "csdb_encode", "fp16_encode", "q8_encode"} <= set(
        formats.__all__
    )
    # the engine, caches and wire encoders are the library's business, not a format
    assert not {"Catalog", "BlockCache", "Limits", "encode_retrieve_query"} & set(formats.__all__)
