"""What a run of an account writes down besides its uploads: a message's failed attempt (and its move to the failed
folder after the last one), a message earlier runs died on, and the run's outcome and counts for ``status``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from .attempts import CRASH_REASON
from .config import AnyAccount
from .errors import IngestError
from .model import MessageHeaders, MessageRef
from .ports import AccountLock, Mailbox, MessageInfo, RunRecord, StateStore
from .report import AccountReport, MessageProblem

log = logging.getLogger(__name__)


def count_failure(
    state: StateStore,
    lock: AccountLock,
    account: AnyAccount,
    mailbox: Mailbox,
    ref: MessageRef,
    identity: str | None,
    headers: MessageHeaders | None,
    report: AccountReport,
    where: str,
    error: str,
    *,
    final: bool = False,
) -> None:
    """Count a failed attempt of a message, remember how a person recognises it, and move it to the failed folder
    after its last attempt (or at once, ``final``). ``headers``: the message's, when they were read."""
    attempts = state.record_failure(account.name, ref.key, identity, error)
    if headers is not None:  # for `failed`, and for retry to find the message again
        info = MessageInfo(
            headers.sender,
            headers.subject,
            headers.received.isoformat() if headers.received else None,
            headers.message_id,
        )
        try:
            state.record_message_info(account.name, ref.key, info)
        except IngestError as err:  # `failed` then shows the message without sender and subject
            log.warning("%s: sender and subject not recorded: %s", where, err)
    report.messages_failed += 1
    prefix = "not retried" if final else f"attempt {attempts}/{account.max_attempts}"
    problem = MessageProblem(ref.key, f"{prefix}: {error}")
    report.problems.append(problem)
    log.warning("%s: %s failed: %s", where, prefix, error)
    if attempts < account.max_attempts and not final:
        return
    lock.check()
    try:
        mailbox.settle(ref, "failed")
    except IngestError as err:
        log.error("%s: could not move to the failed folder: %s", where, err)
        return
    state.record_settled(account.name, ref.key, identity, "failed", error)
    problem.moved_to_failed = True
    report.messages_moved_to_failed += 1
    log.error("%s: moved to the failed folder %r after %d attempt(s)", where, account.failed_folder, attempts)


def fail_unread(
    state: StateStore,
    lock: AccountLock,
    account: AnyAccount,
    mailbox: Mailbox,
    ref: MessageRef,
    report: AccountReport,
    n: int,
) -> None:
    """A message earlier runs died on ``n`` >= max_attempts times: to the failed folder without reading it."""
    lock.check()
    mailbox.settle(ref, "failed")
    state.record_settled(account.name, ref.key, None, "failed", CRASH_REASON)
    report.messages_seen += 1
    report.messages_moved_to_failed += 1
    report.problems.append(MessageProblem(ref.key, f"attempt {n}/{account.max_attempts}: {CRASH_REASON}", True))
    log.error("account %s message %s: moved to the failed folder unread: %s", account.name, ref.key, CRASH_REASON)


def record_run(state: StateStore, report: AccountReport, started_at: datetime) -> None:
    """The run's outcome and counts for ``status``; a state store that cannot take it does not fail the run."""
    counts = {
        key: value
        for key, value in vars(report).items()
        if isinstance(value, int) and key.startswith(("messages_", "documents_"))
    }
    run = RunRecord(
        report.account,
        report.type,
        started_at.isoformat(timespec="seconds"),
        datetime.now(UTC).isoformat(timespec="seconds"),
        report.outcome,
        counts,
        report.error,
    )
    try:
        report.failures_in_a_row = state.record_run(run).failures_in_a_row
    except IngestError as err:
        log.warning("account %s: the run's outcome could not be recorded: %s", report.account, err)
