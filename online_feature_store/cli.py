"""``ofs``: the command line of online-feature-store.

One sub-command group per concern (``ofs registry …`` today; ``serve``, ``consume`` and ``horizon`` register
themselves the same way: a ``_add_<name>(subparsers)`` function that sets ``func`` on its parsers).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

from online_feature_store.errors import OfsError

__all__ = ["main"]


@contextmanager
def _extra(name: str) -> Iterator[None]:
    """Turn a missing optional dependency of a sub-command into an error naming the extra to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] == "online_feature_store":
            raise  # a broken install or checkout (e.g. _proto not generated), not a missing extra
        raise OfsError(
            f"this command needs the [{name}] extra (no module {exc.name!r}): "
            f"pip install 'online-feature-store[{name}]'"
        ) from exc


def _registry_apply(args: argparse.Namespace) -> int:
    from online_feature_store.registry.connect import open_registry
    from online_feature_store.registry.spec import diff_states, reconcile
    from online_feature_store.registry.yaml_io import load_yaml
    from online_feature_store.settings import registry_url

    spec = load_yaml(args.file)
    with closing(open_registry(registry_url(args.registry, args.data_dir))) as backend:
        current = backend.load()
        target = reconcile(current.state, spec, prune=args.prune)
        changes = diff_states(current.state, target)
        print(f"registry {backend.url} at revision {current.revision}")
        if not changes:
            print("no changes")
            return 0
        print(f"plan: {len(changes)} change(s)")
        for line in changes:
            print(f"  {line}")
        if args.dry_run:
            print("dry run: nothing applied")
            return 0
        if not args.yes and sys.stdin.isatty():
            answer = input("apply these changes? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                print("cancelled: nothing applied")
                return 1
        revision = backend.apply(lambda state: reconcile(state, spec, prune=args.prune))
        print(f"applied: revision {revision}")
    return 0


def _registry_show(args: argparse.Namespace) -> int:
    from online_feature_store.registry.connect import open_registry
    from online_feature_store.registry.spec import cell_to_plain
    from online_feature_store.settings import registry_url
    from online_feature_store.store.secrets import redact_settings

    with closing(open_registry(registry_url(args.registry, args.data_dir), create=False)) as backend:
        snapshot = backend.load()
    entities = [snapshot.entity(args.entity)] if args.entity else list(snapshot.entities.values())
    print(f"registry {backend.url} at revision {snapshot.revision}")
    if not args.entity:
        for store in snapshot.stores.values():
            print(f"store {store.id} ({store.kind}) {redact_settings(store.settings)}")
        for caller in snapshot.callers.values():
            print(f"caller {caller.id} ({caller.role})")
    for entity in entities:
        keys = ", ".join(f"{k.label} (column {k.column})" for k in entity.keys)
        print(f"entity {entity.label}: keys {keys}")
        for fg in entity.feature_groups:
            ttl = "never" if fg.ttl_seconds == 0 else f"{fg.ttl_seconds}s"
            print(
                f"  fg {fg.label} id {fg.id} {fg.data_type.type_name} ttl {ttl} store {fg.store_id or '-'} "
                f"version {fg.active_version} of {sorted(fg.versions)}"
            )
            for f in fg.features:
                extra = f" string_length {f.string_length}" if f.string_length else ""
                extra += f" vector_length {f.vector_length}" if f.vector_length else ""
                default = cell_to_plain(fg.data_type, f.default, f.vector_length)
                print(f"    {f.label} default {default!r}{extra}")
    return 0


def _registry_export(args: argparse.Namespace) -> int:
    from online_feature_store.registry.connect import open_registry
    from online_feature_store.registry.yaml_io import dump_yaml
    from online_feature_store.settings import registry_url

    with closing(open_registry(registry_url(args.registry, args.data_dir), create=False)) as backend:
        text = dump_yaml(backend.load().state)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _registry_backup(args: argparse.Namespace) -> int:
    from online_feature_store.registry.backup import dump_backup
    from online_feature_store.registry.connect import open_registry
    from online_feature_store.settings import registry_url

    with closing(open_registry(registry_url(args.registry, args.data_dir), create=False)) as backend:
        snapshot = backend.load()
    text = dump_backup(snapshot.state, snapshot.revision)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output} (revision {snapshot.revision})", file=sys.stderr)
    return 0


def _registry_new_token(_args: argparse.Namespace) -> int:
    from online_feature_store.registry.tokens import new_token

    print(new_token())
    return 0


def _registry_restore(args: argparse.Namespace) -> int:
    from online_feature_store.registry.backup import load_backup
    from online_feature_store.registry.connect import open_registry
    from online_feature_store.registry.spec import diff_states
    from online_feature_store.settings import registry_url

    restored = load_backup(Path(args.file).read_text(encoding="utf-8"), source=args.file)
    with closing(open_registry(registry_url(args.registry, args.data_dir))) as backend:
        current = backend.load()
        changes = diff_states(current.state, restored)
        print(f"registry {backend.url} at revision {current.revision}")
        if not changes:
            print("no changes")
            return 0
        print(f"plan: {len(changes)} change(s)")
        for line in changes:
            print(f"  {line}")
        if not args.yes and sys.stdin.isatty():
            answer = input("restore? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                print("cancelled: nothing restored")
                return 1
        # Validated like any apply (e.g. key changes of entities with data are refused).
        revision = backend.apply(restored)
        print(f"restored: revision {revision}")
    return 0


DATA_DIR_HELP = (
    "directory of the embedded registry and stores; a relative one is taken from the working directory "
    "(default: $OFS_DATA_DIR, else ~/.local/share/online-feature-store)"
)
REGISTRY_HELP = (
    "registry URL: sqlite:///abs/path/registry.db, sqlite:rel/path/registry.db or "
    "etcd://host:port[,host:port][/prefix/] (default: $OFS_REGISTRY, else registry.db in the data directory)"
)


def _add_store_flags(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--registry``: where a command finds the registry (and the embedded stores)."""
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--registry", help=REGISTRY_HELP)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    return 2


def _add_registry(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    registry = subparsers.add_parser("registry", help="apply, show and export the feature registry")
    registry.set_defaults(func=lambda _args: _usage(registry))
    commands = registry.add_subparsers(title="commands", metavar="COMMAND")
    apply = commands.add_parser("apply", help="apply a registry YAML file (prints the plan first)")
    apply.add_argument("-f", "--file", required=True, help="the registry YAML file")
    _add_store_flags(apply)
    apply.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    apply.add_argument("--dry-run", action="store_true", help="print the plan, apply nothing")
    apply.add_argument("--prune", action="store_true", help="delete what the file does not declare")
    apply.set_defaults(func=_registry_apply)

    show = commands.add_parser("show", help="print the registry, or one entity")
    show.add_argument("entity", nargs="?", help="only this entity")
    _add_store_flags(show)
    show.set_defaults(func=_registry_show)

    export = commands.add_parser("export", help="write the registry as YAML (re-applies as a no-op)")
    export.add_argument("-o", "--output", help="output file (default: standard output)")
    _add_store_flags(export)
    export.set_defaults(func=_registry_export)

    backup = commands.add_parser(
        "backup", help="write an exact backup (JSON: every schema version, stores, callers' token hashes)"
    )
    backup.add_argument("-o", "--output", help="output file (default: standard output)")
    _add_store_flags(backup)
    backup.set_defaults(func=_registry_backup)

    token = commands.add_parser(
        "new-token", help="print a fresh random caller token (256 bits) to put in a caller's token_env"
    )
    token.set_defaults(func=_registry_new_token)

    restore = commands.add_parser("restore", help="make the registry exactly what a backup holds")
    restore.add_argument("-f", "--file", required=True, help="a file written by `ofs registry backup`")
    _add_store_flags(restore)
    restore.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    restore.set_defaults(func=_registry_restore)


def _serve(args: argparse.Namespace) -> int:
    with _extra("server"):
        from online_feature_store.server.main import run

    return run(args)


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser("serve", help="run the gRPC API server")
    serve.add_argument(
        "--config",
        help="YAML file of settings by name (port, host, auth, registry, data_dir, workers, metrics_port, "
        "http_port, threads, tls_cert_file, ...); the environment overrides it, flags override both",
    )
    serve.add_argument("--port", type=int, help="gRPC port (default 8089; $OFS_PORT)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1; $OFS_HOST)")
    _add_store_flags(serve)
    serve.add_argument(
        "--workers", type=int, help="server processes sharing the port (default 1; $OFS_WORKERS)"
    )
    serve.add_argument(
        "--auth", action="store_true", help="require caller id and token metadata (default off; $OFS_AUTH)"
    )
    serve.add_argument(
        "--http-port", type=int, help="also serve HTTP/JSON on this port (default 0: none; $OFS_HTTP_PORT)"
    )
    serve.add_argument(
        "--metrics-port", type=int, help="Prometheus /metrics port (default 9090, 0: none; $OFS_METRICS_PORT)"
    )
    serve.add_argument(
        "--http-header-timeout-seconds",
        type=float,
        help="HTTP: seconds for a request's head to arrive (default 10; $OFS_HTTP_HEADER_TIMEOUT_SECONDS)",
    )
    serve.add_argument(
        "--http-idle-timeout-seconds",
        type=float,
        help="HTTP: seconds a kept-alive connection may idle (default 60; $OFS_HTTP_IDLE_TIMEOUT_SECONDS)",
    )
    serve.add_argument(
        "--http-max-connections-per-peer",
        type=int,
        help=(
            "HTTP: connections per client address, 0: no cap (default 64; $OFS_HTTP_MAX_CONNECTIONS_PER_PEER)"
        ),
    )
    serve.add_argument(
        "--max-keys-per-request",
        type=int,
        help="keys per retrieve (default 10000; $OFS_MAX_KEYS_PER_REQUEST)",
    )
    serve.add_argument(
        "--max-rows-per-persist",
        type=int,
        help="rows per persist (default 100000; $OFS_MAX_ROWS_PER_PERSIST)",
    )
    serve.set_defaults(func=_serve)


def _consume(args: argparse.Namespace) -> int:
    with _extra("consumer"):
        from online_feature_store.consumer.main import run

        # run() imports these lazily; load them here so a missing kafka-python names the extra
        importlib.import_module("online_feature_store.consumer.daemon")
        importlib.import_module("online_feature_store.consumer.health")
    return run(args)


def _add_consume(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    consume = subparsers.add_parser("consume", help="run the Kafka ingestion consumer")
    consume.add_argument(
        "--config",
        help="YAML file of settings by name (bootstrap_servers, topic, group_id, batch_max_messages, "
        "workers, registry, data_dir, kafka: {...}, ...); $OFS_CONSUMER_<NAME> overrides it, flags both",
    )
    consume.add_argument(
        "--bootstrap-servers",
        help="Kafka brokers, host:port[,host:port] (default 127.0.0.1:9092; $OFS_CONSUMER_BOOTSTRAP_SERVERS)",
    )
    consume.add_argument(
        "--topic", help="topic of persist.Query messages (default ofs-persist; $OFS_CONSUMER_TOPIC)"
    )
    consume.add_argument("--group-id", help="consumer group (default ofs-consumer; $OFS_CONSUMER_GROUP_ID)")
    consume.add_argument(
        "--cache-mode",
        choices=["strong", "eventual"],
        help="invalidate written keys (strong, the default) or not; $OFS_CONSUMER_CACHE_MODE",
    )
    consume.add_argument(
        "--health-port",
        type=int,
        help="health and metrics HTTP port (default 8090, 0: any free port, -1: none; "
        "$OFS_CONSUMER_HEALTH_PORT)",
    )
    consume.add_argument(
        "--data-dir",
        help=DATA_DIR_HELP.replace("$OFS_DATA_DIR", "$OFS_CONSUMER_DATA_DIR, else $OFS_DATA_DIR"),
    )
    consume.add_argument(
        "--registry",
        help=REGISTRY_HELP.replace("$OFS_REGISTRY", "$OFS_CONSUMER_REGISTRY, else $OFS_REGISTRY"),
    )
    consume.set_defaults(func=_consume)


def _horizon(args: argparse.Namespace) -> int:
    with _extra("horizon"):
        from online_feature_store.horizon.main import run

    return run(args)


HORIZON_DATA_DIR_HELP = (
    "directory of Horizon's embedded database, secret and registry; a relative one is taken from the "
    "working directory (default: $OFS_HORIZON_DATA_DIR, else $OFS_DATA_DIR, "
    "else ~/.local/share/online-feature-store)"
)


def _add_horizon(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    horizon = subparsers.add_parser("horizon", help="run the Horizon control plane and TruffleBox UI")
    horizon.add_argument(
        "--config",
        help="YAML file of settings by name (port, host, data_dir, registry, database_url, secret, "
        "serving_address, ...); $OFS_HORIZON_<NAME> overrides it, flags both",
    )
    horizon.add_argument("--port", type=int, help="HTTP port (default 8082; $OFS_HORIZON_PORT)")
    horizon.add_argument("--host", help="address to bind (default 127.0.0.1; $OFS_HORIZON_HOST)")
    horizon.add_argument("--data-dir", help=HORIZON_DATA_DIR_HELP)
    horizon.set_defaults(func=_horizon)
    commands = horizon.add_subparsers(title="commands", metavar="COMMAND")
    create = commands.add_parser(
        "create-user",
        allow_abbrev=False,  # --password must not be taken for --password-env
        help="make a Horizon account (the first admin) in its database, without the server",
        description="The password comes from --password-env, else a prompt on a terminal, else the first "
        "line of standard input; never from the command line.",
    )
    create.add_argument("--username", required=True)
    create.add_argument("--role", choices=["viewer", "editor", "admin"], default="viewer")
    create.add_argument("--password-env", metavar="VAR", help="read the password from this variable")
    # SUPPRESS: given before create-user (to `ofs horizon`), these keep their value
    create.add_argument("--config", default=argparse.SUPPRESS, help="YAML settings file of ofs horizon")
    create.add_argument("--data-dir", default=argparse.SUPPRESS, help=HORIZON_DATA_DIR_HELP)
    create.set_defaults(func=_horizon_create_user)


def _horizon_create_user(args: argparse.Namespace) -> int:
    with _extra("horizon"):
        from online_feature_store.horizon.main import create_user

    return create_user(args)


def _rpc(args: argparse.Namespace) -> int:
    with _extra("server"):  # grpcio, grpcio-reflection and protobuf
        from online_feature_store.rpc import run

    return run(args.address, args.command, args.args, data=args.data, headers=args.header, tls=args.tls)


def _add_rpc(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rpc = subparsers.add_parser(
        "rpc", help="grpcurl-style client: list, describe and call a server's API through reflection"
    )
    rpc.add_argument(
        "address",
        help="server address, host:port (a DNS name may resolve to several replicas), or several "
        "IP:port separated by commas; calls are spread round-robin",
    )
    rpc.add_argument("command", choices=["list", "describe", "call"])
    rpc.add_argument("args", nargs="*", default=[], help="describe: SYMBOL; call: package.Service/Method")
    rpc.add_argument("-d", "--data", default="{}", help="call: the request as JSON (proto3 JSON mapping)")
    rpc.add_argument(
        "-H", "--header", action="append", default=[], help="call: metadata 'name: value' (repeatable)"
    )
    rpc.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    rpc.set_defaults(func=_rpc)


def _push(args: argparse.Namespace) -> int:
    with _extra("push"):  # pyarrow and tqdm
        importlib.import_module("pyarrow")
        from online_feature_store.batch.command import run

    return run(args)


def _add_push(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    push = subparsers.add_parser(
        "push",
        help="load Parquet, CSV or Arrow IPC files into an entity (resumable)",
        description="Columns feed keys and features by name: the key label, '<fg>.<feature>' or "
        "'<feature>' (or as --key/--column/--mapping say). Sink: the embedded store of --data-dir/"
        "--registry (default), an ofs serve (--server) or a Kafka topic (--kafka, --topic).",
    )
    push.add_argument("sources", nargs="+", metavar="SOURCE", help="a file, a directory or a glob pattern")
    push.add_argument("-e", "--entity", help="the entity to load")
    push.add_argument(
        "-g", "--feature-group", action="append", default=[], help="a feature group to load (repeatable)"
    )
    push.add_argument("--key", action="append", default=[], metavar="LABEL=COLUMN", help="key column")
    push.add_argument(
        "--column", action="append", default=[], metavar="FG.FEATURE=COLUMN", help="feature column"
    )
    push.add_argument("--mapping", metavar="FILE", help="YAML: entity, keys, feature_groups")
    push.add_argument("--format", choices=["parquet", "csv", "ipc"], help="default: from the extension")
    _add_store_flags(push)
    push.add_argument("--server", metavar="HOST:PORT", help="send to this ofs serve (gRPC)")
    push.add_argument("--caller-id", help="--server: caller id")
    push.add_argument("--token-env", metavar="VAR", help="--server: the variable holding the caller's token")
    push.add_argument("--kafka", metavar="HOST:PORT[,...]", help="send to Kafka (for ofs consume)")
    push.add_argument("--topic", help="--kafka: the topic")
    push.add_argument(
        "--nulls", choices=["error", "default"], default="error",
        help="a null feature value: an error (default) or the feature's default",
    )  # fmt: skip
    push.add_argument("--batch-rows", type=int, default=4096, help="rows per write or message group")
    push.add_argument("--checkpoint", metavar="FILE", help="default: .ofs-push/<job>.json")
    push.add_argument("--restart", action="store_true", help="discard the checkpoint, load everything")
    push.add_argument("--dry-run", action="store_true", help="check every row, write nothing")
    push.add_argument("--no-progress", action="store_true", help="no progress bar")
    push.set_defaults(func=_push)


def build_parser() -> argparse.ArgumentParser:
    """The ``ofs`` argument parser with every sub-command."""
    from online_feature_store import __version__

    parser = argparse.ArgumentParser(prog="ofs", description="online-feature-store command line")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.set_defaults(func=lambda _args: _usage(parser))
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_registry(subparsers)
    _add_serve(subparsers)
    _add_consume(subparsers)
    _add_horizon(subparsers)
    _add_rpc(subparsers)
    _add_push(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ofs`` with ``argv`` (default: the process arguments); the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except OfsError as exc:
        print(f"ofs: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
