"""The Kafka consumer loop: batches ``persist.Query`` messages, stores them, commits, dead-letters.

Guarantees (see ``docs/ingestion.md``):

- **At-least-once.** A partition's offset is committed only after every message before it in that
  partition was stored (or dead-lettered, with the dead-letter write acknowledged). Writes are idempotent
  (a block carries the whole FG row), so a message stored twice after a crash changes nothing.
- **Order per partition.** A batch is written in one store call (one transaction in SQLite) with its messages
  in offset order, and where two of them write the same (key, FG) the later one wins, so the last value in
  a partition wins. Messages are validated and their blocks built by a small thread pool (native code, no
  GIL) as soon as they are polled, so the next batch is built while the current one is being written.
- **Bad messages never stop the consumer.** A message the store rejects for what it contains (undecodable,
  unknown entity / FG / feature, wrong counts, out-of-range values, an FG listing no features, more rows
  than ``max_rows_per_persist``) goes to the dead-letter topic with the reason in its ``ofs-error`` header.
- **Outages are waited out.** Any other failure (store or dead-letter topic unreachable) pauses every
  partition and retries the same messages with exponential backoff; nothing is skipped or committed meanwhile.
- **Rebalances.** Ownership is tracked per partition with an epoch that changes on every assignment; a
  message polled under an epoch that is no longer current is neither retried nor committed (its new owner
  reads it again from the last commit).

Rebalance callbacks run inside ``poll()`` (kafka-python 2.x; 3.x moved them to its IO thread), so
:class:`_Ownership` is the only state they touch, under a lock; everything else belongs to the thread
running :meth:`IngestConsumer.run`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from online_feature_store.consumer.config import ConsumerConfig
from online_feature_store.consumer.health import ConsumerMetrics, Readiness
from online_feature_store.errors import InvalidInputError, NotFoundError, ResourceExhaustedError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.limits import make_limits
from online_feature_store.persist import PreparedWrite

__all__ = ["ERROR_HEADER", "IngestConsumer", "Message", "offsets_to_commit"]

log = logging.getLogger("online_feature_store.consumer")

ERROR_HEADER = "ofs-error"
"""Dead-letter header holding why the message was rejected (UTF-8 text)."""
ERROR_CLASS_HEADER = "ofs-error-class"
SOURCE_HEADERS = ("ofs-source-topic", "ofs-source-partition", "ofs-source-offset")
_MAX_REASON = 4096
_CAUGHT_UP_SECONDS = 0.005
"""A batch closes when a poll this long returns nothing (no more messages are waiting)."""
_PREFETCH_SECONDS = 0.005
"""Longest poll for the next batch while the current one is being written."""


@dataclass(frozen=True)
class Message:
    """One polled record, tagged with the ownership epoch of its partition when it was polled."""

    tp: TopicPartition
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    epoch: int


class _Ownership(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python ships no types
    """Which partitions this process owns, and since which assignment (the epoch)."""

    def __init__(self, on_change: Any, before_revoke: Any = lambda: None) -> None:
        self._lock = threading.Lock()
        self._epochs: dict[TopicPartition, int] = {}
        self._counter = 0
        self._on_change = on_change
        self._before_revoke = before_revoke

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # The write in flight finishes first: the rebalance (and so the partitions' next owner) goes on
        # only after this returns, so an older write of ours cannot land after its newer one.
        self._before_revoke()
        with self._lock:
            for tp in revoked:
                self._epochs.pop(tp, None)
        log.info("partitions revoked: %s", sorted(str(tp.partition) for tp in revoked))
        self._on_change()

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        with self._lock:
            for tp in assigned:
                self._counter += 1
                self._epochs[tp] = self._counter
        log.info("partitions assigned: %s", sorted(str(tp.partition) for tp in assigned))
        self._on_change()

    def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        self.on_partitions_revoked(lost)

    def epoch(self, tp: TopicPartition) -> int | None:
        """The current epoch of ``tp``, None when this process does not own it."""
        with self._lock:
            return self._epochs.get(tp)

    def current(self, tp: TopicPartition, epoch: int) -> bool:
        """True while ``tp`` is still owned under ``epoch``."""
        with self._lock:
            return self._epochs.get(tp) == epoch

    def owned(self) -> list[TopicPartition]:
        """The partitions owned now."""
        with self._lock:
            return list(self._epochs)


def offsets_to_commit(batch: Iterable[Message], ownership: _Ownership) -> dict[TopicPartition, int]:
    """Per partition still owned under the epoch its messages were polled in, the offset after the last
    of them (Kafka's committed offset is the next one to read). Messages of an older epoch count for
    nothing: their partition was revoked since, and its position restarts from the last commit."""
    last: dict[TopicPartition, int] = {}
    for m in batch:
        if ownership.current(m.tp, m.epoch):
            last[m.tp] = max(last.get(m.tp, -1), m.offset)
    return {tp: off + 1 for tp, off in last.items()}


@dataclass
class _Outcome:
    """What writing a batch gave: stored (with their block counts), rejected (with reasons), and not yet
    stored (in offset order)."""

    stored: list[tuple[Message, int]]
    rejected: list[tuple[Message, BaseException]]
    remaining: list[Message]
    error: BaseException | None = None


_Prepared = PreparedWrite | BaseException
"""A message's blocks, or why they could not be built."""
_REJECT = (InvalidInputError, NotFoundError, ResourceExhaustedError)
"""Failures that are the message's fault (a message over the limits included): it goes to the dead-letter
topic instead of being retried."""


class IngestConsumer:
    """One member of the consumer group, writing through ``fs``. Call :meth:`run` on one thread; set the
    ``stop`` event passed to it to finish the current batch, commit and leave the group."""

    def __init__(
        self,
        fs: FeatureStore,
        config: ConsumerConfig,
        metrics: ConsumerMetrics | None = None,
        readiness: Readiness | None = None,
    ) -> None:
        self.fs = fs
        self.config = config.check()
        fs.limits = make_limits(
            fs.limits.max_keys_per_request, self.config.max_rows_per_persist, fs.limits.max_message_bytes
        )
        self.metrics = metrics if metrics is not None else ConsumerMetrics()
        self.readiness = readiness if readiness is not None else Readiness()
        self._ownership = _Ownership(self._ownership_changed, self._finish_write)
        common: dict[str, Any] = {
            "bootstrap_servers": config.bootstrap_servers.split(","),
            "client_id": config.client_id,
            **config.kafka,
        }
        self._consumer = KafkaConsumer(
            group_id=config.group_id,
            enable_auto_commit=False,
            auto_offset_reset=config.auto_offset_reset,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            max_poll_records=config.max_poll_records,
            fetch_max_bytes=config.fetch_max_bytes,
            max_partition_fetch_bytes=config.max_partition_fetch_bytes,
            **common,
        )
        # The dead-letter copy must be acknowledged by every in-sync replica before the offset moves on;
        # idempotent, so a retry after a broker failure neither duplicates nor reorders the copies.
        self._dead_lettered = False
        self._producer = KafkaProducer(
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=max(config.max_partition_fetch_bytes, 1 << 20),
            **common,
        )
        # Validating and building blocks (native, GIL released) runs on `workers` threads; the store
        # writes run on one more, so the poll loop keeps fetching (and building) the next batch meanwhile.
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="ofs-consumer-build")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ofs-consumer-write")
        self._building: dict[tuple[TopicPartition, int, int], Future[_Prepared]] = {}
        self._job: Future[_Outcome] | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._carry: list[Message] = []
        self._next_lag = 0.0
        self._topic = config.topic

    # -- loop -------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consumes until ``stop`` is set; then finishes the batch in hand, commits and leaves the group."""
        cfg = self.config
        # A group leader whose metadata lacks the topic assigns nothing (until a later rebalance), so
        # join only once the topic's partitions are known.
        while not stop.is_set() and not self._consumer.partitions_for_topic(cfg.topic):
            self.readiness.set("topic", f"topic {cfg.topic!r} not found")
            log.info("waiting for topic %s to exist", cfg.topic)
            stop.wait(1.0)
        self.readiness.set("topic", None)
        self._consumer.subscribe([cfg.topic], listener=self._ownership)
        log.info(
            "consuming %s as group %s (dead letters: %s, cache mode %s)",
            cfg.topic,
            cfg.group_id,
            cfg.dead_letter_topic,
            cfg.cache_mode,
        )
        try:
            while not stop.is_set():
                batch, started = self._collect(stop)
                if batch:
                    self._process(batch, started, stop)
                self._refresh_lag()
        finally:
            self.close()

    def _collect(self, stop: threading.Event) -> tuple[list[Message], float]:
        """Up to ``batch_max_messages`` messages, for at most ``batch_max_seconds`` after the first; the
        batch closes early once nothing more is waiting, so a consumer that keeps up writes each message
        as it comes (low latency) and one that is behind writes large batches (high throughput)."""
        cfg = self.config
        batch, self._carry = self._carry, []
        started = time.monotonic()
        while len(batch) < cfg.batch_max_messages and not stop.is_set():
            if batch:
                left = cfg.batch_max_seconds - (time.monotonic() - started)
                if left <= 0:
                    break
                polled = self._poll(min(left, _CAUGHT_UP_SECONDS), cfg.batch_max_messages - len(batch))
                if not polled:
                    break
            else:
                polled = self._poll(0.1, cfg.batch_max_messages)  # short, so a stop is seen promptly
                if polled:
                    started = time.monotonic()
                else:
                    self._refresh_lag()
            self._build(polled)
            batch.extend(polled)
        return batch, started

    def _poll(self, timeout: float, max_records: int) -> list[Message]:
        records = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        out: list[Message] = []
        for tp, recs in records.items():
            epoch = self._ownership.epoch(tp)
            if epoch is None:
                # Either revoked while in flight (its next owner reads it from the last commit), or
                # assigned on the IO thread before our callback ran. Never skip ahead: rewind, so an
                # owned partition yields these records again once its epoch is known.
                with contextlib.suppress(ValueError):  # raised when the partition is not assigned
                    self._consumer.seek(tp, recs[0].offset)
                continue
            self.metrics.consumed.labels(tp.topic).inc(len(recs))
            out.extend(
                Message(tp, r.offset, r.key, r.value, tuple((k, v) for k, v in r.headers or ()), epoch)
                for r in recs
            )
        return out

    def _process(self, batch: list[Message], started: float, stop: threading.Event) -> None:
        """Stores (or dead-letters) every message of ``batch``, then commits their offsets. Failures other
        than bad messages pause the partitions and retry with backoff until they pass or ``stop`` is set."""
        cfg = self.config
        pending = batch
        delay = cfg.backoff_initial_seconds
        while True:
            outcome = self._write_all(pending)
            remaining, rejected, error = outcome.remaining, outcome.rejected, outcome.error
            try:
                self._dead_letter(rejected)
            except Exception as e:  # the DLQ is unreachable: these must be retried, never skipped
                log.warning("dead-letter topic %s failed: %s", cfg.dead_letter_topic, e)
                remaining.extend(m for m, _ in rejected)
                error = error or e
            if outcome.stored:
                self.metrics.persisted.labels(self._topic).inc(len(outcome.stored))
                self.metrics.persisted_blocks.labels(self._topic).inc(sum(n for _, n in outcome.stored))
            if not remaining:
                break
            # Blocks built ahead carry an expiry computed from when they were built; after an outage,
            # build them again when their turn comes.
            self._drop_built()
            self.metrics.store_failures.labels(self._topic).inc()
            self.metrics.paused.set(1)
            self.readiness.set("store", f"writes failing: {error}")
            log.warning(
                "%d message(s) not stored (%s); pausing consumption for %.1fs", len(remaining), error, delay
            )
            self._wait_paused(delay, stop)
            if stop.is_set():
                log.warning("stopping with %d unstored message(s), left uncommitted", len(remaining))
                return
            delay = min(delay * 2, cfg.backoff_max_seconds)
            # Messages of partitions reassigned meanwhile belong to their new owner now.
            pending = sorted(
                (m for m in remaining if self._ownership.current(m.tp, m.epoch)), key=lambda m: m.offset
            )
            if not pending:
                break
        if delay != cfg.backoff_initial_seconds:
            log.info("store writes succeed again; resuming")
        self.metrics.paused.set(0)
        self.readiness.set("store", None)
        self._resume()
        self._commit(batch)
        self.metrics.batch_messages.observe(len(batch))
        self.metrics.batch_seconds.observe(time.monotonic() - started)

    def _build(self, messages: Iterable[Message]) -> None:
        """Starts validating and building the blocks of ``messages`` on the pool (once per message)."""
        for m in messages:
            key = (m.tp, m.offset, m.epoch)
            if key not in self._building:
                self._building[key] = self._pool.submit(self._prepare, m.value)

    def _prepare(self, value: bytes | None) -> _Prepared:
        if not value:
            return InvalidInputError("empty message value (expected a persist.Query)")
        try:
            return self.fs.prepare_wire(value, saturate=self.config.saturate)
        except Exception as e:  # handed to the writer, which rejects or retries the message
            return e

    def _drop_built(self) -> None:
        for future in self._building.values():
            future.cancel()
        self._building.clear()

    def _write_all(self, messages: Sequence[Message]) -> _Outcome:
        """Writes ``messages`` (in offset order per partition) on the write thread, polling meanwhile."""
        live = []
        for m in messages:
            future = self._building.pop((m.tp, m.offset, m.epoch), None)
            if not self._ownership.current(m.tp, m.epoch):
                # Polled before a revocation: its partition's next owner (or this process under a new
                # epoch, from the last commit) writes it.
                continue
            live.append((m, future if future is not None else self._pool.submit(self._prepare, m.value)))
        job = self._job = self._writer.submit(self._store, live)
        # Fetch the next batch while this one is written (kafka-python fetches inside poll()), and start
        # building its blocks. What arrives waits in _carry and is written after this batch, so each
        # partition keeps its order.
        limit = self.config.batch_max_messages
        while not job.done():
            if len(self._carry) < limit:
                polled = self._poll(_PREFETCH_SECONDS, limit - len(self._carry))
                self._build(polled)
                self._carry.extend(polled)
            else:
                wait([job])
        return job.result()

    def _finish_write(self) -> None:
        """Waits for the store write in flight, if any (a rebalance is revoking partitions)."""
        job = self._job
        if job is not None:
            wait([job])

    def _store(self, live: Sequence[tuple[Message, Future[_Prepared]]]) -> _Outcome:
        """Writes the messages whose blocks were built in one store call, in order; the invalid ones are
        rejected. If the store refuses the call for what a message holds, they are written one at a time
        to find it. Any other failure leaves every message not rejected remaining."""
        out = _Outcome([], [], [])
        ready: list[tuple[Message, PreparedWrite]] = []
        for m, future in live:
            built = future.result()
            if isinstance(built, PreparedWrite):
                ready.append((m, built))
            elif isinstance(built, _REJECT):
                out.rejected.append((m, built))
            else:  # not the message's fault (e.g. a registry snapshot that failed to compile): retry
                out.remaining.append(m)
                out.error = out.error or built
        if out.remaining:  # keep each partition's order: nothing is written until all can be
            rejected = {id(m) for m, _ in out.rejected}
            out.remaining = [m for m, _ in live if id(m) not in rejected]
            return out
        invalidate = self.config.invalidate
        try:
            self.fs.write_prepared([p for _, p in ready], invalidate=invalidate)
        except _REJECT:
            for i, (m, p) in enumerate(ready):
                try:
                    self.fs.write_prepared([p], invalidate=invalidate)
                except _REJECT as e:
                    out.rejected.append((m, e))
                except Exception as e:  # an outage (store, network): retried, never skipped
                    out.remaining.extend(r for r, _ in ready[i:])
                    out.error = e
                    return out
                else:
                    out.stored.append((m, p.blocks))
            return out
        except Exception as e:  # an outage (store, network): retried, never skipped
            out.remaining.extend(m for m, _ in ready)
            out.error = e
            return out
        out.stored.extend((m, p.blocks) for m, p in ready)
        return out

    def _dead_letter(self, rejected: Sequence[tuple[Message, BaseException]]) -> None:
        """Copies each rejected message to the dead-letter topic and waits for the acknowledgements."""
        if not rejected:
            return
        topic = self.config.dead_letter_topic
        sent = []
        for m, e in rejected:
            reason = f"{type(e).__name__}: {e}"[:_MAX_REASON]
            log.warning("dead-lettering %s/%d@%d: %s", m.tp.topic, m.tp.partition, m.offset, reason)
            headers = [
                *m.headers,
                (ERROR_HEADER, reason.encode()),
                (ERROR_CLASS_HEADER, type(e).__name__.encode()),
                *zip(
                    SOURCE_HEADERS,
                    (m.tp.topic.encode(), b"%d" % m.tp.partition, b"%d" % m.offset),
                    strict=False,
                ),
            ]
            self._dead_lettered = True
            sent.append((e, self._producer.send(topic, value=m.value, key=m.key, headers=headers)))
        self._producer.flush()
        for e, future in sent:
            future.get(timeout=30)  # raises if the copy was not acknowledged
            self.metrics.dead_lettered.labels(self._topic, type(e).__name__).inc()

    def _wait_paused(self, seconds: float, stop: threading.Event) -> None:
        """Sleeps ``seconds`` with every partition paused, polling so the group keeps this member."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                assigned = self._consumer.assignment()
                if assigned:
                    self._consumer.pause(*assigned)
            except KafkaError as e:
                log.debug("pause during rebalance: %s", e)
            # Newly assigned partitions are not paused yet: whatever they yield waits for the next batch.
            self._carry.extend(self._poll(min(left, 0.5), self.config.max_poll_records))

    def _resume(self) -> None:
        paused = self._consumer.paused()
        if paused:
            self._consumer.resume(*paused)

    def _commit(self, batch: Sequence[Message]) -> None:
        """Commits, per partition still owned under the batch's epoch, the offset after its last message."""
        next_offsets = offsets_to_commit(batch, self._ownership)
        if not next_offsets:
            return
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in next_offsets.items()}
        try:
            self._consumer.commit(offsets)
        except KafkaError as e:
            # Typically a rebalance in progress: the rows are stored, and the next owner rereads them.
            log.warning("offset commit failed (messages will be read again): %s", e)
            return
        self.metrics.commits.labels(self._topic).inc()
        for tp, off in offsets.items():
            self._committed[tp] = off.offset

    # -- observability ----------------------------------------------------------------------------
    def _ownership_changed(self) -> None:
        owned = self._ownership.owned()
        self.metrics.assigned.labels(self._topic).set(len(owned))
        self.readiness.set("group", None)

    def _refresh_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + self.config.lag_interval_seconds
        owned = set(self._ownership.owned())
        for tp in list(self._committed):
            if tp not in owned:
                del self._committed[tp]
                with contextlib.suppress(KeyError):
                    self.metrics.lag.remove(tp.topic, str(tp.partition))
        for tp in owned:
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            done = self._committed.get(tp)
            if done is None:
                try:
                    done = self._consumer.position(tp, timeout_ms=0)
                except KafkaError:
                    done = None
            if done is not None:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - done, 0))

    def close(self) -> None:
        """Leaves the group and closes the Kafka clients and the write pool (idempotent)."""
        self._drop_built()
        self._writer.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        try:
            self._consumer.close(autocommit=False)
        finally:
            # An idempotent producer that never sent would wait out the timeout for a producer id
            # (kafka-python 2.3); it holds nothing then.
            self._producer.close(timeout=10 if self._dead_lettered else 0)
