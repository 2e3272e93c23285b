"""ingest.mailbox.imap_sections with no socket: BODYSTRUCTURE values as imapclient's own response parser makes them
from a server's FETCH line, the plan of what to fetch, and the message put back together from its sections.

Against Dovecot's real answers, for every sample and hostile message: tests/security/test_size_limit.py."""

from __future__ import annotations

import email
import email.policy
from typing import Any

import pytest
from imapclient.response_parser import parse_fetch_response

from ingest.mailbox import imap_sections

MB = 1024 * 1024
TEXT = b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 12 1 NIL NIL NIL NIL)'
HTML = b'("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 9000000 40 NIL NIL NIL NIL)'
ENVELOPE = (
    b'("Fri, 3 May 2024 08:00:00 +0000" "Order 7" (("ACME" NIL "billing" "supplier.example")) '
    b'(("ACME" NIL "billing" "supplier.example")) (("ACME" NIL "billing" "supplier.example")) '
    b'((NIL NIL "ap" "contoso.example")) NIL NIL NIL "<o7@supplier.example>")'
)


def _leaf(maintype: str, subtype: str, name: str, encoding: str, size: int) -> bytes:
    return (
        f'("{maintype}" "{subtype}" ("name" "{name}") NIL NIL "{encoding}" {size} NIL '
        f'("attachment" ("filename" "{name}")) NIL NIL)'
    ).encode()


def _multipart(*parts: bytes, boundary: str = "b1", subtype: str = "mixed") -> bytes:
    return b"(" + b"".join(parts) + f' "{subtype}" ("boundary" "{boundary}") NIL NIL NIL)'.encode()


def _attached(body: bytes, size: int) -> bytes:
    """An attached message/rfc822: its envelope, then its body's structure, then its line count."""
    return f'("message" "rfc822" NIL NIL NIL "7bit" {size} '.encode() + ENVELOPE + b" " + body + b" 80 NIL NIL NIL)"


def _bodystructure(structure: bytes) -> Any:
    """The BODYSTRUCTURE value imapclient hands over for a server's FETCH line."""
    (answer,) = parse_fetch_response([b"1 (UID 7 BODYSTRUCTURE " + structure + b")"]).values()
    return answer[b"BODYSTRUCTURE"]


# --- the structure ----------------------------------------------------------------------------------------------


def test_parts_are_numbered_as_imap_numbers_sections() -> None:
    pdf = _leaf("application", "pdf", "Invoice.PDF", "base64", 4_000_000)
    inner = _multipart(TEXT, pdf, boundary="in")
    message = _attached(inner, 5_500_000)
    structure = imap_sections.parse(_bodystructure(_multipart(TEXT, message, pdf, boundary="out")))

    assert (structure.section, structure.kind, structure.boundary) == ("", "multipart", b"out")
    assert [(p.section, p.kind) for p in structure.children] == [("1", "leaf"), ("2", "message"), ("3", "leaf")]
    (body,) = structure.children[1].children
    assert (body.section, body.boundary) == ("2", b"in")  # the attached message's body has no number of its own
    assert [leaf.section for leaf in structure.leaves()] == ["1", "2.1", "2.2", "3"]
    third = structure.children[2]
    assert (third.maintype, third.subtype, third.encoding, third.size) == ("application", "pdf", "base64", 4_000_000)
    assert third.names == ("invoice.pdf", "invoice.pdf")  # name= and filename=, lower-cased


def test_a_single_part_message_is_section_one() -> None:
    structure = imap_sections.parse(_bodystructure(_leaf("application", "pdf", "scan.pdf", "base64", 100)))
    assert [(leaf.section, leaf.kind) for leaf in structure.leaves()] == [("1", "leaf")]


def test_an_rfc2231_file_name_counts_as_a_name() -> None:
    raw = b'("application" "octet-stream" NIL NIL NIL "base64" 100 NIL ("attachment" ("filename*" "winmail.dat")) NIL'
    raw += b" NIL)"
    (leaf,) = imap_sections.parse(_bodystructure(_multipart(TEXT, raw))).children[1:]
    assert leaf.names == ("winmail.dat",)


@pytest.mark.parametrize(
    ("structure", "complaint"),
    [
        (b'(("text" "plain" NIL NIL NIL "7bit" 12 1) "mixed" NIL NIL NIL NIL)', "boundary"),
        (b'("application" "pdf" NIL NIL NIL "base64")', "too few fields"),
        (b'("application" "pdf" NIL NIL NIL "base64" "big" NIL NIL NIL NIL)', "size is not a number"),
    ],
)
def test_a_shape_it_does_not_know_is_a_structure_error(structure: bytes, complaint: str) -> None:
    with pytest.raises(imap_sections.StructureError, match=complaint):
        imap_sections.parse(_bodystructure(structure))


def test_an_empty_structure_is_a_structure_error() -> None:
    with pytest.raises(imap_sections.StructureError, match="empty"):
        imap_sections.parse(())


@pytest.mark.parametrize(
    ("encoding", "size", "at_least"),
    [("base64", 1000, 690), ("BASE64", 1000, 690), ("quoted-printable", 900, 300), ("7bit", 1000, 950), ("", 100, 95)],
)
def test_decoded_size_is_a_lower_bound_per_encoding(encoding: str, size: int, at_least: int) -> None:
    assert imap_sections.decoded_size_at_least(encoding, size) == at_least


# --- the plan -----------------------------------------------------------------------------------------------------


def test_plan_reads_nested_structures() -> None:
    leaf = (b"application", b"pdf", None, None, None, b"base64", 4_000_000, None, None, None, None)
    text = (b"text", b"plain", (b"charset", b"utf-8"), None, None, b"7bit", 10, 1, None, None, None, None)
    inner = (text, leaf, b"mixed", (b"boundary", b"in"), None, None, None)
    message = (b"message", b"rfc822", None, None, None, b"7bit", 5_500_000, None, inner, 80, None, None, None)

    class BodyData(tuple):  # type: ignore[type-arg]
        is_multipart = True

    top = BodyData(([text, message, leaf], b"mixed", (b"boundary", b"out"), None, None, None))
    plan = imap_sections.plan(top, 1_000_000)
    assert plan is not None
    assert plan.omitted == {"2.2": 2_760_000, "3": 2_760_000}
    assert plan.items == [
        b"BODY.PEEK[HEADER]",
        b"BODY.PEEK[1.MIME]",
        b"BODY.PEEK[1]",
        b"BODY.PEEK[2.MIME]",
        b"BODY.PEEK[2.HEADER]",
        b"BODY.PEEK[2.1.MIME]",
        b"BODY.PEEK[2.1]",
        b"BODY.PEEK[2.2.MIME]",
        b"BODY.PEEK[3.MIME]",
    ]
    assert imap_sections.plan(top, 10_000_000) is None
    with pytest.raises(imap_sections.StructureError):
        imap_sections.plan(BodyData(([text], b"mixed", None, None, None, None)), 1)


def test_an_attached_message_with_nothing_left_out_is_fetched_as_one_section() -> None:
    small = _leaf("application", "pdf", "small.pdf", "base64", 1000)
    message = _attached(_multipart(TEXT, small, boundary="in"), 2000)
    big = _leaf("application", "pdf", "big.pdf", "base64", 3 * MB)
    plan = imap_sections.plan(_bodystructure(_multipart(message, big)), MB)

    assert plan is not None
    assert plan.omitted == {"2": int(3 * MB * 0.69)}
    assert plan.items == [b"BODY.PEEK[HEADER]", b"BODY.PEEK[1.MIME]", b"BODY.PEEK[1]", b"BODY.PEEK[2.MIME]"]


def test_text_parts_and_tnef_containers_are_never_left_out() -> None:
    """A big HTML body decides which images are inline; a winmail.dat's files meet the limit one by one."""
    tnef = _leaf("application", "ms-tnef", "winmail.dat", "base64", 8 * MB)
    dat = _leaf("application", "octet-stream", "WINMAIL.DAT", "base64", 8 * MB)
    assert imap_sections.plan(_bodystructure(_multipart(HTML, tnef, dat)), MB) is None


def test_a_part_just_over_the_limit_once_decoded_is_not_left_out() -> None:
    """Only a part certainly over the limit is left on the server: 1.2 MB of base64 may decode to 0.9 MB."""
    nearly = _leaf("application", "pdf", "nearly.pdf", "base64", int(1.2 * MB))
    surely = _leaf("application", "pdf", "surely.pdf", "base64", int(1.5 * MB))
    assert imap_sections.plan(_bodystructure(_multipart(TEXT, nearly)), MB) is None
    plan = imap_sections.plan(_bodystructure(_multipart(TEXT, nearly, surely)), MB)
    assert plan is not None and set(plan.omitted) == {"3"}


def test_a_single_part_message_over_the_limit_keeps_only_its_header() -> None:
    plan = imap_sections.plan(_bodystructure(_leaf("application", "pdf", "scan.pdf", "base64", 4 * MB)), MB)
    assert plan is not None
    assert plan.omitted == {"1": int(4 * MB * 0.69)}
    assert plan.items == [b"BODY.PEEK[HEADER]"]
    header = b"Subject: scan\r\nContent-Type: application/pdf\r\n\r\n"
    assert imap_sections.assemble(plan, {b"BODY[HEADER]": header}) == header


# --- putting the message back together ----------------------------------------------------------------------------

HEADER = (
    b"From: billing@supplier.example\r\nSubject: Invoice\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
)
TEXT_MIME = b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
PDF_MIME = (
    b'Content-Type: application/pdf; name="big.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
    b'Content-Disposition: attachment; filename="big.pdf"\r\n\r\n'
)
NOTE_MIME = b'Content-Type: text/csv; name="lines.csv"\r\nContent-Disposition: attachment; filename="lines.csv"\r\n\r\n'


def _invoice_plan() -> imap_sections.Plan:
    csv = b'("text" "csv" ("name" "lines.csv") NIL NIL "7bit" 9 1 NIL ("attachment" ("filename" "lines.csv")) NIL NIL)'
    big = _leaf("application", "pdf", "big.pdf", "base64", 4 * MB)
    plan = imap_sections.plan(_bodystructure(_multipart(TEXT, big, csv)), MB)
    assert plan is not None
    return plan


def test_the_message_is_put_back_together_with_the_left_out_part_empty() -> None:
    plan = _invoice_plan()
    fetched = {
        b"BODY[HEADER]": HEADER,
        b"BODY[1.MIME]": TEXT_MIME,
        b"BODY[1]": b"Hello there.",
        b"BODY[2.MIME]": PDF_MIME,
        b"BODY[3.MIME]": NOTE_MIME,
        b"BODY[3]": b"a;b\r\nc;d\r\n",
    }
    assert plan.items == [item.replace(b"BODY[", b"BODY.PEEK[") for item in fetched]

    raw = imap_sections.assemble(plan, fetched)

    assert raw == (
        HEADER
        + b"--b1\r\n" + TEXT_MIME + b"Hello there.\r\n"
        + b"--b1\r\n" + PDF_MIME + b"\r\n"
        + b"--b1\r\n" + NOTE_MIME + b"a;b\r\nc;d\r\n\r\n"
        + b"--b1--\r\n"
    )  # fmt: skip
    text, pdf, csv = email.message_from_bytes(raw, policy=email.policy.default).iter_parts()
    assert text.get_content() == "Hello there."
    assert (pdf.get_filename(), pdf.get_payload(decode=True)) == ("big.pdf", b"")
    assert (csv.get_filename(), csv.get_payload(decode=True)) == ("lines.csv", b"a;b\r\nc;d\r\n")


def test_a_section_missing_from_the_answer_is_a_structure_error() -> None:
    fetched = {b"BODY[HEADER]": HEADER, b"BODY[1.MIME]": TEXT_MIME, b"BODY[1]": b"Hello there."}
    with pytest.raises(imap_sections.StructureError, match=r"section 2\.MIME missing"):
        imap_sections.assemble(_invoice_plan(), fetched)
