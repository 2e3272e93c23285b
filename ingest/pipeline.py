"""The ingestion pass: for each account, each new message -> documents -> DOC² -> settle -> state.

State first, side effects after confirmation: a message leaves its folder only once every document of it is
recorded as uploaded. One failing message never stops the others; one failing account never stops the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime

from .config import Config, GraphAccount, ImapAccount, Pop3Account
from .doc2 import Doc2Client, UploadMetadata
from .errors import AccountBusy, AccountError, ConnectionLost, Doc2Unavailable, IngestError, SecretError
from .extraction import message_passes_filters
from .mailbox.base import Mailbox, MailItem
from .model import MessageRef, custom_doc_id
from .report import AccountReport, MessageProblem, PlannedDocument, RunReport
from .secrets import SecretSource
from .state import StateStore

log = logging.getLogger(__name__)

AnyAccount = GraphAccount | ImapAccount | Pop3Account
MailboxFactory = Callable[[AnyAccount], Mailbox]
Doc2Factory = Callable[[], Doc2Client]


class Pipeline:
    def __init__(
        self,
        config: Config,
        *,
        state: StateStore,
        secrets: SecretSource,
        open_mailbox: MailboxFactory,
        open_doc2: Doc2Factory,
        deadline: float | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.state = state
        self.secrets = secrets
        self._open_mailbox = open_mailbox
        self._open_doc2 = open_doc2
        self._deadline = deadline
        self._clock = clock

    def run(self, accounts: list[AnyAccount], *, dry_run: bool = False) -> RunReport:
        report = RunReport(dry_run=dry_run)
        doc2: Doc2Client | None = None
        with ExitStack() as stack:
            for account in accounts:
                if doc2 is None and not dry_run:
                    try:
                        doc2 = stack.enter_context(self._open_doc2())
                    except (SecretError, AccountError) as err:
                        report.accounts += [_account_failed(a, str(err)) for a in accounts[len(report.accounts) :]]
                        log.error("DOC² client not available: %s", err)
                        break
                report.accounts.append(self.run_account(account, doc2, dry_run=dry_run))
        report.duration_seconds = time.time() - report.started_at
        return report

    def run_account(self, account: AnyAccount, doc2: Doc2Client | None, *, dry_run: bool = False) -> AccountReport:
        report = AccountReport(account=account.name, type=account.type)
        started = time.monotonic()
        try:
            if dry_run:
                self._process_mailbox(account, doc2, report, dry_run=True)
            else:
                with self.state.account_lock(account.name):
                    self._process_mailbox(account, doc2, report, dry_run=False)
        except AccountBusy as err:
            report.outcome, report.error = "busy", str(err)
            log.warning("account %s: %s", account.name, err)
        except IngestError as err:
            report.outcome, report.error = "account_failed", str(err)
            log.error("account %s: %s", account.name, err)
        except Exception as err:
            report.outcome, report.error = "account_failed", f"unexpected {type(err).__name__}: {err}"
            log.exception("account %s: unexpected error", account.name)
        report.duration_seconds = time.monotonic() - started
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
        self, account: AnyAccount, doc2: Doc2Client | None, report: AccountReport, *, dry_run: bool
    ) -> None:
        remembered = self.state.settled_keys(account.name)
        with self._open_mailbox(account) as mailbox:
            refs = list(mailbox.list_messages())
            for index, ref in enumerate(refs):
                if ref.key in remembered and account.type == "pop3":
                    report.messages_remembered += 1
                    if not dry_run and getattr(account, "delete_after_import", False):
                        mailbox.settle(ref, "processed")
                    continue
                if self._deadline is not None and time.monotonic() > self._deadline:
                    report.messages_deferred += len(refs) - index
                    report.outcome = "partial"
                    report.notes.append("time budget of this run used up; the rest waits for the next run")
                    break
                try:
                    self._process_message(account, mailbox, doc2, ref, report, dry_run=dry_run)
                except (Doc2Unavailable, ConnectionLost) as err:
                    report.messages_deferred += len(refs) - index - 1
                    report.outcome = "partial"
                    report.error = str(err)
                    log.error("account %s: stopping this run: %s", account.name, err)
                    break

    def _process_message(
        self,
        account: AnyAccount,
        mailbox: Mailbox,
        doc2: Doc2Client | None,
        ref: MessageRef,
        report: AccountReport,
        *,
        dry_run: bool,
    ) -> None:
        now = self._clock()
        where = f"account {account.name} message {ref.key}"
        if ref.headers is not None and (reason := message_passes_filters(ref.headers, account.filters, now)):
            report.messages_skipped_by_filter += 1
            log.debug("%s: left in place: %s", where, reason)
            return
        report.messages_seen += 1
        identity: str | None = None
        try:
            item = mailbox.read(ref)
            identity = item.identity
            reason = message_passes_filters(item.headers, account.filters, now)
            if reason:
                report.messages_seen -= 1
                report.messages_skipped_by_filter += 1
                return
            uploaded = self._upload_documents(account, doc2, ref, item, report, dry_run=dry_run)
            if dry_run:
                return
            mailbox.settle(ref, "processed")
            self.state.record_settled(account.name, ref.key, identity, "processed", None)
            if uploaded or self.state.uploaded(account.name, identity):
                report.messages_imported += 1
            else:
                report.messages_without_documents += 1
            log.info("%s: settled as processed (%d documents uploaded now)", where, uploaded)
        except Doc2Unavailable as err:
            # DOC² is down: this message's attempt counts (after max_attempts it goes to the failed folder),
            # and the caller stops the account for this run instead of trying every other message too.
            if not dry_run:
                self._count_failure(account, mailbox, ref, identity, report, where, str(err))
            raise
        except (AccountError, ConnectionLost):
            raise  # not this message's fault: no attempt counted, nothing moved
        except IngestError as err:
            if dry_run:
                report.problems.append(MessageProblem(ref.key, str(err)))
                return
            self._count_failure(account, mailbox, ref, identity, report, where, str(err))
        except Exception as err:
            log.exception("%s: unexpected error", where)
            if not dry_run:
                self._count_failure(
                    account, mailbox, ref, identity, report, where, f"unexpected {type(err).__name__}: {err}"
                )

    def _upload_documents(
        self,
        account: AnyAccount,
        doc2: Doc2Client | None,
        ref: MessageRef,
        item: MailItem,
        report: AccountReport,
        *,
        dry_run: bool,
    ) -> int:
        extraction = item.extract(account)
        report.documents_skipped += len(extraction.skipped)
        done = self.state.uploaded(account.name, item.identity)
        headers = item.headers
        uploaded = 0
        for document in extraction.documents:
            doc_id = custom_doc_id(account.name, item.identity, document.key)
            if doc_id in done:
                report.documents_already_in_doc2 += 1
                continue
            if dry_run or doc2 is None:
                report.planned.append(PlannedDocument(ref.key, document.filename, document.content_type, document.size))
                continue
            metadata = UploadMetadata(
                custom_doc_id=doc_id,
                email_from=headers.sender,
                email_subject=headers.subject,
                email_received=headers.received.isoformat() if headers.received else None,
                email_message_id=headers.message_id,
                mailbox=account.name,
            )
            answer = doc2.upload(document, account.source, metadata)
            self.state.record_upload(account.name, item.identity, doc_id, document.filename, _doc2_id(answer))
            uploaded += 1
            report.documents_uploaded += 1
            report.bytes_uploaded += document.size
        return uploaded

    def _count_failure(
        self,
        account: AnyAccount,
        mailbox: Mailbox,
        ref: MessageRef,
        identity: str | None,
        report: AccountReport,
        where: str,
        error: str,
    ) -> None:
        attempts = self.state.record_failure(account.name, ref.key, identity, error)
        report.messages_failed += 1
        problem = MessageProblem(ref.key, f"attempt {attempts}/{account.max_attempts}: {error}")
        report.problems.append(problem)
        log.warning("%s: attempt %d/%d failed: %s", where, attempts, account.max_attempts, error)
        if attempts < account.max_attempts:
            return
        try:
            mailbox.settle(ref, "failed")
        except IngestError as err:
            log.error("%s: could not move to the failed folder: %s", where, err)
            return
        self.state.record_settled(account.name, ref.key, identity, "failed", error)
        problem.moved_to_failed = True
        report.messages_moved_to_failed += 1
        log.error("%s: moved to the failed folder %r after %d attempts", where, account.failed_folder, attempts)


def _doc2_id(answer: dict[str, object]) -> str | None:
    for key in ("doc_id", "document_id", "id"):
        if answer.get(key):
            return str(answer[key])
    return None


def _account_failed(account: AnyAccount, error: str) -> AccountReport:
    return AccountReport(account=account.name, type=account.type, outcome="account_failed", error=error)
