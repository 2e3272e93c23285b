"""Small attachments fetched ahead: file attachments up to :data:`BATCHED_ATTACHMENT_BYTES` (listed size) come with
their ``contentBytes`` in JSON batches. Reading a message fetches its own and those of the next listed messages the
filters let through, up to :data:`~ingest.graph.client.MAX_BATCH` attachments or :data:`FETCH_AHEAD_BYTES` per
batch, the next batch in the background while a message is extracted and uploaded."""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import logging
from dataclasses import dataclass
from urllib.parse import quote

from ...errors import AccountError, ConnectionLost, DocumentError, IngestError
from ...graph.client import MAX_BATCH, BatchAnswer, BatchRequest
from .core import GraphCore
from .messages import SIZE_SLACK, GraphAttachment, GraphMessage

log = logging.getLogger("ingest.mailbox.graph")

# File attachments up to this listed size come with their content (base64 in JSON) in a batch; bigger ones are
# streamed from /$value when extraction asks for them.
BATCHED_ATTACHMENT_BYTES = 1024 * 1024
FETCH_AHEAD_BYTES = 8 * 1024 * 1024  # listed size of the attachments fetched in one batch


class GraphFetchAhead(GraphCore):
    """The batches of small attachments planned along the listing, and what they brought."""

    def _fetch_ahead(self, message_id: str, message: GraphMessage) -> None:
        """Have the small attachments of this message at hand, and the next batch of them on its way.

        Batches are planned in listing order: the one holding this message (sent now unless it already went) and
        the one after it, sent in the background while this message is extracted and uploaded.
        """
        with self._fetch_lock:
            position = self._position.get(message_id)
            if position is not None:  # what was fetched for earlier messages and never taken goes now
                for earlier in [m for m in self._fetched if self._position.get(m, position) < position]:
                    del self._fetched[earlier]
            window = self._windows.get(message_id) or self._plan(message_id, message, position, reading=True)
            if position is not None and window.last + 1 < len(self._order):
                following = self._order[window.last + 1]
                if following not in self._windows and following in self._listed:
                    self._plan(following, self._listed[following], window.last + 1, reading=False)
            self._windows.pop(message_id, None)
            self._receive(window)

    def _plan(self, message_id: str, message: GraphMessage, position: int | None, *, reading: bool) -> Window:
        """Start the batch for the small attachments of this message and of the next listed ones the filters let
        through, up to MAX_BATCH attachments or FETCH_AHEAD_BYTES (none: nothing is sent)."""
        first = self._small_attachments(message) if reading or self._will_read(message) else []
        wanted: list[tuple[str, GraphAttachment]] = [(message_id, attachment) for attachment in first]
        budget = _sizes(first)
        last = position if position is not None else -1
        index = last + 1 if position is not None else len(self._order)
        while index < len(self._order) and len(wanted) < MAX_BATCH and budget < FETCH_AHEAD_BYTES:
            later = self._order[index]
            listed = self._listed.get(later)
            if listed is not None and later not in self._windows and self._will_read(listed):
                small = self._small_attachments(listed)
                if len(wanted) + len(small) > MAX_BATCH or budget + _sizes(small) > FETCH_AHEAD_BYTES:
                    break
                wanted += [(later, attachment) for attachment in small]
                budget += _sizes(small)
            last = index
            index += 1
        requests = [
            BatchRequest(
                "GET",
                f"{self._user_path}/messages/{quote(owner, safe='')}/attachments/{quote(attachment.id, safe='')}",
            )
            for owner, attachment in wanted
        ]
        window = Window(wanted, last, self.session.start_batch(requests) if requests else None)
        covered = self._order[position : last + 1] if position is not None else [message_id]
        for covered_id in covered:
            self._windows.setdefault(covered_id, window)
        return window

    def _receive(self, window: Window) -> None:
        """Wait for a batch of attachments and keep what it brought (or why not) for the messages it served."""
        if window.received or window.future is None:
            return
        window.received = True
        future, wanted = window.future, window.wanted
        window.future, window.wanted = None, []  # the answers hold base64 text: not kept beyond this
        try:
            answers = future.result()
        except Exception as err:
            problem = self._translate(err, f"fetching {len(wanted)} attachments", message_level=True)
            if isinstance(problem, (AccountError, ConnectionLost)):
                raise problem from err
            # Not the messages' fault, maybe: each attachment is downloaded on its own when asked for.
            log.warning("%s: fetching %d attachments in a batch failed (%s); downloading them one by one",
                        self._where, len(wanted), problem)  # fmt: skip
            return
        for (message_id, attachment), answer in zip(wanted, answers, strict=True):
            fetched = self._fetched.setdefault(message_id, {})
            content = answer.body.get("contentBytes") if answer.ok and isinstance(answer.body, dict) else None
            if answer.ok and isinstance(content, str):
                try:
                    fetched[attachment.id] = base64.b64decode(content, validate=True)
                except (binascii.Error, ValueError):
                    fetched[attachment.id] = DocumentError(
                        f"{self._where}: Graph sent attachment {attachment.name!r} of message {message_id} in a "
                        "broken encoding"
                    )
            elif not answer.ok:
                action = f"downloading attachment {attachment.name!r} of message {message_id}"
                fetched[attachment.id] = self._refusal(answer.failure(), action)
            # an answer without contentBytes: downloaded from /$value when asked for

    def _will_read(self, message: GraphMessage) -> bool:
        """False for a message the pipeline leaves in place for the account's filters (no need to fetch for it)."""
        return self.passes_filters(message.headers)

    def _small_attachments(self, message: GraphMessage) -> list[GraphAttachment]:
        limit = self.account.filters.max_attachment_bytes
        return [
            attachment
            for attachment in message.attachments
            if attachment.kind == "file"
            and attachment.size <= BATCHED_ATTACHMENT_BYTES
            and (limit is None or attachment.size <= limit + SIZE_SLACK)
        ]

    def _cancel_windows(self) -> None:
        for window in self._windows.values():
            if window.future is not None:
                window.future.cancel()
        self._windows.clear()

    def take_fetched(self, message_id: str, attachment_id: str) -> bytes | IngestError | None:
        """The content fetched ahead for an attachment (once), the reason it could not be, or None."""
        fetched = self._fetched.get(message_id)
        return fetched.pop(attachment_id, None) if fetched is not None else None


@dataclass
class Window:
    """One batch of small attachments fetched ahead: what it asks for, the position of the last message it
    covers in the listing, its answers on their way."""

    wanted: list[tuple[str, GraphAttachment]]
    last: int
    future: concurrent.futures.Future[list[BatchAnswer]] | None
    received: bool = False


def _sizes(attachments: list[GraphAttachment]) -> int:
    return sum(attachment.size for attachment in attachments)
