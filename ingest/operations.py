"""What an operator asks after the imports ran: ``status``, ``failed`` and ``retry`` (the CLI and the HTTP
endpoints give the same answers, as JSON-ready dictionaries).

Everything here reads the state store: the last run of each account (``StateStore.record_run``, written by the
pipeline), the messages waiting for another attempt and the ones moved to the failed folder, with the sender,
subject and date the pipeline recorded when they failed. ``retry`` gives failed mail a fresh start: IMAP and
Graph move it from the failed folder back to the source folder (through the adapter's own folder handling),
POP3 (no folders) only forgets the failure; in every case the state store forgets the message's attempts, so the
next import takes it as new. Its documents already in DOC² stay recorded and are not uploaded twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .config import AnyAccount, Config, GraphAccount
from .errors import AccountError, IngestError
from .mailbox.base import RestoresFailedMail
from .secrets import SecretSource
from .service import open_mailbox, open_secrets
from .settings import Settings
from .state.base import MessageRecord, StateStore
from .tls import combined_bundle

log = logging.getLogger(__name__)


def account_status(
    config: Config, state: StateStore, names: list[str] | None = None, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Per account: type, last run (time, outcome, counts), messages waiting for a retry, failed messages; for a
    Graph account whether it gets change notifications (with ``settings``) and its subscription as last kept."""
    runs = state.last_runs()
    answer = []
    for account in config.select(names):
        run = runs.get(account.name)
        waiting = [m for m in state.messages_with_status(account.name, ["pending"]) if m.attempts > 0]
        failed = state.messages_with_status(account.name, ["failed"])
        answer.append(
            {
                "name": account.name,
                "type": account.type,
                "last_run": run.finished_at if run else None,
                "outcome": run.outcome if run else None,
                "counts": run.counts if run else {},
                "error": run.error if run else None,
                "last_success": run.last_success_at if run else None,
                "failures_in_a_row": run.failures_in_a_row if run else 0,
                "waiting_for_retry": len(waiting),
                "failed_messages": len(failed),
                "notifications": _notifications(account, state, settings),
            }
        )
    return answer


def _notifications(account: AnyAccount, state: StateStore, settings: Settings | None) -> dict[str, Any] | None:
    """``{"on", "why_off", "subscription"}`` of a Graph account (None for IMAP/POP3): the subscription as the last
    timer job kept it (``ingest.live``)."""
    if not isinstance(account, GraphAccount):
        return None
    import json

    from .graph.subscriptions import STATUS_CURSOR, support

    why_off = support(account, settings) if settings is not None else None
    try:
        note = json.loads(state.cursor(account.name, STATUS_CURSOR) or "null")
    except ValueError:
        note = None
    note = note if isinstance(note, dict) else None
    if why_off is None and note is not None and note.get("why_off"):
        why_off = str(note["why_off"])
    return {"on": why_off is None, "why_off": why_off, "subscription": note}


def failed_messages(config: Config, state: StateStore, names: list[str] | None = None) -> list[dict[str, Any]]:
    """The mail that went to the failed folder, by account, oldest mail first."""
    return [
        _failed_entry(record)
        for account in config.select(names)
        for record in sorted(state.messages_with_status(account.name, ["failed"]), key=_age)
    ]


def _age(record: MessageRecord) -> tuple[datetime, str]:
    try:
        moment = datetime.fromisoformat(record.info.received or record.updated_at or "")
    except ValueError:
        moment = datetime.max
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment, record.message_key


def _failed_entry(record: MessageRecord) -> dict[str, Any]:
    return {
        "account": record.account,
        "ref": record.message_key,
        "from": record.info.sender,
        "subject": record.info.subject,
        "received": record.info.received,
        "attempts": record.attempts,
        "reason": record.last_error,
        "failed_at": record.updated_at,
    }


@dataclass
class RetryResult:
    account: str
    retried: list[str] = field(default_factory=list)  # references given a fresh start
    problems: list[str] = field(default_factory=list)  # one line per reference that could not be

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account, "retried": self.retried, "problems": self.problems, "ok": self.ok}


def retry_failed(
    settings: Settings,
    config: Config,
    state: StateStore,
    name: str,
    refs: list[str] | None = None,
    *,
    secrets: SecretSource | None = None,
) -> RetryResult:
    """Give the failed mail of one account (all of it, or the references named) a fresh start.

    Holds the account's lock, so no import works on the account meanwhile (AccountBusy when one does).
    """
    config = config.with_default_ca(combined_bundle(settings.ca_bundles))
    (account,) = config.select([name])
    result = RetryResult(account.name)
    failed = {record.message_key: record for record in state.messages_with_status(account.name, ["failed"])}
    chosen: list[MessageRecord] = []
    for ref in refs or list(failed):
        if ref in failed:
            chosen.append(failed[ref])
        else:
            result.problems.append(f"{ref}: not a failed message of account {account.name!r} (see `failed`)")
    if not chosen:
        return result
    with state.account_lock(account.name):
        if account.type == "pop3":
            for record in chosen:
                _forget(state, record, result)
            return result
        secrets = secrets or open_secrets(settings)
        with open_mailbox(account, secrets=secrets, settings=settings, state=state) as mailbox:
            if not isinstance(mailbox, RestoresFailedMail):
                raise AccountError(f"account {account.name!r}: its mailbox cannot move mail back")
            for record in chosen:
                _restore(account, mailbox, state, record, result)
    return result


def _restore(
    account: AnyAccount, mailbox: RestoresFailedMail, state: StateStore, record: MessageRecord, result: RetryResult
) -> None:
    try:
        found = mailbox.restore(record.message_key, record.identity)
    except IngestError as err:
        result.problems.append(f"{record.message_key}: {err}")
        log.error("account %s: message %s not moved back: %s", account.name, record.message_key, err)
        return
    if not found:
        result.problems.append(
            f"{record.message_key}: not found in the failed folder {account.failed_folder!r} (moved or deleted by "
            "hand?); its record is kept"
        )
        return
    _forget(state, record, result)


def _forget(state: StateStore, record: MessageRecord, result: RetryResult) -> None:
    state.forget_message(record.account, record.message_key)
    result.retried.append(record.message_key)
    log.info("account %s: message %s given a fresh start", record.account, record.message_key)
