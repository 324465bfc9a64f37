"""``ofs horizon``: settings from file, environment and flags, then uvicorn until SIGTERM / Ctrl-C; and
``ofs horizon create-user``, which makes an account (the first admin) without the server."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Iterator

import uvicorn

from online_feature_store._ports import check_free, moved_by
from online_feature_store.errors import InvalidInputError
from online_feature_store.horizon.config import BLOCKS, HorizonConfig, load_config
from online_feature_store.settings import flag_values

__all__ = ["create_user", "run"]

_log = logging.getLogger("online_feature_store.horizon")


class _Server(uvicorn.Server):
    """uvicorn's server, stopping gracefully on SIGTERM / SIGINT with exit status 0 (uvicorn itself
    re-raises the signal after its shutdown); a second signal forces the exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        def stop(*_: object) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ofs horizon``."""
    from online_feature_store.horizon.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config, flag_values(BLOCKS, args))
    # before anything opens: uvicorn's own bind failure is a log line and an exit
    check_free(config.host, config.port, "Horizon", moved_by("--port", "OFS_HORIZON_PORT", "port"))
    config.resolved_data_dir().mkdir(parents=True, exist_ok=True)
    app = create_app(config)
    _warn_if_open(app.state.horizon.accounts.registration_open(), config)
    print(
        f"ofs horizon: http://{config.host}:{config.port}/ (API /api/v1, OpenAPI /openapi.json), "
        f"serving API {config.serving_address}",
        flush=True,
    )
    # graceful: stops accepting, finishes in-flight requests, then closes the database and registry
    proxies = [p.strip() for p in config.trusted_proxies.split(",") if p.strip()]
    server = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        # X-Forwarded-For only from the configured proxies (uvicorn's default trusts 127.0.0.1), so a
        # client cannot pick the address the sign-in throttle counts
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )
    _Server(server).run()
    return 0


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _warn_if_open(registration_open: bool, config: HorizonConfig) -> None:
    if not registration_open:
        return
    if config.allow_self_registration:
        _log.warning(
            "allow_self_registration is on: anyone who reaches Horizon can make an account (a viewer)"
        )
    elif not _loopback(config.host):
        _log.warning(
            "no Horizon user exists yet and Horizon listens on %s: the first to register becomes the admin. "
            "Create the admin with `ofs horizon create-user --role admin` "
            "or set first_run_registration: false",
            config.host,
        )


def _read_password(args: argparse.Namespace) -> str:
    """From ``--password-env``; else prompted twice on a terminal; else the first line of stdin."""
    if args.password_env:
        value = os.environ.get(args.password_env)
        if not value:
            raise InvalidInputError(
                f"--password-env {args.password_env}: that environment variable is not set"
            )
        return value
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {args.username}: ")
        if getpass.getpass("again: ") != first:
            raise InvalidInputError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def create_user(args: argparse.Namespace) -> int:
    """Entry point of ``ofs horizon create-user``: an account with a role in Horizon's database (the
    password never on the command line), audited as made by ``cli``."""
    from online_feature_store.horizon.accounts import Accounts
    from online_feature_store.horizon.changes import InvalidFieldsError
    from online_feature_store.horizon.db import Role, connect
    from online_feature_store.store.secrets import redact_text

    config = load_config(args.config, flag_values(BLOCKS, args))
    password = _read_password(args)
    engine = connect(config.resolved_database_url())
    try:
        user = Accounts(config, engine).create_user("cli", args.username, password, Role(args.role))
    except InvalidFieldsError as exc:
        raise InvalidInputError("; ".join(str(e["msg"]) for e in exc.errors)) from None
    finally:
        engine.dispose()
    where = redact_text(config.resolved_database_url())
    print(f"created {user['username']} ({user['role']}) in {where}")
    return 0
