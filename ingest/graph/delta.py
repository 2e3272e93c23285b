"""Delta query over a Graph mail folder: a run asks Graph only for what changed since the last one.

The first round (no token) lists every message in the folder, as a full listing does; its last page carries an
``@odata.deltaLink`` that the next run follows to get only the changes since (messages that arrived, were moved in
or changed). Graph also reports the messages that left the folder (``@removed``): those are our own moves to the
processed and failed folders (or somebody else's), and there is nothing to do for them.

What a delta does not bring again is a message that is still in the folder because the last run did not settle it
(a failed attempt with attempts left, the time budget or an outage cut the run short, Graph refused the move). Those
are *carried*: the cursor kept per account holds their ids next to the delta link, and the next run reads them again
by id (:data:`MAX_CARRY` at most; with more the cursor is dropped and the next run makes a full round, which lists
them all anyway).

The cursor is written only when a run ends without an exception (a dry run never writes it): a run that dies keeps
the old cursor, and the next one asks for the same changes again; the state store makes sure nothing is uploaded
twice. A token Graph no longer knows (``410 syncStateNotFound`` and its relatives) makes a full round. A cursor made
for another folder, mailbox, Graph endpoint or other message filters is not used: a full round again, so that mail
a changed filter now lets through is seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .client import GraphFailure

log = logging.getLogger(__name__)

CURSOR_NAME = "graph-delta"
MAX_CARRY = 100  # ids carried to the next run; each costs a twentieth of a $batch request
PAGE_SIZE = 50  # Prefer: odata.maxpagesize
CURSOR_VERSION = 1
# Graph's ways of saying "this token is no good any more, start over".
_RESTART_CODES = frozenset({"syncstatenotfound", "syncstateinvalid", "resyncrequired", "invaliddeltatoken"})


@dataclass
class Cursor:
    """Where the next run starts: a delta (or, after a cut-short round, next) link, and the ids it still owes."""

    fingerprint: str
    link: str | None = None
    carry: list[str] = field(default_factory=list)

    def dumps(self) -> str:
        data = {"v": CURSOR_VERSION, "fingerprint": self.fingerprint, "link": self.link, "carry": self.carry}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | None) -> Cursor | None:
        """The cursor in ``text``; None for nothing, or for something this version does not understand."""
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("v") != CURSOR_VERSION:
            return None
        link = data.get("link")
        carry = [str(i) for i in data.get("carry") or [] if isinstance(i, str)]
        return cls(str(data.get("fingerprint") or ""), link if isinstance(link, str) else None, carry)


def fingerprint(*, endpoint: str, mailbox: str, folder_id: str, message_filters: dict[str, Any]) -> str:
    """What a delta link is valid for: the endpoint, mailbox and folder, and the filters that decide which mail is
    left in the folder untouched (a change of those must show that mail again)."""
    data = {"endpoint": endpoint, "mailbox": mailbox.lower(), "folder": folder_id, "filters": message_filters}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class Round:
    """What one delta round brought: the messages (Graph's JSON) now in the folder that changed, how many left it,
    the link the next run starts from, and whether the round was a full one (no usable token)."""

    changed: list[dict[str, Any]]
    removed: int
    link: str | None
    complete: bool
    full: bool
    requests: int


Fetch = Callable[[str, dict[str, str] | None], Any]


def read_round(
    fetch: Fetch, start: str, query: dict[str, str], link: str | None, *, deadline: float | None, where: str
) -> Round:
    """Page through one round: from ``link`` when there is one, else a full round from ``start`` with ``query``.
    A token Graph no longer knows starts a full round (once). With ``deadline`` passed the round stops after the page
    at hand; its next link is where the next run goes on."""

    def pages(link: str | None) -> Round:
        changed: list[dict[str, Any]] = []
        removed = requests = 0
        page = fetch(link, None) if link else fetch(start, query)
        requests += 1
        while True:
            for item in page.get("value") or []:
                if not isinstance(item, dict):
                    continue
                if "@removed" in item:
                    removed += 1  # moved out (our own settling, mostly) or deleted: nothing to do
                else:
                    changed.append(item)
            delta_link, next_link = page.get("@odata.deltaLink"), page.get("@odata.nextLink")
            if delta_link or not next_link:
                return Round(changed, removed, str(delta_link) if delta_link else None, True, link is None, requests)
            if deadline is not None and time.monotonic() > deadline:
                log.warning("%s: time budget used up while reading changes; the next run goes on from here", where)
                return Round(changed, removed, str(next_link), False, link is None, requests)
            page = fetch(str(next_link), None)
            requests += 1

    try:
        return pages(link)
    except GraphFailure as failure:
        if not _expired(failure):
            raise
        log.warning(
            "%s: Graph no longer knows the delta token (%s %s); listing the whole folder again",
            where,
            failure.status,
            failure.code,
        )
    return pages(None)


def _expired(failure: GraphFailure) -> bool:
    return failure.status == 410 or failure.code.lower() in _RESTART_CODES


class CursorStore(Protocol):
    """Where cursors are kept between runs (the state store)."""

    def cursor(self, account: str, name: str) -> str | None: ...

    def record_cursor(self, account: str, name: str, value: str | None) -> None: ...
