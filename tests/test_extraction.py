"""The one extraction path: headers, MIME walk, TNEF, sniffing, naming, filters, and robustness."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
import struct
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tnefparse.tnef import TNEF

import ingest.mime.selection as selection_module
from ingest.config import ImapAccount
from ingest.errors import TransientError
from ingest.mime.filenames import numbered_filename
from ingest.mime.headers import message_identity, parse_headers
from ingest.mime.parts import MAX_DOCUMENTS_PER_MESSAGE, MAX_NESTING_DEPTH, Candidate, UndecodablePart
from ingest.mime.selection import select_documents
from ingest.mime.sniffing import sniff_content_type
from ingest.mime.walk import extract_from_mime
from ingest.model import Extraction, MessageHeaders
from tests import samples

KEY = re.compile(r"^[0-9.]+:[0-9a-f]{16}$")


def account(import_: str = "attachments", include_inline: bool = False, **filters: Any) -> ImapAccount:
    """A real account object: it is what the pipeline hands to extraction as ExtractionOptions."""
    return ImapAccount.model_validate(
        {
            "name": "test",
            "type": "imap",
            "host": "imap.example.com",
            "username": "invoices@example.com",
            "password_secret": "pw",
            "import": import_,
            "include_inline": include_inline,
            "filters": filters,
        }
    )


def names(extraction: Extraction) -> list[str]:
    return [document.filename for document in extraction.documents]


def skipped(extraction: Extraction) -> dict[str, str]:
    return {part.filename: part.reason for part in extraction.skipped}


# --- headers -------------------------------------------------------------------------------------------------


def test_parse_headers_of_an_everyday_invoice() -> None:
    headers = parse_headers(samples.invoice_with_pdf())
    assert headers == MessageHeaders(
        message_id="invoice-2025-0042@supplier.example",
        sender="billing@supplier.example",
        subject="Rechnung 2025-0042",
        received=datetime(2025, 3, 4, 9, 15, tzinfo=timezone(timedelta(hours=1))),
        from_addresses=("billing@supplier.example",),
    )
    assert headers.received is not None and headers.received.utcoffset() == timedelta(hours=1)


def test_parse_headers_from_the_header_block_alone() -> None:
    # POP3 TOP and IMAP BODY.PEEK[HEADER] give only the headers
    raw = samples.invoice_with_pdf()
    header_block = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    assert parse_headers(header_block) == parse_headers(raw)


def test_message_id_is_stripped_of_angle_brackets_and_whitespace() -> None:
    raw = b"Message-ID:\r\n  <abc.123@mx.example>  \r\nSubject: x\r\n\r\nbody"
    assert parse_headers(raw).message_id == "abc.123@mx.example"
    assert parse_headers(b"Message-ID: bare-id@x\r\n\r\n").message_id == "bare-id@x"
    assert parse_headers(b"Message-ID: <>\r\n\r\n").message_id is None


def test_message_identity_uses_the_message_id_or_a_digest() -> None:
    raw = samples.invoice_with_pdf()
    assert message_identity(parse_headers(raw), raw) == "mid:invoice-2025-0042@supplier.example"
    raw = samples.without_message_id_or_date()
    headers = parse_headers(raw)
    assert headers.message_id is None
    assert message_identity(headers, raw) == "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (b"=?iso-8859-1?Q?Rechnung_M=E4rz?=", "Rechnung März"),
        (b"=?UTF-8?B?UmVjaG51bmcgTcOkcno=?=", "Rechnung März"),
        (b"Re: =?utf-8?q?Rechnung?= =?utf-8?q?_M=C3=A4rz?= 2025", "Re: Rechnung März 2025"),
        # one UTF-8 character split across two encoded words, as some mailers do
        (b"=?utf-8?B?UmVjaG51bmcgTcM=?= =?utf-8?B?pHJ6?=", "Rechnung März"),
        (b"=?utf-8?q?Rechnung?=\r\n =?iso-8859-1?q?_M=E4rz?=", "Rechnung März"),
        (b"Rechnung M\xc3\xa4rz", "Rechnung März"),  # raw UTF-8
        (b"Rechnung M\xe4rz", "Rechnung März"),  # raw Latin-1
        (b"=?no-such-charset?Q?Rechnung_M=E4rz?=", "Rechnung März"),
        (b"=?us-ascii?Q?Rechnung_M=C3=A4rz?=", "Rechnung März"),  # lying charset
        (b"=?utf-8?B?not base64?=", "=?utf-8?B?not base64?="),
        (b"Invoice\r\n 2025", "Invoice 2025"),
    ],
)
def test_subject_is_decoded_whatever_the_charset(subject: bytes, expected: str) -> None:
    assert parse_headers(b"Subject: " + subject + b"\r\n\r\n").subject == expected


def test_sender_is_the_bare_address_even_with_an_encoded_display_name() -> None:
    raw = b"From: =?utf-8?q?M=C3=BCller=2C_Hans_=3Cboss=40evil=3E?= <hans.mueller@supplier.example>\r\n\r\n"
    assert parse_headers(raw).sender == "hans.mueller@supplier.example"
    assert parse_headers(b"From: plain@example.com\r\n\r\n").sender == "plain@example.com"
    assert parse_headers(b"Subject: no sender\r\n\r\n").sender == ""


def test_received_falls_back_to_the_newest_received_header() -> None:
    headers = parse_headers(samples.without_message_id_or_date())
    assert headers.received == datetime(2025, 3, 5, 10, 0, tzinfo=UTC)


def test_unparseable_date_falls_back_and_unknown_zone_is_utc() -> None:
    raw = b"Date: yesterday-ish\r\nReceived: by mx; Wed, 05 Mar 2025 10:00:00 -0000\r\n\r\n"
    received = parse_headers(raw).received
    assert received == datetime(2025, 3, 5, 10, 0, tzinfo=UTC)
    assert received is not None and received.tzinfo is not None
    assert parse_headers(b"Date: garbage\r\nReceived: no date here\r\n\r\n").received is None
    assert parse_headers(b"Subject: x\r\n\r\n").received is None


# --- the MIME walk -------------------------------------------------------------------------------------------


def test_everyday_invoice_gives_its_pdf() -> None:
    extraction = extract_from_mime(samples.invoice_with_pdf(), account())
    assert names(extraction) == ["Rechnung_2025-0042.pdf"]
    [document] = extraction.documents
    assert document.content_type == "application/pdf"
    assert document.content == samples.make_pdf("Rechnung 2025-0042")
    assert document.key == "2:" + hashlib.sha256(document.content).hexdigest()[:16]
    assert extraction.skipped == []


def test_keys_are_stable_for_the_same_bytes_and_differ_between_parts() -> None:
    raw = samples.duplicate_names()
    first = extract_from_mime(raw, account("both"))
    second = extract_from_mime(raw, account("both"))
    assert [d.key for d in first.documents] == [d.key for d in second.documents]
    assert all(KEY.match(d.key) for d in first.documents)
    assert len({d.key for d in first.documents}) == len(first.documents)
    assert first.documents[0].key.startswith("0:")  # the whole message


def test_pdf_sent_as_octet_stream_without_extension_is_a_pdf() -> None:
    [document] = extract_from_mime(samples.pdf_as_octet_stream_without_extension(), account()).documents
    assert document.content_type == "application/pdf"
    assert document.filename == "scan0001.pdf"


def test_inline_logo_and_signature_are_skipped() -> None:
    extraction = extract_from_mime(samples.inline_logo_and_signature(), account())
    assert names(extraction) == ["Rechnung 7.pdf"]
    assert skipped(extraction) == {"image001.png": "inline image", "signature.png": "inline image"}


def test_inline_images_are_kept_when_the_account_asks() -> None:
    extraction = extract_from_mime(samples.inline_logo_and_signature(), account(include_inline=True))
    assert names(extraction) == ["image001.png", "signature.png", "Rechnung 7.pdf"]
    assert [d.content_type for d in extraction.documents] == ["image/png", "image/png", "application/pdf"]
    assert extraction.skipped == []


def test_an_attached_image_is_a_document() -> None:
    extraction = extract_from_mime(samples.mixed_attachments(), account())
    assert "signature-logo.png" in names(extraction)


def test_pdf_marked_inline_is_still_a_document() -> None:
    extraction = extract_from_mime(samples.pdf_marked_inline(), account())
    assert names(extraction) == ["Rechnung inline.pdf"]
    assert extraction.documents[0].content_type == "application/pdf"


def test_forwarded_message_is_an_eml_and_its_attachments_are_extracted() -> None:
    extraction = extract_from_mime(samples.forwarded_message_with_pdf(), account())
    assert names(extraction) == ["Invoice 77.eml", "invoice-77.pdf"]
    eml, pdf = extraction.documents
    assert eml.content_type == "message/rfc822"
    assert eml.key.startswith("2:")
    forwarded = message_from_bytes(eml.content, policy=policy.default)
    assert forwarded["Subject"] == "Invoice 77"
    assert forwarded.get_body(("plain",)).get_content().strip() == "Invoice 77 attached."
    assert pdf.content == samples.make_pdf("Invoice 77")
    assert pdf.key.startswith("2.2:")


def test_attached_message_sent_base64_encoded_is_decoded() -> None:
    inner = samples.invoice_with_pdf()
    raw = (
        b"From: a@example.com\r\nSubject: fw\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(inner)
        + b"--B--\r\n"
    )
    extraction = extract_from_mime(raw, account())
    assert names(extraction) == ["Rechnung 2025-0042.eml", "Rechnung_2025-0042.pdf"]
    assert extraction.documents[0].content == inner


def test_nesting_up_to_the_limit_is_extracted() -> None:
    extraction = extract_from_mime(samples.nested_forwards(MAX_NESTING_DEPTH), account())
    assert "deep.pdf" in names(extraction)
    assert len([n for n in names(extraction) if n.endswith(".eml")]) == MAX_NESTING_DEPTH
    assert extraction.skipped == []


def test_nesting_beyond_the_limit_keeps_the_eml_with_a_note() -> None:
    extraction = extract_from_mime(samples.nested_forwards(MAX_NESTING_DEPTH + 1), account())
    assert "deep.pdf" not in names(extraction)
    assert "Level 0.eml" in names(extraction)
    assert len([n for n in names(extraction) if n.endswith(".eml")]) == MAX_NESTING_DEPTH + 1
    assert skipped(extraction) == {
        "Level 0.eml": "attached message nested deeper than 20 levels: kept as .eml, its attachments not extracted"
    }


# --- TNEF ----------------------------------------------------------------------------------------------------


def test_sample_tnef_is_readable_by_tnefparse() -> None:
    tnef = TNEF(samples.make_tnef([("a b.pdf", b"%PDF-1.4 a"), ("c.xml", b"<?xml c")]))
    assert [(a.long_filename(), a.data) for a in tnef.attachments] == [
        ("a b.pdf", b"%PDF-1.4 a"),
        ("c.xml", b"<?xml c"),
    ]


def test_winmail_dat_is_unpacked_into_its_files() -> None:
    extraction = extract_from_mime(samples.winmail_dat_message(), account())
    assert names(extraction) == ["Rechnung März.pdf", "invoice.xml"]
    pdf, xml = extraction.documents
    assert (pdf.content_type, xml.content_type) == ("application/pdf", "application/xml")
    assert pdf.content == samples.make_pdf("Rechnung Maerz")
    assert xml.content == samples.XML_INVOICE
    assert (pdf.key[:4], xml.key[:4]) == ("2.1:", "2.2:")
    assert extraction.skipped == []


def test_winmail_dat_with_only_an_8bit_title_is_named_from_its_codepage() -> None:
    extraction = extract_from_mime(samples.winmail_dat_message(long_names=False), account())
    assert names(extraction) == ["Rechnung März.pdf", "invoice.xml"]


def test_corrupt_winmail_dat_is_kept_as_it_came_with_a_note() -> None:
    extraction = extract_from_mime(samples.corrupt_winmail_dat_message(), account())
    [document] = extraction.documents
    assert document.filename == "winmail.dat"
    assert document.content == samples.corrupt_tnef()
    assert document.content_type == "application/vnd.ms-tnef"
    [note] = extraction.skipped
    assert note.filename == "winmail.dat"
    assert note.reason.startswith("TNEF could not be unpacked: ")


def _message_with_tnef(
    tnef: bytes, *, filename: str = "winmail.dat", content_type: str = "application/ms-tnef"
) -> bytes:
    return (
        b"From: a@example.com\r\nSubject: t\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n"
        b"--B\r\nContent-Type: " + content_type.encode() + b"\r\n"
        b'Content-Disposition: attachment; filename="' + filename.encode() + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(tnef) + b"--B--\r\n"
    )


def test_tnef_with_a_bad_checksum_is_kept() -> None:
    tnef = bytearray(samples.make_tnef([("r.pdf", samples.make_pdf("r"))]))
    tnef[-50] ^= 0xFF  # inside the attachment data
    extraction = extract_from_mime(_message_with_tnef(bytes(tnef)), account())
    assert names(extraction) == ["winmail.dat"]
    assert skipped(extraction) == {"winmail.dat": "TNEF could not be unpacked: checksum mismatch"}


def test_tnef_with_an_absurd_property_count_is_refused_quickly() -> None:
    # tnefparse would loop 4 billion times over this count
    props = struct.pack("<I", 0xFFFFFFFF)
    attribute = struct.pack("<BHHI", 2, 0x9005, 0x0006, len(props)) + props + struct.pack("<H", sum(props) & 0xFFFF)
    tnef = samples.make_tnef([("r.pdf", samples.make_pdf("r"))], long_names=False) + attribute
    extraction = extract_from_mime(_message_with_tnef(tnef), account())
    assert names(extraction) == ["winmail.dat"]
    assert skipped(extraction) == {"winmail.dat": "TNEF could not be unpacked: implausible property count"}


def test_renamed_winmail_dat_is_recognised_by_its_signature() -> None:
    tnef = samples.make_tnef([("r.pdf", samples.make_pdf("r"))])
    raw = _message_with_tnef(tnef, filename="ATT00001.dat", content_type="application/octet-stream")
    assert names(extract_from_mime(raw, account())) == ["r.pdf"]


def test_tnef_without_attachments_is_noted() -> None:
    body = b"plain body\x00"
    tnef = samples.make_tnef([]) + struct.pack("<BHHI", 1, 0x800C, 0x0002, len(body)) + body
    tnef += struct.pack("<H", sum(body) & 0xFFFF)
    extraction = extract_from_mime(_message_with_tnef(tnef), account())
    assert extraction.documents == []
    assert skipped(extraction) == {"winmail.dat": "TNEF holds no attachments, only the message body"}


# --- file names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (samples.rfc2231_filename, "Rechnung März.pdf"),
        (samples.rfc2231_continued_filename, "Rechnung März 2025 Kundennummer 12345.pdf"),
        (samples.rfc2047_filename, "Rechnung März.pdf"),
        (samples.latin1_raw_filename, "Rechnung März.pdf"),
        (samples.path_traversal_filename, "passwd.pdf"),
    ],
)
def test_file_names_are_decoded_and_made_safe(build: Any, expected: str) -> None:
    assert names(extract_from_mime(build(), account())) == [expected]


def _one_attachment(disposition: bytes, content_type: bytes = b"application/pdf") -> bytes:
    return (
        b"From: a@example.com\r\nSubject: n\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n"
        b"--B\r\nContent-Type: " + content_type + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(samples.make_pdf("n")) + b"--B--\r\n"
    )


@pytest.mark.parametrize(
    ("disposition", "content_type", "expected"),
    [
        (b'attachment; filename="Rechnung M\xc3\xa4rz.pdf"', b"application/pdf", "Rechnung März.pdf"),
        (b"attachment; filename==?utf-8?B?UmVjaG51bmcgTcOkcnoucGRm?=", b"application/pdf", "Rechnung März.pdf"),
        (b"attachment; filename*=iso-8859-1'de'Rechnung%20M%E4rz.pdf", b"application/pdf", "Rechnung März.pdf"),
        (b"attachment; filename*=bogus''Rechnung%20M%E4rz.pdf", b"application/pdf", "Rechnung März.pdf"),
        (b'attachment; filename="a;b.pdf"', b"application/pdf", "a;b.pdf"),
        (b'attachment; filename="say \\"hi\\".pdf"', b"application/pdf", "say _hi_.pdf"),
        (b"attachment", b'application/pdf; name="from-content-type.pdf"', "from-content-type.pdf"),
        (b"attachment", b"application/pdf", "attachment.pdf"),
        (b'attachment; filename="Rechnung\xe2\x80\xaefdp.exe"', b"application/pdf", "Rechnungfdp.exe"),
    ],
)
def test_file_name_encodings(disposition: bytes, content_type: bytes, expected: str) -> None:
    assert names(extract_from_mime(_one_attachment(disposition, content_type), account())) == [expected]


def test_duplicate_names_are_numbered() -> None:
    extraction = extract_from_mime(samples.duplicate_names(), account())
    assert names(extraction) == ["invoice.pdf", "invoice (2).pdf", "INVOICE (3).PDF"]


# --- import modes --------------------------------------------------------------------------------------------


def test_the_document_cap_comes_before_reading_and_naming_the_rest() -> None:
    loaded: list[str] = []

    def candidate(number: int) -> Candidate:
        def load() -> bytes:
            loaded.append(str(number))
            return samples.make_pdf(f"page {number}")

        return Candidate("invoice.pdf", "application/pdf", str(number), load)

    extraction = select_documents((candidate(n) for n in range(4000)), account())
    assert extraction.too_many
    assert len(extraction.documents) == MAX_DOCUMENTS_PER_MESSAGE + 1
    assert len(loaded) == MAX_DOCUMENTS_PER_MESSAGE + 1  # the other 3,499 parts are never read


def test_numbering_many_parts_of_one_name_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    def counted(name: str, number: int) -> str:
        nonlocal calls
        calls += 1
        return numbered_filename(name, number)

    monkeypatch.setattr(selection_module, "numbered_filename", counted)  # counts, the real function answers
    count = 3000
    candidates = [
        Candidate.from_bytes("Rechnung.pdf", "application/pdf", str(n), b"%PDF-" + bytes(n)) for n in range(count)
    ]
    # A name already "numbered" by the sender keeps its place; the numbering goes round it.
    candidates.insert(0, Candidate.from_bytes("rechnung (3).pdf", "application/pdf", "x", b"%PDF-x"))
    extraction = select_documents(candidates, account(), limit=count + 1)
    named = names(extraction)
    assert len({name.casefold() for name in named}) == count + 1
    assert named[:4] == ["rechnung (3).pdf", "Rechnung.pdf", "Rechnung (2).pdf", "Rechnung (4).pdf"]
    assert named[-1] == f"Rechnung ({count + 1}).pdf"
    assert calls <= count + 2  # one numbering per duplicate (and one more for the taken "(3)"), not count**2 / 2


def test_import_message_gives_the_whole_mail_as_eml_only() -> None:
    raw = samples.invoice_with_pdf()
    extraction = extract_from_mime(raw, account("message"))
    [document] = extraction.documents
    assert document.filename == "Rechnung 2025-0042.eml"
    assert document.content_type == "message/rfc822"
    assert document.content == raw
    assert document.key == "0:" + hashlib.sha256(raw).hexdigest()[:16]


def test_import_both_gives_eml_and_attachments() -> None:
    extraction = extract_from_mime(samples.invoice_with_pdf(), account("both"))
    assert names(extraction) == ["Rechnung 2025-0042.eml", "Rechnung_2025-0042.pdf"]


def test_message_without_attachments() -> None:
    raw = samples.no_attachments()
    assert extract_from_mime(raw, account()) == Extraction()
    assert names(extract_from_mime(raw, account("both"))) == ["Kurze Frage.eml"]


def test_unnamed_text_parts_that_are_not_the_body_are_documents() -> None:
    extraction = extract_from_mime(samples.unnamed_text_documents(), account())
    assert names(extraction) == ["attachment.xml", "attachment.csv"]
    xml, csv = extraction.documents
    assert xml.content == samples.XRECHNUNG and xml.content_type in ("application/xml", "text/xml")
    assert csv.content.startswith(b"Pos;Artikel") and csv.content_type == "text/csv"
    # The footer is not a file anyone sent, and it is said so; the body itself is no skipped part.
    assert skipped(extraction) == {"part 4": "text/plain without a file name: text of the message"}


def test_an_attached_message_global_is_an_attached_mail_too() -> None:
    inner = samples.invoice_with_pdf("global")
    raw = (
        b'From: a@supplier.example\r\nSubject: Fwd\r\nContent-Type: multipart/mixed; boundary="x"\r\n\r\n'
        b"--x\r\nContent-Type: text/plain\r\n\r\nsiehe Anhang\r\n"
        b"--x\r\nContent-Type: message/global\r\n\r\n" + inner + b"\r\n--x--\r\n"
    )
    extraction = extract_from_mime(raw, account())
    assert [(d.filename, d.content_type) for d in extraction.documents] == [
        ("Rechnung global.eml", "message/rfc822"),
        ("Rechnung_global.pdf", "application/pdf"),
    ]


def test_delivery_reports_are_reported_as_not_documents() -> None:
    raw = (
        b'From: mailer-daemon@mx.example\r\nSubject: failure\r\nContent-Type: multipart/report; boundary="r"\r\n\r\n'
        b"--r\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        b"Final-Recipient: rfc822; x@example\r\nAction: failed\r\n\r\n--r--\r\n"
    )
    extraction = extract_from_mime(raw, account())
    assert extraction.documents == []
    assert skipped(extraction) == {"part 2": "message/delivery-status: header fields, not a document"}


def test_a_message_that_is_one_text_xml_part_is_a_document() -> None:
    extraction = extract_from_mime(samples.xrechnung_as_the_whole_message(), account())
    assert [d.content for d in extraction.documents] == [samples.XRECHNUNG]
    assert extraction.skipped == []


def test_eml_name_comes_from_message_stem_without_subject_and_keeps_slashes_out() -> None:
    raw = b"From: a@example.com\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    assert names(extract_from_mime(raw, account("message"), message_stem="uid-42")) == ["uid-42.eml"]
    raw = b"From: a@example.com\r\nSubject: Invoice 1/2025\r\n\r\nx\r\n"
    assert names(extract_from_mime(raw, account("message"))) == ["Invoice 1-2025.eml"]


def test_whole_message_eml_is_not_subject_to_attachment_filters() -> None:
    options = account("both", attachment_names=["*.xml"], max_attachment_mb=0.0001)
    extraction = extract_from_mime(samples.invoice_with_pdf(), options)
    assert names(extraction) == ["Rechnung 2025-0042.eml"]
    assert skipped(extraction) == {"Rechnung_2025-0042.pdf": "filtered: larger than 0.0001 MB"}


# --- attachment filters --------------------------------------------------------------------------------------


def test_attachment_names_is_a_case_insensitive_allow_list() -> None:
    extraction = extract_from_mime(samples.mixed_attachments(), account(attachment_names=["*.PDF"]))
    assert names(extraction) == ["Rechnung.pdf", "scan.pdf"]
    assert skipped(extraction) == {
        "xrechnung.xml": "filtered: name not in attachment_names",
        "signature-logo.png": "filtered: name not in attachment_names",
    }


def test_exclude_attachment_names() -> None:
    options = account(attachment_names=["*.pdf", "*.xml", "*.png"], exclude_attachment_names=["signature*.png"])
    extraction = extract_from_mime(samples.mixed_attachments(), options)
    assert names(extraction) == ["Rechnung.pdf", "xrechnung.xml", "scan.pdf"]
    assert skipped(extraction) == {"signature-logo.png": "filtered: name in exclude_attachment_names"}


def test_name_filters_see_the_sanitised_name_with_its_sniffed_extension() -> None:
    extraction = extract_from_mime(samples.pdf_as_octet_stream_without_extension(), account(attachment_names="*.pdf"))
    assert names(extraction) == ["scan0001.pdf"]


def test_max_attachment_size() -> None:
    extraction = extract_from_mime(samples.mixed_attachments(), account(max_attachment_mb=0.002))
    assert "scan.pdf" not in names(extraction)
    assert skipped(extraction) == {"scan.pdf": "filtered: larger than 0.002 MB"}


# --- select_documents, the path shared with Graph ------------------------------------------------------------


def _exploding_load() -> bytes:
    raise AssertionError("load must not be called")


def test_size_filter_runs_before_loading_when_the_size_is_known() -> None:
    candidate = Candidate("huge.pdf", "application/pdf", "AAMk=", _exploding_load, size=200 * 1024 * 1024)
    extraction = select_documents([candidate], account(max_attachment_mb=100))
    assert skipped(extraction) == {"huge.pdf": "filtered: larger than 100 MB"}


def test_size_filter_applies_after_loading_when_the_size_is_unknown() -> None:
    calls = []

    def load() -> bytes:
        calls.append(1)
        return b"%PDF-1.4" + b"x" * 2000

    extraction = select_documents(
        [Candidate("big.pdf", "application/pdf", "1", load)], account(max_attachment_mb=0.001)
    )
    assert calls == [1]
    assert skipped(extraction) == {"big.pdf": "filtered: larger than 0.001 MB"}


def test_graph_like_candidates_share_the_rules() -> None:
    pdf = samples.make_pdf("graph")
    candidates = [
        Candidate.from_bytes("logo.png", "image/png", "att-1", samples.make_png(), is_inline=True, content_id="logo"),
        Candidate.from_bytes("invoice", "application/octet-stream", "att-2", pdf),
        Candidate.from_bytes("invoice.pdf", "application/pdf", "att-3", pdf),
        Candidate.from_bytes(None, "application/pdf", "att-4", pdf),
        Candidate.from_bytes("empty.txt", "text/plain", "att-5", b""),
    ]
    extraction = select_documents(candidates, account())
    assert names(extraction) == ["invoice.pdf", "invoice (2).pdf", "attachment.pdf"]
    assert [d.key for d in extraction.documents] == [
        f"att-{n}:{hashlib.sha256(pdf).hexdigest()[:16]}" for n in (2, 3, 4)
    ]
    assert skipped(extraction) == {"logo.png": "inline image", "empty.txt": "empty file"}


def test_undecodable_part_is_skipped_but_other_errors_propagate() -> None:
    def undecodable() -> bytes:
        raise UndecodablePart("invalid base64")

    def offline() -> bytes:
        raise TransientError("Graph timed out")

    extraction = select_documents([Candidate("a.pdf", "application/pdf", "1", undecodable)], account())
    assert skipped(extraction) == {"a.pdf": "could not be decoded: invalid base64"}
    with pytest.raises(TransientError):
        select_documents([Candidate("b.pdf", "application/pdf", "2", offline)], account())


# --- sniffing ------------------------------------------------------------------------------------------------


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "declared", "filename", "expected"),
    [
        (samples.make_pdf("x"), "application/octet-stream", None, "application/pdf"),
        (samples.make_pdf("x"), "image/png", "x.png", "application/pdf"),  # the header lies
        (b"\r\n  junk " + samples.make_pdf("x"), "application/octet-stream", None, "application/pdf"),
        (samples.make_png(), "application/pdf", None, "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 40, None, None, "image/jpeg"),
        (b"II*\x00\x08\x00\x00\x00" + b"\x00" * 40, None, None, "image/tiff"),
        (b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 40, None, None, "image/tiff"),
        (b"\xef\xbb\xbf<?xml version='1.0'?><Invoice/>", "text/plain", None, "application/xml"),
        (samples.XML_INVOICE, "application/octet-stream", None, "application/xml"),
        (
            _zip({"[Content_Types].xml": b"<x/>", "word/document.xml": b"<w/>"}),
            "application/octet-stream",
            None,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (
            _zip({"[Content_Types].xml": b"<x/>", "xl/workbook.xml": b"<w/>"}),
            None,
            None,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        (
            _zip({"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"}),
            None,
            None,
            "application/vnd.oasis.opendocument.text",
        ),
        (_zip({"a.txt": b"a"}), "application/octet-stream", None, "application/zip"),
        (samples.make_tnef([]), "application/octet-stream", None, "application/vnd.ms-tnef"),
        (b"a;b;c\n1;2;3\n", "text/csv", None, "text/csv"),
        (b"a;b;c\n1;2;3\n", "application/octet-stream", "data.csv", "text/csv"),
        (b"just some words\n", "application/octet-stream", None, "text/plain"),
        (b"Gr\xfc\xdfe aus M\xfcnchen\n", None, None, "text/plain"),
        (b"\x00\x01\x02\x03\x04\x05\x06\x07", "application/x-custom", None, "application/x-custom"),
        (b"\x00\x01\x02\x03\x04\x05\x06\x07", None, "x.bin", "application/octet-stream"),
        (b"\x00\x01\x02\x03", None, None, "application/octet-stream"),
        (b"", "application/pdf", None, "application/pdf"),
    ],
)
def test_sniff_content_type(content: bytes, declared: str | None, filename: str | None, expected: str) -> None:
    assert sniff_content_type(content, declared, filename) == expected


def test_a_zip_holding_a_pdf_near_its_start_is_still_a_zip() -> None:
    assert sniff_content_type(_zip({"a.pdf": samples.make_pdf("z")})) == "application/zip"


# --- robustness ----------------------------------------------------------------------------------------------


def test_bad_base64_part_is_skipped_and_the_rest_goes_on() -> None:
    extraction = extract_from_mime(samples.bad_base64(), account())
    assert names(extraction) == ["good.pdf"]
    assert skipped(extraction) == {"broken.pdf": "could not be decoded: invalid base64"}


def test_broken_boundaries_do_not_stop_extraction() -> None:
    extraction = extract_from_mime(samples.broken_boundary(), account())
    assert names(extraction) == ["a.pdf"]
    assert skipped(extraction) == {"part 3": "broken multipart: boundary not found, parts not read"}


def test_lying_and_unknown_charsets_do_not_stop_extraction() -> None:
    raw = samples.lying_charsets()
    headers = parse_headers(raw)
    assert headers.sender == "mueller@supplier.example"
    assert "Rechnung März" in headers.subject
    assert names(extract_from_mime(raw, account("both"))) == [f"{headers.subject}.eml", "r.pdf"]


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00\xff" * 200, b"not a mail at all", b"Content-Type: multipart/mixed\r\n\r\n--\r\n", b"\r\n\r\n\r\n"],
)
def test_garbage_never_raises(raw: bytes) -> None:
    parse_headers(raw)
    assert isinstance(extract_from_mime(raw, account("both")), Extraction)


def test_logs_carry_no_message_content(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for build in (samples.invoice_with_pdf, samples.corrupt_winmail_dat_message, samples.bad_base64):
        extract_from_mime(build(), account("both"))
    assert "Rechnung" not in caplog.text
    assert "supplier.example" not in caplog.text


_SAMPLE_BYTES = {name: build() for name, build in samples.ALL_SAMPLES.items()}


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    raw = bytearray(_SAMPLE_BYTES[draw(st.sampled_from(sorted(_SAMPLE_BYTES)))])
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        position = draw(st.integers(min_value=0, max_value=max(len(raw) - 1, 0)))
        operation = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
        if operation == "flip" and raw:
            raw[position] = draw(st.integers(min_value=0, max_value=255))
        elif operation == "delete":
            del raw[position : position + draw(st.integers(min_value=1, max_value=64))]
        elif operation == "insert":
            raw[position:position] = draw(st.sampled_from([b"\r\n", b"--", b"=?", b"?=", b"\x00", b"\xff", b";", b'"']))
        elif operation == "truncate":
            del raw[position:]
        else:
            raw[position:position] = raw[position : position + draw(st.integers(min_value=1, max_value=200))]
    return bytes(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_messages(), st.sampled_from(["attachments", "message", "both"]), st.booleans())
def test_property_mutated_messages_never_raise(raw: bytes, import_: str, include_inline: bool) -> None:
    headers = parse_headers(raw)
    assert isinstance(message_identity(headers, raw), str)
    extraction = extract_from_mime(raw, account(import_, include_inline))
    for document in extraction.documents:
        assert document.filename and "/" not in document.filename and "\x00" not in document.filename
        assert KEY.match(document.key)
    folded = [d.filename.casefold() for d in extraction.documents]
    assert len(folded) == len(set(folded))
