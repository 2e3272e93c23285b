"""The folders of one IMAP session: the server's naming learnt once (NAMESPACE, LIST, SPECIAL-USE), configured
names resolved with it, and the processed/failed folders made when missing.

A folder counts as there only when it can hold mail: Dovecot lists the parent of ``Eingang/Lieferanten`` as
``\\Noselect``, and a move into it fails, so such a name is created for real. Every refusal names the folder as
configured and as the server spells it, with the server's own reason.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from ..errors import AccountError, ConnectionLost
from . import imap_folders
from ._errors import IMAP_NETWORK_ERRORS, describe, imap_connection_kept, server_text, throttled

log = logging.getLogger(__name__)

_CANNOT_HOLD_MAIL = frozenset({b"\\noselect", b"\\nonexistent"})  # LIST attributes (RFC 3501, RFC 5258)


class SessionFolders:
    def __init__(self, client: IMAPClient, where: str, layout: imap_folders.FolderLayout) -> None:
        self._client = client
        self._where = where
        self.layout = layout
        self._ready: set[str] = set()  # server names of target folders known to hold mail in this session

    @classmethod
    def learn(cls, client: IMAPClient, where: str, configured: Sequence[str]) -> SessionFolders:
        """Ask the server once how it names folders: NAMESPACE (else LIST's delimiter) and its special folders
        (one LIST of only those where the server can: RFC 6154's selection option)."""
        try:
            namespaces = client.namespace() if client.has_capability("NAMESPACE") else None
            delimiter = _list_delimiter(client) if namespaces is None or not namespaces[0] else "/"
            listing = _special_folders(client, where, configured)
        except IMAP_NETWORK_ERRORS as err:
            raise AccountError(f"{where}: connection lost while listing folders: {describe(err)}") from err
        except IMAPClientError as err:
            raise AccountError(f"{where}: the server refused to list folders: {describe(err)}") from err
        layout = imap_folders.folder_layout(namespaces, delimiter, listing)
        log.debug("%s: folder names: %s", where, layout.describe())
        return cls(client, where, layout)

    def resolve(self, folder: str) -> str:
        """The server's name for a configured folder ("/"-path, server form or ``\\Use``)."""
        try:
            return self.layout.server_name(folder)
        except imap_folders.FolderNameError as err:
            raise AccountError(f"{self._where}: folder {folder!r}: {err}") from None

    def describe(self, name: str) -> str:
        """The server name with its special use, for a person: ``'[Gmail]/Trash' (\\Trash)``."""
        use = self.layout.special_use(name)
        return f"{name!r} ({use})" if use else repr(name)

    def check_source(self, folder: str) -> str:
        """The source folder's server name; refused when mail never leaves it (Gmail's All Mail)."""
        name = self.resolve(folder)
        use = self.layout.special_use(name)
        if use and use.lower() in imap_folders.VIRTUAL_USES:
            raise AccountError(
                f"{self._where}: source folder {folder!r} is the server's {use} folder: mail moved out of it is "
                f"still listed there (Gmail's All Mail shows every label); import from INBOX or a label"
            )
        return name

    def target_warning(self, name: str) -> str | None:
        use = self.layout.special_use(name)
        if use and use.lower() in imap_folders.EPHEMERAL_USES:
            return f"the server marks it {use}: mail moved there may be deleted by the server after a while"
        return None

    def holds_mail(self, name: str) -> bool:
        """True when the server lists the folder and it can hold mail (not \\Noselect)."""
        try:
            with imap_connection_kept(self._where, f"looking at folder {name!r}"):
                flags = self._listed_flags(name)
        except IMAPClientError as err:
            raise AccountError(f"{self._where}: the server refused to list folder {name!r}: {describe(err)}") from err
        return flags is not None and not flags & _CANNOT_HOLD_MAIL

    def ensure(self, role: str, folder: str) -> bool:
        """Make a processed/failed folder (and its parents) unless it holds mail already; True when it was made."""
        name = self.resolve(folder)
        if name in self._ready:
            return False
        try:
            with imap_connection_kept(self._where, f"checking folder {folder!r}"):
                created = self._create(name)
        except IMAPClientError as err:
            if throttled(err):
                raise ConnectionLost(f"{self._where}: the server is busy: {server_text(err)}") from err
            raise AccountError(
                f"{self._where}: the {role} folder {folder!r} (on this server {name!r}) cannot be created: "
                f"{server_text(err)}; fix '{role}_folder' in the accounts file "
                f"(folder names on this server: {self.layout.describe()})"
            ) from None
        self._ready.add(name)
        return created

    def _create(self, name: str) -> bool:
        flags = self._listed_flags(name)
        if flags is not None and not flags & _CANNOT_HOLD_MAIL:
            return False
        for parent in self.layout.parents(name):
            if parent.upper() != "INBOX" and self._listed_flags(parent) is None:
                self._create_one(parent)
        try:
            self._create_one(name)
        except IMAPClientError as err:
            if flags is None:
                raise
            raise IMAPClientError(f"it exists but cannot hold mail (\\Noselect): {server_text(err)}") from err
        return True

    def _create_one(self, name: str) -> None:
        log.info("%s: creating folder %r", self._where, name)
        self._client.create_folder(name)
        with contextlib.suppress(IMAPClientError):
            self._client.subscribe_folder(name)

    def _listed_flags(self, name: str) -> frozenset[bytes] | None:
        """The LIST attributes of one folder (lower-cased), or None when the server does not list it."""
        for flags, _delimiter, _name in self._client.list_folders("", name):
            return frozenset(bytes(flag).lower() for flag in flags)
        return None


def _list_delimiter(client: IMAPClient) -> str | None:
    for _flags, delimiter, _name in client.list_folders(directory="", pattern=""):
        return delimiter.decode() if isinstance(delimiter, bytes) else delimiter
    return "/"


def _special_folders(client: IMAPClient, where: str, configured: Sequence[str]) -> list[imap_folders.ListEntry]:
    """LIST answers carrying special-use attributes. A server that advertises SPECIAL-USE but refuses the listing
    only loses the special folders (a configured ``\\Use`` name then fails naming them), not the account."""
    try:
        if client.has_capability("SPECIAL-USE") and client.has_capability("LIST-EXTENDED"):
            return _list_special(client)
        if any(name.startswith("\\") for name in configured):
            listed: list[imap_folders.ListEntry] = client.list_folders()  # without LIST-EXTENDED, flags in LIST
            return listed
    except IMAPClientError as err:
        log.warning("%s: the server refused to list its special folders: %s", where, describe(err))
    return []


def _list_special(client: IMAPClient) -> list[imap_folders.ListEntry]:
    """``LIST (SPECIAL-USE) "" "*"``: only the special folders. imapclient has no call for the selection option;
    its own LIST parsing reads the answer (names decoded from modified UTF-7)."""
    typ, data = client._imap._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"')
    client._checkok("LIST", typ, data)
    typ, data = client._imap._untagged_response(typ, data, "LIST")
    listed: list[imap_folders.ListEntry] = client._proc_folder_list(data)
    return listed
