"""The one key encoding: injective, canonical order, namespaced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from online_feature_store.store.keys import encode_key, namespaced_key

keys = st.lists(st.text(alphabet=st.sampled_from("ab|:\\é"), max_size=4), min_size=1, max_size=3).map(tuple)


@given(keys, keys)
def test_distinct_keys_encode_distinctly(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    if len(a) == len(b) and a != b:
        assert encode_key(a) != encode_key(b)


@given(
    st.text(alphabet=st.sampled_from("ab|:\\"), max_size=4),
    keys,
    st.text(alphabet=st.sampled_from("ab|:\\"), max_size=4),
    keys,
)
def test_namespaced_keys_of_distinct_entities_or_keys_differ(
    e1: str, k1: tuple[str, ...], e2: str, k2: tuple[str, ...]
) -> None:
    if (e1, k1) != (e2, k2) and len(k1) == len(k2):
        assert namespaced_key("s", e1, k1) != namespaced_key("s", e2, k2)


def test_examples() -> None:
    assert encode_key(("u1", "eu")) == "u1|eu"
    assert encode_key(("a|b", "c:d", "e\\")) == "a\\|b|c\\:d|e\\\\"
    assert namespaced_key("s", "user", ("1",)) == "ofs:s:user:1"
    assert namespaced_key("c", "a:b", ("1",)) == "ofs:c:a\\:b:1"
