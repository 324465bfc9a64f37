"""The side of the realistic benchmark that runs inside the system under test (bench/realistic_bench.py).

    <target python> bench/realistic_worker.py embedded|verify|load '<json parameters>'

It is started with the target's interpreter (any checkout) from a directory outside every checkout, so
``online_feature_store`` is the target's; it imports numpy, that package and ``realistic_keys`` only, and
uses the public surface (``FeatureStore``: ``retrieve``, ``persist``, the ``cache_bytes`` and ``metrics``
arguments, and the ``cache_lookup`` hook). It prints one JSON object as its last line.

- ``embedded``: ``FeatureStore.retrieve`` of freshly drawn keys in this process: one thread closed loop
  (latency, throughput, this process's CPU), several threads closed loop (saturation), then an open loop
  at half of that saturation; the in-process cache hit ratio from the ``cache_lookup`` hook.
- ``verify``: reads the first, the last and 200 random entities, every FG, and compares every value with
  what was loaded (``realistic_keys.values``).
- ``load``: ``FeatureStore.persist`` of every FG in chunks (for a target without ``ofs push``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realistic_keys as rk

KEY_SLOTS = 5_000_000
"""Keys drawn ahead of a measurement (requests x keys, at most ``MAX_REQUESTS`` requests): requests cycle
through them when a run makes more calls. 5M slots are 50k requests of 100 keys; a cycle is millions of
lookups, far longer than any cache here keeps an entry it does not use."""
MAX_REQUESTS = 1_000_000
CHUNK = 500
"""Keys per call when warming a cache or checking the data."""


def _open(params: dict[str, Any], cache_bytes: int, metrics: Any = None) -> Any:
    from online_feature_store.feature_store import FeatureStore

    kwargs: dict[str, Any] = {"data_directory": params["data_dir"], "cache_bytes": cache_bytes}
    if metrics is not None:
        kwargs["metrics"] = metrics
    return FeatureStore(**kwargs)


def _features(n_fgs: int) -> dict[str, list[str]]:
    labels = [f"f{j}" for j in range(rk.N_FEATURES)]
    return {f"fg{g}": labels for g in range(n_fgs)}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _tree_cpu(pids: dict[str, int]) -> dict[str, float]:
    import grpc_bench as gb  # numpy only; its /proc reader

    return {name: gb.tree_cpu_seconds(pid) for name, pid in pids.items()}


# -- hooks -----------------------------------------------------------------------------------------


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


class Hooks:
    """The FeatureStore's metrics hooks: counts in-process cache lookups; every other hook (those of
    today and any a later version adds) does nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def cache_lookup(self, tier: str, entity: str, hits: int, misses: int) -> None:
        if tier == "in_process":
            with self._lock:
                self.hits += hits
                self.misses += misses

    def take(self) -> tuple[int, int]:
        with self._lock:
            out = (self.hits, self.misses)
            self.hits = self.misses = 0
            return out

    def __getattr__(self, name: str) -> Callable[..., None]:
        return _noop


# -- loops -----------------------------------------------------------------------------------------


def _summary(
    samples: list[float], wall: float, cpu: float, hits: tuple[int, int], **extra: Any
) -> dict[str, Any]:
    lat = np.array(samples, dtype=np.float64) * 1000
    n = len(lat)
    total = hits[0] + hits[1]
    return {
        "requests": n,
        "seconds": wall,
        "rps": n / wall if wall > 0 else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if n else math.nan,
        "p99_ms": float(np.percentile(lat, 99)) if n else math.nan,
        "cores": cpu / wall if wall > 0 else math.nan,
        "hit_ratio": hits[0] / total if total else math.nan,
        **extra,
    }


class Traffic:
    """The requests of one case, drawn ahead; ``next()`` hands them out round robin (thread-safe)."""

    def __init__(self, names: list[str], ids: np.ndarray) -> None:
        self.requests = [[names[i] for i in row] for row in ids.tolist()]
        self._n = itertools.count()

    def next(self) -> list[str]:
        return self.requests[next(self._n) % len(self.requests)]


def closed_loop(
    call: Callable[[list[str]], Any], traffic: Traffic, threads: int, seconds: float
) -> tuple[list[float], float]:
    """``threads`` threads calling back to back for ``seconds``: the latencies and the wall time."""
    samples: list[list[float]] = [[] for _ in range(threads)]
    start = time.perf_counter()
    deadline = start + seconds

    def loop(out: list[float]) -> None:
        perf = time.perf_counter
        while True:
            keys = traffic.next()
            t = perf()
            if t >= deadline:
                return
            call(keys)
            out.append(perf() - t)

    if threads == 1:
        loop(samples[0])
    else:
        workers = [threading.Thread(target=loop, args=(s,)) for s in samples]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return [x for s in samples for x in s], time.perf_counter() - start


def open_loop(
    call: Callable[[list[str]], Any], traffic: Traffic, threads: int, rate: float, seconds: float
) -> tuple[list[float], float, int]:
    """Calls due every ``1 / rate`` s, taken in turn by ``threads`` threads; each latency runs from when
    the call was due (a late start counts). Returns the latencies, the wall time and how many calls
    started more than 1 ms late."""
    period = 1.0 / rate
    total = max(1, int(rate * seconds))
    slot = itertools.count()
    samples: list[list[float]] = [[] for _ in range(threads)]
    late = [0] * threads
    start = time.perf_counter() + 0.01

    def loop(i: int) -> None:
        perf = time.perf_counter
        while True:
            n = next(slot)
            if n >= total:
                return
            due = start + n * period
            wait = due - perf()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.001:
                late[i] += 1
            call(traffic.next())
            samples[i].append(perf() - due)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return [x for s in samples for x in s], time.perf_counter() - start, sum(late)


# -- commands --------------------------------------------------------------------------------------


def warm(fs: Any, entity: str, features: dict[str, list[str]], names: list[str], ids: Sequence[int]) -> float:
    """Reads ``ids`` in calls of 500 keys (fills the in-process cache); seconds taken."""
    began = time.perf_counter()
    for i in range(0, len(ids), CHUNK):
        fs.retrieve(entity, [names[k] for k in ids[i : i + CHUNK]], features)
    return time.perf_counter() - began


def embedded(p: dict[str, Any]) -> dict[str, Any]:
    """One group (store, cache size, FGs) of embedded cases; params as bench/realistic_bench.py sends."""
    n, entity = p["entities"], p["entity"]
    names = [rk.key(i) for i in range(n)]
    hooks = Hooks()
    out: dict[str, Any] = {"cases": []}
    fs = _open(p, p["cache_bytes"], hooks)
    try:
        features = _features(p["fgs"])
        out["warm_seconds"] = (
            warm(fs, entity, features, names, rk.hot_first(n, p["warm_entities"]).tolist())
            if p["warm_entities"]
            else 0.0
        )
        rng = np.random.default_rng(p["seed"])
        for case in p["cases"]:
            out["cases"].append(_case(fs, entity, features, names, rng, case, p, hooks))
    finally:
        fs.close()
    return out


def _case(
    fs: Any,
    entity: str,
    features: dict[str, list[str]],
    names: list[str],
    rng: np.random.Generator,
    case: dict[str, Any],
    p: dict[str, Any],
    hooks: Hooks,
) -> dict[str, Any]:
    k = case["keys"]
    sampler = rk.Sampler(case["dist"], p["entities"])
    traffic = Traffic(names, sampler.draw(rng, min(MAX_REQUESTS, max(1, KEY_SLOTS // k)), k))

    def call(keys: list[str]) -> None:
        fs.retrieve(entity, keys, features)

    def measured(run: Callable[[], tuple[Any, ...]]) -> dict[str, Any]:
        hooks.take()
        cpu0, watched0 = _cpu(), _tree_cpu(p["watch_pids"])
        got = run()
        cpu, watched = _cpu() - cpu0, _tree_cpu(p["watch_pids"])
        summary = _summary(got[0], got[1], cpu, hooks.take())
        summary["watched_cores"] = {
            name: (watched[name] - watched0[name]) / got[1] for name in watched if got[1] > 0
        }
        if len(got) > 2:
            summary["late"] = got[2]
        return summary

    closed_loop(call, traffic, 1, p["warmup"])
    single = measured(lambda: closed_loop(call, traffic, 1, p["seconds"]))
    floor = None
    if "floor" in p:
        with bare_mget(p["floor"]) as mget:
            closed_loop(mget, traffic, 1, p["warmup"])
            floor = measured(lambda: closed_loop(mget, traffic, 1, p["seconds"]))
    threads = p["threads"]
    sat = measured(lambda: closed_loop(call, traffic, threads, p["seconds"]))
    rate = 0.5 * sat["rps"]  # the open loop runs on the same threads
    half = measured(lambda: open_loop(call, traffic, threads, rate, p["seconds"]))
    half["target_rate"] = rate
    out = {"case": case, "single": single, "saturation": sat, "half": half, "threads": threads}
    if floor is not None:
        out["floor"] = floor
    return out


@contextmanager
def bare_mget(floor: dict[str, Any]) -> Iterator[Callable[[list[str]], Any]]:
    """A call sending a request's keys as one bare ``MGET`` (redis-py with hiredis, the values left as
    bytes): what the store and the loopback cost before anything is decoded."""
    import redis  # the target's: its [redis] extra

    client = redis.Redis.from_url(floor["url"])
    prefix = floor["prefix"]
    try:
        yield lambda keys: client.mget([prefix + k for k in keys])
    finally:
        client.close()


def verify(p: dict[str, Any]) -> dict[str, Any]:
    """Every FG of the first, the last and 200 random entities reads back exactly as loaded."""
    n, n_fgs = p["entities"], p["fgs"]
    rng = np.random.default_rng(5)
    ids = np.unique(np.concatenate([[0, n - 1], rng.integers(0, n, 200)])).astype(np.int64)
    expected = rk.values(ids, n_fgs)
    fs = _open(p, 0)
    try:
        res = fs.retrieve(p["entity"], [rk.key(int(i)) for i in ids], _features(n_fgs))
        for g in range(n_fgs):
            status = np.asarray(res.status[f"fg{g}"])
            if (status != 0).any():
                bad = int(ids[int(np.flatnonzero(status != 0)[0])])
                return {"ok": False, "why": f"{rk.key(bad)} fg{g}: status {int(status.max())} (not stored)"}
            got = np.asarray(res.values[f"fg{g}"], dtype=np.float32)
            want = expected[:, g * rk.N_FEATURES : (g + 1) * rk.N_FEATURES]
            if got.shape != want.shape or not np.array_equal(got, want):
                return {"ok": False, "why": f"fg{g}: values differ from those loaded"}
    finally:
        fs.close()
    return {"ok": True, "why": f"{len(ids)} entities x {n_fgs} FGs read back exactly"}


def load(p: dict[str, Any]) -> dict[str, Any]:
    """``FeatureStore.persist`` of every FG, ``chunk`` keys at a time."""
    n, n_fgs, chunk = p["entities"], p["fgs"], p.get("chunk", 5000)
    fs = _open(p, 0)
    began = time.perf_counter()
    try:
        for start in range(0, n, chunk):
            ids = np.arange(start, min(start + chunk, n), dtype=np.int64)
            keys = [rk.key(int(i)) for i in ids]
            vals = rk.values(ids, n_fgs)
            for g in range(n_fgs):
                fs.persist(p["entity"], f"fg{g}", keys, vals[:, g * rk.N_FEATURES : (g + 1) * rk.N_FEATURES])
    finally:
        fs.close()
    return {"seconds": time.perf_counter() - began}


COMMANDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "embedded": embedded,
    "verify": verify,
    "load": load,
}


def main(argv: Sequence[str]) -> int:
    command, params = argv[0], json.loads(argv[1])
    result = COMMANDS[command](params)
    result["pid"] = os.getpid()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
