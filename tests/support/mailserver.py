"""What the scenario tests need of a mail server, whichever one runs (Dovecot in either layout, Cyrus), and the
folder names as that server spells them.

The tests write folders as the accounts file does ("/"-paths); ``native`` spells them the way the server under
test does, from what the test knows about how it set the server up (prefix and separator), not from the product's
own mapping, which is what the tests check.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable, Sequence
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
