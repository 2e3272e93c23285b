"""How adapters turn library errors into text for a person (never including a secret), and end sessions."""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
from collections.abc import Callable

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


def close_quietly(polite: Callable[[], object], forceful: Callable[[], object]) -> None:
    """Say goodbye to the server (LOGOUT, QUIT); when that fails, drop the socket. Never raises: closing a
    session must not mask the real outcome of the run."""
    try:
        polite()
    except Exception:  # noqa: BLE001 - see the docstring
        with contextlib.suppress(Exception):
            forceful()


def throttled(err: BaseException) -> bool:
    """An IMAP refusal that says "not now" rather than "never": RFC 5530's [UNAVAILABLE] and [INUSE], and Exchange
    Online's "Server Unavailable" when it throttles a mailbox. Worth the next run, not an account error."""
    text = server_text(err).upper()
    return any(mark in text for mark in ("[UNAVAILABLE]", "[INUSE]", "SERVER UNAVAILABLE"))
