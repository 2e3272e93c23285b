"""How adapters turn library errors into text for a person (never including a secret)."""

from __future__ import annotations


def server_text(err: BaseException) -> str:
    """The server's own words from an imaplib/poplib error, without Python's bytes repr around them."""
    text = str(err)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return text or "no reason given"


def describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
