"""Listing the source folder: every message page by page (``@odata.nextLink``), or, with a cursor store, the changes
since the last run by delta query (``ingest.graph.delta``) and the messages an earlier run left there (carried).

Only the fields needed are read, each message with its attachments' metadata (``$expand=attachments($select=...)``,
never their content); ``max_age_days`` is filtered by Graph. Every page is read before the first message is handled,
because Graph pages by offset and moving messages out of the folder would shift the later pages.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from ...graph.client import BatchRequest
from ...graph.delta import CURSOR_NAME, MAX_CARRY, Cursor, CursorStore, fingerprint, read_round
from ...graph.delta import PAGE_SIZE as DELTA_PAGE_SIZE
from ...model import MessageHeaders
from .folders import GraphFolders
from .messages import ATTACHMENT_FIELDS, LIST_FIELDS, GraphMessage, message_of, odata_time

log = logging.getLogger("ingest.mailbox.graph")

_EARLIEST = datetime.min.replace(tzinfo=UTC)


class GraphListing(GraphFolders):
    """The source folder's messages, oldest first, and the delta cursor kept at the end of a session."""

    def _list_all(self, source: str) -> list[GraphMessage]:
        """Every message in the folder, oldest first, page by page."""
        messages: list[GraphMessage] = []
        action = f"listing folder {self.account.folder!r}"
        page = self._get_json(action, f"{self._user_path}/mailFolders/{quote(source, safe='')}/messages", self._query())
        while True:
            messages.extend(message_of(data) for data in page.get("value") or [])
            next_link = page.get("@odata.nextLink")
            if not next_link:
                break
            if self._deadline is not None and time.monotonic() > self._deadline:
                log.warning("%s: time budget used up while listing; %d messages listed", self._where, len(messages))
                break
            page = self._get_json(action, str(next_link))
        log.info("%s: %d messages in %s", self._where, len(messages), self.account.folder)
        return messages

    def _list_changes(self, source: str, cursors: CursorStore) -> list[GraphMessage]:
        """The messages that arrived in the folder since the last run (delta query), and those an earlier run left
        there unsettled (carried), oldest first."""
        filters = self.account.filters
        mark = fingerprint(
            endpoint=self.session.base_url,
            mailbox=self.account.mailbox,
            folder_id=source,
            message_filters={
                "from": filters.from_,
                "subject": filters.subject,
                "max_age_days": filters.max_age_days,
                "rules": [rule.model_dump(mode="json") for rule in self.account.rules],
            },
        )
        stored = Cursor.loads(cursors.cursor(self.account.name, CURSOR_NAME))
        if stored is not None and stored.fingerprint != mark:
            log.info("%s: folder, mailbox or filters changed since the last run: listing the whole folder", self._where)
            stored = None
        link = stored.link if stored is not None else None
        if link is not None and not link.startswith(self.session.base_url + "/"):
            link = None  # only ever follow links to the configured Graph endpoint
        action = f"reading the changes in folder {self.account.folder!r}"
        prefer = {"Prefer": f"odata.maxpagesize={DELTA_PAGE_SIZE}"}
        try:
            found = read_round(
                lambda url, query: self.session.get_json(url, query, prefer),
                f"{self._user_path}/mailFolders/{quote(source, safe='')}/messages/delta",
                self._delta_query(),
                link,
                deadline=self._deadline,
                where=self._where,
            )
        except Exception as err:
            raise self._translate(err, action, message_level=False) from err
        messages = {m.id: m for m in map(message_of, found.changed)}
        owed = [i for i in (stored.carry if stored is not None else []) if i not in messages]
        carried, unread = self._read_carried(owed, source)
        messages.update((m.id, m) for m in carried)
        ordered = sorted(messages.values(), key=lambda m: m.headers.received or _EARLIEST)
        self._changes = ChangeRun(Cursor(mark, found.link), {m.id: m.headers for m in ordered}, unread)
        log.info(
            "%s: %s: %d new or changed messages, %d gone, %d carried from the last run, %d requests",
            self._where,
            "full round" if found.full else "changes since the last run",
            len(found.changed),
            found.removed,
            len(carried),
            found.requests,
        )
        return ordered

    def _read_carried(self, ids: list[str], source: str) -> tuple[list[GraphMessage], list[str]]:
        """The carried messages still in the source folder (read in batches), and the ids that could not be read
        now (throttled, Graph failing): carried on again."""
        if not ids:
            return [], []
        query = f"$select={','.join([*LIST_FIELDS, 'parentFolderId'])}&$expand=attachments($select={ATTACHMENT_FIELDS})"
        requests = [BatchRequest("GET", f"{self._user_path}/messages/{quote(i, safe='')}?{query}") for i in ids]
        try:
            answers = self.session.batch(requests)
        except Exception as err:
            action = f"reading {len(ids)} messages left from the last run"
            raise self._translate(err, action, message_level=False) from err
        found: list[GraphMessage] = []
        unread: list[str] = []
        for message_id, answer in zip(ids, answers, strict=True):
            if answer.ok and isinstance(answer.body, dict):
                if answer.body.get("parentFolderId") == source:
                    found.append(message_of(answer.body))
            elif answer.status != 404:  # 404: gone (deleted, or moved by someone: a new id)
                unread.append(message_id)
        return found, unread

    def _delta_query(self) -> dict[str, str]:
        query = {"$select": ",".join(LIST_FIELDS), "$expand": f"attachments($select={ATTACHMENT_FIELDS})"}
        max_age = self.account.filters.max_age_days
        if max_age:
            query["$filter"] = f"receivedDateTime ge {odata_time(self._clock() - timedelta(days=max_age))}"
        return query

    def _save_cursor(self) -> None:
        """At the end of a session that did not fail: the next run starts where this one's delta round ended, and
        reads again the listed messages that passed the filters and are still in the folder."""
        run, self._changes = self._changes, None
        if run is None or self._cursors is None or not self._keep_cursor:
            return
        now = self._clock()
        owed = [i for i in run.listed if i not in self._settled and i not in self._left]
        owed = [i for i in owed if self.passes_filters(run.listed[i], now)]
        owed = list(dict.fromkeys([*owed, *run.unread]))
        cursor: Cursor | None = Cursor(run.cursor.fingerprint, run.cursor.link, owed)
        if run.cursor.link is None or len(owed) > MAX_CARRY:
            log.info("%s: %d messages still to do: the next run lists the whole folder", self._where, len(owed))
            cursor = None
        try:
            self._cursors.record_cursor(self.account.name, CURSOR_NAME, cursor.dumps() if cursor else None)
        except Exception as err:  # noqa: BLE001 - the old cursor stays: the next run asks for the same changes
            log.warning("%s: could not keep the delta cursor (%s); the next run reads these again", self._where, err)

    def _query(self) -> dict[str, str]:
        max_age = self.account.filters.max_age_days
        query = {
            "$select": ",".join(LIST_FIELDS),
            "$expand": f"attachments($select={ATTACHMENT_FIELDS})",
            "$orderby": "receivedDateTime asc",
            "$top": str(self._page_size),
        }
        if max_age:
            # Graph wants the $orderby property first in $filter: both are receivedDateTime here.
            query["$filter"] = f"receivedDateTime ge {odata_time(self._clock() - timedelta(days=max_age))}"
        return query


@dataclass
class ChangeRun:
    """A session's delta round: the cursor it leads to, the messages it listed (headers, for the filters), the
    carried ids it could not read."""

    cursor: Cursor
    listed: dict[str, MessageHeaders]
    unread: list[str]
