"""What the scenario tests need of a mail server, whichever one runs (Dovecot in either layout, Cyrus), and the
folder names as that server spells them.

The tests write folders as the accounts file does ("/"-paths); ``native`` spells them the way the server under
test does, from what the test knows about how it set the server up (prefix and separator), not from the product's
own mapping, which is what the tests check.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from imapclient import IMAPClient


class MailServer(Protocol):
    name: str  # "dovecot", "dovecot-hosting", "cyrus"...: shown in test ids and failures
    prefix: str  # the personal namespace's prefix: "" or "INBOX."
    separator: str  # "/" or "."
    host: str

    @property
    def ports(self) -> dict[str, int]: ...
    def ensure_running(self) -> None: ...
    def add_user(self, name: str, password: str) -> None: ...
    def client_ssl_context(self) -> ssl.SSLContext: ...
    def connect(self, user: str, password: str) -> contextlib.AbstractContextManager[IMAPClient]: ...
    def append(self, user: str, password: str, folder: str, raw: bytes, flags: Sequence[str | bytes] = ()) -> int: ...
    def append_many(
        self, user: str, password: str, folder: str, raws: Iterable[bytes], flags: Sequence[str | bytes] = ()
    ) -> list[int]: ...
    def folder_messages(self, user: str, password: str, folder: str) -> list[tuple[int, bytes]]: ...
    def folder_flags(self, user: str, password: str, folder: str) -> dict[int, frozenset[str]]: ...
    def list_folders(self, user: str, password: str) -> list[str]: ...


def native(server: MailServer, path: str) -> str:
    """A "/"-path as the server names it: ``Archiv/2024`` -> ``INBOX.Archiv.2024`` on a hosting-style server."""
    if path.upper() == "INBOX":
        return "INBOX"
    return server.prefix + path.replace("/", server.separator)


def as_path(server: MailServer, name: str) -> str:
    """The reverse of ``native``: the server's name as a "/"-path (INBOX stays INBOX)."""
    if server.prefix and name.startswith(server.prefix):
        name = name[len(server.prefix) :]
    return name.replace(server.separator, "/")


_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.IGNORECASE)


class ImapClientSide:
    """The test's own view of a server's mailboxes (APPEND, read back, list), over IMAPS with the test CA.

    Server classes give ``host``, ``ports["imaps"]`` and ``client_ssl_context()``; folder names here are the
    server's own (see ``native``)."""

    host: str

    @property
    def ports(self) -> dict[str, int]:
        raise NotImplementedError

    def client_ssl_context(self) -> ssl.SSLContext:
        raise NotImplementedError

    @contextlib.contextmanager
    def connect(self, user: str, password: str) -> Iterator[IMAPClient]:
        """A logged-in IMAPClient over IMAPS that trusts the test CA; logs out at the end."""
        client = IMAPClient(
            self.host, port=self.ports["imaps"], ssl=True, ssl_context=self.client_ssl_context(), timeout=30
        )
        try:
            client.login(user, password)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()
            with contextlib.suppress(Exception):
                client.shutdown()

    def _ensure_folder(self, client: IMAPClient, folder: str) -> None:
        if folder.upper() != "INBOX" and not client.folder_exists(folder):
            client.create_folder(folder)

    def append(self, user: str, password: str, folder: str, raw: bytes, flags: Sequence[str | bytes] = ()) -> int:
        """APPEND one message (creating the folder if missing); returns its UID from APPENDUID."""
        return self.append_many(user, password, folder, [raw], flags)[-1]

    def append_many(
        self, user: str, password: str, folder: str, raws: Iterable[bytes], flags: Sequence[str | bytes] = ()
    ) -> list[int]:
        """APPEND several messages in one connection, in order; returns their UIDs."""
        uids: list[int] = []
        with self.connect(user, password) as client:
            self._ensure_folder(client, folder)
            for raw in raws:
                answer = client.append(folder, raw, flags=tuple(flags))
                uids.extend(_uids_from_answer(answer))
        return uids

    def folder_messages(self, user: str, password: str, folder: str) -> list[tuple[int, bytes]]:
        """(UID, raw message) of every message in the folder, by UID; read with EXAMINE + BODY.PEEK[]."""
        with self.connect(user, password) as client:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            if not uids:
                return []
            fetched = client.fetch(uids, ["BODY.PEEK[]"])
        return sorted((int(uid), bytes(data[b"BODY[]"])) for uid, data in fetched.items())

    def folder_flags(self, user: str, password: str, folder: str) -> dict[int, frozenset[str]]:
        """Stored flags of every message by UID, as text (``"\\\\Seen"``); the session flag \\Recent is left out."""
        with self.connect(user, password) as client:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            if not uids:
                return {}
            fetched = client.fetch(uids, ["FLAGS"])
        result: dict[int, frozenset[str]] = {}
        for uid, data in fetched.items():
            flags = (f.decode() if isinstance(f, bytes) else str(f) for f in data[b"FLAGS"])
            result[int(uid)] = frozenset(f for f in flags if f != "\\Recent")
        return result

    def list_folders(self, user: str, password: str) -> list[str]:
        """Every folder name of the user as the server spells it, decoded from modified UTF-7."""
        with self.connect(user, password) as client:
            return [name if isinstance(name, str) else name.decode() for _flags, _sep, name in client.list_folders()]


def _uids_from_answer(answer: bytes | str) -> list[int]:
    data = answer.encode() if isinstance(answer, str) else answer
    match = _APPENDUID.search(data)
    if match is None:
        raise RuntimeError(f"APPEND answer without APPENDUID: {data!r}")
    return _parse_uid_set(match.group(2))


def _parse_uid_set(text: bytes) -> list[int]:
    uids: list[int] = []
    for chunk in text.split(b","):
        if b":" in chunk:
            low, high = (int(x) for x in chunk.split(b":"))
            uids.extend(range(min(low, high), max(low, high) + 1))
        else:
            uids.append(int(chunk))
    return uids
