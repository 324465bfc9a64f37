"""The etcd registry backend (client: ``etcd-sdk-python``, imported as ``pyetcd``, loaded lazily).

Layout under ``prefix``: ``entity/<label>``, ``store/<id>``, ``caller/<id>`` (JSON documents) and
``revision`` (a counter written by every apply). The snapshot revision is the etcd revision of the last apply
(the ``mod_revision`` of ``revision``). An apply is one etcd transaction guarded by ``mod_revision(revision)
== <read revision>``: a concurrent apply makes it fail, and it is re-run on the new state (optimistic
concurrency, no lost update). Watches use the etcd watch API on the prefix and reconnect, endpoint by
endpoint, when their stream breaks.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from online_feature_store.errors import ConflictError, UnavailableError
from online_feature_store.registry.backend import Change, plan_docs
from online_feature_store.registry.model import RegistryState
from online_feature_store.registry.serde import state_from_docs
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.validate import HasData

__all__ = ["DEFAULT_PREFIX", "EtcdRegistry"]

DEFAULT_PREFIX = "/ofs/registry/"
_KINDS = ("entity", "store", "caller")
T = TypeVar("T")


def _pyetcd() -> Any:
    try:
        return importlib.import_module("pyetcd")
    except ImportError as exc:
        raise UnavailableError(
            "the etcd registry needs etcd-sdk-python: pip install 'online-feature-store[etcd]'"
        ) from exc


def _parse_endpoint(text: str) -> tuple[str, int]:
    text = text.strip()
    for scheme in ("http://", "https://"):
        text = text.removeprefix(scheme)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UnavailableError(f"bad etcd endpoint {text!r}: expected host:port")
    return host, int(port)


class EtcdRegistry:
    """The registry under ``prefix`` in the etcd cluster at ``endpoints`` (``host:port`` strings)."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        prefix: str = DEFAULT_PREFIX,
        *,
        timeout: float = 5.0,
        retry_for: float = 15.0,
        max_conflicts: int = 50,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        self.endpoints = [_parse_endpoint(e) for e in endpoints]
        if not self.endpoints:
            raise UnavailableError("no etcd endpoints given")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.timeout = timeout
        self.retry_for = retry_for
        self.max_conflicts = max_conflicts
        self._etcd = _pyetcd()
        self._client = self._make_client(self.endpoints)
        self._stop = threading.Event()
        self._wake: list[threading.Event] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- plumbing -------------------------------------------------------------------------------------------

    def _make_client(self, endpoints: Sequence[tuple[str, int]]) -> Any:
        eps = [self._etcd.Endpoint(h, p, secure=False, time_retry=1.0) for h, p in endpoints]
        return self._etcd.MultiEndpointEtcd3Client(endpoints=eps, timeout=self.timeout, failover=True)

    @property
    def url(self) -> str:
        """``etcd://host:port,…/prefix/``."""
        return "etcd://" + ",".join(f"{h}:{p}" for h, p in self.endpoints) + self.prefix

    def __enter__(self) -> EtcdRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; on connection errors retry (the client fails over) for ``retry_for`` seconds."""
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        while True:
            try:
                return fn()
            except self._etcd.Etcd3Exception as exc:
                if time.monotonic() + delay > deadline or self._closed:
                    raise UnavailableError(
                        f"etcd registry {self.url}: {what} failed: {type(exc).__name__}: {exc}"
                    ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}/{name}"

    @property
    def _revision_key(self) -> str:
        return self.prefix + "revision"

    def _read(self) -> tuple[RegistryState, int, int]:
        """(state, revision = mod_revision of the counter, counter value), from one range read."""
        response = self._client.get_prefix_response(self.prefix)
        docs: dict[tuple[str, str], str] = {}
        revision, counter = 0, 0
        for kv in response.kvs:
            key = kv.key.decode()[len(self.prefix) :]
            if key == "revision":
                revision, counter = kv.mod_revision, int(kv.value.decode() or 0)
                continue
            kind, _, name = key.partition("/")
            if kind in _KINDS:
                docs[kind, name] = kv.value.decode()
        return state_from_docs(docs), revision, counter

    # -- RegistryBackend ------------------------------------------------------------------------------------

    def load(self) -> Snapshot:
        """The current state (one linearizable range read)."""
        state, revision, _ = self._retry("load", self._read)
        return Snapshot(state, revision)

    def revision(self) -> int:
        """The etcd revision of the last apply (0 for an empty registry)."""

        def read() -> int:
            _, meta = self._client.get(self._revision_key)
            return 0 if meta is None else int(meta.mod_revision)

        return self._retry("revision", read)

    def apply(self, change: Change, *, has_data: HasData | None = None) -> int:
        """Validate and apply ``change`` in one etcd transaction; re-run it on conflict."""
        tx = self._client.transactions
        for _ in range(self.max_conflicts):
            current, revision, counter = self._retry("read", self._read)
            _, puts, deletes = plan_docs(current, change, has_data)
            if not puts and not deletes:
                return revision
            ops = [tx.put(self._key(kind, name), doc) for (kind, name), doc in puts.items()]
            ops += [tx.delete(self._key(kind, name)) for kind, name in deletes]
            ops.append(tx.put(self._revision_key, str(counter + 1)))
            compare = [tx.mod(self._revision_key) == revision]

            def commit(compare: list[Any] = compare, ops: list[Any] = ops) -> tuple[bool, list[Any]]:
                succeeded, responses = self._client.transaction(compare=compare, success=ops, failure=[])
                return bool(succeeded), list(responses)

            succeeded, responses = self._retry("apply", commit)
            if succeeded:
                return int(responses[-1].response_put.header.revision)
        raise ConflictError(
            f"etcd registry {self.url}: {self.max_conflicts} concurrent changes won over this apply; retry it"
        )

    def watch(self, callback: Callable[[], None]) -> None:
        """Watch the prefix from a background thread; reconnect (next endpoint) when the stream breaks."""
        thread = threading.Thread(
            target=self._watch_loop, args=(callback,), name="ofs-registry-etcd-watch", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _watch_loop(self, callback: Callable[[], None]) -> None:
        index, failures = 0, 0
        while not self._stop.is_set():
            broken = threading.Event()
            with self._lock:
                if self._stop.is_set():
                    return
                self._wake.append(broken)

            def on_event(response: object, broken: threading.Event = broken) -> None:
                if isinstance(response, BaseException):
                    broken.set()
                else:
                    callback()

            client = self._make_client([self.endpoints[index % len(self.endpoints)]])
            try:
                client.add_watch_prefix_callback(self.prefix, on_event)
                failures = 0
                callback()  # changes may have happened while we were not watching
                broken.wait()
            except Exception:  # this member is down or not serving: the next one is tried below
                failures += 1
            finally:
                client.close()
                with self._lock:
                    self._wake.remove(broken)
            index += 1
            self._stop.wait(min(0.05 * 2**failures, 1.0))

    def close(self) -> None:
        """Stop the watches and close the connections. Idempotent."""
        with self._lock:
            self._closed = True
            self._stop.set()
            for event in self._wake:
                event.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        self._client.close()
