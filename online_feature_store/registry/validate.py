"""Every rule a registry state must satisfy, and the rules for changing one state into another.

All checks raise :class:`~online_feature_store.InvalidInputError` whose message names the entity, FG and
feature at fault (every problem found, one per line). Backends call :func:`validate_change` inside the
transaction before writing anything, so a failed check applies nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from online_feature_store._native import MAX_TTL_SECONDS, cell_max_len, decode_cell, encode_cell
from online_feature_store.errors import InvalidInputError
from online_feature_store.registry.model import (
    MAX_FG_ID,
    MAX_ROW_BYTES,
    MAX_STRING_LENGTH,
    MAX_VECTOR_LENGTH,
    ROLES,
    STORE_KINDS,
    CachePolicy,
    Entity,
    Feature,
    FeatureGroup,
    RegistryState,
)
from online_feature_store.registry.tokens import is_token_hash
from online_feature_store.types import DataType

__all__ = [
    "HasData",
    "Problem",
    "cell_to_plain",
    "encode_default",
    "no_data",
    "raise_problems",
    "size_problems",
    "validate_change",
    "validate_state",
    "vector_length_problems",
    "where",
]

HasData = Callable[[str], bool]
"""``has_data(entity_label)``: whether any store holds rows of the entity (guards key-schema changes)."""

MAX_VERSION = 0xFFFF
"""Versions travel as u16 in block headers."""


def no_data(entity: str) -> bool:
    """The default :data:`HasData`: the registry alone cannot see data, so it assumes none."""
    return False


def where(entity: str, fg: str | None = None, feature: str | None = None) -> str:
    """``entity 'user', feature group 'profile', feature 'age'``: the prefix of every message."""
    out = f"entity {entity!r}"
    if fg is not None:
        out += f", feature group {fg!r}"
    if feature is not None:
        out += f", feature {feature!r}"
    return out


def encode_default(
    data_type: DataType, value: object, *, string_length: int, vector_length: int, at: str
) -> bytes:
    """``value`` (a plain YAML/JSON value) as a cell of ``data_type``; ``InvalidInputError`` naming ``at``."""
    items = value if isinstance(value, (list, tuple)) else [value]
    problem = None
    if data_type.is_vector != isinstance(value, (list, tuple)):
        problem = "a vector type takes a list" if data_type.is_vector else "a scalar type takes one value"
    elif data_type not in (DataType.BOOL, DataType.BOOL_VECTOR) and any(isinstance(v, bool) for v in items):
        problem = "a bool is not a number"
    if problem is not None:
        raise InvalidInputError(f"{at}: default {value!r} does not fit {data_type.type_name}: {problem}")
    wrong = _wrong_item(data_type, items)
    if wrong is not None:  # named here: the encoder would only say "unsupported value dtype <U3"
        index, item, wanted = wrong
        short = data_type.type_name[len("DataType") :].lower()  # as the YAML spells it: fp32
        what = (
            f"item {index} ({item!r}) of default {value!r}" if data_type.is_vector else f"default {value!r}"
        )
        raise InvalidInputError(f"{at}: {what} is not {wanted} for data type {short}")
    try:
        return encode_cell(
            int(data_type),
            value,
            string_length=string_length or MAX_STRING_LENGTH,
            vector_length=vector_length,
        )
    except (InvalidInputError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(
            f"{at}: default {value!r} does not fit {data_type.type_name}: {exc}"
        ) from None


def _wrong_item(data_type: DataType, items: Iterable[object]) -> tuple[int, object, str] | None:
    """The first of a default's values that is not the kind of value ``data_type`` holds, with its index
    and what it should be."""
    if data_type.is_string:
        kinds: tuple[type, ...] = (str,)
        wanted = "a string"
    elif data_type in (DataType.BOOL, DataType.BOOL_VECTOR):
        kinds, wanted = (bool, int), "true or false"
    else:
        kinds, wanted = (int, float), "a number"
    for index, item in enumerate(items):
        if not isinstance(item, kinds):
            return index, item, wanted
    return None


@dataclass(frozen=True)
class Problem:
    """A rule a schema breaks: ``feature`` is the index of the feature at fault in the list checked and
    ``field`` its setting (``vector_length``, ``string_length``, ``default``); both ``None`` for the row
    as a whole. Horizon reports each at its field; the registry raises the messages."""

    message: str
    feature: int | None = None
    field: str | None = None


def vector_length_problems(at: str, data_type: DataType, vector_length: int) -> list[Problem]:
    """A vector type needs a length of at least 1; a scalar type takes none (``at``: the feature)."""
    if data_type.is_vector and vector_length < 1:
        message = f"{at}: vector length {vector_length}: {data_type.type_name} needs at least 1"
    elif not data_type.is_vector and vector_length != 0:
        message = f"{at}: vector length {vector_length} given for scalar type {data_type.type_name}"
    else:
        return []
    return [Problem(message, field="vector_length")]


def size_problems(
    entity: str, fg: str, data_type: DataType, features: Sequence[tuple[str, int, int]]
) -> list[Problem]:
    """The schema size bounds, the one rule the registry, ``ofs registry apply`` and Horizon share, for the
    ``(label, string_length, vector_length)`` of one FG version's features. Arithmetic on the lengths
    only, so it runs before any default is built: a vector length of 100,000,000 is refused here, not
    after 800 MB of default values.

    - a vector length of at most :data:`MAX_VECTOR_LENGTH`, a string length from 0 to
      :data:`MAX_STRING_LENGTH`;
    - one row of the FG at most :data:`MAX_ROW_BYTES` when served: the sum of its features' largest cells
      (``cell_max_len``, the size the servers estimate responses with), a string of booked length 0
      counted at :data:`MAX_STRING_LENGTH` (its default may be that long).
    """
    out: list[Problem] = []
    for i, (label, string_length, vector_length) in enumerate(features):
        at = where(entity, fg, label)
        if not 0 <= string_length <= MAX_STRING_LENGTH:
            out.append(
                Problem(
                    f"{at}: string length {string_length} does not fit in 0..{MAX_STRING_LENGTH}",
                    i,
                    "string_length",
                )
            )
        if vector_length > MAX_VECTOR_LENGTH:
            out.append(
                Problem(
                    f"{at}: vector length {vector_length} is over the limit of {MAX_VECTOR_LENGTH}",
                    i,
                    "vector_length",
                )
            )
    if out or data_type == DataType.UNKNOWN:
        return out
    cells = [
        (
            cell_max_len(
                int(data_type),
                string_length=string_length or MAX_STRING_LENGTH,
                vector_length=max(vector_length, 0),
            ),
            label,
        )
        for label, string_length, vector_length in features
    ]
    row = sum(size for size, _ in cells)
    if row > MAX_ROW_BYTES:
        size, label = max(cells)
        out.append(
            Problem(
                f"{where(entity, fg)}: one row takes up to {row} bytes ({len(cells)} feature"
                f"{'s' if len(cells) > 1 else ''}, the largest {label!r} {size} bytes), over the limit of "
                f"{MAX_ROW_BYTES} bytes per feature group row"
            )
        )
    return out


def cell_to_plain(data_type: DataType, cell: bytes, vector_length: int = 0) -> Any:
    """A stored cell as a plain value (``int``, ``float``, ``bool``, ``str`` or a list of them)."""
    decoded = decode_cell(int(data_type), cell, vector_length=vector_length)
    values = [v.item() if hasattr(v, "item") else v for v in decoded]
    return values if data_type.is_vector else values[0]


def _dups(labels: Iterable[object]) -> list[object]:
    return sorted((k for k, n in Counter(labels).items() if n > 1), key=str)


def validate_state(state: RegistryState) -> None:
    """Raise ``InvalidInputError`` listing every rule ``state`` breaks."""
    errors: list[str] = []
    for label in _dups(e.label for e in state.entities):
        errors.append(f"duplicate entity label {label!r}")
    for sid in _dups(s.id for s in state.stores):
        errors.append(f"duplicate store id {sid!r}")
    for cid in _dups(c.id for c in state.callers):
        errors.append(f"duplicate caller id {cid!r}")
    for store in state.stores:
        if not store.id:
            errors.append("a store has an empty id")
        if store.kind not in STORE_KINDS:
            errors.append(
                f"store {store.id!r}: unknown kind {store.kind!r} (one of {', '.join(STORE_KINDS)})"
            )
    for caller in state.callers:
        if not caller.id:
            errors.append("a caller has an empty id")
        if caller.role not in ROLES:
            errors.append(f"caller {caller.id!r}: unknown role {caller.role!r} (one of {', '.join(ROLES)})")
        if not is_token_hash(caller.token_hash):
            errors.append(f"caller {caller.id!r}: token_hash is not a hash made by hash_token")
    store_ids = {s.id for s in state.stores}
    for entity in state.entities:
        errors.extend(_entity_errors(entity, store_ids))
    raise_problems(errors)


def raise_problems(errors: list[str]) -> None:
    """Raises ``InvalidInputError`` with every problem of ``errors`` (one per line), if there are any."""
    if len(errors) == 1:
        raise InvalidInputError(errors[0])
    if errors:
        raise InvalidInputError(f"{len(errors)} problems:\n  " + "\n  ".join(errors))


def _cache_errors(at: str, name: str, policy: CachePolicy) -> list[str]:
    errors = []
    if policy.ttl_seconds < 0:
        errors.append(f"{at}: {name} cache ttl_seconds {policy.ttl_seconds} is negative")
    if not 0 <= policy.jitter_percent <= 100:
        errors.append(f"{at}: {name} cache jitter_percent {policy.jitter_percent} is not in 0..100")
    return errors


def _entity_errors(entity: Entity, store_ids: set[str]) -> list[str]:
    at = where(entity.label)
    errors: list[str] = []
    if not entity.label:
        errors.append("an entity has an empty label")
    if not entity.keys:
        errors.append(f"{at}: has no keys")
    for label in _dups(k.label for k in entity.keys):
        errors.append(f"{at}: duplicate key label {label!r}")
    for column in _dups(k.column for k in entity.keys):
        errors.append(f"{at}: duplicate key column {column!r}")
    for key in entity.keys:
        if not key.label or not key.column:
            errors.append(f"{at}: a key has an empty label or column")
    errors += _cache_errors(at, "in_process", entity.in_process_cache)
    errors += _cache_errors(at, "distributed", entity.distributed_cache)
    for label in _dups(g.label for g in entity.feature_groups):
        errors.append(f"{at}: duplicate feature group label {label!r}")
    for fg_id in _dups(g.id for g in entity.feature_groups):
        errors.append(f"{at}: duplicate feature group id {fg_id}")
    for fg in entity.feature_groups:
        errors.extend(_fg_errors(entity.label, fg, store_ids))
    return errors


def _fg_errors(entity: str, fg: FeatureGroup, store_ids: set[str]) -> list[str]:
    at = where(entity, fg.label)
    errors: list[str] = []
    if not fg.label:
        errors.append(f"{where(entity)}: a feature group has an empty label")
    if not 0 <= fg.id <= MAX_FG_ID:
        errors.append(f"{at}: id {fg.id} does not fit in 0..{MAX_FG_ID}")
    if not isinstance(fg.data_type, DataType) or fg.data_type == DataType.UNKNOWN:
        errors.append(f"{at}: unknown data type {fg.data_type!r}")
        return errors
    if fg.ttl_seconds < 0:
        errors.append(f"{at}: ttl_seconds {fg.ttl_seconds} is negative (0 = never expires)")
    elif fg.ttl_seconds > MAX_TTL_SECONDS:
        errors.append(
            f"{at}: ttl_seconds {fg.ttl_seconds} exceeds the block format's maximum of {MAX_TTL_SECONDS} "
            "(513 days); use 0 for no expiry"
        )
    if not fg.store_id:
        # Nothing could ever be written to it: say so at apply time, not at the first persist.
        known = ", ".join(sorted(store_ids)) if store_ids else "none declared yet: add one under `stores:`"
        errors.append(f"{at}: names no store; give it `store: <id>` (the registry's stores: {known})")
    elif fg.store_id not in store_ids:
        errors.append(f"{at}: unknown store {fg.store_id!r}")
    if fg.active_version not in fg.versions:
        errors.append(f"{at}: active version {fg.active_version} is not among its versions")
    for version, features in fg.versions.items():
        if not 1 <= version <= MAX_VERSION:
            errors.append(f"{at}: version {version} does not fit in 1..{MAX_VERSION}")
        if not features:
            errors.append(f"{at}: version {version} has no features (an FG keeps at least one feature)")
        for label in _dups(f.label for f in features):
            errors.append(f"{at}: duplicate feature label {label!r} in version {version}")
        sizes = size_problems(
            entity, fg.label, fg.data_type, [(f.label, f.string_length, f.vector_length) for f in features]
        )
        errors.extend(p.message for p in sizes)
        for i, feature in enumerate(features):
            # A feature over a size bound: its default is not decoded (it could be hundreds of MB).
            if not any(p.feature == i for p in sizes):
                errors.extend(_feature_errors(entity, fg, feature))
    return errors


def _feature_errors(entity: str, fg: FeatureGroup, feature: Feature) -> list[str]:
    at = where(entity, fg.label, feature.label)
    dt = fg.data_type
    errors: list[str] = []
    if not feature.label:
        errors.append(f"{where(entity, fg.label)}: a feature has an empty label")
    errors += [p.message for p in vector_length_problems(at, dt, feature.vector_length)]
    if errors:
        return errors
    try:
        value = cell_to_plain(dt, feature.default, feature.vector_length)
        again = encode_cell(
            int(dt),
            value,
            string_length=feature.string_length or MAX_STRING_LENGTH,
            vector_length=feature.vector_length,
        )
    except (InvalidInputError, TypeError, ValueError) as exc:
        return [f"{at}: default {feature.default!r} does not fit {dt.type_name}: {exc}"]
    if again != feature.default:
        errors.append(f"{at}: default {feature.default!r} is not a canonical {dt.type_name} cell")
    return errors


def validate_change(old: RegistryState, new: RegistryState, has_data: HasData = no_data) -> None:
    """Validate ``new`` and the step from ``old`` to it; raise ``InvalidInputError`` listing every problem."""
    validate_state(new)
    errors: list[str] = _store_change_errors(old, new)
    for before in old.entities:
        after = new.entity(before.label)
        if after is None:
            if has_data(before.label):
                errors.append(f"{where(before.label)}: cannot delete an entity that has data")
            continue
        if after.keys != before.keys and has_data(before.label):
            errors.append(
                f"{where(before.label)}: cannot change the key schema of an entity that has data "
                f"({_keys(before)} -> {_keys(after)})"
            )
        for fg in before.feature_groups:
            now = after.fg(fg.label)
            if now is not None:
                errors.extend(_fg_change_errors(before.label, fg, now))
    raise_problems(errors)


def _store_change_errors(old: RegistryState, new: RegistryState) -> list[str]:
    """The settings rules of every store created or changed (``store.settings_errors``: known settings,
    numbers, and no literal credential); a store left as it was is not judged again."""
    from online_feature_store.store import settings_errors  # the store package imports the registry

    before = {s.id: s for s in old.stores}
    errors: list[str] = []
    for store in new.stores:
        if store.kind in STORE_KINDS and before.get(store.id) != store:
            problems = settings_errors(store.kind, store.settings)
            errors += [f"store {store.id!r}: {msg}" for msg in problems.values()]
    return errors


def _keys(entity: Entity) -> str:
    return "[" + ", ".join(f"{k.label}:{k.column}" for k in entity.keys) + "]"


def _layout(features: tuple[Feature, ...]) -> list[tuple[str, int]]:
    return [(f.label, f.vector_length) for f in features]


def _fg_change_errors(entity: str, old: FeatureGroup, new: FeatureGroup) -> list[str]:
    at = where(entity, old.label)
    errors: list[str] = []
    if new.id != old.id:
        errors.append(f"{at}: id {old.id} cannot change (to {new.id}); stored blocks are keyed by it")
    if new.data_type != old.data_type:
        errors.append(
            f"{at}: data type {old.data_type.type_name} cannot change to {new.data_type.type_name}; "
            "create a new feature group"
        )
    if new.active_version not in old.versions:
        lengths = {f.label: f.vector_length for f in old.features}
        for f in new.features:
            if f.label in lengths and lengths[f.label] != f.vector_length:
                errors.append(
                    f"{where(entity, old.label, f.label)}: vector length {lengths[f.label]} cannot change to "
                    f"{f.vector_length}; create a new feature group"
                )
    for version, features in old.versions.items():
        kept = new.versions.get(version)
        if kept is None:
            errors.append(f"{at}: version {version} was removed; old versions must stay to decode old blocks")
        elif _layout(kept) != _layout(features):
            for f_old, f_new in zip(features, kept, strict=False):
                if f_old.label == f_new.label and f_old.vector_length != f_new.vector_length:
                    errors.append(
                        f"{where(entity, old.label, f_old.label)}: vector length {f_old.vector_length} "
                        f"cannot change to {f_new.vector_length}; create a new feature group"
                    )
                    break
            else:
                errors.append(f"{at}: the layout of version {version} cannot change; add a new version")
    return errors
