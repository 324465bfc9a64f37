"""What Horizon does, without HTTP: users and sessions, change requests and their lifecycle, the audit log.

A request is PENDING until exactly one decision: APPROVED (its change applied to the registry), REJECTED
or CANCELLED. The registry and this database cannot share a transaction, so approval is three steps:

1. claim: ``UPDATE … SET state = 'APPLYING' WHERE state = 'PENDING'`` (committed), so two approvals of
   one request cannot both win;
2. apply the change to the registry (one registry transaction, re-validated on the registry as it is
   then); just before the registry commits, the objects it writes (the *target*) are recorded on the
   request. If the registry refuses, the request goes back to PENDING with the reasons;
3. ``SET state = 'APPROVED', revision = …``.

If step 3 (or the process) fails after the registry committed, the request stays APPLYING, never PENDING:
a later approval attempt or :meth:`Horizon.recover` at start compares the target with the registry (equal
objects: an empty diff) and finishes it as APPROVED without applying it twice, or, when the registry does
not hold it, returns it to PENDING. Conflicting requests approved at the same time are serialized by the
registry: the second is refused with its reasons.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from online_feature_store.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    OfsError,
    UnavailableError,
)
from online_feature_store.horizon import auth, schemas
from online_feature_store.horizon.accounts import Accounts, ForbiddenError, SessionError, WrongPasswordError
from online_feature_store.horizon.changes import InvalidFieldsError, Payload, change_of, plan
from online_feature_store.horizon.config import HorizonConfig
from online_feature_store.horizon.db import (
    State,
    audit,
    connect,
    record,
    requests,
    to_utc,
    utcnow,
)
from online_feature_store.registry.backend import RegistryBackend
from online_feature_store.registry.connect import open_registry
from online_feature_store.registry.model import RegistryState
from online_feature_store.registry.serde import state_docs
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.spec import diff_states
from online_feature_store.registry.tokens import hash_token, new_token
from online_feature_store.store.secrets import redact_settings, redact_text

__all__ = ["ForbiddenError", "Horizon", "SessionError", "WrongPasswordError"]

_log = logging.getLogger(__name__)

_PAYLOADS: dict[str, type[Payload]] = {
    "create_store": schemas.StorePayload,
    "create_entity": schemas.CreateEntityPayload,
    "update_entity": schemas.UpdateEntityPayload,
    "create_feature_group": schemas.CreateFeatureGroupPayload,
    "update_feature_group": schemas.UpdateFeatureGroupPayload,
    "add_features": schemas.AddFeaturesPayload,
    "edit_features": schemas.EditFeaturesPayload,
    "delete_features": schemas.DeleteFeaturesPayload,
    "create_caller": schemas.CreateCallerPayload,
}


def _target(old: RegistryState, new: RegistryState) -> list[list[str | None]]:
    """The objects a change writes: ``[kind, name, canonical JSON]`` (``None``: removed)."""
    before, after = state_docs(old), state_docs(new)
    changed: list[list[str | None]] = [
        [kind, name, text] for (kind, name), text in after.items() if before.get((kind, name)) != text
    ]
    return changed + [[kind, name, None] for kind, name in before.keys() - after.keys()]


def _shown_payload(payload: dict[str, Any]) -> dict[str, Any]:
    settings = payload.get("settings")
    if isinstance(settings, dict):  # create_store: any credential an older request holds is redacted
        return {**payload, "settings": redact_settings({str(k): str(v) for k, v in settings.items()})}
    return payload


def _request_json(row: Any) -> dict[str, Any]:
    """A request as the API shows it: credentials in its payload, plan lines and texts redacted."""
    return {
        "id": row.id,
        "kind": row.kind,
        "payload": _shown_payload(row.payload),
        "description": redact_text(row.description),
        "state": State(row.state).value,
        "author": row.author,
        "created_at": to_utc(row.created_at),
        "decided_by": row.decided_by,
        "decided_at": to_utc(row.decided_at) if row.decided_at is not None else None,
        "reason": redact_text(row.reason) if row.reason is not None else None,
        "revision": row.revision,
        "diff": [redact_text(line) for line in row.diff],
    }


class Horizon:
    """Horizon's state: its database, the registry backend, the signing secret. Thread-safe."""

    apply_lease_seconds: float = 60.0
    """How long an approval may hold a request APPLYING before someone else may settle it."""

    def __init__(self, config: HorizonConfig, *, registry: RegistryBackend | None = None) -> None:
        self.config = config
        self.secret = auth.load_secret(config)
        self.engine: Engine = connect(config.resolved_database_url())
        self.accounts = Accounts(config, self.engine, self.secret)
        try:
            self.registry = registry if registry is not None else open_registry(config.registry_url())
        except BaseException:
            self.engine.dispose()
            raise
        self._owns_registry = registry is None
        self._snapshot_lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        try:  # approvals a previous process left half done
            for done in self.recover():
                _log.info("request %s was left APPLYING; now %s", done["id"], done["state"])
        except (OfsError, sa.exc.SQLAlchemyError):
            _log.warning(
                "APPLYING requests not settled at start (each is at its next approval)", exc_info=True
            )

    def close(self) -> None:
        """Release the database pool and (if Horizon opened it) the registry."""
        self.engine.dispose()
        if self._owns_registry:
            self.registry.close()

    # -- registry ----------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The registry as it is now (reloaded only when its revision moved)."""
        revision = self.registry.revision()
        with self._snapshot_lock:
            if self._snapshot is None or self._snapshot.revision != revision:
                self._snapshot = self.registry.load()
            return self._snapshot

    # -- audit -------------------------------------------------------------------------------------

    @staticmethod
    def _audit(conn: Connection, actor: str, action: str, detail: str, request_id: int | None = None) -> None:
        record(conn, actor, action, detail, request_id)

    def audit_log(
        self, *, request_id: int | None = None, actor: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Audit records, newest first, optionally of one request or one actor."""
        query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
        if request_id is not None:
            query = query.where(audit.c.request_id == request_id)
        if actor is not None:
            query = query.where(audit.c.actor == actor)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {
                "at": to_utc(r.at),
                "actor": r.actor,
                "action": r.action,
                "request_id": r.request_id,
                "detail": redact_text(r.detail),
            }
            for r in rows
        ]

    # -- change requests ---------------------------------------------------------------------------

    def _row(self, conn: Connection, request_id: int) -> Any:
        row = conn.execute(sa.select(requests).where(requests.c.id == request_id)).first()
        if row is None:
            raise NotFoundError(f"unknown request {request_id}")
        return row

    def request(self, request_id: int) -> dict[str, Any]:
        """One request (``NotFoundError`` when unknown)."""
        with self.engine.connect() as conn:
            return _request_json(self._row(conn, request_id))

    def requests(self, *, state: State | None = None, author: str | None = None) -> list[dict[str, Any]]:
        """Requests, newest first, optionally in one state or by one author."""
        query = sa.select(requests).order_by(requests.c.id.desc())
        if state is not None:
            query = query.where(requests.c.state == state)
        if author is not None:
            query = query.where(requests.c.author == author)
        with self.engine.connect() as conn:
            return [_request_json(r) for r in conn.execute(query).all()]

    def create_request(self, author: str, body: Any) -> dict[str, Any]:
        """A new PENDING request, validated against the registry as it is (else ``InvalidFieldsError``). For
        create_caller the result also holds ``token``: the only time it is shown."""
        payload: Payload = body.payload
        token = token_hash = None
        if body.kind == "create_caller":
            token = new_token()
            token_hash = hash_token(token)
        _, diff = plan(self.snapshot().state, payload, token_hash)
        if not diff:
            raise InvalidFieldsError(
                [
                    {
                        "loc": ["body", "payload"],
                        "msg": "the request changes nothing",
                        "type": "value_error.no_change",
                    }
                ]
            )
        with self.engine.begin() as conn:
            result = conn.execute(
                requests.insert().values(
                    kind=body.kind,
                    payload=payload.model_dump(mode="json"),
                    description=body.description,
                    state=State.PENDING,
                    author=author,
                    created_at=utcnow(),
                    diff=diff,
                    token_hash=token_hash,
                )
            )
            assert result.inserted_primary_key is not None
            request_id = int(result.inserted_primary_key[0])
            self._audit(conn, author, "request.create", f"{body.kind}: " + "; ".join(diff), request_id)
            out = _request_json(self._row(conn, request_id))
        out["token"] = token
        return out

    def _decide(
        self,
        actor: str,
        request_id: int,
        state: State,
        action: str,
        detail: str,
        check: Callable[[Any], None],
        reason: str | None = None,
    ) -> dict[str, Any]:
        with self.engine.connect() as conn:
            check(self._row(conn, request_id))
        with self.engine.begin() as conn:
            # the one place a request leaves PENDING: only one decision can match this WHERE
            claimed = conn.execute(
                requests.update()
                .where(requests.c.id == request_id, requests.c.state == State.PENDING)
                .values(state=state, decided_by=actor, decided_at=utcnow(), reason=reason)
            )
            row = self._row(conn, request_id)
            if claimed.rowcount != 1:
                raise ConflictError(f"request {request_id} is {State(row.state).value}, not PENDING")
            self._audit(conn, actor, action, detail, request_id)
            return _request_json(self._row(conn, request_id))

    def _pending(self, row: Any) -> None:
        if row.state != State.PENDING:
            raise ConflictError(f"request {row.id} is {State(row.state).value}, not PENDING")

    def approve(self, actor: str, request_id: int) -> dict[str, Any]:
        """Apply a PENDING request to the registry in one transaction and mark it APPROVED.

        ``ConflictError`` when it is not PENDING (or is being applied right now); ``ForbiddenError`` for
        one's own request (unless ``single_person``); ``InvalidFieldsError`` when the registry as it is now
        refuses it (it stays PENDING). An APPLYING request whose approval broke off (its claim older than
        :attr:`apply_lease_seconds`) is settled first: APPROVED when the registry holds its change,
        otherwise PENDING again and approved now.
        """
        with self.engine.connect() as conn:
            row = self._row(conn, request_id)
        if row.state == State.APPLYING:
            row = self._settle(row, actor, own=False)
            if row.state == State.APPROVED:
                return _request_json(row)
            if row.state == State.APPLYING:
                raise ConflictError(
                    f"request {request_id} is being applied (APPLYING since {to_utc(row.decided_at)}); "
                    "try again in a minute"
                )
        self._pending(row)
        if not self.config.single_person:
            self._two_people(actor, row)
        change = change_of(self._payload(row), row.token_hash)
        # 1. claim: the one place a request leaves PENDING for an approval; only one claim can match
        with self.engine.begin() as conn:
            claimed = conn.execute(
                requests.update()
                .where(requests.c.id == request_id, requests.c.state == State.PENDING)
                .values(state=State.APPLYING, decided_by=actor, decided_at=utcnow(), target=None)
            )
            if claimed.rowcount != 1:
                raise ConflictError(
                    f"request {request_id} is {State(self._row(conn, request_id).state).value}, not PENDING"
                )
        # 2. apply, validated again inside the registry transaction on the registry as it is then
        diff: list[str] = []

        def tracked(state: RegistryState) -> RegistryState:
            new = change(state)
            diff[:] = diff_states(state, new)
            # recorded before the registry commits, so whoever finds the request APPLYING can compare it
            # with the registry; a claim taken back meanwhile aborts the registry transaction
            with self.engine.begin() as conn:
                kept = conn.execute(
                    requests.update()
                    .where(requests.c.id == request_id, requests.c.state == State.APPLYING)
                    .values(target=_target(state, new))
                )
                if kept.rowcount != 1:
                    raise ConflictError(f"request {request_id} was settled by another approval meanwhile")
            return new

        try:
            revision = self.registry.apply(tracked)
        except InvalidInputError as exc:  # the registry refused: nothing was applied
            fields = (
                exc
                if isinstance(exc, InvalidFieldsError)
                else InvalidFieldsError(
                    [{"loc": ["body", "payload"], "msg": str(exc), "type": "value_error.registry"}]
                )
            )
            self._unclaim(request_id, actor, "request.approve_refused", str(fields))
            raise fields from None
        except BaseException:
            # e.g. the registry connection broke: whether the change was committed is unknown, so look
            self._settle_quietly(request_id, actor)
            raise
        # 3. record the decision; if this fails the request stays APPLYING with its target, and a retry
        # (after the lease) or a restart finds the change in the registry and finishes it
        try:
            with self.engine.begin() as conn:
                done = conn.execute(
                    requests.update()
                    .where(requests.c.id == request_id, requests.c.state == State.APPLYING)
                    .values(state=State.APPROVED, revision=revision, diff=diff)
                )
                if done.rowcount != 1:
                    raise ConflictError(f"request {request_id} was settled by another approval meanwhile")
                self._audit(conn, actor, "request.approve", "approved", request_id)
                return _request_json(self._row(conn, request_id))
        except sa.exc.SQLAlchemyError as exc:
            raise UnavailableError(
                f"request {request_id} was applied to the registry (revision {revision}) but recording the "
                f"approval failed ({type(exc).__name__}); it stays APPLYING and is finished as APPROVED "
                "by the next approval attempt or restart"
            ) from exc

    def _two_people(self, actor: str, row: Any) -> None:
        """The two-person rule: the approver is not the author, and their account existed before the
        request (else an admin could make a second account and approve their own request with it)."""
        if row.author.lower() == actor.lower():
            raise ForbiddenError("you cannot approve your own request (another admin must)")
        with self.engine.connect() as conn:
            approver = Accounts.user_row(conn, actor)
        if approver is not None and to_utc(approver.created_at) > to_utc(row.created_at):
            raise ForbiddenError(
                f"{actor!r} cannot approve request {row.id}: the account was created after the request "
                f"({to_utc(approver.created_at):%Y-%m-%d %H:%M:%S} UTC, the request "
                f"{to_utc(row.created_at):%Y-%m-%d %H:%M:%S} UTC); the two-person rule needs an admin "
                "whose account is older than the request"
            )

    def _unclaim(self, request_id: int, actor: str, action: str, detail: str) -> Any:
        """APPLYING → PENDING (the registry does not hold the change), with an audit record."""
        with self.engine.begin() as conn:
            conn.execute(
                requests.update()
                .where(requests.c.id == request_id, requests.c.state == State.APPLYING)
                .values(state=State.PENDING, decided_by=None, decided_at=None, target=None)
            )
            self._audit(conn, actor, action, detail, request_id)
            return self._row(conn, request_id)

    def _holds(self, target: Any) -> bool:
        """Whether the registry holds every object of an approval's ``target`` as it was to be written."""
        docs = state_docs(self.registry.load().state)
        return all(docs.get((kind, name)) == text for kind, name, text in target)

    def _settle(self, row: Any, actor: str, *, own: bool) -> Any:
        """An APPLYING request finished by comparing its target with the registry: APPROVED when the
        registry holds the change, PENDING when not. Someone else's claim (``own=False``) is left alone
        while it is younger than the lease: its approval may still be running. Returns the row after."""
        lease = timedelta(seconds=self.apply_lease_seconds)
        if not own and to_utc(row.decided_at) + lease > utcnow():
            return row
        if row.target is None or not self._holds(row.target):
            return self._unclaim(
                row.id,
                actor,
                "request.approve_failed",
                "the registry does not hold the change: PENDING again",
            )
        revision = self.registry.revision()
        with self.engine.begin() as conn:
            done = conn.execute(
                requests.update()
                .where(requests.c.id == row.id, requests.c.state == State.APPLYING)
                .values(state=State.APPROVED, revision=revision)
            )
            if done.rowcount == 1:
                self._audit(
                    conn,
                    actor,
                    "request.approve",
                    f"approved: the registry already held the change (found at revision {revision})",
                    row.id,
                )
            return self._row(conn, row.id)

    def _settle_quietly(self, request_id: int, actor: str) -> None:
        # called while another error propagates: that error is the one reported; if settling fails too
        # the request stays APPLYING for recover() or a later approval attempt
        try:
            with self.engine.connect() as conn:
                row = self._row(conn, request_id)
            if row.state == State.APPLYING:
                self._settle(row, actor, own=True)
        except Exception:
            _log.warning("request %s stays APPLYING until it can be settled", request_id, exc_info=True)

    def recover(self) -> list[dict[str, Any]]:
        """Settle every APPLYING request whose claim is older than the lease (run at start): the ones whose
        change the registry holds become APPROVED, the others PENDING. Returns the settled requests."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(requests).where(requests.c.state == State.APPLYING)).all()
        settled = [self._settle(row, "horizon", own=False) for row in rows]
        return [_request_json(r) for r in settled if r.state != State.APPLYING]

    def reject(self, actor: str, request_id: int, reason: str) -> dict[str, Any]:
        """Mark a PENDING request REJECTED with ``reason``."""
        return self._decide(
            actor, request_id, State.REJECTED, "request.reject", reason, self._pending, reason=reason
        )

    def cancel(self, actor: str, request_id: int) -> dict[str, Any]:
        """The author withdraws a PENDING request."""

        def check(row: Any) -> None:
            if row.author != actor:
                raise ForbiddenError("only the author can cancel a request")
            self._pending(row)

        return self._decide(actor, request_id, State.CANCELLED, "request.cancel", "cancelled", check)

    @staticmethod
    def _payload(row: Any) -> Payload:
        return _PAYLOADS[row.kind].model_validate(row.payload)
