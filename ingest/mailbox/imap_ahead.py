"""The next batch of messages fetched while the pipeline works on the batch before it (IMAP).

Without it the pipeline waited for every batch FETCH: Dovecot starts sending a batch only when asked, and the
main thread read it line by line, giving up the GIL at every TLS record; the profile of an import of 1,000 mails
put ~1.4 s of the main thread's time there. Here the next batch's FETCH runs on a thread of its own (one at a
time, as mbsync keeps FETCHes in flight) while the messages already fetched are extracted and uploaded. The same
thread makes each message's lean pre-pass (its base64 decoded and hashed, ``RawMail.prepare``): work that gives
up the GIL, so it runs beside the pipeline's own.

imapclient is not thread-safe: while a batch is on its way, the mailbox touches the connection for nothing else.
:meth:`FetchAhead.idle` waits for it first; ``ImapMailbox`` calls it before every command of its own. What a
batch brought is kept whatever happens next; a batch the server refused is fetched again when its messages are
read (the refusal then counts against the message being read, as without fetching ahead); a connection lost while
fetching ahead is lost for the session, and the next command says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import ConnectionLost, DocumentError
from ..mime.rawmail import RawMail
from ..model import BytesBlob

Batch = dict[int, bytes | RawMail]
BATCH_MESSAGES = 25  # whole messages fetched in one round trip...
BATCH_BYTES = 16 * 1024 * 1024  # ...up to this many bytes


class FetchAhead:
    """At most one batch FETCH in flight on a thread of its own."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._uids: frozenset[int] = frozenset()
        self._pending: Future[Batch] | None = None

    def start(self, uids: list[int], fetch: Callable[[list[int]], Batch]) -> None:
        """Fetch ``uids`` in the background (nothing else may be in flight: call :meth:`idle` first)."""
        if self._pending is not None:
            raise RuntimeError("a batch is already being fetched ahead")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-fetch-ahead")
        self._uids = frozenset(uids)
        self._pending = self._pool.submit(_fetch_and_prepare, fetch, uids)

    @property
    def busy(self) -> bool:
        return self._pending is not None

    def holds(self, uid: int) -> bool:
        return self._pending is not None and uid in self._uids

    def take(self) -> Batch:
        """Wait for the batch in flight (one holding the message being read) and give what it brought; raises
        what its FETCH raised."""
        pending, self._pending, self._uids = self._pending, None, frozenset()
        return pending.result() if pending is not None else {}

    def idle(self) -> Batch:
        """Wait until nothing is in flight; what the batch brought (nothing when the server refused it). Raises
        ConnectionLost when the connection was lost meanwhile."""
        try:
            return self.take()
        except DocumentError:  # refused: its messages are fetched again when read
            return {}

    def close(self) -> None:
        """Wait for a batch in flight, whatever its outcome (the session ends)."""
        with contextlib.suppress(ConnectionLost):
            self.idle()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _fetch_and_prepare(fetch: Callable[[list[int]], Batch], uids: list[int]) -> Batch:
    """The batch, each message's lean pre-pass made (base64 decoded, hashed) here, beside the pipeline's work."""
    fetched: Batch = {}
    for uid, raw in fetch(uids).items():
        mail = raw if isinstance(raw, RawMail) else RawMail(BytesBlob(raw))
        mail.prepare()
        fetched[uid] = mail
    return fetched


def batch_from(
    uid: int, order: list[int], positions: dict[int, int], size: Callable[[int], int], alone: Callable[[int], bool]
) -> list[int]:
    """``uid`` and the UIDs after it in the listing (``order``; ``positions``: each UID's place in it), up to
    BATCH_MESSAGES and BATCH_BYTES, stopping before one that is fetched ``alone``."""
    position = positions.get(uid)
    if position is None:
        return [uid]
    batch: list[int] = []
    total = 0
    for candidate in order[position:]:
        if batch and (len(batch) >= BATCH_MESSAGES or total + size(candidate) > BATCH_BYTES or alone(candidate)):
            break
        batch.append(candidate)
        total += size(candidate)
    return batch


def after(batch: list[int], order: list[int], positions: dict[int, int]) -> int | None:
    """The UID after the batch in the listing."""
    position = positions.get(batch[-1])
    return order[position + 1] if position is not None and position + 1 < len(order) else None
