"""Properties of extraction the example tests cannot cover: nothing sent is lost without a trace.

(Never-raises and safe-name properties live in tests/test_extraction.py and tests/test_filenames.py.)
"""

from __future__ import annotations

import base64
from collections import Counter
from email.message import EmailMessage
from email.policy import SMTP

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.config import ImapAccount
from ingest.mime.filenames import sanitise_filename
from ingest.mime.walk import extract_from_mime

ACCOUNT = ImapAccount(name="p", type="imap", host="127.0.0.1", username="u", password_secret="p")
TYPES = ["application/pdf", "application/octet-stream", "application/xml", "image/png", "application/zip", "text/csv"]

names = st.text(
    # what str.splitlines() splits on cannot be in a header value of the email library that builds the message
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029"),
    min_size=1,
    max_size=60,
).filter(lambda name: name.strip())
attachments = st.lists(
    st.tuples(names, st.binary(min_size=1, max_size=3000), st.sampled_from(TYPES), st.sampled_from(["base64", "qp"])),
    min_size=1,
    max_size=5,
)


def _message(parts: list[tuple[str, bytes, str, str]]) -> bytes:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["Subject"] = "property"
    message["Message-ID"] = "<p@example.com>"
    message.set_content("body\n")
    for name, content, content_type, encoding in parts:
        maintype, subtype = content_type.split("/")
        message.add_attachment(
            content,
            maintype=maintype,
            subtype=subtype,
            filename=name,
            cte="base64" if encoding == "base64" else "quoted-printable",
        )
    return message.as_bytes(policy=SMTP)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attachments)
def test_property_every_attachment_of_a_well_formed_message_arrives_intact(parts):
    extraction = extract_from_mime(_message(parts), ACCOUNT)
    assert not [skipped for skipped in extraction.skipped if skipped.damaged]
    assert Counter(d.content for d in extraction.documents) == Counter(content for _n, content, _t, _e in parts)
    keys = [d.key for d in extraction.documents]
    assert len(keys) == len(set(keys))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attachments, st.data())
def test_property_a_damaged_part_is_never_dropped_silently(parts, data):
    """Cut one base64 attachment to a length no padding repairs: it is a document (decoded as far as it goes) or
    a damaged part the pipeline will not settle as processed, never nothing."""
    index = data.draw(st.integers(min_value=0, max_value=len(parts) - 1))
    name, content, content_type, _encoding = parts[index]
    parts = list(parts)
    parts[index] = (name, content, content_type, "base64")
    raw = _message(parts)
    encoded = base64.encodebytes(content).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    start = raw.index(encoded)
    cut = data.draw(st.integers(min_value=0, max_value=max(len(b"".join(encoded.split())) // 4 - 1, 0))) * 4 + 1
    kept, seen = bytearray(), 0
    for byte in encoded:  # keep ``cut`` base64 characters, and the line breaks among them
        if seen == cut:
            break
        kept.append(byte)
        seen += byte not in b"\r\n"
    damaged_raw = raw[:start] + bytes(kept) + raw[start + len(encoded) :]
    extraction = extract_from_mime(damaged_raw, ACCOUNT)
    damaged = [skipped for skipped in extraction.skipped if skipped.damaged]
    assert len(extraction.documents) + len(damaged) >= len(parts)
    assert damaged, "a cut of 4n+1 base64 characters cannot decode cleanly"


@settings(max_examples=100, deadline=None)
@given(attachments, st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=":"), min_size=1))
def test_property_a_stray_header_line_hides_nothing(parts, stray):
    raw = _message(parts)
    header, body = raw.split(b"\r\n\r\n", 1)
    lines = header.split(b"\r\n")
    broken = b"\r\n".join([lines[0], stray.encode(), *lines[1:]]) + b"\r\n\r\n" + body
    before = [(d.filename, d.content) for d in extract_from_mime(raw, ACCOUNT).documents]
    after = [(d.filename, d.content) for d in extract_from_mime(broken, ACCOUNT).documents]
    assert before == after


@settings(max_examples=200, deadline=None)
@given(names, st.sampled_from(TYPES))
def test_property_a_file_name_survives_its_encoding(name, content_type):
    """Whatever encoding the mailer chose for the name (RFC 2231 here), the document is named as the sender
    named it, made safe: never a different or a default name when a usable one was sent."""
    extraction = extract_from_mime(_message([(name, b"%PDF-1.4 x", content_type, "base64")]), ACCOUNT)
    (document,) = extraction.documents
    assert document.filename == sanitise_filename(name.strip(), document.content_type, "attachment")
    assert document.filename == sanitise_filename(document.filename, document.content_type, "attachment")
