"""Microsoft 365 mailboxes through Microsoft Graph (msgraph-sdk), behind the Mailbox protocol of ``base``.

* Folders by path: ``Inbox/Suppliers`` is the well-known folder ``inbox``, then its child ``Suppliers`` by display
  name (case-insensitive); a first part that is not a well-known name is a top-level folder. Target folders are
  created with their parents when missing.
* Listing: the source folder's messages oldest first, page by page (``@odata.nextLink``), only the fields needed,
  each with its attachments' metadata (``$expand=attachments($select=...)``, never their content), ``max_age_days``
  filtered by Graph. Every page is read before the first message is handled, because Graph pages by offset and
  moving messages out of the folder would shift the later pages. Reading a listed message costs no request.
* Ids are immutable (``Prefer: IdType="ImmutableId"``, set by the request guard): the id recorded in the state store
  still names the message after it moved.
* Reading: file attachments become :class:`~ingest.extraction.Candidate` objects. Small ones (listed size up to
  :data:`BATCHED_ATTACHMENT_BYTES`) are fetched ahead with their ``contentBytes`` in JSON batches: reading a
  message fetches its own and those of the next listed messages the filters let through, up to
  :data:`~ingest.graph.client.MAX_BATCH` attachments or :data:`FETCH_AHEAD_BYTES` per batch. Bigger ones are
  streamed from ``/attachments/{id}/$value`` into memory or a temporary file only when extraction asks for them,
  and never beyond the account's size limit (one listed well above it is not downloaded at all). An attached mail
  (item attachment) is downloaded as MIME and goes through :func:`~ingest.extraction.extract_from_mime` exactly as
  an attached message/rfc822 part of an IMAP message: the .eml and its own attachments. A reference attachment (a
  cloud link) is reported as skipped. ``import: message|both`` reads the message's MIME instead. The one selection
  path (:func:`~ingest.extraction.select_documents`) decides inline images, names and filters.
* Settling moves the message; nothing is ever deleted. :meth:`GraphMailbox.settle_many` moves many in JSON batches
  (20 moves a request) and returns the ones Graph refused, which stay where they are.

Errors: what stops the account (sign-in, access denied, folder missing) is AccountError; what stops this run only
(Graph unreachable, still throttled after retries, time budget) is ConnectionLost; a message that cannot be read
is DocumentError.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx

from .. import model
from ..config import Filters, GraphAccount
from ..errors import AccountError, ConnectionLost, DocumentError, IngestError, UnreadableMessage
from ..extraction import (
    FORWARDED_STEM,
    MAX_TNEF_BYTES,
    TNEF_TYPES,
    Candidate,
    extract_from_mime,
    is_tnef_part,
    message_identity,
    select_documents,
    tnef_candidates,
)
from ..filters import message_passes_filters
from ..graph.auth import graph_token_source
from ..graph.client import (
    MAX_BATCH,
    RETRY_STATUSES,
    BatchAnswer,
    BatchRequest,
    GraphFailure,
    GraphSession,
    failure_of,
)
from ..graph.delta import CURSOR_NAME, MAX_CARRY, Cursor, CursorStore, fingerprint, read_round
from ..graph.delta import PAGE_SIZE as DELTA_PAGE_SIZE
from ..graph.token_cache import TokenCacheStore
from ..mailbody import read_body
from ..model import Blob, BlobWriter, Extraction, MessageHeaders, MessageRef, SkippedPart
from ..network import Proxies
from ..rawmail import RawMail
from ..retry import default_policy
from ..rules import MessageFacts
from .base import ExtractionOptions, Outcome

if TYPE_CHECKING:
    from msgraph import GraphServiceClient

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
WELL_KNOWN_FOLDERS = frozenset(
    {
        "archive", "clutter", "conflicts", "conversationhistory", "deleteditems", "drafts", "inbox", "junkemail",
        "localfailures", "msgfolderroot", "outbox", "recoverableitemsdeletions", "scheduled", "searchfolders",
        "sentitems", "serverfailures", "syncissues",
    }
)  # fmt: skip
LIST_FIELDS = [
    "id", "internetMessageId", "subject", "from", "sender", "receivedDateTime", "hasAttachments", "toRecipients",
    "ccRecipients",
]  # fmt: skip
ATTACHMENT_FIELDS = "id,name,contentType,size,isInline"
# Graph's attachment size counts the attachment's properties too; only well above the limit is it surely too big.
SIZE_SLACK = 256 * 1024
REFERENCE_REASON = "cloud link, not importable"
# File attachments up to this listed size come with their content (base64 in JSON) in a batch; bigger ones are
# streamed from /$value when extraction asks for them.
BATCHED_ATTACHMENT_BYTES = 1024 * 1024
FETCH_AHEAD_BYTES = 8 * 1024 * 1024  # listed size of the attachments fetched in one batch
_EARLIEST = datetime.min.replace(tzinfo=UTC)


class GraphMailbox:
    def __init__(
        self,
        account: GraphAccount,
        secrets: Callable[[str], str],
        *,
        authority_host: str,
        graph_endpoint: str,
        ca_file: str | None,
        deadline: float | None,
        token_cache: TokenCacheStore | None = None,
        assertion_credential: Any = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        cursors: CursorStore | None = None,
        keep_cursor: bool = True,
        proxies: Proxies | None = None,
    ) -> None:
        """With ``cursors`` (the state store) the source folder is read by delta query (``ingest.graph.delta``),
        and unless ``keep_cursor`` is False (a dry run) the cursor moves on when the session ends without an
        exception; without, every listing is a full one."""
        self.account = account
        self._secrets = secrets
        self._authority_host = authority_host
        self._graph_endpoint = graph_endpoint.rstrip("/")
        self._ca_file = ca_file
        self._proxies = proxies or Proxies()
        self._deadline = deadline
        self._token_cache = token_cache
        self._assertion_credential = assertion_credential
        self._page_size = page_size
        self._where = f"account {account.name} (mailbox {account.mailbox})"
        self._session: GraphSession | None = None
        self._folders: dict[str, str] = {}  # lower-cased path -> folder id
        # The listing, for reading without a request: message id -> listed message (until read), and the order.
        self._listed: dict[str, GraphMessage] = {}
        self._order: list[str] = []
        self._position: dict[str, int] = {}
        # Small attachments fetched ahead: message id -> attachment id -> content, or why it could not be fetched.
        self._fetched: dict[str, dict[str, bytes | IngestError]] = {}
        self._windows: dict[str, _Window] = {}  # message id -> the batch of attachments planned for it
        self._fetch_lock = threading.Lock()
        self._cursors = cursors
        self._keep_cursor = keep_cursor
        self._changes: _ChangeRun | None = None  # this session's delta round, for the cursor at its end
        self._settled: set[str] = set()  # ids moved out of the source folder by this session
        self._left: set[str] = set()  # ids the pipeline leaves in the folder on purpose (a rule said skip)

    # --- session --------------------------------------------------------------------------------------------

    def __enter__(self) -> GraphMailbox:
        tokens = graph_token_source(
            self.account,
            self._secrets,
            authority_host=self._authority_host,
            graph_endpoint=self._graph_endpoint,
            ca_file=self._ca_file,
            token_cache=self._token_cache,
            assertion_credential=self._assertion_credential,
            proxies=self._proxies,
        )
        self._session = GraphSession(
            self._graph_endpoint,
            tokens,
            ca_file=self._ca_file,
            deadline=self._deadline,
            where=self._where,
            proxy=self._proxies.for_url(self._graph_endpoint),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if exc and exc[0] is None:
            self._save_cursor()
        self._cancel_windows()
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def session(self) -> GraphSession:
        if self._session is None:
            raise RuntimeError("GraphMailbox used outside its with-block")
        return self._session

    @property
    def _user(self) -> Any:
        client: GraphServiceClient = self.session.client
        return client.users.by_user_id(self.account.mailbox)

    @property
    def _user_path(self) -> str:
        return f"/users/{quote(self.account.mailbox, safe='')}"

    def _call(self, action: str, make: Callable[[], Any], *, message_level: bool = False) -> Any:
        try:
            return self.session.run(make)
        except Exception as err:
            raise self._translate(err, action, message_level=message_level) from err

    def _translate(self, err: Exception, action: str, *, message_level: bool) -> Exception:
        if isinstance(err, IngestError):
            return err
        where = self._where
        failure = failure_of(err)
        if failure is None:
            if isinstance(err, httpx.TimeoutException):
                return ConnectionLost(f"{where}: Graph did not answer in time while {action}")
            if isinstance(err, httpx.TransportError):
                return ConnectionLost(
                    f"{where}: connection to Graph ({self._graph_endpoint}) failed while {action}: "
                    f"{type(err).__name__}: {err}"
                )
            return err
        detail = f"{failure.status} {failure.code}: {failure.message}".strip()
        if failure.status == 401:
            return AccountError(
                f"{where}: Graph refused the access token while {action} ({detail}), even after renewing it; check "
                "the app registration's API permissions and GRAPH_ENDPOINT"
            )
        if failure.status == 403:
            return AccountError(
                f"{where}: Graph denied access to the mailbox while {action} ({detail}): {self._access_advice()}"
            )
        if failure.status == 404 and failure.code in (
            "ErrorInvalidUser",
            "MailboxNotEnabledForRESTAPI",
            "ResourceNotFound",
        ):
            return AccountError(
                f"{where}: mailbox {self.account.mailbox!r} not found ({detail}): check 'mailbox' (the user principal "
                "name or primary address of an Exchange Online mailbox)"
            )
        if failure.status in RETRY_STATUSES or failure.status >= 500:
            return ConnectionLost(
                f"{where}: Graph still answers {detail} after retries while {action}; the rest waits for the next run"
            )
        if message_level:
            return DocumentError(f"{where}: Graph refused {action}: {detail}")
        return AccountError(f"{where}: Graph refused {action}: {detail}")

    def _access_advice(self) -> str:
        if self.account.auth in ("password", "device_code"):
            return (
                "the signed-in user must own the mailbox or have full access to it, and the app needs the delegated "
                "permission Mail.ReadWrite"
            )
        return (
            "the app registration needs the application permission Mail.ReadWrite with admin consent, and when "
            "Exchange limits the app to some mailboxes (RBAC for Applications management scope, or an application "
            "access policy) this mailbox must be in that scope"
        )

    # --- folders --------------------------------------------------------------------------------------------

    def _folder_id(self, path: str, *, create: bool) -> str | None:
        """The id of a folder path; created with its parents when ``create``, else None when missing."""
        parts = [p.strip() for p in path.strip("/").split("/") if p.strip()]
        key = "/".join(parts).lower()
        if key in self._folders:
            return self._folders[key]
        parent: str | None = None
        for depth, name in enumerate(parts):
            prefix = "/".join(parts[: depth + 1]).lower()
            if prefix in self._folders:
                parent = self._folders[prefix]
                continue
            found: str | None
            if depth == 0 and name.lower() in WELL_KNOWN_FOLDERS:
                well_known = name.lower()
                found = self._call(f"opening folder {name!r}", lambda n=well_known: self._get_folder(n))  # type: ignore[misc]
            else:
                found = self._call(f"looking up folder {name!r}", lambda p=parent, n=name: self._find_child(p, n))  # type: ignore[misc]
                if found is None and create:
                    found = self._call(f"creating folder {name!r}", lambda p=parent, n=name: self._create_child(p, n))  # type: ignore[misc]
                    log.info("%s: created folder %s", self._where, "/".join(parts[: depth + 1]))
            if found is None:
                return None
            self._folders[prefix] = parent = found
        return parent

    async def _get_folder(self, name: str) -> str:
        folder = await self._user.mail_folders.by_mail_folder_id(name).get()
        return str(folder.id)

    def _children(self, parent: str | None) -> Any:
        folders = self._user.mail_folders
        return folders if parent is None else folders.by_mail_folder_id(parent).child_folders

    async def _find_child(self, parent: str | None, name: str) -> str | None:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.mail_folders.item.child_folders.child_folders_request_builder import (
            ChildFoldersRequestBuilder,
        )
        from msgraph.generated.users.item.mail_folders.mail_folders_request_builder import MailFoldersRequestBuilder

        builder = self._children(parent)
        condition = "displayName eq '" + name.replace("'", "''") + "'"  # OData doubles a quote inside a literal
        select = ["id", "displayName"]
        parameters: Any = (
            MailFoldersRequestBuilder.MailFoldersRequestBuilderGetQueryParameters(filter=condition, select=select)
            if parent is None
            else ChildFoldersRequestBuilder.ChildFoldersRequestBuilderGetQueryParameters(
                filter=condition, select=select
            )
        )
        page = await builder.get(RequestConfiguration(query_parameters=parameters))
        for folder in (page.value if page else None) or []:
            if (folder.display_name or "").lower() == name.lower():
                return str(folder.id)
        return None

    async def _create_child(self, parent: str | None, name: str) -> str:
        from msgraph.generated.models.mail_folder import MailFolder

        try:
            folder = await self._children(parent).post(MailFolder(display_name=name))
        except Exception as err:
            failure = failure_of(err)
            if failure is not None and failure.status == 409:  # made meanwhile by someone else
                found = await self._find_child(parent, name)
                if found is not None:
                    return found
            raise
        return str(folder.id)

    def _require_folder(self, path: str, *, create: bool) -> str:
        folder_id = self._folder_id(path, create=create)
        if folder_id is None:
            raise AccountError(f"{self._where}: folder {path!r} not found in the mailbox (check 'folder')")
        return folder_id

    # --- the Mailbox protocol ---------------------------------------------------------------------------------

    def source_folder_id(self) -> str:
        """The id of the source folder; AccountError when it does not exist."""
        return self._require_folder(self.account.folder, create=False)

    def failure(self, err: Exception, action: str) -> Exception:
        """Our error for a Graph request of the account's that failed while ``action`` (subscription upkeep)."""
        return self._translate(err, action, message_level=False)

    def check(self) -> list[str]:
        self.session.tokens.token()
        notes = [f"signed in to Entra ID ({self.account.auth})"]
        source = self._require_folder(self.account.folder, create=False)
        folder = self._call(
            f"opening folder {self.account.folder!r}",
            lambda: self._user.mail_folders.by_mail_folder_id(source).get(),
        )
        notes.append(f"source folder {self.account.folder!r}: {folder.total_item_count or 0} messages")
        for label, path in (("processed", self.account.processed_folder), ("failed", self.account.failed_folder)):
            if self._folder_id(path, create=False) is None:
                notes.append(f"{label} folder {path!r} does not exist yet; it is created on the first move")
            else:
                notes.append(f"{label} folder {path!r} exists")
        return notes

    def describe_targets(self) -> list[str]:
        return []  # folders by display name, found on the first move; test-login says whether they exist

    def ensure_targets(self) -> None:
        """Nothing ahead of time: Graph folders are display names under a known parent, which Graph does not refuse
        the way an IMAP server refuses a name outside its namespace; they are made by the first move."""

    def list_messages(self) -> Iterator[MessageRef]:
        source = self._require_folder(self.account.folder, create=False)
        self._listed.clear()
        self._fetched.clear()
        self._cancel_windows()
        cursors = self._cursors
        messages = self._list_changes(source, cursors) if cursors is not None else self._list_all(source)
        refs = [MessageRef(ref=m.id, key=m.id, headers=m.headers) for m in messages]
        self._listed.update((m.id, m) for m in messages)
        self._order = [ref.ref for ref in refs]
        self._position = {message_id: index for index, message_id in enumerate(self._order)}
        yield from refs

    def _list_all(self, source: str) -> list[GraphMessage]:
        """Every message in the folder, oldest first, page by page."""
        messages: list[GraphMessage] = []
        action = f"listing folder {self.account.folder!r}"
        page = self._get_json(action, f"{self._user_path}/mailFolders/{quote(source, safe='')}/messages", self._query())
        while True:
            messages.extend(_message(data) for data in page.get("value") or [])
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
        messages = {m.id: m for m in map(_message, found.changed)}
        owed = [i for i in (stored.carry if stored is not None else []) if i not in messages]
        carried, unread = self._read_carried(owed, source)
        messages.update((m.id, m) for m in carried)
        ordered = sorted(messages.values(), key=lambda m: m.headers.received or _EARLIEST)
        self._changes = _ChangeRun(Cursor(mark, found.link), {m.id: m.headers for m in ordered}, unread)
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
                    found.append(_message(answer.body))
            elif answer.status != 404:  # 404: gone (deleted, or moved by someone: a new id)
                unread.append(message_id)
        return found, unread

    def _delta_query(self) -> dict[str, str]:
        query = {"$select": ",".join(LIST_FIELDS), "$expand": f"attachments($select={ATTACHMENT_FIELDS})"}
        max_age = self.account.filters.max_age_days
        if max_age:
            query["$filter"] = f"receivedDateTime ge {_odata_time(datetime.now(UTC) - timedelta(days=max_age))}"
        return query

    def _save_cursor(self) -> None:
        """At the end of a session that did not fail: the next run starts where this one's delta round ended, and
        reads again the listed messages that passed the filters and are still in the folder."""
        run, self._changes = self._changes, None
        if run is None or self._cursors is None or not self._keep_cursor:
            return
        now = datetime.now(UTC)
        filters = self.account.filters
        owed = [i for i in run.listed if i not in self._settled and i not in self._left]
        owed = [i for i in owed if message_passes_filters(run.listed[i], filters, now) is None]
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
            query["$filter"] = f"receivedDateTime ge {_odata_time(datetime.now(UTC) - timedelta(days=max_age))}"
        return query

    def _get_json(
        self, action: str, url: str, query: dict[str, str] | None = None, *, message_level: bool = False
    ) -> Any:
        try:
            return self.session.get_json(url, query)
        except Exception as err:
            raise self._translate(err, action, message_level=message_level) from err

    def read(self, ref: MessageRef) -> GraphMailItem:
        """The message as listed (no request), or as Graph gives it now when this session did not list it; its
        small attachments, and those of the next messages, fetched ahead. Raises DocumentError (or what stops the
        run) when one of its own attachments could not be fetched."""
        message = self._listed.pop(ref.ref, None)
        if message is None:
            query = {"$select": ",".join(LIST_FIELDS), "$expand": f"attachments($select={ATTACHMENT_FIELDS})"}
            url = f"{self._user_path}/messages/{quote(ref.ref, safe='')}"
            message = _message(self._get_json(f"reading message {ref.key}", url, query, message_level=True))
        if self.account.import_ != "message":
            self._fetch_ahead(message.id, message)
            problems = [p for p in self._fetched.get(message.id, {}).values() if isinstance(p, IngestError)]
            if problems:
                self._fetched.pop(message.id, None)
                raise problems[0]
        return GraphMailItem(self, message)

    # --- small attachments fetched ahead in batches -----------------------------------------------------------

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

    def _plan(self, message_id: str, message: GraphMessage, position: int | None, *, reading: bool) -> _Window:
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
        window = _Window(wanted, last, self.session.start_batch(requests) if requests else None)
        covered = self._order[position : last + 1] if position is not None else [message_id]
        for covered_id in covered:
            self._windows.setdefault(covered_id, window)
        return window

    def _receive(self, window: _Window) -> None:
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
        return message_passes_filters(message.headers, self.account.filters, datetime.now(UTC)) is None

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

    def _refusal(self, failure: GraphFailure, action: str) -> IngestError:
        problem = self._translate(failure, action, message_level=True)
        return problem if isinstance(problem, IngestError) else DocumentError(f"{self._where}: {action}: {failure}")

    def leave(self, ref: MessageRef) -> None:
        """Not carried to the next run: only a change of the message, or of the rules, shows it again."""
        self._left.add(ref.ref)

    def settle(self, ref: MessageRef, outcome: Outcome) -> None:
        path = self.account.processed_folder if outcome == "processed" else self.account.failed_folder
        target = self._require_folder(path, create=True)
        try:
            self.session.run(lambda: self._move(ref.ref, target))
        except Exception as err:
            failure = failure_of(err)
            if failure is not None and failure.status == 404 and self._already_in(ref.ref, target):
                self._settled.add(ref.ref)
                return  # an earlier attempt moved it and the answer got lost
            raise self._translate(err, f"moving message {ref.key} to {path!r}", message_level=True) from err
        self._settled.add(ref.ref)
        log.info("%s: message %s moved to %s", self._where, ref.key, path)

    async def _move(self, message_id: str, target: str) -> None:
        from msgraph.generated.users.item.messages.item.move.move_post_request_body import MovePostRequestBody

        await self._user.messages.by_message_id(message_id).move.post(MovePostRequestBody(destination_id=target))

    settles_in_batches = True

    def settle_many(self, refs: Sequence[MessageRef], outcome: Outcome) -> dict[str, IngestError]:
        """Move messages to the processed or failed folder in JSON batches (20 moves a request, throttled ones
        sent again after Retry-After). Returns, by message key, why Graph did not move a message: those stay in
        the source folder and must not be counted as settled. Raises what stops the run or the account when the
        batches themselves fail."""
        if not refs:
            return {}
        path = self.account.processed_folder if outcome == "processed" else self.account.failed_folder
        target = self._require_folder(path, create=True)
        requests = [
            BatchRequest(
                "POST", f"{self._user_path}/messages/{quote(ref.ref, safe='')}/move", {"destinationId": target}
            )
            for ref in refs
        ]
        try:
            answers = self.session.batch(requests)
        except Exception as err:
            raise self._translate(err, f"moving {len(refs)} messages to {path!r}", message_level=False) from err
        failures: dict[str, IngestError] = {}
        for ref, answer in zip(refs, answers, strict=True):
            if answer.ok:
                self._settled.add(ref.ref)
                continue
            failure = answer.failure()
            if failure.status == 404 and self._already_in(ref.ref, target):
                self._settled.add(ref.ref)
                continue  # an earlier attempt moved it and the answer got lost
            failures[ref.key] = self._refusal(failure, f"moving message {ref.key} to {path!r}")
            log.warning("%s: message %s not moved to %s: %s", self._where, ref.key, path, failures[ref.key])
        log.info("%s: %d messages moved to %s", self._where, len(refs) - len(failures), path)
        return failures

    def restore(self, key: str, identity: str | None) -> bool:
        """``retry``: move a message (by its immutable id, which survives the moves) back to the source folder,
        where the next import takes it. False when the mailbox no longer has it."""
        message_id = key
        source = self._require_folder(self.account.folder, create=False)
        try:
            self.session.run(lambda: self._move(message_id, source))
        except Exception as err:
            failure = failure_of(err)
            if failure is not None and failure.status == 404:
                return False
            raise self._translate(
                err, f"moving message {message_id} back to {self.account.folder!r}", message_level=False
            ) from err
        log.info("%s: message %s moved back to %s for a retry", self._where, message_id, self.account.folder)
        return True

    def _already_in(self, message_id: str, folder_id: str) -> bool:
        try:
            message = self.session.run(lambda: self._user.messages.by_message_id(message_id).get())
        except Exception:  # noqa: BLE001 - a message we cannot see is not where we wanted it
            return False
        return message is not None and message.parent_folder_id == folder_id

    # --- downloads for the mail items -----------------------------------------------------------------------

    def download_blob(self, path: str, *, what: str, limit: int | None = None, spill: bool = True) -> Blob:
        """The body of ``path`` (below the user), in memory or, when big, a temporary file; retried when the
        connection breaks in the middle."""
        policy = default_policy()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.session.download_blob(self._user_path + path, limit=limit, spill=spill)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout) as err:
                # The connection broke in the middle of the body, which the request guard does not see.
                if attempt >= policy.attempts:
                    raise self._translate(err, f"downloading {what}", message_level=True) from err
                log.info("%s: download of %s broke off (%s); trying again", self._where, what, err)
                policy.sleep(policy.delay(attempt))
            except Exception as err:
                raise self._translate(err, f"downloading {what}", message_level=True) from err


@dataclass
class _ChangeRun:
    """A session's delta round: the cursor it leads to, the messages it listed (headers, for the filters), the
    carried ids it could not read."""

    cursor: Cursor
    listed: dict[str, MessageHeaders]
    unread: list[str]


@dataclass
class _Window:
    """One batch of small attachments fetched ahead: what it asks for, the position of the last message it
    covers in the listing, its answers on their way."""

    wanted: list[tuple[str, GraphAttachment]]
    last: int
    future: concurrent.futures.Future[list[BatchAnswer]] | None
    received: bool = False


@dataclass(frozen=True)
class _AttachmentsOnly:
    """The account's options with import: attachments, for the mail inside an item attachment."""

    include_inline: bool
    filters: Filters
    import_: Literal["attachments", "message", "both"] = "attachments"


class GraphMailItem:
    """One Graph message: headers from Graph's fields, documents on demand."""

    def __init__(self, mailbox: GraphMailbox, message: GraphMessage) -> None:
        self._mailbox = mailbox
        self.id = message.id
        self.headers = message.headers
        self.attachments = message.attachments
        self.recipients = message.recipients
        self._facts: MessageFacts | None = None

    @property
    def identity(self) -> str:
        # The same as an IMAP message's: the Message-ID, so a mailbox moved between protocols is not re-imported.
        if self.headers.message_id:
            return message_identity(self.headers, b"")
        return f"graph:{self.id}"

    def close(self) -> None:
        """Nothing kept on disk: the temporary files of big documents belong to their extraction."""

    def facts(self) -> MessageFacts:
        """Recipients and attachment names as listed; the body from the message's MIME, downloaded when asked."""
        if self._facts is None:
            url = f"/messages/{quote(self.id, safe='')}/$value"
            self._facts = MessageFacts(
                self.headers,
                self.recipients,
                lambda: [a.name for a in self.attachments if a.name and a.kind in ("file", "item")],
                lambda: read_body(RawMail.of(self._download_mail(url, "the message"))),
            )
        return self._facts

    def extract(self, options: ExtractionOptions) -> Extraction:
        references = [
            SkippedPart(a.name or "link", REFERENCE_REASON) for a in self.attachments if a.kind == "reference"
        ]
        if options.import_ in ("message", "both"):
            raw = self._download_mail(f"/messages/{quote(self.id, safe='')}/$value", "the message")
            extraction = extract_from_mime(raw, options)
            extraction.skipped.extend(references)
            return extraction
        notes: list[SkippedPart] = []
        extraction = select_documents(self._candidates(options, notes), options)
        extraction.skipped.extend(notes)
        extraction.skipped.extend(references)
        return extraction

    def _candidates(self, options: ExtractionOptions, notes: list[SkippedPart]) -> Iterator[Candidate]:
        limit = options.filters.max_attachment_bytes
        for index, attachment in enumerate(self.attachments, 1):
            path = f"g{index}"
            kind = attachment.kind
            if kind == "file" and self._may_be_tnef(attachment, limit):
                # A winmail.dat is unpacked as it is from IMAP: its files are the candidates (read whole, uncut).
                load = _once(self._loader(attachment, None))
                content_type = attachment.content_type or "application/octet-stream"
                if is_tnef_part(content_type, attachment.name, load):
                    yield from tnef_candidates(attachment.name, path, load, notes)
                    continue
                yield Candidate(
                    attachment.name,
                    content_type,
                    path,
                    load,
                    is_inline=attachment.is_inline,
                    content_id=attachment.content_id,
                )
            elif kind == "file":
                size = attachment.size
                yield Candidate(
                    attachment.name,
                    attachment.content_type or "application/octet-stream",
                    path,
                    self._loader(attachment, limit),
                    # A listed size only decides "too large" when it is well above the limit (see SIZE_SLACK).
                    size=size if limit is not None and size > limit + SIZE_SLACK else None,
                    is_inline=attachment.is_inline,
                    content_id=attachment.content_id,
                )
            elif kind == "item":
                yield from self._attached_mail(attachment, path, options, notes)
            elif kind != "reference":  # references are reported by extract()
                notes.append(SkippedPart(attachment.name or path, f"attachment of unknown type {kind!r}: not read"))

    @staticmethod
    def _may_be_tnef(attachment: GraphAttachment, limit: int | None) -> bool:
        """Worth reading whole to unpack: not surely over the size filter (as over IMAP, a part that is is left
        unread) nor over MAX_TNEF_BYTES (uploaded as it came)."""
        name = (attachment.name or "").lower()
        declared = (attachment.content_type or "").split(";", 1)[0].strip().lower()
        cap = MAX_TNEF_BYTES if limit is None else min(limit, MAX_TNEF_BYTES)
        small_enough = attachment.size <= cap + SIZE_SLACK
        return small_enough and (declared in TNEF_TYPES or name.endswith(".dat"))

    def _loader(self, attachment: GraphAttachment, limit: int | None) -> Callable[[], bytes | Blob]:
        url = f"/messages/{quote(self.id, safe='')}/attachments/{quote(attachment.id, safe='')}/$value"
        what = f"attachment {attachment.name!r}"

        def load() -> bytes | Blob:
            fetched = self._mailbox.take_fetched(self.id, attachment.id)
            if isinstance(fetched, IngestError):
                raise fetched
            if fetched is not None:
                return fetched
            # One byte more than the limit is enough for select_documents to see "too large".
            return self._mailbox.download_blob(url, what=what, limit=limit)

        return load

    def _attached_mail(
        self, attachment: GraphAttachment, path: str, options: ExtractionOptions, notes: list[SkippedPart]
    ) -> Iterator[Candidate]:
        """An attached mail as IMAP sees one: a message/rfc822 part, extracted by the one MIME path."""
        url = f"/messages/{quote(self.id, safe='')}/attachments/{quote(attachment.id, safe='')}/$value"
        mime = self._download_mail(url, f"the attached mail {attachment.name!r}")
        wrapper = _as_attached_message(attachment.name or "", mime)
        mime.close()
        try:
            inner = extract_from_mime(
                wrapper, _AttachmentsOnly(options.include_inline, options.filters), message_stem=FORWARDED_STEM
            )
        finally:
            wrapper.close()  # every document of it is read by now
        notes.extend(inner.skipped)
        for document in inner.documents:
            # The wrapper numbers the attached mail "1"; here it is this attachment's position.
            inner_path = document.key.rsplit(":", 1)[0]
            yield Candidate(
                document.filename,
                document.content_type,
                path + inner_path[1:],
                lambda blob=document.blob: blob,  # type: ignore[misc]  # the blob as extracted, not copied
                document.size,
                trusted_type=True,
            )

    def _download_mail(self, url: str, what: str) -> Blob:
        """A whole mail streamed into memory or a temporary file; over MAX_MESSAGE_BYTES it is not read further and
        its message goes to the failed folder (UnreadableMessage) with the reason."""
        limit = model.MAX_MESSAGE_BYTES
        blob = self._mailbox.download_blob(url, what=what, limit=limit)
        if blob.size > limit:
            blob.close()
            raise UnreadableMessage(f"{what} is more than {limit / 1048576:g} MB: not read")
        return blob


# --- Graph's JSON -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphAttachment:
    """An attachment as listed: what Graph says about it, never its content."""

    id: str
    kind: str  # "file", "item", "reference", or Graph's type for anything else
    name: str | None
    content_type: str | None
    size: int  # Graph's figure: the content and the attachment's properties
    is_inline: bool
    content_id: str | None = None


@dataclass(frozen=True)
class GraphMessage:
    """A message as listed: its id, the headers the pipeline needs, its attachments' metadata."""

    id: str
    headers: MessageHeaders
    attachments: tuple[GraphAttachment, ...]
    recipients: tuple[str, ...] = ()  # the addresses of To and Cc


def _message(data: Any) -> GraphMessage:
    if not isinstance(data, dict) or not data.get("id"):
        raise DocumentError(f"Graph sent a message without an id: {str(data)[:200]}")
    return GraphMessage(
        id=str(data["id"]),
        headers=_headers(data),
        attachments=tuple(_attachment(a) for a in data.get("attachments") or [] if isinstance(a, dict)),
        recipients=_recipients(data),
    )


def _recipients(data: dict[str, Any]) -> tuple[str, ...]:
    found = []
    for field in ("toRecipients", "ccRecipients"):
        for recipient in data.get(field) or []:
            address = ((recipient if isinstance(recipient, dict) else {}).get("emailAddress") or {}).get("address")
            if isinstance(address, str) and "@" in address:
                found.append(address.strip())
    return tuple(found)


def _attachment(data: dict[str, Any]) -> GraphAttachment:
    return GraphAttachment(
        id=str(data.get("id") or ""),
        kind=_kind(str(data.get("@odata.type") or "")),
        name=data.get("name"),
        content_type=data.get("contentType"),
        size=int(data.get("size") or 0),
        is_inline=bool(data.get("isInline")),
        content_id=data.get("contentId"),
    )


def _kind(odata_type: str) -> str:
    odata_type = odata_type.lower()
    for kind in ("file", "item", "reference"):
        if odata_type.endswith(f"{kind}attachment"):
            return kind
    return odata_type or "unknown"


def _headers(data: dict[str, Any]) -> MessageHeaders:
    sender = ""
    for field in ("from", "sender"):
        address = ((data.get(field) or {}).get("emailAddress") or {}).get("address")
        if address:
            sender = str(address)
            break
    internet_id = "".join(str(data.get("internetMessageId") or "").split()).strip("<>") or None
    received = _graph_time(data.get("receivedDateTime"))
    return MessageHeaders(
        message_id=internet_id, sender=sender, subject=str(data.get("subject") or ""), received=received
    )


def _graph_time(value: Any) -> datetime | None:
    """Graph's ``2024-05-01T08:00:00Z`` (fractions of up to seven digits, or an offset), as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())  # Python reads at most six fraction digits
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _as_attached_message(name: str, mime: Blob) -> Blob:
    """A one-part multipart/mixed holding ``mime`` as a message/rfc822 attachment called ``name``.eml, written
    chunk by chunk (a big mail goes to a temporary file, never whole in memory)."""
    boundary = f"=_graph_item_{uuid.uuid4().hex}".encode("ascii")
    filename = name if name.lower().endswith(".eml") else f"{name}.eml" if name.strip() else ""
    disposition = b"attachment"
    if filename:
        disposition += b"; filename*=utf-8''" + quote(filename, safe="").encode("ascii")
    writer = BlobWriter()
    try:
        writer.write(b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n')
        writer.write(
            b"--" + boundary + b"\r\nContent-Type: message/rfc822\r\nContent-Disposition: " + disposition + b"\r\n\r\n"
        )
        for chunk in mime.chunks():
            writer.write(chunk)
        writer.write(b"\r\n--" + boundary + b"--\r\n")
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def _once(load: Callable[[], bytes | Blob]) -> Callable[[], bytes | Blob]:
    """``load`` that downloads once: asking whether a .dat is TNEF and unpacking it read the same bytes."""
    loaded: list[bytes | Blob] = []

    def again() -> bytes | Blob:
        if not loaded:
            loaded.append(load())
        return loaded[0]

    return again


def _sizes(attachments: list[GraphAttachment]) -> int:
    return sum(attachment.size for attachment in attachments)


def _odata_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
