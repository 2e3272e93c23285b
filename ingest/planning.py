"""What of a message read goes to DOC²: the routing rule that decides for it, and its documents not yet in DOC²
(nor, with dedupe: content, uploaded lately by any account), each with its custom_doc_id and metadata."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from .bodypdf import body_document
from .config import AnyAccount, Config
from .dedupe import ContentIndex
from .errors import UnreadableMessage
from .flight import MessageInFlight, PendingUpload
from .mime.parts import MAX_DOCUMENTS_PER_MESSAGE
from .model import MessageRef, SkippedPart, UploadMetadata, custom_doc_id
from .ports import MailItem, StateStore
from .report import MAX_SKIPPED_LISTED, AccountReport, PlannedDocument, Routing, SkippedDocument
from .rules import Decision, decide

log = logging.getLogger(__name__)

_SKIPPED_LOGGED = 20  # parts not uploaded, logged one by one per message


class UploadPlanner:
    def __init__(self, config: Config, state: StateStore, clock: Callable[[], datetime]) -> None:
        self._state = state
        self._clock = clock
        self._contents = ContentIndex(config, state)  # dedupe: content

    def route(
        self, account: AnyAccount, ref: MessageRef, item: MailItem, report: AccountReport, where: str, *, dry_run: bool
    ) -> Decision:
        """The routing rule that decides for this message (ingest.rules), counted in the report."""
        if not account.rules:
            return Decision(None, account.source)
        decision = decide(account.rules, account.source, item.facts())
        if decision.rule is not None:
            report.rules[decision.rule] = report.rules.get(decision.rule, 0) + 1
            log.info("%s: rule %r%s", where, decision.rule, " says skip: left in place" if decision.skip else "")
        if dry_run:
            report.routing.append(Routing(ref.key, item.headers.subject[:80], decision.rule, decision.skip))
        return decision

    def plan(
        self,
        account: AnyAccount,
        ref: MessageRef,
        item: MailItem,
        report: AccountReport,
        where: str,
        decision: Decision,
        *,
        dry_run: bool,
    ) -> MessageInFlight:
        """The documents of a message not yet in DOC², each with its custom_doc_id and metadata."""
        extraction = item.extract(account)
        work = MessageInFlight(ref, item, item.identity, where, extraction)
        if account.body_to_pdf == "always" or (account.body_to_pdf == "when_no_documents" and not extraction.documents):
            try:
                body = body_document(item.facts().body, item.headers)
            except BaseException:
                work.close()
                raise
            if body is not None:
                extraction.documents.append(body)
        report_skipped(report, ref, extraction.skipped, where)
        if extraction.too_many or len(extraction.documents) > MAX_DOCUMENTS_PER_MESSAGE:
            work.close()
            raise UnreadableMessage(
                f"more than {MAX_DOCUMENTS_PER_MESSAGE} documents in one message: "
                "nothing uploaded; check the message by hand"
            )
        work.damaged = [part for part in extraction.skipped if part.damaged]
        done = self._state.uploaded(account.name, item.identity)
        headers = item.headers
        for document in extraction.documents:
            doc_id = custom_doc_id(account.name, item.identity, document.key)
            if doc_id in done:
                report.documents_already_in_doc2 += 1
                continue
            now = self._clock()
            check = self._contents.check(account, item.identity, document, doc_id, now)
            if check.original is not None:
                self._contents.skip(
                    account, report, ref.key, item.identity, document, doc_id, check.original, dry_run=dry_run
                )
                continue
            if check.digest is not None:
                self._contents.started(account, item.identity, document, doc_id, check.digest, now)
            if dry_run:
                report.planned.append(
                    PlannedDocument(
                        ref.key,
                        document.filename,
                        document.content_type,
                        document.size,
                        decision.source,
                        decision.rule,
                        headers.sender,
                        headers.subject,
                        headers.received.isoformat() if headers.received else None,
                    )
                )
                continue
            metadata = UploadMetadata(
                custom_doc_id=doc_id,
                email_from=headers.sender,
                email_subject=headers.subject,
                email_received=headers.received.isoformat() if headers.received else None,
                email_message_id=headers.message_id,
                mailbox=account.name,
                extra=decision.metadata,
            )
            work.uploads.append(PendingUpload(document, metadata, decision.source, check.digest))
        return work


def report_skipped(report: AccountReport, ref: MessageRef, parts: list[SkippedPart], where: str) -> None:
    """Every part not uploaded is counted, logged with its reason and (up to a limit) listed in the report."""
    report.documents_skipped += len(parts)
    for number, part in enumerate(parts):
        if number < _SKIPPED_LOGGED:
            log.info("%s: %s not uploaded: %s", where, part.filename, part.reason)
        elif number == _SKIPPED_LOGGED:
            log.info("%s: %d more parts not uploaded", where, len(parts) - number)
        if len(report.skipped) < MAX_SKIPPED_LISTED:
            report.skipped.append(SkippedDocument(ref.key, part.filename, part.reason))


def damage(work: MessageInFlight, *, dry_run: bool = False) -> UnreadableMessage:
    # Never settle as processed with a document missing: the readable ones are in DOC² now (and recorded, so a
    # later attempt does not upload them again); the message itself goes to the failed folder.
    damaged = work.damaged
    listed = "; ".join(f"{part.filename}: {part.reason}" for part in damaged[:5])
    more = f" and {len(damaged) - 5} more" if len(damaged) > 5 else ""
    if dry_run:
        return UnreadableMessage(f"{len(damaged)} part(s) could not be read ({listed}{more})")
    return UnreadableMessage(
        f"{len(damaged)} part(s) could not be read ({listed}{more}); "
        f"{len(work.extraction.documents)} readable document(s) of it are in DOC²"
    )
