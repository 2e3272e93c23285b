"""Microsoft 365 mailboxes through Microsoft Graph (msgraph-sdk), behind the Mailbox protocol of ``base``.

* Folders by path: ``Inbox/Suppliers`` is the well-known folder ``inbox``, then its child ``Suppliers`` by display
  name (case-insensitive); a first part that is not a well-known name is a top-level folder. Target folders are
  created with their parents when missing.
* Listing: the source folder's messages oldest first, page by page (``@odata.nextLink``), only the fields needed,
  ``max_age_days`` filtered by Graph. Every page is read before the first message is handled, because Graph pages
  by offset and moving messages out of the folder would shift the later pages.
* Ids are immutable (``Prefer: IdType="ImmutableId"``, set by the request guard): the id recorded in the state store
  still names the message after it moved.
* Reading: the message with its attachments' metadata (never their content). File attachments become
  :class:`~ingest.extraction.Candidate` objects whose bytes are downloaded from ``/attachments/{id}/$value`` in
  chunks only when extraction asks for them, one at a time, and never beyond the account's size limit. An attached
  mail (item attachment) is downloaded as MIME and goes through :func:`~ingest.extraction.extract_from_mime`
  exactly as an attached message/rfc822 part of an IMAP message: the .eml and its own attachments. A reference
  attachment (a cloud link) is reported as skipped. ``import: message|both`` reads the message's MIME instead.
  The one selection path (:func:`~ingest.extraction.select_documents`) decides inline images, names and filters.
* Settling moves the message; nothing is ever deleted.

Errors: what stops the account (sign-in, access denied, folder missing) is AccountError; what stops this run only
(Graph unreachable, still throttled after retries, time budget) is ConnectionLost; a message that cannot be read
is DocumentError.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx

from ..config import Filters, GraphAccount
from ..errors import AccountError, ConnectionLost, DocumentError, IngestError
from ..extraction import Candidate, extract_from_mime, message_identity, select_documents
from ..graph.auth import TokenCacheStore, graph_token_source
from ..graph.client import RETRY_STATUSES, GraphSession, failure_of
from ..model import Extraction, MessageHeaders, MessageRef, SkippedPart
from ..retry import default_policy
from .base import ExtractionOptions, Outcome

if TYPE_CHECKING:
    from msgraph import GraphServiceClient
    from msgraph.generated.models.attachment import Attachment

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
WELL_KNOWN_FOLDERS = frozenset(
    {
        "archive", "clutter", "conflicts", "conversationhistory", "deleteditems", "drafts", "inbox", "junkemail",
        "localfailures", "msgfolderroot", "outbox", "recoverableitemsdeletions", "scheduled", "searchfolders",
        "sentitems", "serverfailures", "syncissues",
    }
)  # fmt: skip
LIST_FIELDS = ["id", "internetMessageId", "subject", "from", "sender", "receivedDateTime", "hasAttachments"]
ATTACHMENT_FIELDS = "id,name,contentType,size,isInline"
# Graph's attachment size counts the attachment's properties too; only well above the limit is it surely too big.
SIZE_SLACK = 256 * 1024
REFERENCE_REASON = "cloud link, not importable"
_FORWARDED_STEM = "forwarded message"


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
    ) -> None:
        self.account = account
        self._secrets = secrets
        self._authority_host = authority_host
        self._graph_endpoint = graph_endpoint.rstrip("/")
        self._ca_file = ca_file
        self._deadline = deadline
        self._token_cache = token_cache
        self._assertion_credential = assertion_credential
        self._page_size = page_size
        self._where = f"account {account.name} (mailbox {account.mailbox})"
        self._session: GraphSession | None = None
        self._folders: dict[str, str] = {}  # lower-cased path -> folder id

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
        )
        self._session = GraphSession(
            self._graph_endpoint, tokens, ca_file=self._ca_file, deadline=self._deadline, where=self._where
        )
        return self

    def __exit__(self, *exc: object) -> None:
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

    def list_messages(self) -> Iterator[MessageRef]:
        source = self._require_folder(self.account.folder, create=False)
        refs: list[MessageRef] = []
        page = self._call(f"listing folder {self.account.folder!r}", lambda: self._first_page(source))
        while True:
            refs.extend(self._ref(message) for message in (page.value or []))
            next_link = page.odata_next_link
            if not next_link:
                break
            if self._deadline is not None and time.monotonic() > self._deadline:
                log.warning("%s: time budget used up while listing; %d messages listed", self._where, len(refs))
                break
            page = self._call(
                f"listing folder {self.account.folder!r}",
                lambda link=next_link: self._user.mail_folders.by_mail_folder_id(source).messages.with_url(link).get(),  # type: ignore[misc]
            )
        log.info("%s: %d messages in %s", self._where, len(refs), self.account.folder)
        yield from refs

    async def _first_page(self, source: str) -> Any:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
            MessagesRequestBuilder,
        )

        max_age = self.account.filters.max_age_days
        parameters = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            select=LIST_FIELDS,
            orderby=["receivedDateTime asc"],
            top=self._page_size,
            # Graph wants the $orderby property first in $filter: both are receivedDateTime here.
            filter=f"receivedDateTime ge {_odata_time(datetime.now(UTC) - timedelta(days=max_age))}"
            if max_age
            else None,
        )
        builder = self._user.mail_folders.by_mail_folder_id(source).messages
        return await builder.get(RequestConfiguration(query_parameters=parameters))

    def _ref(self, message: Any) -> MessageRef:
        message_id = str(message.id)
        return MessageRef(ref=message_id, key=message_id, headers=_headers(message))

    def read(self, ref: MessageRef) -> GraphMailItem:
        message = self._call(f"reading message {ref.key}", lambda: self._get_message(ref.ref), message_level=True)
        if message is None:
            raise DocumentError(f"{self._where}: message {ref.key} not found")
        return GraphMailItem(self, message)

    async def _get_message(self, message_id: str) -> Any:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.messages.item.message_item_request_builder import MessageItemRequestBuilder

        parameters = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
            select=LIST_FIELDS, expand=[f"attachments($select={ATTACHMENT_FIELDS})"]
        )
        builder = self._user.messages.by_message_id(message_id)
        return await builder.get(RequestConfiguration(query_parameters=parameters))

    def settle(self, ref: MessageRef, outcome: Outcome) -> None:
        path = self.account.processed_folder if outcome == "processed" else self.account.failed_folder
        target = self._require_folder(path, create=True)
        try:
            self.session.run(lambda: self._move(ref.ref, target))
        except Exception as err:
            failure = failure_of(err)
            if failure is not None and failure.status == 404 and self._already_in(ref.ref, target):
                return  # an earlier attempt moved it and the answer got lost
            raise self._translate(err, f"moving message {ref.key} to {path!r}", message_level=True) from err
        log.info("%s: message %s moved to %s", self._where, ref.key, path)

    async def _move(self, message_id: str, target: str) -> None:
        from msgraph.generated.users.item.messages.item.move.move_post_request_body import MovePostRequestBody

        await self._user.messages.by_message_id(message_id).move.post(MovePostRequestBody(destination_id=target))

    def _already_in(self, message_id: str, folder_id: str) -> bool:
        try:
            message = self.session.run(lambda: self._user.messages.by_message_id(message_id).get())
        except Exception:  # noqa: BLE001 - a message we cannot see is not where we wanted it
            return False
        return message is not None and message.parent_folder_id == folder_id

    # --- downloads for the mail items -----------------------------------------------------------------------

    def download(self, path: str, *, what: str, limit: int | None = None) -> bytes:
        policy = default_policy()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.session.download(self._user_path + path, limit=limit)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout) as err:
                # The connection broke in the middle of the body, which the request guard does not see.
                if attempt >= policy.attempts:
                    raise self._translate(err, f"downloading {what}", message_level=True) from err
                log.info("%s: download of %s broke off (%s); trying again", self._where, what, err)
                policy.sleep(policy.delay(attempt))
            except Exception as err:
                raise self._translate(err, f"downloading {what}", message_level=True) from err


@dataclass(frozen=True)
class _AttachmentsOnly:
    """The account's options with import: attachments, for the mail inside an item attachment."""

    include_inline: bool
    filters: Filters
    import_: Literal["attachments", "message", "both"] = "attachments"


class GraphMailItem:
    """One Graph message: headers from Graph's fields, documents on demand."""

    def __init__(self, mailbox: GraphMailbox, message: Any) -> None:
        self._mailbox = mailbox
        self._message = message
        self.id = str(message.id)
        self.headers = _headers(message)
        self.attachments: list[Attachment] = list(message.attachments or [])

    @property
    def identity(self) -> str:
        # The same as an IMAP message's: the Message-ID, so a mailbox moved between protocols is not re-imported.
        if self.headers.message_id:
            return message_identity(self.headers, b"")
        return f"graph:{self.id}"

    def extract(self, options: ExtractionOptions) -> Extraction:
        references = [
            SkippedPart(a.name or "link", REFERENCE_REASON) for a in self.attachments if _kind(a) == "reference"
        ]
        if options.import_ in ("message", "both"):
            raw = self._mailbox.download(f"/messages/{quote(self.id, safe='')}/$value", what="the message")
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
            kind = _kind(attachment)
            if kind == "file":
                size = attachment.size or 0
                yield Candidate(
                    attachment.name,
                    attachment.content_type or "application/octet-stream",
                    path,
                    self._loader(attachment, limit),
                    # A listed size only decides "too large" when it is well above the limit (see SIZE_SLACK).
                    size=size if limit is not None and size > limit + SIZE_SLACK else None,
                    is_inline=bool(attachment.is_inline),
                    content_id=getattr(attachment, "content_id", None),
                )
            elif kind == "item":
                yield from self._attached_mail(attachment, path, options, notes)
            elif kind != "reference":  # references are reported by extract()
                notes.append(SkippedPart(attachment.name or path, f"attachment of unknown type {kind!r}: not read"))

    def _loader(self, attachment: Any, limit: int | None) -> Callable[[], bytes]:
        url = f"/messages/{quote(self.id, safe='')}/attachments/{quote(str(attachment.id), safe='')}/$value"
        what = f"attachment {attachment.name!r}"
        # One byte more than the limit is enough for select_documents to see "too large".
        return lambda: self._mailbox.download(url, what=what, limit=limit)

    def _attached_mail(
        self, attachment: Any, path: str, options: ExtractionOptions, notes: list[SkippedPart]
    ) -> Iterator[Candidate]:
        """An attached mail as IMAP sees one: a message/rfc822 part, extracted by the one MIME path."""
        url = f"/messages/{quote(self.id, safe='')}/attachments/{quote(str(attachment.id), safe='')}/$value"
        mime = self._mailbox.download(url, what=f"attached mail {attachment.name!r}")
        wrapper = _as_attached_message(attachment.name or "", mime)
        inner = extract_from_mime(
            wrapper, _AttachmentsOnly(options.include_inline, options.filters), message_stem=_FORWARDED_STEM
        )
        notes.extend(inner.skipped)
        for document in inner.documents:
            # The wrapper numbers the attached mail "1"; here it is this attachment's position.
            inner_path = document.key.rsplit(":", 1)[0]
            yield Candidate.from_bytes(
                document.filename, document.content_type, path + inner_path[1:], document.content, trusted_type=True
            )


def _kind(attachment: Any) -> str:
    odata_type = (getattr(attachment, "odata_type", None) or "").lower()
    for kind in ("file", "item", "reference"):
        if odata_type.endswith(f"{kind}attachment"):
            return kind
    return odata_type or "unknown"


def _as_attached_message(name: str, mime: bytes) -> bytes:
    """A one-part multipart/mixed holding ``mime`` as a message/rfc822 attachment called ``name``.eml."""
    boundary = f"=_graph_item_{uuid.uuid4().hex}".encode("ascii")
    filename = name if name.lower().endswith(".eml") else f"{name}.eml" if name.strip() else ""
    disposition = b"attachment"
    if filename:
        disposition += b"; filename*=utf-8''" + quote(filename, safe="").encode("ascii")
    return b"".join(
        [
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n',
            b"--" + boundary + b"\r\nContent-Type: message/rfc822\r\nContent-Disposition: " + disposition + b"\r\n\r\n",
            mime,
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )


def _headers(message: Any) -> MessageHeaders:
    sender = ""
    for recipient in (getattr(message, "from_", None), getattr(message, "sender", None)):
        address = getattr(getattr(recipient, "email_address", None), "address", None)
        if address:
            sender = str(address)
            break
    internet_id = "".join((message.internet_message_id or "").split()).strip("<>") or None
    received = message.received_date_time
    if received is not None and received.tzinfo is None:
        received = received.replace(tzinfo=UTC)
    return MessageHeaders(message_id=internet_id, sender=sender, subject=message.subject or "", received=received)


def _odata_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
