"""Settings of the ``ofs`` processes, declared once: one loader, one shared block, one rule for paths.

A process declares its settings as frozen dataclasses deriving from :class:`Settings`, each field made by
:func:`setting` (default, bounds, meaning). Values are coerced to the declared types and checked
against the bounds whenever such a dataclass is made, from a file or in code. :func:`gather` layers a
YAML file, then the process's own environment variables (``<prefix><NAME>``), then flags, later ones
winning; a field with a ``fallback_env`` then falls back to that shared variable. :class:`StoreSettings`
(registry, data directory, distributed cache) is the block every process that opens the store shares.
:func:`data_dir` and :func:`registry_url` are the one rule for where the data and the registry are.
:func:`markdown` renders a declaration as the tables of docs/configuration.md (a test holds the page to it).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from online_feature_store.errors import InvalidInputError

__all__ = [
    "DATA_DIR_ENV",
    "DISTRIBUTED_CACHE_ENV",
    "REGISTRY_ENV",
    "RegistrySettings",
    "Secret",
    "Settings",
    "StoreSettings",
    "build",
    "data_dir",
    "default_registry_url",
    "env_names",
    "flag_values",
    "gather",
    "location_given",
    "markdown",
    "registry_url",
    "setting",
    "sqlite_path",
    "sqlite_url",
]

DATA_DIR_ENV = "OFS_DATA_DIR"
REGISTRY_ENV = "OFS_REGISTRY"
DISTRIBUTED_CACHE_ENV = "OFS_DISTRIBUTED_CACHE"

_S = TypeVar("_S", bound="Settings")

_READ_BY_THE_PATH_RULE = (DATA_DIR_ENV, REGISTRY_ENV)
"""Fallbacks :func:`gather` leaves to :func:`data_dir` / :func:`registry_url`, which read them wherever a
path is resolved (a process's settings then hold only what it was given)."""


# -- where the data and the registry are: the one rule ------------------------------------------------
def data_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The data directory, as an absolute path: ``directory``; else ``$OFS_DATA_DIR``; else
    ``~/.local/share/online-feature-store``. A relative one is taken from the working directory, so
    ``OFS_DATA_DIR=.`` and ``--data-dir data`` mean the same place in every command and in
    :class:`~online_feature_store.FeatureStore` (the one rule: every place that picks the data
    directory calls this)."""
    chosen = os.fspath(directory) if directory is not None else ""
    chosen = chosen or os.environ.get(DATA_DIR_ENV) or ""
    path = Path(chosen).expanduser() if chosen else Path.home() / ".local" / "share" / "online-feature-store"
    return Path(os.path.abspath(path))


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """``sqlite:///<absolute path>`` of the registry file ``path`` (a relative path is taken from the
    working directory)."""
    return f"sqlite://{os.path.abspath(os.fspath(path))}"


def registry_url(registry: str | None = None, data_directory: str | os.PathLike[str] | None = None) -> str:
    """The registry to open, as an absolute URL: ``registry``; else ``$OFS_REGISTRY``; else the SQLite
    file ``registry.db`` in :func:`data_dir` of ``data_directory``. A relative SQLite path
    (``sqlite:data/registry.db``) is taken from the working directory. Every command and
    :class:`~online_feature_store.FeatureStore` choose their registry through this."""
    url = registry or os.environ.get(REGISTRY_ENV)
    if not url:
        return sqlite_url(data_dir(data_directory) / "registry.db")
    path = sqlite_path(url)
    return url if path is None else sqlite_url(path)


def location_given(registry: str | None = None, data_directory: str | os.PathLike[str] | None = None) -> bool:
    """True when a registry or a data directory was chosen (given, or by ``$OFS_REGISTRY`` /
    ``$OFS_DATA_DIR``) rather than left to the default."""
    return bool(registry or data_directory or os.environ.get(REGISTRY_ENV) or os.environ.get(DATA_DIR_ENV))


def default_registry_url() -> str:
    """``$OFS_REGISTRY``, else the SQLite file ``registry.db`` in :func:`data_dir`: :func:`registry_url`."""
    return registry_url()


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite registry URL, ``None`` for another scheme. ``sqlite:///abs/path`` and
    ``sqlite:////abs/path`` are absolute; ``sqlite:rel/path`` and ``sqlite://rel/path`` relative."""
    if not url.startswith("sqlite:"):
        return None
    rest = url[len("sqlite:") :]
    rest = rest[2:] if rest.startswith("//") else rest
    if not rest:
        raise InvalidInputError(
            f"registry URL {url!r} has no path "
            "(sqlite:///abs/path/registry.db or sqlite:rel/path/registry.db)"
        )
    return "/" + rest.lstrip("/") if rest.startswith("/") else rest


# -- declaring settings -------------------------------------------------------------------------------
class Secret:
    """A setting's value that is never shown: ``repr`` and ``str`` print stars."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The value itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclasses.dataclass(frozen=True)
class _Meta:
    """What :func:`setting` records beside a field's default."""

    doc: str
    env: bool
    fallback_env: str | None
    ge: float | None
    le: float | None
    gt: float | None
    shown_default: str | None
    public: bool


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    doc: str = "",
    env: bool = True,
    fallback_env: str | None = None,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    shown_default: str | None = None,
    public: bool = True,
) -> Any:
    """A settings field: its ``default`` (or ``factory``), what it means (``doc``, for the docs), whether
    the process's ``<prefix><NAME>`` environment variable sets it
    (``env``), the shared variable it falls back to when nothing else set it (``fallback_env``), bounds
    (``ge``, ``le``, ``gt``) and the default as the docs show it when not the value itself. A field that
    is not ``public`` is set by the code alone: no file, variable or flag sets it, and the docs omit it."""
    meta = {"setting": _Meta(doc, env, fallback_env, ge, le, gt, shown_default, public)}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Settings:
    """Base of a settings dataclass: every field is coerced to its declared type (``"8089"`` → 8089,
    ``"yes"`` → True, ``"a,b"`` → a tuple, a name → an enum member) and checked against its bounds when
    the dataclass is made; :class:`InvalidInputError` names every setting that is wrong."""

    def __post_init__(self) -> None:
        problems = []
        for f, kind, meta in _declared(type(self)):
            try:
                value = _coerce(f.name, getattr(self, f.name), kind)
                _check_bounds(f.name, value, meta)
            except _BadSettingError as bad:
                problems.append(str(bad))
                continue
            object.__setattr__(self, f.name, value)
        if problems:
            raise InvalidInputError("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class RegistrySettings(Settings):
    """Where the registry is: the shared block of a process that reads the registry."""

    data_dir: Path | None = setting(
        None,
        fallback_env=DATA_DIR_ENV,
        shown_default="`$OFS_DATA_DIR`, else `~/.local/share/online-feature-store`",
        doc="the embedded SQLite registry (`registry.db`), relative SQLite store paths, the in-process "
        "cache invalidation log (`invalidations.db`) and Horizon's embedded database and secret; a "
        "relative one is taken from the working directory",
    )
    registry: str | None = setting(
        None,
        fallback_env=REGISTRY_ENV,
        shown_default="`$OFS_REGISTRY`, else `sqlite:///<data_dir>/registry.db`",
        doc="registry URL, below",
    )

    def resolved_data_dir(self) -> Path:
        """``data_dir`` by the one rule (:func:`data_dir`): absolute, ``$OFS_DATA_DIR`` or the default."""
        return data_dir(self.data_dir)

    def registry_url(self) -> str:
        """The registry to open by the one rule (:func:`registry_url`)."""
        return registry_url(self.registry, self.data_dir)


@dataclasses.dataclass(frozen=True)
class StoreSettings(RegistrySettings):
    """The shared block of a process that opens the feature store: the registry and the distributed cache."""

    distributed_cache: str | None = setting(
        None,
        fallback_env=DISTRIBUTED_CACHE_ENV,
        shown_default="`$OFS_DISTRIBUTED_CACHE`, else none (tier off)",
        doc="Redis of the distributed cache tier (`redis://…`, `redis-cluster://…`, below); a consumer in "
        "strong cache mode invalidates it too",
    )

    def given(self) -> dict[str, str]:
        """The settings that were given, as text (for the process's start-up and ``FeatureStore``)."""
        return {f.name: str(v) for f in dataclasses.fields(self) if (v := getattr(self, f.name))}


# -- loading ------------------------------------------------------------------------------------------
def env_names(blocks: Sequence[type[Settings]], prefix: str) -> dict[str, str]:
    """Setting name → the process's own environment variable for it (``prefix`` + the name in capitals).
    A shared setting whose variable would be its shared one (``OFS_REGISTRY`` for ``ofs serve``) has
    none of its own: that variable stays the fallback, below the file, as in every process."""
    out = {}
    for b in blocks:
        for f, _, meta in _declared(b):
            var = prefix + f.name.upper()
            if meta.env and meta.public and var != meta.fallback_env:
                out[f.name] = var
    return out


def flag_values(blocks: Sequence[type[Settings]], args: Any) -> dict[str, Any]:
    """Setting name → the value of the command-line option of the same name (``--data-dir`` sets
    ``data_dir``) in parsed ``args``; None where not given (an unset switch too, so it does not override
    the file). The options themselves, with their help, are the command's (``cli.py``)."""
    out = {}
    for b in blocks:
        for f, _, meta in _declared(b):
            if meta.public and hasattr(args, f.name):
                value = getattr(args, f.name)
                out[f.name] = None if value is False else value
    return out


def gather(
    blocks: Sequence[type[Settings]],
    path: str | None,
    overrides: Mapping[str, Any],
    *,
    prefix: str,
    label: str,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The values given for the settings of ``blocks`` by name: from ``path`` (YAML), then the process's
    variables in ``env`` (default ``os.environ``), then ``overrides`` (flags; None is not given), later
    ones winning; then the ``fallback_env`` of each setting still not given. ``label`` names the process
    in errors; an unknown setting in the file is an error naming it."""
    env = os.environ if env is None else env
    doc = _read_yaml(path, label) if path else {}
    names = [f.name for b in blocks for f, _, meta in _declared(b) if meta.public]
    unknown = sorted(set(doc) - set(names))
    if unknown:
        raise InvalidInputError(f"{path}: unknown settings {unknown} (known: {sorted(names)})")
    for name, var in env_names(blocks, prefix).items():
        if var in env:
            doc[name] = env[var]
    doc.update({k: v for k, v in overrides.items() if v is not None})
    for b in blocks:
        for f, _, meta in _declared(b):
            if not meta.fallback_env or meta.fallback_env in _READ_BY_THE_PATH_RULE:
                continue
            fallback = env.get(meta.fallback_env)
            if f.name not in doc and fallback:
                doc[f.name] = fallback
    return doc


def build(cls: type[_S], doc: Mapping[str, Any]) -> _S:
    """``cls`` made from the values of ``doc`` it declares (the others keep their defaults)."""
    return cls(**{f.name: doc[f.name] for f, _, m in _declared(cls) if m.public and f.name in doc})


def _read_yaml(path: str, label: str) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInputError(f"cannot read {label} config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path}: not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InvalidInputError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return {str(k): v for k, v in loaded.items()}


# -- coercion -----------------------------------------------------------------------------------------
class _BadSettingError(Exception):
    pass


_DECLARED: dict[type, tuple[tuple[dataclasses.Field[Any], Any, _Meta], ...]] = {}


def _declared(cls: type) -> tuple[tuple[dataclasses.Field[Any], Any, _Meta], ...]:
    """Each field of the settings dataclass ``cls`` with its type and its :func:`setting` metadata."""
    found = _DECLARED.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        plain = _Meta("", True, None, None, None, None, None, True)
        every: Any = dataclasses.fields(cls)
        found = tuple((f, hints[f.name], f.metadata.get("setting", plain)) for f in every if f.init)
        _DECLARED[cls] = found
    return found


def _coerce(name: str, raw: Any, kind: Any) -> Any:
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        args = typing.get_args(kind)
    origin = typing.get_origin(kind)
    if origin is Literal:
        if raw not in args:
            raise _BadSettingError(f"setting {name!r}: {raw!r} is not one of {', '.join(map(str, args))}")
        return raw
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(raw)
        except ValueError:
            choices = ", ".join(str(m.value) for m in kind)
            raise _BadSettingError(f"setting {name!r}: {raw!r} is not one of {choices}") from None
    try:
        return _scalar(raw, kind, origin)
    except (TypeError, ValueError):
        shown = "the value given" if kind is Secret else repr(raw)
        what = getattr(origin or kind, "__name__", str(kind))
        raise _BadSettingError(f"setting {name!r}: cannot use {shown} as {what}") from None


def _scalar(raw: Any, kind: Any, origin: Any) -> Any:
    if kind is bool:
        if isinstance(raw, str):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        return bool(raw)
    if isinstance(raw, (dict, list, tuple)) and origin not in (dict, tuple) and kind is not dict:
        raise TypeError(raw)
    if kind is int:
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError(raw)
        return int(raw)
    if kind is float or kind is str:
        return kind(raw)
    if kind is Path:
        return Path(raw)
    if kind is Secret:
        return raw if isinstance(raw, Secret) else Secret(str(raw))
    if origin is tuple:
        if isinstance(raw, str):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return tuple(str(item) for item in raw)
    if origin is dict or kind is dict:
        if not isinstance(raw, dict):
            raise TypeError(raw)
        return dict(raw)
    raise TypeError(f"no coercion to {kind}")


def _check_bounds(name: str, value: Any, meta: _Meta) -> None:
    if value is None or isinstance(value, bool):
        return
    if meta.ge is not None and value < meta.ge:
        raise _BadSettingError(f"setting {name!r} must be at least {_num(meta.ge)}, got {value}")
    if meta.le is not None and value > meta.le:
        raise _BadSettingError(f"setting {name!r} must be at most {_num(meta.le)}, got {value}")
    if meta.gt is not None and value <= meta.gt:
        raise _BadSettingError(f"setting {name!r} must be more than {_num(meta.gt)}, got {value}")


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


# -- docs ---------------------------------------------------------------------------------------------
def markdown(
    blocks: Sequence[type[Settings]], prefix: str | None, flags: Mapping[str, str] | None = None
) -> str:
    """The settings of ``blocks`` as a Markdown table: setting, default, environment variables (the
    process's own with ``prefix``, None: none; then the shared fallback), flag (``flags``: setting name
    → option) and meaning, in declaration order."""
    flags = flags or {}
    lines = ["| setting | default | environment | flag | meaning |", "|---|---|---|---|---|"]
    for b in blocks:
        for f, _, meta in _declared(b):
            if not meta.public:
                continue
            own = env_names((b,), prefix).get(f.name) if prefix is not None else None
            variables = [v for v in (own, meta.fallback_env) if v]
            flag = flags.get(f.name)
            cells = [
                f"`{f.name}`",
                _shown_default(f, meta),
                ", ".join(f"`{v}`" for v in variables),
                f"`{flag}`" if flag else "",
                meta.doc,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _shown_default(f: dataclasses.Field[Any], meta: _Meta) -> str:
    if meta.shown_default is not None:
        return meta.shown_default
    factory: Any = f.default_factory
    value = factory() if f.default is dataclasses.MISSING else f.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"
