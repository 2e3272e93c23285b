"""The ingestion pass: for each account, each new message -> documents -> DOC² -> settle -> state.

State first, side effects after confirmation: a message leaves its folder only once every document of it is
recorded as uploaded. One failing message never stops the others; one failing account never stops the others.
The uploads in flight (ingest.flight) hand back finished messages; what becomes of each, and its count in the run
report, is decided here alone, once its outcome is known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from .attempts import ReadingMarks
from .config import AnyAccount, Config
from .errors import (
    AccountBusy,
    AccountError,
    ConnectionLost,
    Doc2Unavailable,
    DocumentError,
    IngestError,
    OutOfTime,
    SecretError,
    UnreadableMessage,
)
from .filters import message_passes_filters
from .flight import Finished, Flight, upload_pool
from .model import MessageHeaders, MessageRef
from .outage import KEEPS_FAILING, Doc2Health, Doc2Verdicts, Suspect
from .outcomes import SETTLE_BATCH, count_failure, fail_unread, record_run, seriousness, settle_processed
from .planning import UploadPlanner, damage
from .ports import AccountLock, Doc2Uploader, HeldLock, Mailbox, RemembersSettledMail, StateStore
from .progress import Progress
from .report import AccountReport, MessageProblem, RunReport
from .tempfiles import sweep_stale as sweep_stale_temp_files

log = logging.getLogger(__name__)

# Uploads of different messages overlap while the next messages are read (ingest.flight): one pool of
# doc2.max_concurrent_uploads per run, shared by its accounts, which run one after another.
Clock = Callable[[], datetime]
MailboxFactory = Callable[[AnyAccount, Clock], Mailbox]  # an account's mailbox, deciding by the pipeline's clock
Doc2Factory = Callable[[], Doc2Uploader]
utc_now: Clock = partial(datetime.now, UTC)


@dataclass
class Landing:
    """An account's uploads as the pipeline keeps them: the flight, the verdicts on DOC²'s failures, the messages
    waiting to be moved to the processed folder, and what stopped the uploads (DOC² down, no time left)."""

    flight: Flight
    verdicts: Doc2Verdicts
    batch: int  # messages settled together
    to_settle: list[Finished] = field(default_factory=list)
    stop: Doc2Unavailable | OutOfTime | None = None


class Pipeline:
    def __init__(
        self,
        config: Config,
        *,
        state: StateStore,
        open_mailbox: MailboxFactory,
        open_doc2: Doc2Factory,
        deadline: float | None = None,
        clock: Clock = utc_now,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self._open_mailbox = open_mailbox
        self._open_doc2 = open_doc2
        self._deadline = deadline
        self._clock = clock
        self._uploads: ThreadPoolExecutor | None = None  # the run's upload pool (per DOC²)
        self._health = Doc2Health()  # uploads DOC² accepted in this run: whose fault a DOC² failure is
        self._planner = UploadPlanner(config, state, clock)  # routing, and what of a message goes to DOC²
        self._lock: AccountLock = HeldLock()  # the account lock of the account being run: checked before each move
        self._marks = ReadingMarks(state, "")  # "attempt started" of the account being run (ingest.attempts)
        self._crashed: tuple[str, int] | None = None  # the message an earlier run died on, and its attempts
        self.progress = progress or Progress()
        self._position = 0  # the message being looked at, counted from 1 (progress)
        self._headers: dict[str, MessageHeaders] = {}  # by message key: headers of the messages read this run

    def run(self, accounts: list[AnyAccount], *, dry_run: bool = False) -> RunReport:
        report = RunReport(dry_run=dry_run)
        if not dry_run:
            sweep_stale_temp_files()  # what a killed run left behind (a dry run changes nothing)
        doc2: Doc2Uploader | None = None
        with ExitStack() as stack:
            stack.callback(setattr, self, "_uploads", None)
            for account in accounts:
                if doc2 is None and not dry_run:
                    try:
                        doc2 = stack.enter_context(self._open_doc2())
                    except (SecretError, AccountError) as err:
                        report.accounts += [_account_failed(a, str(err)) for a in accounts[len(report.accounts) :]]
                        log.error("DOC² client not available: %s", err)
                        break
                    self._uploads = stack.enter_context(upload_pool(self.config.doc2.max_concurrent_uploads))
                if doc2 is not None and self._health.still_down() and (problem := doc2.probe()) is not None:
                    # DOC² failed an earlier account of this run and still does not answer: spare this one's retries.
                    error = (
                        f"DOC² unavailable: DOC² at {doc2.base_url} failed this run's uploads and does not answer a "
                        f"status request ({problem}). No attempt is counted against any message; the mail stays "
                        f"where it is and is imported once DOC² is back"
                    )
                    report.accounts.append(_account_failed(account, error))
                    log.error("account %s: %s", account.name, error)
                    continue
                report.accounts.append(self.run_account(account, doc2, dry_run=dry_run))
        report.duration_seconds = time.time() - report.started_at
        return report

    def run_account(self, account: AnyAccount, doc2: Doc2Uploader | None, *, dry_run: bool = False) -> AccountReport:
        report = AccountReport(account=account.name, type=account.type)
        started = time.monotonic()
        started_at = datetime.now(UTC)
        self._headers.clear()
        try:
            if dry_run:
                self._process_mailbox(account, doc2, report, dry_run=True)
            else:
                with self.state.account_lock(account.name) as lock:
                    self._lock = lock
                    try:
                        self._process_mailbox(account, doc2, report, dry_run=False)
                    finally:
                        self._lock = HeldLock()
        except AccountBusy as err:
            report.outcome, report.error = "busy", str(err)
            log.warning("account %s: %s", account.name, err)
        except IngestError as err:
            report.outcome, report.error = "account_failed", str(err)
            log.error("account %s: %s", account.name, err)
        except Exception as err:
            report.outcome, report.error = "account_failed", f"unexpected {type(err).__name__}: {err}"
            log.exception("account %s: unexpected error", account.name)
        if report.outcome == "ok" and report.messages_failed:
            report.outcome = "failed"  # the run went through, but some of its mail did not
        report.duration_seconds = time.monotonic() - started
        if not dry_run and report.outcome != "busy":
            record_run(self.state, report, started_at)
        self.progress.account_finished(account.name, report.outcome)
        log.info(
            "account %s: %s; seen %d, imported %d, documents uploaded %d, failed %d, deferred %d",
            account.name,
            report.outcome,
            report.messages_seen,
            report.messages_imported,
            report.documents_uploaded,
            report.messages_failed,
            report.messages_deferred,
        )
        return report

    def _process_mailbox(
        self, account: AnyAccount, doc2: Doc2Uploader | None, report: AccountReport, *, dry_run: bool
    ) -> None:
        with ExitStack() as stack:
            mailbox = stack.enter_context(self._open_mailbox(account, self._clock))
            keeps = mailbox if isinstance(mailbox, RemembersSettledMail) else None  # settled mail listed again
            landing: Landing | None = None
            if not dry_run and doc2 is not None:
                pool = self._uploads or stack.enter_context(upload_pool(self.config.doc2.max_concurrent_uploads))
                flight = Flight(
                    account=account.name,
                    doc2=doc2,
                    pool=pool,
                    state=self.state,
                    max_uploads=self.config.doc2.max_concurrent_uploads,
                    health=self._health,
                )
                # A mailbox that moves many messages in one command (IMAP, Graph) settles them in batches; any other
                # settles each message as soon as its documents are recorded.
                batch = SETTLE_BATCH if mailbox.settles_in_batches else 1
                landing = Landing(flight, Doc2Verdicts(self._health, doc2.probe), batch)
            self._marks = ReadingMarks(self.state, account.name)  # a dry run marks nothing: settle writes nothing
            self._crashed = self._marks.charge_unfinished() if landing is not None else None
            refs = list(mailbox.list_messages())
            looked_at = sum(1 for ref in refs if keeps is None or not keeps.remembered(ref))  # not settled before
            self.progress.account_started(account.name, account.type, looked_at)
            if refs and not dry_run:
                mailbox.ensure_targets()  # a target folder the server refuses stops the account before any upload
            elif dry_run:
                report.notes += mailbox.describe_targets()  # how the target folders are named; nothing made
            try:
                self._process_refs(account, mailbox, keeps, doc2, refs, report, landing, dry_run=dry_run)
            except BaseException:
                if landing is not None:
                    self._abandon(report, landing)  # record what reached DOC²; move nothing
                raise
            finally:
                if landing is not None:  # DOC² failed their uploads; whose fault that was stays undecided
                    report.messages_deferred += landing.verdicts.waiting

    def _process_refs(
        self,
        account: AnyAccount,
        mailbox: Mailbox,
        keeps: RemembersSettledMail | None,
        doc2: Doc2Uploader | None,
        refs: list[MessageRef],
        report: AccountReport,
        landing: Landing | None,
        *,
        dry_run: bool,
    ) -> None:
        stop: IngestError | None = None  # why this run of the account ends early
        left = 0  # messages not started
        self._position = 0
        for index, ref in enumerate(refs):
            if keeps is not None and keeps.remembered(ref):
                report.messages_remembered += 1
                if not dry_run and keeps.removes_remembered(ref, partial(self._imported, account, ref)):
                    self._marks.settle()
                    self._lock.check()
                    mailbox.settle(ref, "processed")
                continue
            self._position += 1
            if landing is not None and landing.stop is not None:
                stop, left = landing.stop, len(refs) - index
                break
            if self._crashed is not None and ref.key == self._crashed[0] and self._crashed[1] >= account.max_attempts:
                self._marks.settle()
                # it would kill this run too
                fail_unread(self.state, self._lock, account, mailbox, ref, report, self._crashed[1])
                continue
            if self._deadline is not None and time.monotonic() > self._deadline:
                report.messages_deferred += len(refs) - index
                report.outcome = "partial"
                report.notes.append("time budget of this run used up; the rest waits for the next run")
                break
            try:
                self._process_message(account, mailbox, doc2, ref, report, landing, dry_run=dry_run)
                if landing is not None:
                    self._make_room(account, mailbox, report, landing)
            except (Doc2Unavailable, ConnectionLost) as err:
                stop, left = err, len(refs) - index - 1
                break
        if landing is not None:
            try:
                if isinstance(stop, ConnectionLost):
                    self._abandon(report, landing)  # the mailbox connection is gone: move nothing
                else:
                    self._finish(account, mailbox, report, landing)
            except ConnectionLost as err:
                self._abandon(report, landing)
                stop = stop or err
            stop = stop or landing.stop
            if not isinstance(stop, ConnectionLost):  # no mailbox left to move anything
                self._count_cleared(account, mailbox, report, landing.verdicts)
                again, outage = landing.verdicts.at_end(lambda suspect: self._kept_failing(account, suspect))
                for suspect in again:
                    self._count_suspect(account, mailbox, report, suspect)
                stop = stop or outage
        if stop is not None:
            report.messages_deferred += left
            # DOC² unavailable is a failure of the account's run (exit 1, alert): nothing of it was imported since.
            report.outcome = "account_failed" if isinstance(stop, Doc2Unavailable) else "partial"
            report.error = str(stop)
            log.error("account %s: stopping this run: %s", account.name, stop)

    def _imported(self, account: AnyAccount, ref: MessageRef) -> bool:
        state = self.state.message(account.name, ref.key)
        return state is not None and state.status == "processed"

    def _process_message(
        self,
        account: AnyAccount,
        mailbox: Mailbox,
        doc2: Doc2Uploader | None,
        ref: MessageRef,
        report: AccountReport,
        landing: Landing | None = None,
        *,
        dry_run: bool,
    ) -> None:
        """Read and extract one message and start its uploads; it is settled once they are recorded."""
        now = self._clock()
        where = f"account {account.name} message {ref.key}"
        if ref.headers is not None and (reason := message_passes_filters(ref.headers, account.filters, now)):
            report.messages_skipped_by_filter += 1
            log.debug("%s: left in place: %s", where, reason)
            self.progress.message(self._position, ref.headers, "left in place: filter")
            return
        identity: str | None = None
        marks = self._marks if not dry_run and landing is not None else None
        if marks is not None and landing is not None:  # the mark and the uploads that ended meanwhile: one write
            marks.begin(ref, landing.flight.record)  # a message that kills or stalls the run counts as an attempt
        try:
            item = mailbox.read(ref)
            identity = item.identity
            self._headers[ref.key] = item.headers
            reason = message_passes_filters(item.headers, account.filters, now)
            self.progress.message(self._position, item.headers, "left in place: filter" if reason else "")
            if reason:
                report.messages_skipped_by_filter += 1
                item.close()
                return
            decision = self._planner.route(account, ref, item, report, where, dry_run=dry_run)
            if decision.skip:
                report.messages_skipped_by_rule += 1
                item.close()
                mailbox.leave(ref)
                return
            while landing is not None and landing.flight.carries(identity):
                # a copy of a message still in flight: planned once that one is recorded, so nothing goes twice
                self._land(account, mailbox, report, landing, self._next_finished(landing))
            work = self._planner.plan(account, ref, item, report, where, decision, dry_run=landing is None)
            if landing is None:
                work.close()
                if work.damaged:
                    raise damage(work, dry_run=True)
                report.messages_seen += 1
                return
        except Exception as err:  # noqa: BLE001 - every failure is dispatched (and logged once) below
            if ref.key not in self._headers:
                self.progress.message(self._position, ref.headers, "could not be read")
            self._message_failed(account, mailbox, ref, identity, report, where, err, dry_run=dry_run)
            return
        finally:
            if marks is not None:
                marks.end()
        self._land(account, mailbox, report, landing, landing.flight.start(work))

    def _message_failed(
        self,
        account: AnyAccount,
        mailbox: Mailbox,
        ref: MessageRef,
        identity: str | None,
        report: AccountReport,
        where: str,
        err: Exception,
        *,
        dry_run: bool = False,
    ) -> None:
        """Count a failed attempt of one message (or not), as its failure calls for; re-raise what stops the run."""
        report.messages_seen += 1
        headers = self._headers.get(ref.key) or ref.headers  # as read, else as listed
        if isinstance(err, (AccountError, ConnectionLost, Doc2Unavailable, OutOfTime)):
            raise err  # not this message's fault (whose a DOC² failure is, ingest.outage decides): nothing counted
        if not dry_run:
            self._marks.settle()  # counting moves mail: not under the mark of a message read meanwhile
        if isinstance(err, IngestError):
            if dry_run:
                report.problems.append(MessageProblem(ref.key, str(err)))
                return
            # An unreadable message fails the same way on every attempt: to the failed folder now, with the reason.
            final = isinstance(err, UnreadableMessage)
            count_failure(
                self.state, self._lock, account, mailbox, ref, identity, headers, report, where, str(err), final=final
            )
        else:
            log.error("%s: unexpected error", where, exc_info=err)
            if not dry_run:
                error = f"unexpected {type(err).__name__}: {err}"
                count_failure(self.state, self._lock, account, mailbox, ref, identity, headers, report, where, error)

    def _make_room(self, account: AnyAccount, mailbox: Mailbox, report: AccountReport, landing: Landing) -> None:
        """Wait until another message may be read, deciding on the messages whose uploads end meanwhile; move a full
        batch of those to be settled."""
        while landing.flight.full(careful=landing.verdicts.suspicious):
            self._land(account, mailbox, report, landing, self._next_finished(landing))
        if len(landing.to_settle) >= landing.batch:
            self._flush(account, mailbox, report, landing)

    def _finish(self, account: AnyAccount, mailbox: Mailbox, report: AccountReport, landing: Landing) -> None:
        """Wait for every upload in flight, decide on the messages they finish, and settle what is to be settled."""
        while landing.flight.busy:
            self._land(account, mailbox, report, landing, self._next_finished(landing))
        self._flush(account, mailbox, report, landing)

    def _abandon(self, report: AccountReport, landing: Landing) -> None:
        """The run stops: what reached DOC² is recorded, nothing moves; the messages in flight and those waiting to be
        moved are left for the next run (which uploads nothing of them again)."""
        left = landing.flight.abandon()
        _count_uploads(report, left)
        report.messages_deferred += len(left) + len(landing.to_settle)
        landing.to_settle.clear()
        self._marks.settle()

    def _next_finished(self, landing: Landing) -> list[Finished]:
        self._marks.settle()  # waiting for DOC²: a kill now is no message's fault
        return landing.flight.next_finished()

    def _land(
        self, account: AnyAccount, mailbox: Mailbox, report: AccountReport, landing: Landing, finished: list[Finished]
    ) -> None:
        """Decide on messages whose uploads all ended and are recorded: to be settled, a failed attempt, or left for
        the next run. Raises what stops the account (not DOC² down or the time budget: ``landing.stop`` says so)."""
        _count_uploads(report, finished)
        for index, done in enumerate(finished):
            try:
                if landing.stop is not None and any(
                    isinstance(error, (Doc2Unavailable, OutOfTime)) for _, error in done.failures
                ):
                    # DOC² is down and that is counted once already: this message just waits for the next run.
                    done.work.close()
                    report.messages_deferred += 1
                elif self._complete(account, mailbox, report, done, landing.verdicts):
                    landing.to_settle.append(done)
            except (Doc2Unavailable, OutOfTime) as err:
                landing.stop = err
            except BaseException:
                rest = finished[index + 1 :]  # not looked at: left for the next run
                for other in rest:
                    other.work.close()
                report.messages_deferred += len(rest)
                raise

    def _complete(
        self, account: AnyAccount, mailbox: Mailbox, report: AccountReport, done: Finished, verdicts: Doc2Verdicts
    ) -> bool:
        """Decide on a message whose uploads all ended and are recorded (state first); True when it may be settled.

        Raises what stops the account (Doc2Unavailable for an outage, OutOfTime, AccountError).
        """
        work, failures = done.work, done.failures
        work.close()
        self._count_cleared(account, mailbox, report, verdicts)
        if done.unrecorded is not None:
            # DOC² has (some of) its documents, the state store would not take the record: not settled, counted as
            # this message's failure (its next attempt sends them again with the same custom_doc_id).
            error = DocumentError(
                f"the state store could not record what DOC² accepted of it ({done.unrecorded}); "
                "its documents go again with the same custom_doc_id"
            )
            self._message_failed(account, mailbox, work.ref, None, report, work.where, error)
            return False
        if failures:
            upload, err = min(failures, key=lambda failure: (seriousness(failure[1]), failure[0].gave_up_at))
            if not isinstance(err, Exception):
                raise err
            if isinstance(err, OutOfTime):
                report.messages_deferred += 1  # the run's budget ran out in its retries: it waits, nothing counted
                log.warning("%s: left for the next run: %s", work.where, err)
                raise err  # and the account stops: the time left is not worth another message
            if isinstance(err, Doc2Unavailable):
                # Left where it is, nothing counted yet: counted once DOC² accepts an upload started after this one
                # gave up (_count_cleared), or left for the next run (ingest.outage).
                log.warning("%s: DOC² failed its upload, nothing counted yet: %s", work.where, err)
                verdicts.suspect(Suspect(work.ref, work.identity, work.where, err, upload.gave_up_at))
                self._count_cleared(account, mailbox, report, verdicts)
                return False
            self._message_failed(account, mailbox, work.ref, work.identity, report, work.where, err)
            return False
        if work.damaged:
            self._message_failed(account, mailbox, work.ref, work.identity, report, work.where, damage(work))
            return False
        return True

    def _count_cleared(
        self, account: AnyAccount, mailbox: Mailbox, report: AccountReport, verdicts: Doc2Verdicts
    ) -> None:
        """Count the attempts of the messages whose DOC² failure proved their own (DOC² accepted others since)."""
        for suspect in verdicts.cleared():
            self._count_suspect(account, mailbox, report, suspect)

    def _count_suspect(self, account: AnyAccount, mailbox: Mailbox, report: AccountReport, suspect: Suspect) -> None:
        error = DocumentError(suspect.reason())
        self._message_failed(account, mailbox, suspect.ref, suspect.identity, report, suspect.where, error)

    def _kept_failing(self, account: AnyAccount, suspect: Suspect) -> bool:
        """True when an earlier run proved DOC²'s failure of this message its own (ingest.outage)."""
        state = self.state.message(account.name, suspect.ref.key)
        return state is not None and state.attempts > 0 and (state.last_error or "").startswith(KEEPS_FAILING)

    def _flush(self, account: AnyAccount, mailbox: Mailbox, report: AccountReport, landing: Landing) -> None:
        """Settle the messages waiting to be moved to the processed folder; raises what stops the run."""
        self._marks.settle()  # the run's last step, or mail moves: the mark of the message read last is cleared
        batch, landing.to_settle = landing.to_settle, []
        try:
            stop = settle_processed(self.state, self._lock, account, mailbox, report, batch)
        except BaseException:
            report.messages_deferred += len(batch)  # not moved (nor recorded as settled): the next run moves them
            raise
        if stop is not None:
            raise stop


def _count_uploads(report: AccountReport, finished: list[Finished]) -> None:
    report.documents_uploaded += sum(done.uploaded for done in finished)
    report.bytes_uploaded += sum(done.bytes_uploaded for done in finished)


def _account_failed(account: AnyAccount, error: str) -> AccountReport:
    return AccountReport(account=account.name, type=account.type, outcome="account_failed", error=error)
