"""The folder-name mapping on its own, with the answers real servers give, and the providers' quirks (no socket)."""

from __future__ import annotations

import pytest
from imapclient.exceptions import IMAPClientError

from ingest.mailbox._errors import throttled
from ingest.mailbox.imap_folders import FolderLayout, FolderNameError, folder_layout
from ingest.mailbox.imap_providers import login_hint

DOVECOT = folder_layout(((("", "/"),), None, None), "/")
HOSTING = folder_layout(((("INBOX.", "."),), None, None), ".")  # cPanel, Plesk, Courier
CYRUS = folder_layout(((("INBOX.", "."),), (("user.", "."),), (("", "."),)), ".")
GMAIL = folder_layout(
    ((("", "/"),), None, None),
    "/",
    [
        ((b"\\HasNoChildren",), b"/", "INBOX"),
        ((b"\\All", b"\\HasNoChildren"), b"/", "[Gmail]/All Mail"),
        ((b"\\HasNoChildren", b"\\Trash"), b"/", "[Gmail]/Trash"),
        ((b"\\Junk", b"\\HasNoChildren"), b"/", "[Gmail]/Spam"),
    ],
)
NO_NAMESPACE = folder_layout(None, ".")
CYRUS_UNIX_SEP = folder_layout(((("INBOX/", "/"),), (("user/", "/"),), (("", "/"),)), "/")  # unixhierarchysep: yes


@pytest.mark.parametrize(
    ("layout", "path", "expected"),
    [
        (DOVECOT, "Archiv/2024", "Archiv/2024"),
        (HOSTING, "Archiv/2024", "INBOX.Archiv.2024"),
        (CYRUS, "Archiv/2024", "INBOX.Archiv.2024"),
        (GMAIL, "Archiv/2024", "Archiv/2024"),
        (NO_NAMESPACE, "Archiv/2024", "Archiv.2024"),
        (CYRUS_UNIX_SEP, "Archiv/2024", "INBOX/Archiv/2024"),
        (CYRUS_UNIX_SEP, "INBOX/Archiv", "INBOX/Archiv"),
        # INBOX itself, in any case
        (HOSTING, "INBOX", "INBOX"),
        (HOSTING, "inbox", "INBOX"),
        (DOVECOT, "Inbox", "INBOX"),
        # names already in the server's form
        (HOSTING, "INBOX.Processed", "INBOX.Processed"),
        (HOSTING, "Inbox.Processed", "INBOX.Processed"),
        (HOSTING, "INBOX/Processed", "INBOX.Processed"),
        (DOVECOT, "INBOX/Processed", "INBOX/Processed"),
        (DOVECOT, "inbox/Processed", "INBOX/Processed"),
        (CYRUS, "user.bob.Shared", "user.bob.Shared"),  # another namespace, as written
        # non-ASCII stays text: imapclient encodes it in modified UTF-7 on the wire
        (HOSTING, "Erledigt/Größe", "INBOX.Erledigt.Größe"),
        # special folders by SPECIAL-USE, case-insensitive
        (GMAIL, "\\All", "[Gmail]/All Mail"),
        (GMAIL, "\\trash", "[Gmail]/Trash"),
    ],
)
def test_server_names(layout: FolderLayout, path: str, expected: str) -> None:
    assert layout.server_name(path) == expected


def test_a_special_use_the_server_lacks_names_the_ones_it_has() -> None:
    with pytest.raises(FolderNameError, match=r"no folder as \\Archive .*marked here: \\All, \\Junk, \\Trash"):
        GMAIL.server_name("\\Archive")


@pytest.mark.parametrize(
    ("layout", "name", "parents"),
    [
        (HOSTING, "INBOX.Archiv.2024.Q1", ["INBOX.Archiv", "INBOX.Archiv.2024"]),
        (DOVECOT, "Archiv/2024", ["Archiv"]),
        (DOVECOT, "Processed", []),
        (HOSTING, "INBOX.Processed", []),
        (CYRUS, "user.bob.Shared.2024", ["user.bob", "user.bob.Shared"]),
    ],
)
def test_parents_to_create_first(layout: FolderLayout, name: str, parents: list[str]) -> None:
    assert layout.parents(name) == parents


def test_special_use_of_a_folder() -> None:
    assert GMAIL.special_use("[Gmail]/Spam") == "\\Junk"
    assert GMAIL.special_use("INBOX") is None


def test_descriptions() -> None:
    assert HOSTING.describe() == "personal prefix 'INBOX.', separator '.'"
    assert DOVECOT.describe() == "no personal prefix, separator '/'"


@pytest.mark.parametrize(
    ("host", "auth", "said", "expected"),
    [
        ("imap.gmail.com", "password", "[AUTHENTICATIONFAILED] Invalid credentials (Failure)", "app password"),
        ("IMAP.GMAIL.COM.", "xoauth2", "", "not Google"),
        ("outlook.office365.com", "password", "LOGIN failed.", "auth xoauth2"),
        ("outlook.office365.com", "xoauth2", "User is authenticated but not connected.", "Add-MailboxPermission"),
        ("outlook.office365.com", "xoauth2", "AUTHENTICATE failed.", None),
        ("mail.example.com", "password", "Authentication failed.", None),
    ],
)
def test_provider_hints_at_sign_in(host: str, auth: str, said: str, expected: str | None) -> None:
    hint = login_hint(host, auth, said)
    assert (hint is None) if expected is None else (expected in (hint or ""))


@pytest.mark.parametrize(
    ("said", "busy"),
    [
        (b"[UNAVAILABLE] Try again later", True),
        (b"Server Unavailable. 15", True),  # Exchange Online throttling a mailbox
        (b"[INUSE] Mailbox in use", True),
        (b"[SERVERBUG] Timeout while waiting for lock (0.975 + 0.000 + 0.974 secs).", True),  # Dovecot
        (b"[CANNOT] Invalid mailbox name", False),
        (b"Permission denied", False),
    ],
)
def test_throttling_is_told_apart_from_refusal(said: bytes, busy: bool) -> None:
    assert throttled(IMAPClientError(said)) is busy
