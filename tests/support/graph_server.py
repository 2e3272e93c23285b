"""A local Microsoft Graph v1.0 (the mail part) with an in-memory store, speaking the wire protocol msgraph-sdk uses.

Served under ``/v1.0``, for ``users/{id or UPN}`` and ``me``:

* ``mailFolders`` (GET list, POST create), ``mailFolders/{id or well-known name}``,
  ``mailFolders/{id}/childFolders`` (GET with ``$filter=displayName eq '...'``, POST create; 409 ErrorFolderExists);
* ``mailFolders/{id}/messages`` with ``$select``, ``$filter`` (``receivedDateTime ge ...``, ``and``), ``$orderby``
  (default: newest first, as Graph), ``$top`` (default 10), ``$skip`` and ``@odata.nextLink`` paging, ``$expand=
  attachments($select=...)``; Graph's rule that ``$orderby`` properties must lead the ``$filter`` (InefficientFilter);
* ``messages/{id}`` (same options), ``messages/{id}/$value`` (the MIME), ``messages/{id}/attachments``,
  ``messages/{id}/attachments/{id}`` (with ``contentBytes``), ``messages/{id}/attachments/{id}/$value`` (file bytes,
  streamed; the MIME of an attached mail), ``messages/{id}/move``;
* ``$batch`` (JSON batching, at most 20 requests; each answered on its own, faults included).

Message ids change when a message moves, unless the request says ``Prefer: IdType="ImmutableId"``; both kinds are
accepted as input. ``hasAttachments`` is false when a message has only inline attachments, as in Exchange.

Checks the bearer token with the Entra emulator (expired -> 401 InvalidAuthenticationToken; an app-only token needs
the Mail.ReadWrite role, a delegated one the Mail.ReadWrite scope and its own mailbox), denies mailboxes on request
(403 ErrorAccessDenied), injects faults (429/503/504 with Retry-After, dropped connections; a fault whose path
matches a request inside a ``$batch`` fails that request alone, as Graph answers each one), adds latency, and counts
requests and the peak of concurrent requests per mailbox (Exchange allows an app 4 at a time on a mailbox). A
``$batch`` counts as min(its requests, 4) concurrent requests on each mailbox it addresses: Graph hands up to four of
a batch's requests to Exchange at once. ``batched`` records the requests inside batches.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.policy
import json
import os
import re
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import quote, unquote, urlencode

from .entra_server import GRAPH_APP_ID, EntraEmulator, IssuedToken, TokenRejected
from .https_emulator import Emulator, Request, Response

WELL_KNOWN_FOLDERS = {
    "inbox": "Inbox",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "archive": "Archive",
    "outbox": "Outbox",
}
MAX_BATCH = 20
BATCH_PARALLELISM = 4  # requests of one $batch that Graph runs at once
CHUNK = 64 * 1024
_IMMUTABLE_PREFER = re.compile(r'IdType\s*=\s*"?ImmutableId"?', re.IGNORECASE)


def _new_id(prefix: str, size: int) -> str:
    return prefix + base64.urlsafe_b64encode(os.urandom(size)).decode()


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FileAttachment:
    name: str
    content: bytes
    content_type: str = "application/octet-stream"
    is_inline: bool = False
    content_id: str | None = None
    id: str = field(default_factory=lambda: _new_id("AAMkAGAtt", 30))

    kind = "file"

    @property
    def size(self) -> int:
        return len(self.content) + 200  # Graph's size counts the attachment's properties too


@dataclass
class ItemAttachment:
    name: str
    mime: bytes  # the attached mail
    id: str = field(default_factory=lambda: _new_id("AAMkAGItm", 30))
    is_inline: bool = False

    kind = "item"
    content_type = "message/rfc822"
    content_id = None

    @property
    def size(self) -> int:
        return len(self.mime) + 400


@dataclass
class ReferenceAttachment:
    name: str
    source_url: str
    id: str = field(default_factory=lambda: _new_id("AAMkAGRef", 30))
    is_inline: bool = False

    kind = "reference"
    content_type = None
    content_id = None
    size = 512


Attachment = FileAttachment | ItemAttachment | ReferenceAttachment


@dataclass
class Folder:
    id: str
    display_name: str
    parent_id: str | None
    well_known: str | None = None

    def json(self, store: MailboxStore) -> dict[str, Any]:
        messages = [m for m in store.messages.values() if m.folder_id == self.id]
        return {
            "id": self.id,
            "displayName": self.display_name,
            "parentFolderId": self.parent_id,
            "childFolderCount": len(store.children(self.id)),
            "unreadItemCount": sum(not m.is_read for m in messages),
            "totalItemCount": len(messages),
            "sizeInBytes": sum(m.size for m in messages),
            "isHidden": False,
        }


@dataclass
class Message:
    immutable_id: str
    rest_id: str
    folder_id: str
    subject: str
    sender: tuple[str, str]  # (name, address)
    received: dt.datetime
    internet_message_id: str
    body: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    mime: bytes | None = None  # served by /$value when set; built from the fields otherwise
    is_read: bool = False
    to: str = "invoices@contoso.example"

    @property
    def has_attachments(self) -> bool:
        return any(not a.is_inline for a in self.attachments)

    @property
    def size(self) -> int:
        return len(self.body) + sum(a.size for a in self.attachments)

    def json(self, immutable: bool) -> dict[str, Any]:
        name, address = self.sender
        who = {"emailAddress": {"name": name, "address": address}}
        stamp = _iso(self.received)
        return {
            "@odata.etag": 'W/"CQAAABYAAAA"',
            "id": self.immutable_id if immutable else self.rest_id,
            "createdDateTime": stamp,
            "lastModifiedDateTime": stamp,
            "changeKey": "CQAAABYAAAA",
            "categories": [],
            "receivedDateTime": stamp,
            "sentDateTime": stamp,
            "hasAttachments": self.has_attachments,
            "internetMessageId": self.internet_message_id,
            "subject": self.subject,
            "bodyPreview": self.body[:255],
            "importance": "normal",
            "parentFolderId": self.folder_id,
            "conversationId": "AAQkAGI2TG93AAA=",
            "isRead": self.is_read,
            "isDraft": False,
            "body": {"contentType": "text", "content": self.body},
            "sender": who,
            "from": who,
            "toRecipients": [{"emailAddress": {"name": "", "address": self.to}}],
            "ccRecipients": [],
            "bccRecipients": [],
            "replyTo": [],
            "flag": {"flagStatus": "notFlagged"},
        }

    def to_mime(self) -> bytes:
        if self.mime is None:
            self.mime = self._build_mime()  # once: the boundaries are random
        return self.mime

    def _build_mime(self) -> bytes:
        message = EmailMessage(policy=email.policy.SMTP)
        message["From"] = f"{self.sender[0]} <{self.sender[1]}>" if self.sender[0] else self.sender[1]
        message["To"] = self.to
        message["Subject"] = self.subject
        message["Date"] = format_datetime(self.received)
        message["Message-ID"] = self.internet_message_id
        message.set_content(self.body or "")
        for attachment in self.attachments:
            if isinstance(attachment, FileAttachment):
                maintype, _, subtype = attachment.content_type.partition("/")
                message.add_attachment(
                    attachment.content,
                    maintype=maintype,
                    subtype=subtype or "octet-stream",
                    filename=attachment.name,
                    disposition="inline" if attachment.is_inline else "attachment",
                    cid=f"<{attachment.content_id}>" if attachment.content_id else None,
                )
            elif isinstance(attachment, ItemAttachment):
                inner = email.message_from_bytes(attachment.mime, policy=email.policy.default)
                message.add_attachment(inner, filename=f"{attachment.name}.eml")  # type: ignore[arg-type]
        return message.as_bytes()


def attachment_json(attachment: Attachment, *, with_content: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "@odata.type": f"#microsoft.graph.{attachment.kind}Attachment",
        "id": attachment.id,
        "lastModifiedDateTime": "2024-05-01T10:00:00Z",
        "name": attachment.name,
        "contentType": attachment.content_type,
        "size": attachment.size,
        "isInline": attachment.is_inline,
    }
    if isinstance(attachment, FileAttachment):
        payload["contentId"] = attachment.content_id
        payload["contentLocation"] = None
        if with_content:
            payload["contentBytes"] = base64.b64encode(attachment.content).decode()
    return payload


class MailboxStore:
    """One user's mailbox: folders (well-known ones included) and messages."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.denied = False
        self.delegates: set[str] = set()  # users (UPN, lower case) who may open it with a delegated token
        self.folders: dict[str, Folder] = {}
        self.messages: dict[str, Message] = {}
        self._lock = threading.RLock()
        # Every arrival and move, in order: what delta queries report and what subscriptions notify of.
        self.changes: list[Change] = []
        self.listeners: list[Callable[[MailboxStore, Message, str | None], None]] = []
        self.root = self._add(Folder(_new_id("AAMkAGRoot", 33), "Top of Information Store", None, "msgfolderroot"))
        for name, display in WELL_KNOWN_FOLDERS.items():
            self._add(Folder(_new_id("AAMkAGFld", 33), display, self.root.id, name))

    def _add(self, folder: Folder) -> Folder:
        self.folders[folder.id] = folder
        return folder

    def children(self, folder_id: str) -> list[Folder]:
        return [f for f in self.folders.values() if f.parent_id == folder_id]

    def well_known(self, name: str) -> Folder | None:
        for folder in self.folders.values():
            if folder.well_known == name.lower():
                return folder
        return None

    def find(self, ref: str) -> Folder | None:
        """A folder by id or well-known name."""
        return self.folders.get(ref) or self.well_known(ref)

    def child(self, parent_id: str, display_name: str) -> Folder | None:
        for folder in self.children(parent_id):
            if folder.display_name.lower() == display_name.lower():
                return folder
        return None

    def create_folder(self, parent_id: str, display_name: str) -> Folder | None:
        """None when a folder of that name exists already."""
        with self._lock:
            if self.child(parent_id, display_name) is not None:
                return None
            return self._add(Folder(_new_id("AAMkAGFld", 33), display_name, parent_id))

    # --- helpers for tests --------------------------------------------------------------------------------

    def folder(self, path: str, *, create: bool = False) -> Folder:
        """``Inbox/Processed``: the first part a well-known name or a top-level display name."""
        first, *rest = path.strip("/").split("/")
        current = self.well_known(first) or self.child(self.root.id, first)
        if current is None:
            if not create:
                raise KeyError(path)
            current = self.create_folder(self.root.id, first)
            assert current is not None
        for part in rest:
            found = self.child(current.id, part)
            if found is None:
                if not create:
                    raise KeyError(path)
                found = self.create_folder(current.id, part)
                assert found is not None
            current = found
        return current

    def add_message(
        self,
        folder: str = "Inbox",
        *,
        subject: str = "Invoice",
        sender: tuple[str, str] | str = ("Supplier", "billing@supplier.example"),
        received: dt.datetime | None = None,
        attachments: list[Attachment] | None = None,
        body: str = "Please find the invoice attached.",
        internet_message_id: str | None = None,
        mime: bytes | None = None,
    ) -> Message:
        if isinstance(sender, str):
            sender = ("", sender)
        message = Message(
            immutable_id=_new_id("AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A", 33),
            rest_id=_new_id("AAMkAGI2", 40),
            folder_id=self.folder(folder, create=True).id,
            subject=subject,
            sender=sender,
            received=received or dt.datetime.now(dt.UTC),
            internet_message_id=internet_message_id or make_msgid(domain="supplier.example"),
            body=body,
            attachments=list(attachments or []),
            mime=mime,
        )
        with self._lock:
            self.messages[message.immutable_id] = message
            self._changed(message, None)
        return message

    def _changed(self, message: Message, left: str | None) -> None:
        """Log a change of ``message`` (it arrived, or left folder ``left``) and tell the listeners."""
        with self._lock:
            seq = len(self.changes) + 1
            self.changes.append(Change(seq, message.immutable_id, frozenset({message.folder_id, left or ""}) - {""}))
            listeners = list(self.listeners)
        for listener in listeners:
            listener(self, message, left)

    def messages_in(self, path: str) -> list[Message]:
        try:
            folder = self.folder(path)
        except KeyError:
            return []
        return sorted((m for m in self.messages.values() if m.folder_id == folder.id), key=lambda m: m.received)

    def message(self, ref: str) -> Message | None:
        found = self.messages.get(ref)
        if found is not None:
            return found
        for message in self.messages.values():
            if message.rest_id == ref:
                return message
        return None

    def move(self, message: Message, folder: Folder) -> None:
        with self._lock:
            if message.folder_id != folder.id:
                left, message.folder_id = message.folder_id, folder.id
                message.rest_id = _new_id("AAMkAGI2", 40)  # REST ids change with the folder
                self._changed(message, left)


@dataclass(frozen=True)
class Change:
    """One change in a mailbox: its sequence number, the message, the folders it touched (left and entered)."""

    seq: int
    message_id: str
    folders: frozenset[str]


@dataclass
class Fault:
    status: int | None  # None: drop the connection
    retry_after: float | None
    remaining: int | None
    method: str | None
    path_contains: str | None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    prefer: str
    mailbox: str | None
    status: int = 0


class _Problem(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    payload = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": _iso(dt.datetime.now(dt.UTC)),
                "request-id": str(uuid.uuid4()),
                "client-request-id": str(uuid.uuid4()),
            },
        }
    }
    return Response.json(status, payload, headers)


_THROTTLE_CODES = {
    429: ("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
    503: ("ServiceNotAvailable", "The service is temporarily unavailable. Please retry later."),
    504: ("UnknownError", "Gateway Timeout"),
}


class GraphEmulator(Emulator):
    name = "graph"

    def __init__(self, ssl_context: ssl.SSLContext | None, entra: EntraEmulator) -> None:
        super().__init__(ssl_context)
        self.entra = entra
        self.mailboxes: dict[str, MailboxStore] = {}
        self.requests: list[RecordedRequest] = []
        self.batched: list[RecordedRequest] = []  # the requests inside $batch requests
        self.faults: list[Fault] = []
        self.default_page_size = 10
        self.next_link_base: str | None = None  # scheme://host:port put in @odata.nextLink instead of our own
        self.mailbox_concurrency_limit: int | None = None  # answer 429 above this many (Exchange: 4)
        self._active: dict[str, int] = {}
        self.peak_concurrency: dict[str, int] = {}
        self._request_mailboxes: dict[int, dict[str, int]] = {}
        self.delta_generation = 0  # delta tokens of an older generation answer 410 syncStateNotFound
        from .graph_subscriptions import Subscriptions

        self.subscriptions = Subscriptions(self)

    @property
    def endpoint(self) -> str:
        """What GRAPH_ENDPOINT is set to (the SDK adds /v1.0)."""
        return self.base_url

    def add_mailbox(self, address: str) -> MailboxStore:
        store = MailboxStore(address)
        self.mailboxes[address.lower()] = store
        store.listeners.append(self.subscriptions.changed)
        return store

    def expire_delta_tokens(self) -> None:
        """Every delta and skip token handed out so far answers 410 syncStateNotFound from now on."""
        with self._lock:
            self.delta_generation += 1

    def deny(self, address: str) -> None:
        self.mailboxes[address.lower()].denied = True

    def inject(
        self,
        status: int | None = 429,
        *,
        retry_after: float | None = 1,
        times: int | None = 1,
        method: str | None = None,
        path_contains: str | None = None,
        drop: bool = False,
    ) -> None:
        """The next ``times`` matching requests fail (``drop``: the connection closes without an answer)."""
        with self._lock:
            self.faults.append(Fault(None if drop else status, retry_after, times, method, path_contains))

    def count(self, method: str | None = None, path_contains: str = "", status: int | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if method in (None, r.method) and path_contains in r.path and status in (None, r.status)
        )

    def reset_counters(self) -> None:
        """Forget the requests recorded and the concurrency peaks (not the faults)."""
        with self._lock:
            self.requests.clear()
            self.batched.clear()
            self.peak_concurrency.clear()

    # --- request bookkeeping ------------------------------------------------------------------------------

    @staticmethod
    def _mailbox_of(request: Request) -> str:
        parts = request.path.split("/")
        if len(parts) > 3 and parts[2].lower() == "users":
            return unquote(parts[3]).lower()
        return "me" if len(parts) > 2 and parts[2].lower() == "me" else parts[-1]

    @classmethod
    def _mailbox_weights(cls, request: Request) -> dict[str, int]:
        """Concurrent requests this one makes on each mailbox: 1, or for a $batch min(its requests, 4) on each
        mailbox its requests address."""
        if request.path.rstrip("/").lower() != "/v1.0/$batch":
            return {cls._mailbox_of(request): 1}
        try:
            items = (json.loads(request.body or b"null") or {}).get("requests") or []
            urls = [str(item.get("url", "")) for item in items]
        except (ValueError, AttributeError):
            return {"$batch": 1}
        counts: dict[str, int] = {}
        for url in urls:
            path = "/v1.0/" + url.partition("?")[0].lstrip("/")
            mailbox = cls._mailbox_of(Request("GET", path, path, {}, {}, b"", ""))
            counts[mailbox] = counts.get(mailbox, 0) + 1
        return {mailbox: min(count, BATCH_PARALLELISM) for mailbox, count in counts.items()} or {"$batch": 1}

    def request_started(self, request: Request) -> None:
        weights = self._mailbox_weights(request)
        with self._lock:
            for mailbox, weight in weights.items():
                self._active[mailbox] = active = self._active.get(mailbox, 0) + weight
                self.peak_concurrency[mailbox] = max(self.peak_concurrency.get(mailbox, 0), active)
            self._request_mailboxes[id(request)] = weights

    def request_finished(self, request: Request) -> None:
        with self._lock:
            for mailbox, weight in self._request_mailboxes.pop(id(request), {}).items():
                self._active[mailbox] -= weight

    def dispatch(self, request: Request) -> Response:
        record = RecordedRequest(
            request.method, request.path, dict(request.query), request.header("Prefer"), self._mailbox_of(request)
        )
        with self._lock:
            self.requests.append(record)
            active = max((self._active.get(m, 0) for m in self._request_mailboxes.get(id(request), {})), default=0)
        response = self._fault(request)
        if response is None and self.mailbox_concurrency_limit and active > self.mailbox_concurrency_limit:
            response = graph_error(429, *_THROTTLE_CODES[429], headers={"Retry-After": "1"})
        if response is None:
            response = super().dispatch(request)
        record.status = response.status if not response.drop else 0
        return response

    def _fault(self, request: Request, *, in_batch: bool = False) -> Response | None:
        with self._lock:
            for fault in self.faults:
                if fault.remaining is not None and fault.remaining <= 0:
                    continue
                if fault.status is None and in_batch:
                    continue  # a request inside a batch has no connection of its own to drop
                if fault.method not in (None, request.method):
                    continue
                if fault.path_contains is not None and fault.path_contains not in request.path:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                if fault.status is None:
                    return Response(drop=True)
                headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                return graph_error(fault.status, *_THROTTLE_CODES.get(fault.status, ("UnknownError", "Fault")), headers)
        return None

    # --- routing --------------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        segments = [unquote(s) for s in request.raw_path.split("/") if s]
        if not segments or segments[0] != "v1.0":
            return graph_error(400, "BadRequest", f"Invalid version: {segments[0] if segments else ''}")
        try:
            token = self._authenticate(request)
            if segments[1:] == ["$batch"] and request.method == "POST":
                return self._batch(request, token)
            return self._route(request, segments[1:], token)
        except _Problem as problem:
            return graph_error(problem.status, problem.code, problem.message, problem.headers)

    def _authenticate(self, request: Request) -> IssuedToken:
        header = request.header("Authorization")
        challenge = {
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
            f'oauth2/authorize", client_id="{GRAPH_APP_ID}"'
        }
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            raise _Problem(401, "InvalidAuthenticationToken", "Access token is empty.", challenge)
        try:
            return self.entra.validate(header[7:].strip(), {self.base_url, "https://graph.microsoft.com", GRAPH_APP_ID})
        except TokenRejected as err:
            raise _Problem(401, "InvalidAuthenticationToken", str(err), challenge) from None

    def _mailbox(self, token: IssuedToken, user: str) -> MailboxStore:
        if user.lower() == "me":
            if token.username is None:
                raise _Problem(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            user = token.username
        store = self.mailboxes.get(user.lower())
        if store is None:
            raise _Problem(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")
        if token.username is None:
            allowed = "Mail.ReadWrite" in token.roles
        else:
            allowed = "Mail.ReadWrite" in token.scopes and (
                token.username.lower() == store.address.lower() or token.username.lower() in store.delegates
            )
        if store.denied or not allowed:
            raise _Problem(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return store

    def _route(self, request: Request, segments: list[str], token: IssuedToken) -> Response:
        if segments and segments[0].lower() == "users" and len(segments) >= 2:
            store, rest = self._mailbox(token, segments[1]), segments[2:]
        elif segments and segments[0].lower() == "me":
            store, rest = self._mailbox(token, "me"), segments[1:]
        elif segments and segments[0].lower() == "subscriptions":
            return self.subscriptions.handle(request, segments[1:], token)
        else:
            raise _Problem(400, "BadRequest", f"Resource not found for the segment '{'/'.join(segments)}'.")
        lowered = [s.lower() for s in rest]
        method = request.method
        immutable = bool(_IMMUTABLE_PREFER.search(request.header("Prefer")))
        headers = {"Preference-Applied": 'IdType="ImmutableId"'} if immutable else {}
        if lowered == ["mailfolders"]:
            if method == "POST":
                return self._create_folder(request, store, store.root, headers)
            return self._list_folders(request, store, store.root, headers)
        if len(lowered) >= 2 and lowered[0] == "mailfolders":
            folder = store.find(rest[1])
            if folder is None:
                raise _Problem(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            tail = lowered[2:]
            if not tail and method == "GET":
                return Response.json(200, folder.json(store), headers)
            if tail == ["childfolders"]:
                if method == "POST":
                    return self._create_folder(request, store, folder, headers)
                return self._list_folders(request, store, folder, headers)
            if tail == ["messages"] and method == "GET":
                return self._list_messages(request, store, folder, immutable, headers)
            if tail == ["messages", "delta"] and method == "GET":
                from .graph_delta import delta_page

                return delta_page(self, request, store, folder, immutable, headers)
            if len(tail) >= 2 and tail[0] == "messages":
                return self._message_route(request, store, rest[3], rest[4:], immutable, headers)
        if len(lowered) >= 2 and lowered[0] == "messages":
            return self._message_route(request, store, rest[1], rest[2:], immutable, headers)
        raise _Problem(400, "BadRequest", f"Unsupported request {method} {'/'.join(rest)}")

    def _message_route(
        self, request: Request, store: MailboxStore, ref: str, tail: list[str], immutable: bool, headers: dict[str, str]
    ) -> Response:
        message = store.message(ref)
        if message is None:
            raise _Problem(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        method = request.method
        original, tail = tail, [t.lower() for t in tail]
        if not tail and method == "GET":
            return Response.json(200, self._message_json(request, message, immutable), headers)
        if tail == ["$value"] and method == "GET":
            mime = message.to_mime()
            return Response(200, mime, {"Content-Type": "text/plain", **headers})
        if tail == ["move"] and method == "POST":
            body = {k.lower(): v for k, v in (request.json() or {}).items()}  # the SDK sends "DestinationId"
            destination = body.get("destinationid", "")
            folder = store.find(destination)
            if folder is None:
                raise _Problem(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            store.move(message, folder)
            return Response.json(201, message.json(immutable), headers)
        if tail == ["attachments"] and method == "GET":
            select = _split_list(request.query.get("$select", ""))
            values = [_selected(attachment_json(a, with_content=not select), select) for a in message.attachments]
            return Response.json(200, {"value": values}, headers)
        if len(tail) >= 2 and tail[0] == "attachments":
            attachment = next((a for a in message.attachments if a.id == original[1]), None)
            if attachment is None:
                raise _Problem(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            if len(tail) == 2 and method == "GET":
                return Response.json(200, attachment_json(attachment, with_content=True), headers)
            if tail[2:] == ["$value"] and method == "GET":
                return _attachment_value(attachment)
        raise _Problem(400, "BadRequest", f"Unsupported request {method} on a message")

    # --- folders --------------------------------------------------------------------------------------------

    def _list_folders(self, request: Request, store: MailboxStore, parent: Folder, headers: dict[str, str]) -> Response:
        folders = store.children(parent.id)
        conditions = _parse_filter(request.query.get("$filter", ""))
        for prop, op, value in conditions:
            if prop != "displayName" or op != "eq":
                raise _Problem(400, "ErrorInvalidProperty", f"The property '{prop}' does not support filtering.")
            folders = [f for f in folders if f.display_name.lower() == str(value).lower()]
        items = [f.json(store) for f in sorted(folders, key=lambda f: f.display_name.lower())]
        return self._page(request, items, headers)

    def _create_folder(
        self, request: Request, store: MailboxStore, parent: Folder, headers: dict[str, str]
    ) -> Response:
        body = {k.lower(): v for k, v in (request.json() or {}).items()}
        name = (body.get("displayname") or "").strip()
        if not name:
            raise _Problem(400, "ErrorInvalidRequest", "The folder name must not be empty.")
        folder = store.create_folder(parent.id, name)
        if folder is None:
            raise _Problem(409, "ErrorFolderExists", "A folder with the specified name already exists.")
        return Response.json(201, folder.json(store), headers)

    # --- messages -------------------------------------------------------------------------------------------

    def _list_messages(
        self, request: Request, store: MailboxStore, folder: Folder, immutable: bool, headers: dict[str, str]
    ) -> Response:
        messages = [m for m in store.messages.values() if m.folder_id == folder.id]
        conditions = _parse_filter(request.query.get("$filter", ""))
        orderby = [part.split() for part in _split_list(request.query.get("$orderby", ""))]
        if orderby and conditions:
            leading = [prop.lower() for prop, _, _ in conditions[: len(orderby)]]
            if leading != [o[0].lower() for o in orderby]:
                raise _Problem(
                    400, "InefficientFilter", "The restriction or sort order is too complex for this operation."
                )
        for prop, op, value in conditions:
            messages = [m for m in messages if _compare(_message_value(m, prop), op, value)]
        if orderby:
            for spec in reversed(orderby):
                descending = len(spec) > 1 and spec[1].lower() == "desc"
                messages.sort(key=lambda m, p=spec[0]: _message_value(m, p), reverse=descending)  # type: ignore[misc]
        else:
            messages.sort(key=lambda m: m.received, reverse=True)  # Graph's default: newest first
        return self._page(request, messages, headers, lambda m: self._message_json(request, m, immutable))

    def _message_json(self, request: Request, message: Message, immutable: bool) -> dict[str, Any]:
        payload = _selected(message.json(immutable), _split_list(request.query.get("$select", "")))
        for expand in _split_list(request.query.get("$expand", "")):
            name, _, options = expand.partition("(")
            if name.strip().lower() != "attachments":
                raise _Problem(400, "BadRequest", f"Could not find a property named '{name}' to expand.")
            select: list[str] = []
            for option in options.rstrip(")").split(";"):
                key, _, value = option.partition("=")
                if key.strip() == "$select":
                    select = _split_list(value)
            payload["attachments"] = [
                _selected(attachment_json(a, with_content=not select), select) for a in message.attachments
            ]
        return payload

    def _page(
        self,
        request: Request,
        items: list[Any],
        headers: dict[str, str],
        render: Callable[[Any], dict[str, Any]] | None = None,
    ) -> Response:
        """One page of ``items`` (``render`` makes each one's JSON: only the page's are made)."""
        top = int(request.query.get("$top") or self.default_page_size)
        if not 1 <= top <= 1000:
            raise _Problem(400, "ErrorInvalidArgument", "The value of $top must be between 1 and 1000.")
        skip = int(request.query.get("$skip") or 0)
        page = [render(item) for item in items[skip : skip + top]] if render else items[skip : skip + top]
        payload: dict[str, Any] = {"@odata.context": f"{request.base_url}/v1.0/$metadata#Collection", "value": page}
        if skip + top < len(items):
            query = dict(request.query, **{"$top": str(top), "$skip": str(skip + top)})
            base = self.next_link_base or request.base_url
            payload["@odata.nextLink"] = f"{base}{request.raw_path}?{urlencode(query, quote_via=quote)}"
        return Response.json(200, payload, headers)

    # --- $batch ---------------------------------------------------------------------------------------------

    def _batch(self, request: Request, token: IssuedToken) -> Response:
        items = (request.json() or {}).get("requests") or []
        if len(items) > MAX_BATCH:
            raise _Problem(400, "BadRequest", f"Number of batch requests exceeds the limit of {MAX_BATCH}.")
        responses = []
        for item in items:
            url = item.get("url", "")
            path, _, query = url.partition("?")
            sub = Request(
                method=item.get("method", "GET").upper(),
                raw_path="/v1.0/" + path.lstrip("/"),
                path=unquote("/v1.0/" + path.lstrip("/")),
                query=dict(_parse_query(query)),
                headers=_Headers({**{"Authorization": request.header("Authorization")}, **(item.get("headers") or {})}),
                body=json.dumps(item["body"]).encode() if item.get("body") is not None else b"",
                base_url=request.base_url,
            )
            record = RecordedRequest(sub.method, sub.path, dict(sub.query), sub.header("Prefer"), self._mailbox_of(sub))
            with self._lock:
                self.batched.append(record)
            answer = self._fault(sub, in_batch=True)
            if answer is None:
                try:
                    answer = self._route(sub, [unquote(s) for s in sub.raw_path.split("/") if s][1:], token)
                except _Problem as problem:
                    answer = graph_error(problem.status, problem.code, problem.message, problem.headers)
            record.status = answer.status
            body = answer.body if isinstance(answer.body, bytes) else b"".join(answer.body)
            content_type = answer.headers.get("Content-Type", "")
            responses.append(
                {
                    "id": item.get("id"),
                    "status": answer.status,
                    "headers": answer.headers,
                    "body": json.loads(body)
                    if content_type.startswith("application/json")
                    else base64.b64encode(body).decode(),
                }
            )
        return Response.json(200, {"responses": responses})


class _Headers(dict[str, str]):
    """A case-insensitive header lookup for $batch sub-requests."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        for name, value in self.items():
            if name.lower() == key.lower():
                return value
        return default


def _parse_query(query: str) -> Iterator[tuple[str, str]]:
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            yield unquote(key), unquote(value.replace("+", " "))


def _attachment_value(attachment: Attachment) -> Response:
    if isinstance(attachment, FileAttachment):
        content = memoryview(attachment.content)
        chunks = (bytes(content[i : i + CHUNK]) for i in range(0, len(content), CHUNK))
        return Response(200, chunks, {"Content-Type": attachment.content_type}, length=len(content))
    if isinstance(attachment, ItemAttachment):
        return Response(200, attachment.mime, {"Content-Type": "text/plain"})
    raise _Problem(400, "ErrorInvalidRequest", "The raw content of a reference attachment cannot be downloaded.")


def _split_list(text: str) -> list[str]:
    """Top-level comma-separated items (commas inside parentheses stay)."""
    items, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    if current.strip():
        items.append(current.strip())
    return items


def _selected(payload: dict[str, Any], select: list[str]) -> dict[str, Any]:
    if not select:
        return payload
    keep = {s.split("/")[-1].lower() for s in select} | {"id", "@odata.type", "@odata.etag"}
    return {k: v for k, v in payload.items() if k.lower() in keep}


_CONDITION = re.compile(r"^\s*([A-Za-z/]+)\s+(eq|ne|ge|gt|le|lt)\s+(.+?)\s*$")


def _parse_filter(text: str) -> list[tuple[str, str, Any]]:
    if not text.strip():
        return []
    conditions = []
    for part in re.split(r"\s+and\s+", text.strip()):
        match = _CONDITION.match(part)
        if not match:
            raise _Problem(400, "BadRequest", f"Invalid filter clause: {part}")
        prop, op, raw = match.groups()
        conditions.append((prop, op, _literal(raw)))
    return conditions


def _literal(raw: str) -> Any:
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1].replace("''", "'")
    if raw in ("true", "false"):
        return raw == "true"
    if re.match(r"^\d{4}-\d\d-\d\dT", raw):
        return dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    try:
        return int(raw)
    except ValueError:
        raise _Problem(400, "BadRequest", f"Invalid filter value: {raw}") from None


def _message_value(message: Message, prop: str) -> Any:
    values = {
        "receiveddatetime": message.received,
        "subject": message.subject,
        "hasattachments": message.has_attachments,
        "isread": message.is_read,
        "from/emailaddress/address": message.sender[1],
    }
    try:
        return values[prop.lower()]
    except KeyError:
        raise _Problem(400, "ErrorInvalidProperty", f"The property '{prop}' does not support filtering.") from None


def _compare(left: Any, op: str, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        left, right = left.lower(), right.lower()
    return {
        "eq": left == right,
        "ne": left != right,
        "ge": left >= right,
        "gt": left > right,
        "le": left <= right,
        "lt": left < right,
    }[op]


# What the delta and subscription modules of this emulator use.
GraphProblem = _Problem
parse_filter = _parse_filter
message_value = _message_value
compare = _compare
