"""Duplicates across mailboxes (``dedupe: content``): a document whose bytes any account uploaded within
``dedupe_days`` is not uploaded again; the report and the state store say which upload it duplicates.

``dedupe: account`` (the default) is what every account always does: a document is known by its account, message
and position (its custom_doc_id), so a retry uploads nothing twice. ``content`` adds a look-up by the SHA-256 of the
bytes in the state store's content index, which every upload of the run writes (whatever the account's own
setting is, as soon as one account of the accounts file uses ``content``), so an account with ``content`` also
finds what the others uploaded. Documents of this run that are on their way to DOC² count too: two mailboxes
receiving the same invoice in one run upload it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from .config import DEFAULT_DEDUPE_DAYS, AnyAccount, Config
from .model import Document
from .report import AccountReport, DuplicateDocument
from .state.base import ContentRecord, DuplicateRecord, StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    digest: str | None  # the document's SHA-256 when the content index is kept (for its upload record)
    original: ContentRecord | None  # the upload this document duplicates: not uploaded again


class ContentIndex:
    """One run's view of the content index: the state store's, and the uploads this run has started."""

    def __init__(self, config: Config, state: StateStore) -> None:
        self.enabled = any(account.dedupe == "content" for account in config.accounts)
        self._state = state
        self._started: dict[str, ContentRecord] = {}

    def check(self, account: AnyAccount, identity: str, document: Document, doc_id: str, now: datetime) -> Check:
        """Whether ``document`` duplicates an upload (for an account with ``dedupe: content``)."""
        if not self.enabled:
            return Check(None, None)
        digest = document.blob.sha256()
        if account.dedupe != "content":
            return Check(digest, None)
        since = now - timedelta(days=account.dedupe_days or DEFAULT_DEDUPE_DAYS)
        # The store's record once the upload is recorded (it knows DOC²'s id); else this run's, still on its way.
        original = self._state.find_content(digest, since) or self._started.get(digest)
        if original is not None and original.custom_doc_id == doc_id:
            original = None  # this very document, uploaded before: not a duplicate of anything
        return Check(digest, original)

    def started(
        self, account: AnyAccount, identity: str, document: Document, doc_id: str, digest: str, now: datetime
    ) -> None:
        """An upload of these bytes is on its way: later documents of this run with the same bytes duplicate it."""
        self._started.setdefault(
            digest, ContentRecord(digest, account.name, identity, doc_id, document.filename, None, now)
        )

    def skip(
        self,
        account: AnyAccount,
        report: AccountReport,
        message: str,
        identity: str,
        document: Document,
        doc_id: str,
        original: ContentRecord,
        *,
        dry_run: bool,
    ) -> None:
        """Count and remember a duplicate that is not uploaded."""
        report.documents_duplicate += 1
        report.duplicates.append(
            DuplicateDocument(
                message,
                document.filename,
                original.account,
                original.custom_doc_id,
                original.filename,
                original.doc2_id,
                original.uploaded_at.isoformat(),
            )
        )
        log.info(
            "account %s message %s: %s not uploaded: the same bytes were uploaded by account %s as %s "
            "(custom_doc_id %s) at %s",
            account.name,
            message,
            document.filename,
            original.account,
            original.filename,
            original.custom_doc_id,
            original.uploaded_at.isoformat(),
        )
        if not dry_run:
            self._state.record_duplicate(account.name, DuplicateRecord(identity, doc_id, document.filename, original))
