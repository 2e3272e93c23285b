"""Uploads in flight: the messages of one account whose documents go to DOC² on a thread pool while the pipeline
reads the next ones. State first: what reached DOC² is recorded before a message is settled or counted failed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .config import AnyAccount
from .errors import Doc2Unavailable, IngestError, OutOfTime
from .model import Document, Extraction, MessageRef, SkippedPart, UploadMetadata
from .outage import Doc2Health
from .ports import Doc2Uploader, Mailbox, MailItem, StateStore, UploadRecord
from .report import AccountReport

MAX_MESSAGES_IN_FLIGHT = 32  # messages read whose uploads are not all recorded yet...
MAX_BYTES_IN_FLIGHT = 64 * 1024 * 1024  # ...and their size (bigger documents wait in temporary files anyway)
SETTLE_BATCH = 50  # messages moved together (one UID MOVE) once all their documents are recorded


@dataclass
class PendingUpload:
    document: Document
    metadata: UploadMetadata
    source: str  # DOC²'s source field: the account's doc2_source, or the matching rule's
    digest: str | None = None  # SHA-256 of the document, for the content index (dedupe: content)
    future: Future[str | None] | None = None  # DOC²'s id of the document once accepted
    gave_up_at: int = 0  # when it failed for good: the number of the run's latest upload then (ingest.outage)

    def error(self) -> BaseException | None:
        return self.future.exception() if self.future is not None else None

    def doc2_id(self) -> str | None:
        return self.future.result() if self.future is not None else None


@dataclass
class MessageInFlight:
    """A message read and extracted, its uploads on their way."""

    ref: MessageRef
    item: MailItem
    identity: str
    where: str
    extraction: Extraction
    uploads: list[PendingUpload] = field(default_factory=list)
    damaged: list[SkippedPart] = field(default_factory=list)
    uploaded: int = 0
    unrecorded: Exception | None = None  # the state store could not record its uploads (ingest.pipeline counts it)

    @property
    def done(self) -> bool:
        return all(upload.future is None or upload.future.done() for upload in self.uploads)

    @property
    def size(self) -> int:
        return self.ref.size or sum(upload.document.size for upload in self.uploads)

    def close(self) -> None:
        """Delete the temporary files of big documents and of a big message."""
        self.extraction.close()
        self.item.close()


class Flight:
    """The messages of one account whose uploads run on the DOC² pool while the next ones are read.

    Only the calling thread touches the mailbox (imapclient is not thread-safe) and the state store; the pool
    threads only upload. Bounds: ``doc2.max_concurrent_uploads`` uploads at once (the pool's size, and this
    mailbox's share of it), ``MAX_MESSAGES_IN_FLIGHT`` messages or ``MAX_BYTES_IN_FLIGHT`` bytes read and
    not yet recorded. Until the first upload of the run succeeds, and while a message waits for the verdict whose
    fault DOC²'s failure was (``careful``, see ingest.outage), one message at a time: a rejected key or a DOC² that
    is down costs one request, not a burst. Settled messages are moved ``SETTLE_BATCH`` at a time.
    """

    def __init__(
        self,
        *,
        account: AnyAccount,
        mailbox: Mailbox,
        doc2: Doc2Uploader,
        report: AccountReport,
        pool: ThreadPoolExecutor,
        state: StateStore,
        max_uploads: int,
        complete: Callable[[MessageInFlight], bool],
        settle: Callable[[list[MessageInFlight]], IngestError | None],
        health: Doc2Health | None = None,
        careful: Callable[[], bool] = lambda: False,
    ) -> None:
        self._state = state
        self._health = health or Doc2Health()
        self._careful = careful
        self._complete = complete  # decides on a message whose uploads ended: True when it may be settled
        self._settle = settle  # moves a batch, records it; returns what stops the run
        self._account = account
        self._doc2 = doc2
        self._report = report
        self._pool = pool
        self._permits = threading.BoundedSemaphore(max_uploads)
        self._messages: list[MessageInFlight] = []
        self._to_settle: list[MessageInFlight] = []
        self._proven = False
        # A mailbox that moves many messages in one command (IMAP, Graph) settles them in batches; any other
        # settles each message as soon as its documents are recorded.
        self._batch = SETTLE_BATCH if mailbox.settles_in_batches else 1
        self.doc2_down: Doc2Unavailable | OutOfTime | None = None  # DOC² is down, or no time left to wait for it

    def start(self, work: MessageInFlight) -> None:
        for upload in work.uploads:
            self._permits.acquire()
            try:
                upload.future = self._pool.submit(self._upload, upload)
            except BaseException:
                self._permits.release()
                raise
        self._messages.append(work)
        self._collect()

    def make_room(self) -> None:
        """Wait until another message may be read (bounds, and one at a time until DOC² answered)."""
        while self._messages and (
            not self._proven
            or self._careful()
            or len(self._messages) >= MAX_MESSAGES_IN_FLIGHT
            or sum(work.size for work in self._messages) >= MAX_BYTES_IN_FLIGHT
        ):
            self._wait()
            self._collect()
        if len(self._to_settle) >= self._batch:
            self._flush()

    def wait_for(self, identity: str) -> None:
        """Wait until no message of this identity is in flight: a second copy of a message in one run is planned
        only once the first one's uploads are recorded, so it uploads nothing twice."""
        while any(work.identity == identity for work in self._messages):
            self._wait()
            self._collect()

    def finish(self) -> None:
        """Wait for every upload in flight, record them, and settle the messages they complete."""
        while self._messages:
            self._wait()
            self._collect()
        self._flush()

    def abandon(self) -> None:
        """The run stops: wait for the uploads in flight and record what reached DOC²; move nothing."""
        wait([upload.future for work in self._messages for upload in work.uploads if upload.future is not None])
        try:
            self._record_successes(self._messages)
        finally:
            for work in self._messages:
                work.close()
        deferred = len(self._messages) + len(self._to_settle)
        self._report.messages_deferred += deferred
        self._report.messages_seen -= deferred
        self._messages.clear()
        self._to_settle.clear()

    def _upload(self, upload: PendingUpload) -> str | None:
        number = self._health.start()
        try:
            doc2_id = self._doc2.upload(upload.document, upload.source, upload.metadata)
        except Doc2Unavailable:
            upload.gave_up_at = self._health.now()
            raise
        finally:
            self._permits.release()
        self._health.record_accepted(number)
        return doc2_id

    def _wait(self) -> None:
        pending = [u.future for work in self._messages for u in work.uploads if u.future and not u.future.done()]
        if pending:
            wait(pending, return_when=FIRST_COMPLETED)

    def _collect(self) -> None:
        """Record every message whose uploads have all ended; queue it for settling or count its failure."""
        finished = [work for work in self._messages if work.done]
        if not finished:
            return
        self._messages = [work for work in self._messages if not work.done]
        # State first: what reached DOC² is recorded, all these messages' uploads in one call (one transaction),
        # before any of them is settled or counted as failed.
        try:
            self._record_successes(finished)
        except BaseException:
            for work in finished:
                work.close()
            raise
        for work in finished:
            if any(upload.error() is None for upload in work.uploads if upload.future is not None):
                self._proven = True
            if self.doc2_down is not None and any(
                isinstance(u.error(), (Doc2Unavailable, OutOfTime)) for u in work.uploads
            ):
                # DOC² is down and that is counted once already: this message just waits for the next run.
                work.close()
                self._report.messages_seen -= 1
                self._report.messages_deferred += 1
                continue
            try:
                if self._complete(work):
                    self._to_settle.append(work)
            except (Doc2Unavailable, OutOfTime) as err:
                self.doc2_down = err

    def _record_successes(self, works: list[MessageInFlight]) -> None:
        """Record the uploads of these messages that reached DOC², in one call to the state store.

        When that call fails, each message's uploads are recorded on their own: a message the store will not take
        (whatever in it the store refuses) is marked ``unrecorded``, its failure and nobody else's. Only when every
        message fails so (more than one) is the store itself taken for broken: that stops the account."""
        done = [
            (work, upload)
            for work in works
            for upload in work.uploads
            if upload.future is not None and upload.error() is None
        ]
        if not done:
            return
        try:
            self._record(done)
            return
        except Exception as err:  # noqa: BLE001 - each message on its own decides whose fault it is
            batch_error = err
        refused: list[MessageInFlight] = []
        for work in works:
            own = [(w, upload) for w, upload in done if w is work]
            if not own:
                continue
            try:
                self._record(own)
            except Exception as err:  # noqa: BLE001 - the message's failure, counted by the pipeline
                work.unrecorded = err
                refused.append(work)
        if len(refused) > 1 and len(refused) == len({id(w) for w, _ in done}):
            for work in refused:
                work.unrecorded = None
            raise batch_error

    def _record(self, done: list[tuple[MessageInFlight, PendingUpload]]) -> None:
        self._state.record_uploads(
            self._account.name,
            [
                UploadRecord(
                    work.identity,
                    upload.metadata.custom_doc_id,
                    upload.document.filename,
                    upload.doc2_id(),
                    upload.digest,
                )
                for work, upload in done
            ],
        )
        for work, upload in done:
            work.uploaded += 1
            self._report.documents_uploaded += 1
            self._report.bytes_uploaded += upload.document.size

    def _flush(self) -> None:
        batch, self._to_settle = self._to_settle, []
        try:
            stop = self._settle(batch)
        except BaseException:
            self._report.messages_deferred += len(batch)
            self._report.messages_seen -= len(batch)
            raise
        if stop is not None:
            raise stop


def upload_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="doc2-upload")
