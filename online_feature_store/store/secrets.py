"""Credentials in store settings: kept out of the registry, and redacted wherever settings are shown.

The registry is read by every server and every Horizon viewer, so a store's password is never one of its
settings: the setting ``password_env`` names the environment variable that holds it, and only the
process that opens the store (:func:`~online_feature_store.store.open_store`) reads that variable. A
literal credential (a password in a URL, a setting called ``password``) is refused when a store is
created or changed (:func:`credential_errors`); one that a registry already holds keeps working, but is
redacted (:func:`redact_settings`, :func:`redact_text`) in every listing, plan line, API answer and error.

Nothing here imports the registry (the registry's validation imports this module).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from online_feature_store.errors import UnavailableError

__all__ = [
    "ENV_SETTINGS",
    "REDACTED",
    "credential_errors",
    "is_secret_name",
    "redact_settings",
    "redact_text",
    "resolve_env",
]

REDACTED = "***"
"""What replaces a credential in anything shown."""

ENV_SETTINGS: dict[str, tuple[str, ...]] = {"redis": ("password_env",)}
"""The settings of each store kind that name an environment variable holding a secret."""

# scheme://user:password@ : the password part (possibly empty user, as in redis://:pw@host)
_URL_CREDENTIAL = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:@/]*):(?P<secret>[^\s@/]+)@")
# ?password=… and friends in a URL's query (redis-py's from_url reads ?password=)
_QUERY_CREDENTIAL = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pass|pwd|secret|token|auth|api_?key|access_?key)=)(?P<secret>[^&;#\s]+)",
    re.IGNORECASE,
)
_SECRET_NAME = re.compile(r"pass(word|wd)?|pwd|secret|token|credential|api_?key|access_?key", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True for a setting whose name says it holds a secret itself (``password``, ``auth_token``); the
    ``…_env`` settings only name an environment variable and are not secrets."""
    return not name.endswith("_env") and _SECRET_NAME.search(name) is not None


def redact_text(text: str) -> str:
    """``text`` with every password in a URL (``redis://:***@host``) and every secret query parameter
    (``?password=***``) replaced by ``***``."""
    if "://" not in text and "=" not in text:
        return text
    text = _URL_CREDENTIAL.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    return _QUERY_CREDENTIAL.sub(lambda m: f"{m['head']}{REDACTED}", text)


def redact_settings(settings: Mapping[str, str]) -> dict[str, str]:
    """A store's settings as they may be shown: a secret-named setting's value is ``***``, credentials
    inside other values are redacted as by :func:`redact_text`."""
    return {
        name: (REDACTED if value and is_secret_name(name) else redact_text(value))
        for name, value in settings.items()
    }


def credential_errors(settings: Mapping[str, str]) -> dict[str, str]:
    """The settings that hold a literal credential, by name, each with what to do instead; empty when
    there is none. Applied when a store is created or changed (registry apply, Horizon requests)."""
    errors: dict[str, str] = {}
    for name, value in settings.items():
        if is_secret_name(name):
            errors[name] = (
                f"setting {name!r} would keep a credential in the registry, where every reader of the "
                "registry sees it: put it in an environment variable of the processes that open the store "
                "and name that variable with password_env"
            )
        elif _URL_CREDENTIAL.search(value) or _QUERY_CREDENTIAL.search(value):
            errors[name] = (
                f"setting {name} holds a password ({redact_text(value)}): the registry must not keep "
                "credentials; leave it out of the URL, put it in an environment variable of the processes "
                "that open the store and name that variable with password_env"
            )
    return errors


def resolve_env(
    store_id: str, setting: str, variable: str | None, env: Mapping[str, str] | None = None
) -> str | None:
    """The secret held by the environment variable that ``setting`` names (``None`` when the setting is
    not given); ``UnavailableError`` naming the variable when it is not set in this process."""
    if not variable:
        return None
    value = (os.environ if env is None else env).get(variable)
    if not value:
        raise UnavailableError(
            f"store {store_id!r}: {setting}={variable!r} names an environment variable that is not set in "
            "this process; set it where the store is opened (ofs serve, ofs consume, the application)"
        )
    return value
