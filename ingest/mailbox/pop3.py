"""POP3 mailboxes through poplib. POP3 has no folders: the state store remembers what was imported, by UIDL,
size and a digest of the header block (:func:`message_key`; never by UIDL alone), and ``delete_after_import``
deletes a message only once it, this very message, is recorded as processed."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import poplib
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from .. import model
from ..config import Pop3Account
from ..errors import AccountError, ConnectionLost, DocumentError, IngestError, UnreadableMessage
from ..mime.headers import parse_headers
from ..mime.item import MimeMailItem
from ..model import BlobWriter, MessageRef, too_big
from ..tls import client_context
from ._errors import close_quietly, connect, describe, server_text
from .base import Outcome

log = logging.getLogger(__name__)

_NETWORK_ERRORS = (OSError, ssl.SSLError, socket.timeout, EOFError)

# poplib refuses any line over 2,048 bytes ("line too long"), but real mail has longer ones: HTML without line
# breaks, base64 in one line, long headers. A line is bounded by its message, which is read whole anyway.
MAX_LINE_BYTES = 64 * 1024 * 1024
poplib._MAXLINE = max(poplib._MAXLINE, MAX_LINE_BYTES)  # type: ignore[attr-defined]  # private, no API


def _server_refused(err: poplib.error_proto) -> bool:
    """True for a clean ``-ERR`` answer. Anything else (a line still too long, an answer out of step) means the
    rest of the reply is still on its way: the session can no longer be trusted."""
    reply = err.args[0] if err.args else b""
    return isinstance(reply, bytes) and reply.startswith(b"-ERR")


def _connection_closed(err: poplib.error_proto) -> bool:
    """poplib's way of saying the server hung up (no bytes at all): the connection's fault, not the message's."""
    return bool(err.args) and err.args[0] == "-ERR EOF"


def message_key(uidl: str, size: int, header_digest: str) -> str:
    """What the state store remembers a POP3 message by: ``UIDL/size/digest of its header block``.

    A UIDL alone is no identity: a server that rebuilt its mailbox, or numbers its UIDLs (``%u``), gives a new
    message the UIDL of one imported long ago, which then looked imported (and with ``delete_after_import`` was
    deleted unread). The header block holds the Message-ID, the date and the Received trace of this very copy.
    """
    return f"{uidl}/{size}/{header_digest}"


def uidl_of(key: str) -> str:
    """The UIDL in a :func:`message_key` (a UIDL may hold '/', the size and the digest do not)."""
    return key.rsplit("/", 2)[0]


def _digest(block: bytes | None) -> str:
    return hashlib.sha256(block).hexdigest()[:24] if block is not None else "no-headers"


_CHUNK = 256 * 1024
TOP_BATCH = 64  # TOP commands sent at once to a server that offers PIPELINING
_MAXLINE = poplib._MAXLINE  # type: ignore[attr-defined]  # poplib refuses a longer line ("line too long")


def _stream_reply(client: poplib.POP3, sink: BlobWriter, limit: int) -> bool:
    """The lines of a multi-line reply up to its final ".", dot-unstuffed and CRLF-terminated, into ``sink``;
    False (the reply not read to its end) once more than ``limit`` bytes came.

    What poplib has buffered is taken a block of whole lines at a time (``peek``, then ``read`` of exactly those
    lines): ~0.1 ms a 270 KB mail instead of ~1.9 ms through poplib's reader one line at a time. A block that is
    not plain CRLF lines within poplib's line limit, or a line not yet whole in the buffer, goes line by line
    through poplib's own reader, so its checks and its line endings apply exactly as before."""
    reader = cast(io.BufferedReader, client.file)  # socket.makefile("rb")
    while True:  # every turn starts at the start of a line
        buffered = reader.peek(_CHUNK)
        cut = buffered.rfind(b"\n") + 1
        block = buffered[:cut]
        if cut and block.count(b"\n") == block.count(b"\r\n") and max(map(len, block.split(b"\n"))) < _MAXLINE:
            if block.startswith(b".\r\n"):
                reader.read(3)
                return sink.size <= limit
            end = block.find(b"\r\n.\r\n")
            content = block if end < 0 else block[: end + 2]
            reader.read(len(content) + (0 if end < 0 else 3))
            if content.startswith(b".."):
                content = content[1:]
            sink.write(content.replace(b"\r\n..", b"\r\n."))
            if end >= 0:
                return sink.size <= limit
        else:
            line, _octets = client._getline()  # type: ignore[attr-defined]  # poplib's line reader and its checks
            if line == b".":
                return sink.size <= limit
            if line.startswith(b".."):
                line = line[1:]
            sink.write(line + b"\r\n")
        if sink.size > limit:
            return False


def _sizes(list_lines: list[bytes]) -> dict[bytes, int]:
    sizes = {}
    for line in list_lines:
        fields = line.split()
        if len(fields) > 1 and fields[1].isdigit():
            sizes[fields[0]] = int(fields[1])
    return sizes


class Pop3Mailbox:
    def __init__(
        self,
        account: Pop3Account,
        secrets: Callable[[str], str],
        *,
        remembered: set[str] | None = None,
        token_source: Callable[[], str] | None = None,
    ) -> None:
        self.account = account
        self._token_source = token_source
        self._secrets = secrets
        self._remembered = remembered or set()
        self._client: poplib.POP3 | None = None
        # After a new session had to be opened: (UIDL, size) -> message number in it, and the keys checked again.
        self._numbers: dict[tuple[str, int], bytes] = {}
        self._checked: set[str] = set()
        self._places: dict[str, tuple[str, int]] = {}  # key -> (UIDL, size), for the messages listed
        self._pipelining = False  # the server takes several commands before answering the first (CAPA)
        self._where = f"POP3 {account.host}:{account.effective_port} (account {account.name!r})"

    def __enter__(self) -> Pop3Mailbox:
        self._client = self._connect()
        self._login()
        try:
            self._pipelining = "PIPELINING" in self._client.capa()
        except (*_NETWORK_ERRORS, poplib.error_proto):
            self._pipelining = False  # CAPA is optional (RFC 2449): one command at a time then
        return self

    def __exit__(self, *exc: object) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        close_quietly(client.quit, client.close)  # QUIT commits the deletions of this session

    def _connect(self) -> poplib.POP3:
        context = client_context(self.account.ca_file)
        return connect(self._where, lambda: self._open(context), (*_NETWORK_ERRORS, poplib.error_proto))

    def _open(self, context: ssl.SSLContext) -> poplib.POP3:
        account = self.account
        timeout = account.timeout_seconds
        if account.security == "ssl":
            return poplib.POP3_SSL(account.host, account.effective_port, timeout=timeout, context=context)
        client = poplib.POP3(account.host, account.effective_port, timeout=timeout)
        if account.security == "starttls":
            try:
                capabilities = client.capa()
            except poplib.error_proto:
                capabilities = {}
            if "STLS" not in capabilities:
                client.close()
                raise AccountError(
                    f"{self._where}: the server does not offer STLS; refusing to send the password unencrypted"
                )
            client.stls(context)
        return client

    def _login(self) -> None:
        client = self._require()
        account = self.account
        try:
            if account.auth == "xoauth2":
                self._xoauth2_login(client)
                return
            client.user(account.username)
            client.pass_(self._secrets(account.password_secret or ""))
        except poplib.error_proto as err:
            raise AccountError(
                f"{self._where}: login refused for user {account.username!r}: {server_text(err)}; "
                + (
                    f"check the password in secret {account.password_secret!r}"
                    if account.auth == "password"
                    else "check that the app may use POP for this mailbox (POP.AccessAsApp, Exchange service principal)"
                )
            ) from None
        except _NETWORK_ERRORS as err:
            raise AccountError(f"{self._where}: connection lost during login: {describe(err)}") from err

    def _xoauth2_login(self, client: poplib.POP3) -> None:
        """SASL XOAUTH2 (RFC 5034 AUTH with an initial response); poplib has no public AUTH command."""
        if self._token_source is None:
            raise AccountError(f"{self._where}: auth xoauth2 needs a token source")
        token = self._token_source()
        sasl = f"user={self.account.username}\x01auth=Bearer {token}\x01\x01".encode()
        # poplib has no public AUTH; _shortcmd is its own one-line command helper.
        answer = client._shortcmd("AUTH XOAUTH2 " + base64.b64encode(sasl).decode())  # type: ignore[attr-defined]  # poplib, no public API
        if answer.startswith(b"+ ") or answer == b"+":
            # A failure comes as a challenge carrying a JSON error; the client must answer with an empty line,
            # after which the server sends -ERR (raised by poplib as error_proto).
            client._shortcmd("")  # type: ignore[attr-defined]  # poplib, no public API

    def check(self) -> list[str]:
        client = self._require()
        try:
            count, size = client.stat()
        except (*_NETWORK_ERRORS, poplib.error_proto) as err:
            raise AccountError(f"{self._where}: STAT failed: {describe(err)}") from err
        return [f"mailbox: {count} messages, {size} bytes", "no folders in POP3: imported mail is remembered"]

    def describe_targets(self) -> list[str]:
        return []  # no folders

    def ensure_targets(self) -> None:
        """POP3 has no folders: imported mail is remembered (or deleted), never moved."""

    def list_messages(self) -> Iterator[MessageRef]:
        """Every message with its key (:func:`message_key`): the header block of each is read (TOP n 0) to tell
        a new message from an imported one that had the same UIDL."""
        client = self._require()
        try:
            _, uidl_lines, _ = client.uidl()
            _, list_lines, _ = client.list()
        except (*_NETWORK_ERRORS, poplib.error_proto) as err:
            raise ConnectionLost(f"{self._where}: connection lost while listing: {describe(err)}") from err
        sizes = _sizes(list_lines)
        entries = []
        for line in uidl_lines:
            number, uidl = line.split()[:2]
            entries.append((number, (uidl.decode("ascii", "replace"), sizes.get(number, 0))))
        blocks = self._header_blocks(entries)
        for (number, place), block in zip(entries, blocks, strict=True):
            size = place[1]
            key = message_key(*place, _digest(block))
            self._places[key] = place
            headers = None
            if block is not None and key not in self._remembered:
                headers = parse_headers(block)
            yield MessageRef(ref=number.decode(), key=key, size=size, headers=headers)

    def _number(self, ref: MessageRef) -> int:
        """The message's number in the current session. After a new session had to be opened, the number is found
        by UIDL and size and the header block is checked again: a message is never read or deleted for another."""
        if not self._numbers:
            return int(ref.ref)
        place = self._places.get(ref.key)
        number = self._numbers.get(place) if place is not None else None
        if place is None or number is None:
            raise DocumentError(f"{self._where}: message {ref.key} is no longer on the server")
        if ref.key not in self._checked and ref.key != message_key(*place, _digest(None)):
            if message_key(*place, _digest(self._header_block(number))) != ref.key:
                raise DocumentError(
                    f"{self._where}: message {ref.key} is no longer on the server (its UIDL names another message now)"
                )
            self._checked.add(ref.key)
        return int(number)

    def _reopen(self, err: BaseException) -> None:
        """A new session after one fell out of step, so that one broken message does not break the others.
        Deletions of the old session are not committed: those messages are remembered and deleted next run."""
        log.warning("%s: session out of step (%s); opening a new one", self._where, describe(err))
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        self._client = self._connect()
        self._login()
        try:
            _, uidl_lines, _ = self._client.uidl()
            _, list_lines, _ = self._client.list()
        except (*_NETWORK_ERRORS, poplib.error_proto) as error:
            raise ConnectionLost(f"{self._where}: connection lost while listing: {describe(error)}") from error
        sizes = _sizes(list_lines)
        self._numbers = {
            (fields[1].decode("ascii", "replace"), sizes.get(fields[0], 0)): fields[0]
            for fields in (line.split() for line in uidl_lines)
            if len(fields) > 1
        }
        self._checked = set()

    def _header_blocks(self, entries: list[tuple[bytes, tuple[str, int]]]) -> list[bytes | None]:
        """The header block of each listed message, in order. With PIPELINING (RFC 2449) the TOP commands go
        :data:`TOP_BATCH` at a time, one round trip a batch instead of one a message; one by one otherwise, and
        after a new session had to be opened (numbers then come from it)."""
        blocks: list[bytes | None] = []
        while len(blocks) < len(entries):
            rest = entries[len(blocks) :]
            if self._numbers or not self._pipelining:
                number, place = rest[0]
                blocks.append(self._header_block(self._numbers.get(place, number)))
            else:
                blocks.extend(self._pipelined_header_blocks([number for number, _ in rest[:TOP_BATCH]]))
        return blocks

    def _pipelined_header_blocks(self, numbers: list[bytes]) -> list[bytes | None]:
        """TOP n 0 for each of ``numbers`` sent at once, the answers read in order. Stops early (the last block
        None) when the session falls out of step: a new one is open then and the caller goes on one by one."""
        client = self._require()
        blocks: list[bytes | None] = []
        try:
            for number in numbers:
                client._putcmd(f"TOP {int(number)} 0")  # type: ignore[attr-defined]  # poplib's own command step
            for _number in numbers:
                try:
                    client._getresp()  # type: ignore[attr-defined]  # poplib, no public API
                except poplib.error_proto as err:
                    if not _server_refused(err):
                        raise
                    blocks.append(None)  # a one-line -ERR: the session is still in step
                    continue
                lines = []
                while (line := client._getline()[0]) != b".":  # type: ignore[attr-defined]  # poplib, no public API
                    lines.append(line[1:] if line.startswith(b"..") else line)
                blocks.append(b"\r\n".join(lines) + b"\r\n\r\n")
        except poplib.error_proto as err:
            if _connection_closed(err):
                raise ConnectionLost(f"{self._where}: connection lost while reading headers: {describe(err)}") from err
            self._reopen(err)
            blocks.append(None)
        except _NETWORK_ERRORS as err:
            raise ConnectionLost(f"{self._where}: connection lost while reading headers: {describe(err)}") from err
        return blocks

    def _header_block(self, number: bytes) -> bytes | None:
        """The message's header block (TOP n 0), or None when the server refuses it."""
        try:
            _, lines, _ = self._require().top(int(number), 0)
        except poplib.error_proto as err:
            if _connection_closed(err):
                raise ConnectionLost(f"{self._where}: connection lost while reading headers: {describe(err)}") from err
            if not _server_refused(err):
                self._reopen(err)
            return None
        except _NETWORK_ERRORS as err:
            raise ConnectionLost(f"{self._where}: connection lost while reading headers: {describe(err)}") from err
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def read(self, ref: MessageRef) -> MimeMailItem:
        """RETR streamed into memory or, past BLOB_MEMORY_LIMIT, a temporary file; never whole in memory. A message
        whose listed size is over MAX_MESSAGE_BYTES is not downloaded (UnreadableMessage: to the failed folder)."""
        limit = model.MAX_MESSAGE_BYTES
        if ref.size is not None and ref.size > limit:
            raise UnreadableMessage(f"{too_big('the message', ref.size, limit)}: not downloaded")
        number = self._number(ref)  # may open a new session: the client is taken after it
        with BlobWriter() as writer:  # a failure discards what was written
            try:
                client = self._require()
                client._putcmd(f"RETR {number}")  # type: ignore[attr-defined]  # poplib's own steps of retr(), streamed
                client._getresp()  # type: ignore[attr-defined]  # poplib, no public API
                if not _stream_reply(client, writer, limit):
                    self._reopen(DocumentError("message longer than listed"))  # the rest of it is still on the wire
                    raise UnreadableMessage(f"{too_big('the message', limit + 1, limit)} (more than listed): not read")
            except poplib.error_proto as err:
                if _connection_closed(err):
                    raise ConnectionLost(f"{self._where}: connection lost while fetching: {describe(err)}") from err
                if not _server_refused(err):
                    self._reopen(err)
                raise DocumentError(
                    f"{self._where}: RETR {ref.ref} (message {ref.key}) refused: {server_text(err)}"
                ) from err
            except _NETWORK_ERRORS as err:
                raise ConnectionLost(f"{self._where}: connection lost while fetching: {describe(err)}") from err
        return MimeMailItem(writer.finish())

    def leave(self, ref: MessageRef) -> None:
        """Nothing to do: every listing shows the whole folder again."""

    def remembered(self, ref: MessageRef) -> bool:
        """True for a message an earlier run settled (ingest.ports.RemembersSettledMail): imported or failed."""
        return ref.key in self._remembered

    def removes_remembered(self, ref: MessageRef, imported: Callable[[], bool]) -> bool:
        """Remember, then delete: with ``delete_after_import`` a remembered message is deleted once it, this very
        message, is recorded as imported; a failed one stays on the server for good."""
        return self.account.delete_after_import and imported()

    settles_in_batches = False  # each message as soon as its documents are recorded

    def settle_many(self, refs: Sequence[MessageRef], outcome: Outcome) -> dict[str, IngestError]:
        """One at a time: DELE takes one message number."""
        for ref in refs:
            self.settle(ref, outcome)
        return {}

    def settle(self, ref: MessageRef, outcome: Outcome) -> None:
        if outcome == "processed" and self.account.delete_after_import:
            try:
                number = self._number(ref)  # may open a new session: the client is taken after it
            except DocumentError as err:
                # Never delete what may be another message: it stays, remembered, and goes in a later run.
                log.warning("%s: not deleted: %s", self._where, err)
                return
            try:
                self._require().dele(number)
            except (*_NETWORK_ERRORS, poplib.error_proto) as err:
                raise ConnectionLost(f"{self._where}: DELE {ref.ref} failed: {describe(err)}") from err
        # Otherwise nothing to do on the server: the pipeline records the outcome in the state store.

    def _require(self) -> poplib.POP3:
        if self._client is None:
            raise RuntimeError("Pop3Mailbox used outside its 'with' block")
        return self._client
