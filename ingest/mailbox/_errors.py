"""How adapters turn library errors into text for a person (never including a secret), and end sessions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable


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
