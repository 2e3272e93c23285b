"""How adapters turn library errors into text for a person (never including a secret), and end sessions."""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..errors import AccountError, ConnectionLost

_Session = TypeVar("_Session")

# What a broken IMAP connection raises (imaplib's abort: the server hung up or sent garbage).
IMAP_NETWORK_ERRORS = (OSError, imaplib.IMAP4.abort, ssl.SSLError, socket.timeout)


def server_text(err: BaseException) -> str:
    """The server's own words from an imaplib/poplib error, without Python's bytes repr around them."""
    text = str(err)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return text or "no reason given"


def describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def connect(where: str, open_session: Callable[[], _Session], failures: tuple[type[BaseException], ...]) -> _Session:
    """Open a session (TCP, TLS at once or by STARTTLS/STLS) with ``open_session``: an untrusted certificate, or one of
    ``failures`` (the network's and the protocol library's errors), becomes the account's error saying so; an
    AccountError ``open_session`` raises (a server without STARTTLS) passes as it is."""
    try:
        return open_session()
    except ssl.SSLCertVerificationError as err:
        raise AccountError(
            f"{where}: TLS certificate not trusted ({err.verify_message}); set ca_file for a private CA"
        ) from err
    except failures as err:
        raise AccountError(f"{where}: cannot connect: {describe(err)}") from err


@contextlib.contextmanager
def imap_connection_kept(where: str, doing: str) -> Iterator[None]:
    """A broken IMAP connection during the block becomes ConnectionLost "connection lost while ``doing``"."""
    try:
        yield
    except IMAP_NETWORK_ERRORS as err:
        raise ConnectionLost(f"{where}: connection lost while {doing}: {describe(err)}") from err


def close_quietly(polite: Callable[[], object], forceful: Callable[[], object]) -> None:
    """Say goodbye to the server (LOGOUT, QUIT); when that fails, drop the socket. Never raises: closing a
    session must not mask the real outcome of the run."""
    try:
        polite()
    except Exception:  # noqa: BLE001 - see the docstring
        with contextlib.suppress(Exception):
            forceful()


# Refusals that mean "not now" rather than "never": RFC 5530's codes, Exchange Online throttling a mailbox, and
# Dovecot when another session holds the folder's lock (it says [SERVERBUG], but the words are plain).
_NOT_NOW = ("[UNAVAILABLE]", "[INUSE]", "SERVER UNAVAILABLE", "TIMEOUT WHILE WAITING FOR LOCK")


def throttled(err: BaseException) -> bool:
    """An IMAP refusal that says "not now" rather than "never" (``_NOT_NOW``): worth the next run, not an account
    error."""
    text = server_text(err).upper()
    return any(mark in text for mark in _NOT_NOW)
