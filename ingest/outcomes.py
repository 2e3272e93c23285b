"""What a run of an account writes down besides its uploads, once the pipeline decided: messages settled as processed
(a batch at a time), a message's failed attempt (and its move to the failed folder after the last one), a message
earlier runs died on, and the run's outcome and counts for ``status``. Each message is counted here once, when its
outcome is known."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from .attempts import CRASH_REASON
from .config import AnyAccount
from .errors import AccountError, ConnectionLost, Doc2Unavailable, IngestError, OutOfTime
from .flight import Finished
from .model import MessageHeaders, MessageRef
from .ports import AccountLock, Mailbox, MessageInfo, RunRecord, Settlement, StateStore
from .report import AccountReport, MessageProblem

log = logging.getLogger(__name__)

SETTLE_BATCH = 50  # messages moved together (one UID MOVE) once all their documents are recorded


def settle_processed(
    state: StateStore,
    lock: AccountLock,
    account: AnyAccount,
    mailbox: Mailbox,
    report: AccountReport,
    batch: list[Finished],
) -> IngestError | None:
    """Move messages whose documents are all recorded to the processed folder (one command where the mailbox can),
    record them as settled and count them. Returns what stops the run when the mailbox could not move some of them
    for a reason that is not theirs (Graph still throttling), after recording the others."""
    if not batch:
        return None
    lock.check()  # a run that lost its account's lease moves nothing more
    # by message key: what settle_many could not move (Graph)
    not_moved = mailbox.settle_many([one.work.ref for one in batch], "processed")
    moved = [one.work for one in batch if one.work.ref.key not in not_moved]
    state.record_settlements(
        account.name, [Settlement(work.ref.key, work.identity, "processed") for work in moved]
    )  # one transaction for the batch
    imported = {
        one.work.ref.key: bool(one.uploaded or state.uploaded(account.name, one.work.identity))
        for one in batch
        if one.work.ref.key not in not_moved
    }
    for one in batch:
        work = one.work
        if work.ref.key in not_moved:
            # Still in the source folder with its documents recorded: the next run moves it, uploading nothing.
            error = not_moved[work.ref.key]
            report.messages_deferred += 1
            report.problems.append(MessageProblem(work.ref.key, f"documents uploaded, not moved: {error}"))
            log.warning("%s: documents uploaded, but not moved to the processed folder: %s", work.where, error)
            continue
        report.messages_seen += 1
        if imported[work.ref.key]:
            report.messages_imported += 1
        else:
            report.messages_without_documents += 1
        log.info("%s: settled as processed (%d documents uploaded now)", work.where, one.uploaded)
    stops = [error for error in not_moved.values() if isinstance(error, (AccountError, ConnectionLost))]
    return min(stops, key=seriousness) if stops else None


def seriousness(err: BaseException) -> int:
    """Which failure of a message's uploads decides: the one that stops the account, then the run's time budget,
    then DOC² failing (whose fault is not known yet), then the rest."""
    if isinstance(err, AccountError):
        return 0
    if isinstance(err, OutOfTime):
        return 1
    if isinstance(err, Doc2Unavailable):
        return 2
    if isinstance(err, IngestError):
        return 3
    return 4 if isinstance(err, Exception) else -1


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
