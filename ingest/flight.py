"""Uploads in flight: the documents of one account's messages go to DOC² on a thread pool while the pipeline reads
the next messages.

State first: a message is handed back (:class:`Finished`) only once all its uploads ended and what DOC² accepted of
it is recorded in the state store. What then becomes of it (settled, counted as a failed attempt, left for the next
run) the pipeline alone decides and counts: this module touches neither the mailbox nor the run report.

What ended while the pipeline read a message is recorded when it marks the next one (:meth:`Flight.record`): the
uploads and the "attempt started" mark in one write (ingest.attempts), one round trip where the state store is
Azure Table Storage (docs/PERFORMANCE.md, "Table Storage state: requests per mail")."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .errors import Doc2Unavailable
from .model import Document, Extraction, MessageRef, SkippedPart, UploadMetadata
from .outage import Doc2Health
from .ports import Doc2Uploader, MailItem, StateStore, UploadRecord

MAX_MESSAGES_IN_FLIGHT = 32  # messages read whose uploads are not all recorded yet...
MAX_BYTES_IN_FLIGHT = 64 * 1024 * 1024  # ...and their size (bigger documents wait in temporary files anyway)


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


@dataclass
class Finished:
    """A message whose uploads all ended, handed back to the pipeline: what DOC² accepted of it is recorded."""

    work: MessageInFlight
    uploaded: int = 0  # its documents DOC² accepted, recorded now
    bytes_uploaded: int = 0
    unrecorded: Exception | None = None  # the state store would not record what DOC² accepted of it

    @property
    def failures(self) -> list[tuple[PendingUpload, BaseException]]:
        """Its uploads that failed, with why."""
        return [(upload, error) for upload in self.work.uploads if (error := upload.error()) is not None]


class Flight:
    """The messages of one account whose uploads run on the DOC² pool while the next ones are read.

    Only the calling thread touches the state store; the pool threads only upload. Bounds: ``max_uploads`` uploads
    at once (the pool's size, and this account's share of it); another message may be read (:meth:`full`) while
    fewer than ``MAX_MESSAGES_IN_FLIGHT`` messages or ``MAX_BYTES_IN_FLIGHT`` bytes are read and not yet recorded.
    Until an upload of this account succeeds, and whenever the caller is ``careful`` (a message waits for the
    verdict whose fault DOC²'s failure was, see ingest.outage), one message at a time: a rejected key or a DOC² that
    is down costs one request, not a burst.
    """

    def __init__(
        self,
        *,
        account: str,
        doc2: Doc2Uploader,
        pool: ThreadPoolExecutor,
        state: StateStore,
        max_uploads: int,
        health: Doc2Health | None = None,
    ) -> None:
        self._account = account
        self._doc2 = doc2
        self._pool = pool
        self._state = state
        self._health = health or Doc2Health()
        self._permits = threading.BoundedSemaphore(max_uploads)
        self._messages: list[MessageInFlight] = []
        self._recorded: list[Finished] = []  # recorded by :meth:`record`, not handed back yet
        self._proven = False  # an upload of this account succeeded

    @property
    def busy(self) -> bool:
        """True while some message's uploads have not all been handed back."""
        return bool(self._messages or self._recorded)

    def record(self, cursors: Mapping[str, str | None]) -> None:
        """Record what DOC² accepted of the messages whose uploads all ended, with ``cursors`` in the same write (the
        next message's mark); they are handed back by the next :meth:`start`, :meth:`next_finished` or
        :meth:`abandon`. Durable once this returns."""
        self._recorded += self._collect(cursors)

    def start(self, work: MessageInFlight) -> list[Finished]:
        """Send the message's uploads on their way; hands back the messages :meth:`record` recorded."""
        for upload in work.uploads:
            self._permits.acquire()
            try:
                upload.future = self._pool.submit(self._upload, upload)
            except BaseException:
                self._permits.release()
                raise
        self._messages.append(work)
        handed, self._recorded = self._recorded, []
        return handed

    def full(self, *, careful: bool = False) -> bool:
        """True while another message may not be read yet (the bounds, and one at a time until an upload of this
        account succeeded or while ``careful``)."""
        return bool(self._messages) and (
            not self._proven
            or careful
            or len(self._messages) >= MAX_MESSAGES_IN_FLIGHT
            or sum(work.size for work in self._messages) >= MAX_BYTES_IN_FLIGHT
        )

    def carries(self, identity: str) -> bool:
        """True while a message of this identity is in flight (a second copy of it waits: it uploads nothing
        twice)."""
        return any(work.identity == identity for work in self._messages)

    def next_finished(self) -> list[Finished]:
        """Wait until an upload in flight ends; hands back the messages whose uploads all ended (maybe none)."""
        pending = [u.future for work in self._messages for u in work.uploads if u.future and not u.future.done()]
        if pending:
            wait(pending, return_when=FIRST_COMPLETED)
        handed, self._recorded = self._recorded, []
        return handed + self._collect()

    def abandon(self) -> list[Finished]:
        """The run stops: wait for every upload in flight, record what reached DOC², and hand back every message
        still in flight, closed; none of them is to be settled."""
        works, self._messages = self._messages, []
        handed, self._recorded = self._recorded, []
        wait([upload.future for work in works for upload in work.uploads if upload.future is not None])
        try:
            return handed + self._record_successes(works)
        finally:
            for work in works:
                work.close()

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

    def _collect(self, cursors: Mapping[str, str | None] | None = None) -> list[Finished]:
        """The messages whose uploads have all ended, their successes recorded (with ``cursors``)."""
        finished: list[MessageInFlight] = []
        waiting: list[MessageInFlight] = []
        for work in self._messages:  # one look per message: an upload may end while they are sorted
            (finished if work.done else waiting).append(work)
        if not finished:
            if cursors:
                self._state.record_uploads(self._account, [], cursors)
            return []
        self._messages = waiting
        # State first: what reached DOC² is recorded, all these messages' uploads in one call (one transaction),
        # before the pipeline settles any of them or counts it as failed.
        try:
            handed = self._record_successes(finished, cursors)
        except BaseException:
            for work in finished:
                work.close()
            raise
        if any(upload.error() is None for work in finished for upload in work.uploads if upload.future is not None):
            self._proven = True
        return handed

    def _record_successes(
        self, works: list[MessageInFlight], cursors: Mapping[str, str | None] | None = None
    ) -> list[Finished]:
        """Record the uploads of these messages that reached DOC², in one call to the state store.

        When that call fails, each message's uploads are recorded on their own: a message the store will not take
        (whatever in it the store refuses) is handed back ``unrecorded``, its failure and nobody else's. Only when
        every message fails so (more than one) is the store itself taken for broken: that stops the account."""
        finished = [Finished(work) for work in works]
        done = [
            (one, upload)
            for one in finished
            for upload in one.work.uploads
            if upload.future is not None and upload.error() is None
        ]
        if not done:
            if cursors:
                self._state.record_uploads(self._account, [], cursors)
            return finished
        try:
            self._record(done, cursors)
            return finished
        except Exception as err:  # noqa: BLE001 - each message on its own decides whose fault it is
            batch_error = err
        if cursors:  # alone, then each message on its own; a store that takes not even these is broken
            self._state.record_uploads(self._account, [], cursors)
        refused: list[Finished] = []
        for one in finished:
            own = [(f, upload) for f, upload in done if f is one]
            if not own:
                continue
            try:
                self._record(own)
            except Exception as err:  # noqa: BLE001 - the message's failure, counted by the pipeline
                one.unrecorded = err
                refused.append(one)
        if len(refused) > 1 and len(refused) == len({id(f) for f, _ in done}):
            raise batch_error
        return finished

    def _record(
        self, done: list[tuple[Finished, PendingUpload]], cursors: Mapping[str, str | None] | None = None
    ) -> None:
        self._state.record_uploads(
            self._account,
            [
                UploadRecord(
                    one.work.identity,
                    upload.metadata.custom_doc_id,
                    upload.document.filename,
                    upload.doc2_id(),
                    upload.digest,
                )
                for one, upload in done
            ],
            cursors,
        )
        for one, upload in done:
            one.uploaded += 1
            one.bytes_uploaded += upload.document.size


def upload_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="doc2-upload")
