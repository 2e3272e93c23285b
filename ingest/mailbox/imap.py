"""IMAP mailboxes through imapclient: UID-based, UIDVALIDITY-aware, fetched without setting \\Seen.

Folder names: the accounts file's "/"-paths are mapped onto the server's own naming (``imap_folders``), learnt once
per session from NAMESPACE, LIST and SPECIAL-USE (``imap_folder_session``). The processed and failed folders are
made before anything is uploaded (``ensure_targets``), so a folder the server refuses stops the account before DOC²
sees a document. Provider quirks at sign-in: ``imap_providers``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import ssl
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientError, LoginError

from .. import model
from ..config import ImapAccount
from ..errors import AccountError, ConnectionLost, DocumentError, IngestError, UnreadableMessage
from ..mime.headers import parse_headers
from ..mime.item import MimeMailItem
from ..mime.rawmail import RawMail
from ..model import BlobWriter, FileBlob, MessageRef, too_big
from ..tls import client_context
from . import imap_providers, imap_sections
from ._errors import IMAP_NETWORK_ERRORS, close_quietly, connect, describe, imap_connection_kept, server_text, throttled
from .base import Outcome
from .imap_ahead import FetchAhead, after, batch_from
from .imap_folder_session import SessionFolders

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
LIST_CHUNK = 500  # UIDs per FETCH of sizes and headers
_HEADER_FIELDS = b"BODY[HEADER.FIELDS (FROM SUBJECT DATE MESSAGE-ID)]"
# A message larger than this is fetched in pieces into a temporary file, never whole in memory.
LARGE_MESSAGE_BYTES = 8 * 1024 * 1024
FETCH_PIECE_BYTES = 4 * 1024 * 1024  # one partial FETCH (BODY.PEEK[]<offset.length>) of a large message
SETTLE_CHUNK = 500  # UIDs per UID MOVE when messages are settled together
SECTIONS_PER_FETCH = 200  # sections of one message per FETCH command when parts are left out (line length)
_NETWORK_ERRORS = IMAP_NETWORK_ERRORS

TokenSource = Callable[[], str]


class ImapMailbox:
    def __init__(
        self, account: ImapAccount, secrets: Callable[[str], str], token_source: TokenSource | None = None
    ) -> None:
        self.account = account
        self._secrets = secrets
        self._token_source = token_source
        self._client: IMAPClient | None = None
        self._uidvalidity = 0
        self._folders: SessionFolders | None = None  # the server's folder naming, learnt once per session
        self._sizes: dict[int, int] = {}
        self._order: list[int] = []
        self._prefetched: dict[int, bytes | RawMail] = {}
        self._positions: dict[int, int] = {}  # UID -> its place in _order
        self._ahead = FetchAhead()  # the next batch, fetched while this one is worked on
        self._next_batch: int | None = None  # the UID the next batch starts at
        self._where = f"IMAP {account.host}:{account.effective_port} (account {account.name!r})"

    # -- session ---------------------------------------------------------------------------------------------

    def __enter__(self) -> ImapMailbox:
        self._client = self._connect()
        # imapclient sets imaplib's debug level to 5, so imaplib formats every response (whole messages) with
        # repr() for a debug log nobody reads: three quarters of the CPU of a FETCH, and mail content in a log.
        self._client._imap.debug = 0
        self._login()
        configured = (self.account.folder, *(folder for _role, folder in self._targets()))
        self._folders = SessionFolders.learn(self._client, self._where, configured)
        return self

    def __exit__(self, *exc: object) -> None:
        self._ahead.close()
        client, self._client = self._client, None
        if client is None:
            return
        close_quietly(client.logout, client.shutdown)

    def _connect(self) -> IMAPClient:
        timeout = _timeouts(self.account.timeout_seconds)
        context = client_context(self.account.ca_file)
        return connect(self._where, lambda: self._open(context, timeout), (*_NETWORK_ERRORS, IMAPClientError))

    def _open(self, context: ssl.SSLContext, timeout: SocketTimeout) -> IMAPClient:
        account = self.account
        if account.security == "ssl":
            return IMAPClient(account.host, account.effective_port, ssl=True, ssl_context=context, timeout=timeout)
        client = IMAPClient(account.host, account.effective_port, ssl=False, timeout=timeout)
        if account.security == "starttls":
            if b"STARTTLS" not in client.capabilities():
                client.shutdown()
                raise AccountError(
                    f"{self._where}: the server does not offer STARTTLS; refusing to send the password "
                    f"unencrypted (use security: ssl, or a server with STARTTLS)"
                )
            client.starttls(context)
        return client

    def _login(self) -> None:
        account = self.account
        try:
            if account.auth == "xoauth2":
                if self._token_source is None:
                    raise AccountError(f"{self._where}: auth xoauth2 needs a token source")
                self._require().oauth2_login(account.username, self._token_source())
            else:
                self._require().login(account.username, self._secrets(account.password_secret or ""))
        except LoginError as err:
            said = server_text(err)
            hint = imap_providers.login_hint(account.host, account.auth, said)
            raise AccountError(
                (
                    f"{self._where}: login refused for user {account.username!r}: {said}; "
                    f"check the password in secret {account.password_secret!r}"
                    if account.auth == "password"
                    else f"{self._where}: XOAUTH2 login refused for {account.username!r}: {said}"
                )
                + (f" ({hint})" if hint else "")
            ) from None
        except _NETWORK_ERRORS as err:
            raise AccountError(f"{self._where}: connection lost during login: {describe(err)}") from err

    # -- folder names ----------------------------------------------------------------------------------------

    def resolve_folder(self, folder: str) -> str:
        """The server's name for a folder of the accounts file ("/"-path, server form or ``\\Use``); for every
        command that names a folder (the retry command moves mail back with it too)."""
        return self._session_folders().resolve(folder)

    def _session_folders(self) -> SessionFolders:
        """The folder naming, once nothing is fetched ahead on the connection (it may send LIST and CREATE)."""
        if self._folders is None:
            raise RuntimeError("ImapMailbox used outside its 'with' block")
        self._prefetched.update(self._ahead.idle())
        return self._folders

    # -- TEST LOGIN ------------------------------------------------------------------------------------------

    def check(self) -> list[str]:
        """Sign-in, the server's folder naming, the source folder and each target folder as named on this server;
        a missing target folder is created now (the only sure test that the server allows it)."""
        folders = self._session_folders()
        notes = [f"folder names on this server: {folders.layout.describe()}"]
        info = self._select_source()
        source = folders.resolve(self.account.folder)
        notes.append(
            f"source folder {self.account.folder!r} -> {folders.describe(source)}: {info.get(b'EXISTS', 0)} messages"
        )
        for role, folder in self._targets():
            name = folders.resolve(folder)
            state = "created now (it was missing)" if folders.ensure(role, folder) else "exists"
            notes.append(f"{role} folder {folder!r} -> {folders.describe(name)}: {state}")
            warning = folders.target_warning(name)
            if warning:
                notes.append(f"warning: {role} folder {folder!r}: {warning}")
        return notes

    def describe_targets(self) -> list[str]:
        """For a dry run: each target folder as named on this server and whether it is there; nothing made."""
        folders = self._session_folders()
        notes = []
        for role, folder in self._targets():
            name = folders.resolve(folder)
            state = "exists" if folders.holds_mail(name) else "missing: the import will make it"
            notes.append(f"{role} folder {folder!r} -> {folders.describe(name)}: {state}")
        return notes

    def ensure_targets(self) -> None:
        """Make the processed and failed folders now, before anything is uploaded: a folder the server refuses is
        an AccountError that names it, and no document of this run reaches DOC² first."""
        folders = self._session_folders()
        for role, folder in self._targets():
            folders.ensure(role, folder)
            warning = folders.target_warning(folders.resolve(folder))
            if warning:
                log.warning("%s: %s folder %r: %s", self._where, role, folder, warning)

    def _targets(self) -> list[tuple[str, str]]:
        return [("processed", self.account.processed_folder), ("failed", self.account.failed_folder)]

    # -- listing and fetching --------------------------------------------------------------------------------

    def list_messages(self) -> Iterator[MessageRef]:
        client = self._require()
        self._select_source()
        criteria: list[object] = ["NOT", "DELETED"]
        max_age = self.account.filters.max_age_days
        if max_age:
            # SINCE compares dates only, in the server's time zone: a day of margin, exact age checked by us
            since = (datetime.now(UTC) - timedelta(days=max_age + 1)).date()
            criteria += ["SINCE", since]
        with imap_connection_kept(self._where, "searching"):
            uids = sorted(client.search(criteria))
        self._order = uids
        self._positions = {uid: position for position, uid in enumerate(uids)}
        self._next_batch = None
        # The headers in the listing only let the message filters leave a message unfetched; without such filters
        # they would be fetched and parsed for nothing (a tenth of the CPU of a mail).
        filters = self.account.filters
        items = ["RFC822.SIZE"]
        if filters.from_ or filters.subject is not None or filters.max_age_days:
            items.append("BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE MESSAGE-ID)]")
        for start in range(0, len(uids), LIST_CHUNK):
            chunk = uids[start : start + LIST_CHUNK]
            with imap_connection_kept(self._where, "listing"):
                data = client.fetch(chunk, items)
            for uid in chunk:
                item = data.get(uid)
                if item is None:  # expunged meanwhile by someone else
                    continue
                size = int(item.get(b"RFC822.SIZE", 0))
                self._sizes[uid] = size
                header_bytes = item.get(_HEADER_FIELDS) or b""
                yield MessageRef(
                    ref=str(uid),
                    key=f"{self._uidvalidity}:{uid}",
                    size=size,
                    headers=parse_headers(header_bytes) if header_bytes else None,
                )

    def read(self, ref: MessageRef) -> MimeMailItem:
        uid = int(ref.ref)
        raw = self._prefetched.pop(uid, None)
        if raw is None and self._ahead.holds(uid):
            self._prefetched.update(self._ahead.take())  # what its FETCH raised, it raises for this message
            raw = self._prefetched.pop(uid, None)
        if raw is None and self._may_hold_oversized(uid):
            item = self._read_without_oversized(uid)
            if item is not None:
                return item
        size = self._sizes.get(uid, 0)
        if raw is None and size > model.MAX_MESSAGE_BYTES:
            # Not even without the parts over the size filter: the message goes to the failed folder at once.
            raise UnreadableMessage(f"{too_big('the message', size, model.MAX_MESSAGE_BYTES)}: not downloaded")
        if raw is None and self._sizes.get(uid, 0) > LARGE_MESSAGE_BYTES:
            return MimeMailItem(self._fetch_to_file(uid))
        if raw is None:
            self._prefetch_from(uid)
            raw = self._prefetched.pop(uid, None)
        if raw is None:
            raise DocumentError(f"{self._where}: message UID {uid} in {self.account.folder!r} could not be fetched")
        self._fetch_ahead()
        return MimeMailItem(raw)

    def _fetch_to_file(self, uid: int) -> FileBlob:
        """A large message, fetched piece by piece (partial FETCH) into a temporary file."""
        client = self._require()
        offset = 0
        with BlobWriter(memory_limit=0) as writer, self._fetching(uid):  # a failure discards what was written
            while True:
                answer = client.fetch([uid], [f"BODY.PEEK[]<{offset}.{FETCH_PIECE_BYTES}>"]).get(uid, {})
                piece = answer.get(f"BODY[]<{offset}>".encode())
                if piece is None:
                    if offset == 0:
                        raise DocumentError(
                            f"{self._where}: message UID {uid} in {self.account.folder!r} could not be fetched"
                        )
                    break
                writer.write(piece)
                offset += len(piece)
                if len(piece) < FETCH_PIECE_BYTES:
                    break
        blob = writer.finish()
        if not isinstance(blob, FileBlob):  # memory_limit=0: every byte went to the file
            raise RuntimeError("a large message was not spooled to a file")
        log.debug("%s: UID %d fetched into a temporary file (%d bytes)", self._where, uid, blob.size)
        return blob

    @contextlib.contextmanager
    def _fetching(self, uid: int) -> Iterator[None]:
        """A FETCH of message ``uid`` (and those after it): a broken connection is ConnectionLost, the server's
        refusal the message's DocumentError."""
        try:
            with imap_connection_kept(self._where, "fetching"):
                yield
        except IMAPClientError as err:
            raise DocumentError(f"{self._where}: server refused to give message UID {uid}: {describe(err)}") from err

    def _prefetch_from(self, uid: int) -> None:
        """Fetch this message and the next few in one round trip (bounded by count and bytes)."""
        client = self._require()
        batch = batch_from(uid, self._order, self._positions, self._size, self._fetched_alone)
        self._prefetched.update(self._fetch_batch(client, batch))
        self._next_batch = self._after(batch)

    def _fetch_ahead(self) -> None:
        """Start fetching the batch after the last one fetched, unless one is on its way, it is fetched already,
        or it starts with a message that is fetched on its own (large, or with parts over the size limit)."""
        start = self._next_batch
        if start is None or self._ahead.busy or start in self._prefetched:
            return
        if self._not_ahead(start):
            return
        client = self._require()
        batch = batch_from(start, self._order, self._positions, self._size, self._not_ahead)
        self._ahead.start(batch, lambda uids: self._fetch_batch(client, uids))
        self._next_batch = self._after(batch)

    def _after(self, batch: list[int]) -> int | None:
        return after(batch, self._order, self._positions)

    def _size(self, uid: int) -> int:
        return self._sizes.get(uid, 0)

    def _fetched_alone(self, uid: int) -> bool:
        return self._size(uid) > LARGE_MESSAGE_BYTES or self._may_hold_oversized(uid)

    def _not_ahead(self, uid: int) -> bool:
        """Not fetched ahead: fetched on its own, or not listed yet (a caller that reads while it lists: its size
        is not known, nor whether it is fetched on its own)."""
        return uid not in self._sizes or self._fetched_alone(uid)

    def _fetch_batch(self, client: IMAPClient, batch: list[int]) -> dict[int, bytes | RawMail]:
        """One FETCH of whole messages (on the caller's thread or the fetch-ahead thread: the caller makes sure
        nothing else uses the connection meanwhile)."""
        with self._fetching(batch[0]):
            data = client.fetch(batch, ["BODY.PEEK[]"])
        fetched: dict[int, bytes | RawMail] = {}
        for fetched_uid, item in data.items():
            body = item.get(b"BODY[]")
            if body is not None:
                fetched[fetched_uid] = bytes(body)
        return fetched

    def _may_hold_oversized(self, uid: int) -> bool:
        """True when a part of this message may be over the size limit: look at its structure before fetching."""
        limit = self.account.filters.max_attachment_bytes
        # The whole message as .eml is not subject to the attachment filters: then it is fetched whole.
        return limit is not None and self.account.import_ == "attachments" and self._sizes.get(uid, 0) > limit

    def _read_without_oversized(self, uid: int) -> MimeMailItem | None:
        """The message without the parts that are over the size limit, or None when it has none (or its
        structure is not understood): then it is fetched whole as usual."""
        client = self._require()
        limit = self.account.filters.max_attachment_bytes or 0
        try:
            with imap_connection_kept(self._where, "fetching"):
                answer = client.fetch([uid], ["BODYSTRUCTURE"]).get(uid, {})
                plan = imap_sections.plan(answer[b"BODYSTRUCTURE"], limit) if b"BODYSTRUCTURE" in answer else None
                if plan is None:
                    return None
                fetched: dict[bytes, bytes] = {}
                for start in range(0, len(plan.items), SECTIONS_PER_FETCH):
                    fetched.update(client.fetch([uid], plan.items[start : start + SECTIONS_PER_FETCH]).get(uid, {}))
                raw = imap_sections.assemble(plan, fetched)
        except (IMAPClientError, imap_sections.StructureError, ValueError, IndexError, TypeError) as err:
            log.warning("%s: UID %d: structure not usable (%s); fetching it whole", self._where, uid, describe(err))
            return None
        log.info(
            "%s: UID %d: %d part(s) over the size limit left on the server (%s)",
            self._where,
            uid,
            len(plan.omitted),
            ", ".join(f"part {section}: at least {size} bytes" for section, size in sorted(plan.omitted.items())),
        )
        return MimeMailItem(raw, omitted_sizes=plan.omitted)

    # -- settling --------------------------------------------------------------------------------------------

    def leave(self, ref: MessageRef) -> None:
        """Nothing to do: every listing shows the whole folder again."""

    def settle(self, ref: MessageRef, outcome: Outcome) -> None:
        self.settle_many([ref], outcome)

    settles_in_batches = True

    def settle_many(self, refs: Sequence[MessageRef], outcome: Outcome) -> dict[str, IngestError]:
        """Settle several messages with one command: UID MOVE of their UID set (without MOVE: COPY, \\Deleted and
        UID EXPUNGE of those UIDs only). Moves all or raises: nothing is ever left out of the answer."""
        if not refs:
            return {}
        target = self.account.processed_folder if outcome == "processed" else self.account.failed_folder
        uids = [int(ref.ref) for ref in refs]
        what = f"UID {uids[0]}" if len(uids) == 1 else f"{len(uids)} UIDs ({uids[0]}...)"
        folders = self._session_folders()
        folders.ensure(outcome, target)
        path = folders.resolve(target)
        try:
            with imap_connection_kept(self._where, f"moving {what}"):
                for start in range(0, len(uids), SETTLE_CHUNK):
                    self._move(uids[start : start + SETTLE_CHUNK], path)
        except IMAPClientError as err:
            if throttled(err):
                raise ConnectionLost(
                    f"{self._where}: the server is busy; moving {what} waits for the next run: {server_text(err)}"
                ) from err
            raise AccountError(f"{self._where}: cannot move {what} to {target!r} ({path!r}): {describe(err)}") from err
        for uid in uids:
            self._prefetched.pop(uid, None)
        return {}

    def restore(self, key: str, identity: str | None) -> bool:
        """``retry``: move the message of this identity from the failed folder back to the source folder, where
        the next import takes it (with a new UID, so with fresh attempts). False when it is not in the failed
        folder. Found by its Message-ID (``mid:`` identities), else by the SHA-256 of its bytes."""
        if not identity:
            return False  # nothing to recognise it by (the key was its UID in the source folder)
        client = self._require()
        failed = self.resolve_folder(self.account.failed_folder)
        source = self.resolve_folder(self.account.folder)
        message_id = identity.removeprefix("mid:") if identity.startswith("mid:") else None
        try:
            if not client.folder_exists(failed):
                return False
            client.select_folder(failed)
            if message_id is not None:
                candidates = client.search(["HEADER", "Message-ID", message_id])
                fetched = client.fetch(candidates, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if candidates else {}
                uids = [
                    uid
                    for uid, data in fetched.items()
                    if parse_headers(data.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]") or b"").message_id == message_id
                ]
            else:
                fetched = client.fetch(client.search(["NOT", "DELETED"]), ["BODY.PEEK[]"])
                uids = [
                    uid
                    for uid, data in fetched.items()
                    if "sha256:" + hashlib.sha256(data.get(b"BODY[]") or b"").hexdigest() == identity
                ]
            if not uids:
                return False
            self._move(sorted(uids), source)
        except IMAP_NETWORK_ERRORS as err:
            raise ConnectionLost(f"{self._where}: connection lost while moving mail back: {describe(err)}") from err
        except IMAPClientError as err:
            raise AccountError(
                f"{self._where}: cannot move mail from {self.account.failed_folder!r} back to "
                f"{self.account.folder!r}: {describe(err)}"
            ) from err
        log.info(
            "%s: %d message(s) moved from %r back to %r for a retry",
            self._where,
            len(uids),
            self.account.failed_folder,
            self.account.folder,
        )
        return True

    def _move(self, uids: list[int], path: str) -> None:
        client = self._require()
        if client.has_capability("MOVE"):
            client.move(uids, path)
            return
        client.copy(uids, path)
        client.add_flags(uids, [b"\\Deleted"], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)  # expunges only these UIDs
        else:
            log.warning("%s: server lacks UIDPLUS; UIDs %s flagged \\Deleted, not expunged", self._where, uids)

    def _select_source(self) -> dict[bytes, object]:
        client = self._require()
        source = self._session_folders().check_source(self.account.folder)
        try:  # a connection lost is not the folder's fault (imaplib's abort is also an IMAPClientError)
            with imap_connection_kept(self._where, f"opening {self.account.folder!r}"):
                info: dict[bytes, object] = client.select_folder(source)
        except IMAPClientError as err:
            raise AccountError(
                f"{self._where}: cannot open source folder {self.account.folder!r}: {describe(err)}"
            ) from err
        answer = info.get(b"UIDVALIDITY", 0)  # imapclient gives the numbers of SELECT's answer as int
        uidvalidity = answer if isinstance(answer, int) else 0
        if self._uidvalidity and uidvalidity != self._uidvalidity:
            log.warning("%s: UIDVALIDITY of %r changed; message keys start over", self._where, self.account.folder)
        self._uidvalidity = uidvalidity
        return info

    def _require(self) -> IMAPClient:
        """The connection, once nothing is fetched ahead on it (what that brought is kept)."""
        if self._client is None:
            raise RuntimeError("ImapMailbox used outside its 'with' block")
        self._prefetched.update(self._ahead.idle())
        return self._client


def _timeouts(read: float) -> SocketTimeout:
    return SocketTimeout(connect=min(CONNECT_TIMEOUT, read), read=read)
