"""A message that kills or stalls the importer counts as an attempt (PRODUCT.md, "Whose fault a failure is").

Reading and extracting a message is the risky work: a giant or pathological mail can run the process out of memory
or past the Function's time-out, and then nothing after it would ever run. So before that work the run marks the
message in the state store ("attempt started", the account's cursor ``attempt-started``) and clears the mark when
the work ended, whatever its outcome. A mark found at the start of the next run of the account names the message a
run died on: one attempt is counted against it (``record_failure``); once it has ``max_attempts``, the run moves
it to the failed folder without reading it again, so it can no longer block its account.

Only the reading and extracting of one message at a time is marked, not the uploads that follow (they run while
the next message is read and cannot kill the process): a run killed from outside at a random moment charges the
message it was reading, if any, and none of those waiting for DOC².

Clearing the mark is owed, not written at once (``end``): the next message's mark replaces it in the same write
(``begin``), so a run reading one message after another writes one mark a message, not a mark and a clear; and that
write also records the uploads that ended meanwhile (``ingest.flight``, one entity group transaction). In Azure
Table Storage each write is a round trip of ~5-20 ms (docs/PERFORMANCE.md, "Table Storage state: requests per
mail"). The run pays what it owes (``settle``) before it does anything else that could take time or fail: waiting
for DOC², moving mail, counting a failure, ending the account's run. Between ``end`` and the next ``begin`` or
``settle`` it only does quick work of its own, so a kill still lands on the message being read, or on none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from .model import MessageRef
from .state.base import MAX_CURSOR_CHARS, StateStore

log = logging.getLogger(__name__)

MARK = "attempt-started"
CRASH_REASON = "the importer stopped while reading this message (killed, out of memory or out of time)"


class ReadingMarks:
    """The "attempt started" mark of one account's run."""

    def __init__(self, state: StateStore, account: str) -> None:
        self._state = state
        self._account = account
        self._marked = False  # a message is being read under the mark
        self._owed = False  # the mark names a message whose reading ended: to be cleared (or replaced)

    def begin(self, ref: MessageRef, record: Callable[[Mapping[str, str | None]], None] | None = None) -> None:
        """Before the risky work on ``ref``: durable once this returns. Replaces a clear still owed. ``record``
        writes the mark (the flight's: with the uploads that ended meanwhile); else the state store alone."""
        marked = len(ref.key) <= MAX_CURSOR_CHARS  # a key too long to be a mark: read unmarked, the last mark cleared
        writes: dict[str, str | None] = {MARK: ref.key} if marked else ({MARK: None} if self._owed else {})
        if writes:
            (record or self._write)(writes)
        self._marked, self._owed = marked, False

    def _write(self, cursors: Mapping[str, str | None]) -> None:
        for name, value in cursors.items():
            self._state.record_cursor(self._account, name, value)

    def end(self) -> None:
        """The work on the marked message ended (its outcome is recorded elsewhere): the clear is owed."""
        if self._marked:
            self._marked, self._owed = False, True

    def settle(self) -> None:
        """Before the run waits, moves mail, counts a failure or ends: clear the mark if that is owed. Durable once
        this returns."""
        if self._owed:
            self._state.record_cursor(self._account, MARK, None)
            self._owed = False

    def charge_unfinished(self) -> tuple[str, int] | None:
        """At the start of a run: the message an earlier run died on, with its attempts now (one counted for that
        death), or None."""
        key = self._state.cursor(self._account, MARK)
        if key is None:
            return None
        attempts = self._state.record_failure(self._account, key, None, CRASH_REASON)
        self._state.record_cursor(self._account, MARK, None)
        log.warning("account %s message %s: attempt %d failed: %s", self._account, key, attempts, CRASH_REASON)
        return key, attempts
