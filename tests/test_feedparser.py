"""ingest/mime/feedparser.py: the email parser without a regex compiled per boundary parses every message of the
test corpora, and boundary lines of every shape, exactly as Python's own parser does: the same tree, payloads,
preambles, epilogues, header fields and defects in every part."""

from __future__ import annotations

import email.parser
import re
from collections.abc import Callable
from email.message import Message

import pytest

from ingest.mime.feedparser import parse_bytes
from ingest.mime.headers import POLICY
from tests import samples
from tests.hostile import corpus


def _shape(message: Message) -> list[object]:
    """Everything the parser decided, part by part, depth first."""
    shape: list[object] = []
    stack = [message]
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        shape.append(
            (
                part.get_content_type(),
                part.get_boundary(),
                [(name, str(value)) for name, value in part.raw_items()],
                [type(defect).__name__ for defect in part.defects],
                part.preamble,
                part.epilogue,
                None if isinstance(payload, list) else payload,
            )
        )
        if isinstance(payload, list):
            stack.extend(reversed(payload))
    return shape


def _standard(raw: bytes) -> Message:
    return email.parser.BytesParser(policy=POLICY).parsebytes(raw)


def _sample_messages() -> list[tuple[str, bytes]]:
    makers: list[tuple[str, Callable[[], bytes]]] = [
        (name, maker)
        for name, maker in vars(samples).items()
        if callable(maker)
        and not name.startswith(("_", "make_"))
        and getattr(maker, "__module__", "") == samples.__name__
    ]
    found = []
    for name, maker in makers:
        try:
            raw = maker()
        except TypeError:  # needs arguments
            continue
        if isinstance(raw, bytes):
            found.append((name, raw))
    return found


CORPUS = [(case.name, case.raw) for case in corpus.cases(with_big=False)] + _sample_messages()


def test_the_corpora_are_there() -> None:
    assert len(CORPUS) > 100


@pytest.mark.parametrize(("name", "raw"), CORPUS, ids=[name for name, _ in CORPUS])
def test_every_corpus_message_parses_as_with_the_standard_parser(name: str, raw: bytes) -> None:
    assert _shape(parse_bytes(raw, POLICY)) == _shape(_standard(raw))


# Boundary lines of every shape: specials a regex would read, trailing blanks, CR or LF or CRLF, a close delimiter
# with or without a line end, text that starts like a delimiter, a boundary that starts another one, none at all.
BOUNDARIES = ["b1", "a.b*c+?[x](y)|z^$\\d", "=_Part_1.2 3", "-", "b", "b1", "'()+_,-./:=?"]
LINE_ENDS = ["\r\n", "\n", "\r"]
DELIMITER_TAILS = ["", "  ", "\t", " x", "--", "-- ", "--\t", "--x", "X"]


def _multipart(boundary: str, end: str, tail: str, inner: str = "b2", close: str = "--") -> bytes:
    lines = [
        "From: a@x.example",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
        "",
        "preamble",
        f"--{boundary}{tail}",
        "Content-Type: text/plain",
        "",
        "one",
        f"--{boundary}X not a delimiter",
        f"--{boundary}",
        f'Content-Type: multipart/alternative; boundary="{inner}"',
        "",
        f"--{inner}",
        "",
        "inner",
        f"--{inner}{close}",
        f"--{boundary}",
        "",
        "two",
        f"--{boundary}{close}{tail}",
        "epilogue",
    ]
    return end.join(lines).encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("end", LINE_ENDS, ids=["crlf", "lf", "cr"])
@pytest.mark.parametrize("tail", DELIMITER_TAILS)
def test_boundary_lines_of_every_shape_parse_as_with_the_standard_parser(boundary: str, end: str, tail: str) -> None:
    for inner, close in (("b2", "--"), (boundary + "2", "--"), (boundary, ""), ("b2", "")):
        raw = _multipart(boundary, end, tail, inner, close)
        assert _shape(parse_bytes(raw, POLICY)) == _shape(_standard(raw)), (inner, close)
        assert _shape(parse_bytes(raw + end.encode(), POLICY)) == _shape(_standard(raw + end.encode()))


def test_the_standard_parser_is_left_as_it_is() -> None:
    import email.feedparser

    assert email.feedparser.re is re  # the private copy has its own module object
