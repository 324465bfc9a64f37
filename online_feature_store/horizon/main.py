"""``ofs horizon``: settings from file, environment and flags, then uvicorn until SIGTERM / Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn

from online_feature_store.horizon.config import load_config

__all__ = ["run"]


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
    overrides: dict[str, Any] = {"port": args.port, "host": args.host, "data_dir": args.data_dir}
    config = load_config(args.config, overrides)
    config.resolved_data_dir().mkdir(parents=True, exist_ok=True)
    app = create_app(config)
    print(
        f"ofs horizon: http://{config.host}:{config.port}/ (API /api/v1, OpenAPI /openapi.json), "
        f"serving API {config.serving_address}",
        flush=True,
    )
    # graceful: stops accepting, finishes in-flight requests, then closes the database and registry
    _Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="info")).run()
    return 0
