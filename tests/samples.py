"""Real-world-like sample messages as bytes: the extraction corpus, also used by the end-to-end tests.

Every builder returns the same bytes on every call (fixed dates, Message-IDs and MIME boundaries), so
document keys and custom_doc_ids computed from them are stable. Well-formed messages are built with
``email.message.EmailMessage``; the odd and broken ones are written by hand, byte for byte.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable
from email import policy
from email.message import EmailMessage

DATE = "Tue, 04 Mar 2025 09:15:00 +0100"
SENDER = "Buchhaltung Lieferant <billing@supplier.example>"
RECIPIENT = "invoices@contoso.example"
XML_INVOICE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"><ID>2025-0042</ID></Invoice>\n'
)


# --- payloads ------------------------------------------------------------------------------------------------


def make_pdf(text: str) -> bytes:
    """A small valid one-page PDF showing ``text`` (correct xref table, opens in any reader)."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 18 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def make_png(width: int = 4, height: int = 4, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def make_tnef(files: list[tuple[str, bytes]], *, long_names: bool = True) -> bytes:
    """A TNEF stream (winmail.dat) as Outlook writes it, holding ``files``.

    Each file gets attAttachRendData, attAttachTitle (the name in Windows-1252), attAttachData and, when
    ``long_names``, attAttachment with PR_ATTACH_LONG_FILENAME in UTF-16 as Outlook adds for long names.
    """

    def attribute(level: int, attribute_id: int, attribute_type: int, data: bytes) -> bytes:
        checksum = sum(data) & 0xFFFF
        return struct.pack("<BHHI", level, attribute_id, attribute_type, len(data)) + data + struct.pack("<H", checksum)

    stream = struct.pack("<IH", 0x223E9F78, 0x4242)
    stream += attribute(1, 0x9006, 0x0008, struct.pack("<I", 0x00010000))  # attTnefVersion
    stream += attribute(1, 0x9007, 0x0006, struct.pack("<II", 1252, 0))  # attOemCodepage
    stream += attribute(1, 0x8008, 0x0007, b"IPM.Microsoft Mail.Note\x00")  # attMessageClass
    for name, content in files:
        stream += attribute(2, 0x9002, 0x0006, struct.pack("<HIHHI", 1, 0xFFFFFFFF, 0xFFFF, 0xFFFF, 0))
        stream += attribute(2, 0x8010, 0x0001, name.encode("cp1252", "replace") + b"\x00")  # attAttachTitle
        stream += attribute(2, 0x800F, 0x0006, content)  # attAttachData
        if long_names:
            value = name.encode("utf-16-le") + b"\x00\x00"
            padded = value + b"\x00" * (-len(value) % 4)
            props = struct.pack("<IHHII", 1, 0x001F, 0x3707, 1, len(value)) + padded  # PR_ATTACH_LONG_FILENAME
            stream += attribute(2, 0x9005, 0x0006, props)  # attAttachment
    return stream


def corrupt_tnef() -> bytes:
    """A winmail.dat cut off in the middle of its attachment data, as a broken gateway leaves it."""
    whole = make_tnef([("Rechnung.pdf", make_pdf("Rechnung"))])
    return whole[: len(whole) - 200]


# --- well-formed messages ------------------------------------------------------------------------------------


def _message(subject: str, message_id: str | None = "sample@supplier.example") -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = RECIPIENT
    message["Subject"] = subject
    message["Date"] = DATE
    if message_id is not None:
        message["Message-ID"] = f"<{message_id}>"
    return message


def _to_bytes(message: EmailMessage) -> bytes:
    for number, part in enumerate(message.walk()):
        if part.is_multipart():
            part.set_boundary(f"==sample-boundary-{number}==")
    return message.as_bytes(policy=policy.SMTP)


def invoice_with_pdf(number: str = "2025-0042") -> bytes:
    """The everyday case: a text + HTML body and one PDF invoice."""
    message = _message(f"Rechnung {number}", f"invoice-{number}@supplier.example")
    message.set_content(f"Sehr geehrte Damen und Herren,\nanbei Rechnung {number}.\n")
    message.add_alternative(f"<p>Sehr geehrte Damen und Herren,<br>anbei Rechnung {number}.</p>", subtype="html")
    message.add_attachment(make_pdf(f"Rechnung {number}"), "application", "pdf", filename=f"Rechnung_{number}.pdf")
    return _to_bytes(message)


def pdf_as_octet_stream_without_extension() -> bytes:
    """A scanner that sends its PDF as application/octet-stream named "scan0001"."""
    message = _message("Scan from MFP", "scan-0001@mfp.example")
    message.set_content("Scanned document attached.\n")
    message.add_attachment(make_pdf("Scan"), "application", "octet-stream", filename="scan0001")
    return _to_bytes(message)


def inline_logo_and_signature() -> bytes:
    """Outlook-style HTML mail: a logo referenced by cid (no disposition), a signature image marked inline,
    and the real attachment, a PDF."""
    message = _message("Ihre Rechnung", "logo@supplier.example")
    message.set_content("Anbei die Rechnung.\n")
    message.add_alternative('<p>Anbei die Rechnung.</p><img src="cid:logo@supplier.example">', subtype="html")
    html = message.get_payload()[1]
    html.add_related(make_png(rgb=(0, 90, 160)), "image", "png", cid="<logo@supplier.example>")
    logo = html.get_payload()[1]
    del logo["Content-Disposition"]
    logo.set_param("name", "image001.png")
    html.add_related(make_png(rgb=(10, 10, 10)), "image", "png", filename="signature.png", disposition="inline")
    message.add_attachment(make_pdf("Rechnung 7"), "application", "pdf", filename="Rechnung 7.pdf")
    return _to_bytes(message)


def pdf_marked_inline() -> bytes:
    """Apple Mail shows a PDF in the body and marks it inline; it is still a document."""
    message = _message("Rechnung inline", "inline-pdf@supplier.example")
    message.set_content("Rechnung:\n")
    message.add_attachment(
        make_pdf("Inline Rechnung"), "application", "pdf", filename="Rechnung inline.pdf", disposition="inline"
    )
    return _to_bytes(message)


def forwarded_message_with_pdf() -> bytes:
    """A colleague forwards a supplier's mail as an attachment; the supplier's PDF is inside."""
    inner = _message("Invoice 77", "invoice-77@supplier.example")
    inner.set_content("Invoice 77 attached.\n")
    inner.add_attachment(make_pdf("Invoice 77"), "application", "pdf", filename="invoice-77.pdf")
    outer = _message("Fwd: Invoice 77", "forward-77@contoso.example")
    outer.replace_header("From", "Colleague <colleague@contoso.example>")
    outer.set_content("Please book this one.\n")
    outer.add_attachment(inner)
    return _to_bytes(outer)


def nested_forwards(depth: int) -> bytes:
    """A message holding a forwarded message ``depth`` levels deep; the innermost one carries a PDF."""
    message = _message("Level 0", "level-0@example.com")
    message.set_content("level 0\n")
    message.add_attachment(make_pdf("deep"), "application", "pdf", filename="deep.pdf")
    for level in range(1, depth + 1):
        outer = _message(f"Level {level}", f"level-{level}@example.com")
        outer.set_content(f"level {level}\n")
        outer.add_attachment(message)
        message = outer
    return _to_bytes(message)


def winmail_dat_message(*, long_names: bool = True) -> bytes:
    """Outlook's rich-text mail: the attachments travel inside winmail.dat (application/ms-tnef)."""
    message = _message("Rechnung März", "winmail@supplier.example")
    message.set_content("Siehe Anhang.\n")
    tnef = make_tnef(
        [("Rechnung März.pdf", make_pdf("Rechnung Maerz")), ("invoice.xml", XML_INVOICE)], long_names=long_names
    )
    message.add_attachment(tnef, "application", "ms-tnef", filename="winmail.dat")
    return _to_bytes(message)


def corrupt_winmail_dat_message() -> bytes:
    message = _message("Rechnung (TNEF kaputt)", "winmail-corrupt@supplier.example")
    message.set_content("Siehe Anhang.\n")
    message.add_attachment(corrupt_tnef(), "application", "ms-tnef", filename="winmail.dat")
    return _to_bytes(message)


def no_attachments() -> bytes:
    message = _message("Kurze Frage", "question@supplier.example")
    message.set_content("Haben Sie unsere Rechnung erhalten?\n")
    message.add_alternative("<p>Haben Sie unsere Rechnung erhalten?</p>", subtype="html")
    return _to_bytes(message)


def duplicate_names() -> bytes:
    """Two different PDFs both called invoice.pdf, and a third INVOICE.PDF."""
    message = _message("Drei Rechnungen", "dupes@supplier.example")
    message.set_content("Drei Rechnungen.\n")
    for text, name in (("one", "invoice.pdf"), ("two", "invoice.pdf"), ("three", "INVOICE.PDF")):
        message.add_attachment(make_pdf(text), "application", "pdf", filename=name)
    return _to_bytes(message)


def mixed_attachments() -> bytes:
    """A PDF, an XML e-invoice, a signature PNG attached (not inline) and a big-ish scan."""
    message = _message("Rechnung mit Anlagen", "mixed@supplier.example")
    message.set_content("Anbei.\n")
    message.add_attachment(make_pdf("Rechnung"), "application", "pdf", filename="Rechnung.pdf")
    message.add_attachment(XML_INVOICE, "application", "xml", filename="xrechnung.xml")
    message.add_attachment(make_png(), "image", "png", filename="signature-logo.png")
    message.add_attachment(make_pdf("Scan " + "x" * 4000), "application", "pdf", filename="scan.pdf")
    return _to_bytes(message)


# --- hand-written: encoded names and broken messages ---------------------------------------------------------

_HEAD = (
    "From: Buchhaltung <billing@supplier.example>\r\n"
    "To: invoices@contoso.example\r\n"
    "Subject: {subject}\r\n"
    "Date: " + DATE + "\r\n"
    "Message-ID: <{message_id}@supplier.example>\r\n"
    "MIME-Version: 1.0\r\n"
)


def _raw(subject: str, message_id: str, parts: list[bytes], *, boundary: str = "b1") -> bytes:
    head = _HEAD.format(subject=subject, message_id=message_id).encode()
    head += f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode()
    body = b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts)
    return head + body + f"--{boundary}--\r\n".encode()


_TEXT_PART = b"Content-Type: text/plain; charset=utf-8\r\n\r\nAnbei die Rechnung.\r\n"


def _pdf_part(headers: bytes, pdf: bytes | None = None) -> bytes:
    encoded = base64.encodebytes(pdf if pdf is not None else make_pdf("Rechnung")).replace(b"\n", b"\r\n")
    return headers + b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded


def rfc2231_filename() -> bytes:
    """``filename*=utf-8''Rechnung%20M%C3%A4rz.pdf`` (Thunderbird, Gmail)."""
    return _raw(
        "Rechnung",
        "rfc2231",
        [
            _TEXT_PART,
            _pdf_part(
                b"Content-Type: application/pdf\r\n"
                b"Content-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf\r\n"
            ),
        ],
    )


def rfc2231_continued_filename() -> bytes:
    """A long name split over ``filename*0*=`` / ``filename*1*=`` sections."""
    return _raw(
        "Rechnung",
        "rfc2231-continued",
        [
            _TEXT_PART,
            _pdf_part(
                b"Content-Type: application/pdf\r\n"
                b"Content-Disposition: attachment;\r\n"
                b" filename*0*=utf-8''Rechnung%20M%C3%A4rz%202025%20;\r\n"
                b" filename*1*=Kundennummer%2012345;\r\n"
                b" filename*2=.pdf\r\n"
            ),
        ],
    )


def rfc2047_filename() -> bytes:
    """``name="=?iso-8859-1?Q?Rechnung_M=E4rz.pdf?="`` (Outlook, many ERP systems): not allowed, but common."""
    return _raw(
        "=?iso-8859-1?Q?Rechnung_M=E4rz?=",
        "rfc2047",
        [
            _TEXT_PART,
            _pdf_part(
                b'Content-Type: application/pdf; name="=?iso-8859-1?Q?Rechnung_M=E4rz.pdf?="\r\n'
                b'Content-Disposition: attachment; filename="=?iso-8859-1?Q?Rechnung_M=E4rz.pdf?="\r\n'
            ),
        ],
    )


def path_traversal_filename() -> bytes:
    return _raw(
        "Rechnung",
        "traversal",
        [
            _TEXT_PART,
            _pdf_part(
                b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="../../etc/passwd"\r\n'
            ),
        ],
    )


def latin1_raw_filename() -> bytes:
    """An old mailer that puts the name in raw Latin-1 bytes, no encoding at all."""
    return _raw(
        "Rechnung M\xe4rz",
        "latin1",
        [
            _TEXT_PART,
            _pdf_part(
                b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="Rechnung M\xe4rz.pdf"\r\n'
            ),
        ],
    ).replace(b"Rechnung M\xc3\xa4rz\r\n", b"Rechnung M\xe4rz\r\n")


def bad_base64() -> bytes:
    """One attachment whose base64 cannot be decoded (a length of 4n+1), one good PDF."""
    broken = (
        b"Content-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="broken.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xL\r\n"
    )
    good = _pdf_part(b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="good.pdf"\r\n')
    return _raw("Rechnung", "bad-base64", [_TEXT_PART, broken, good])


def broken_boundary() -> bytes:
    """The closing boundary is missing and one part uses a boundary that was never declared."""
    good = _pdf_part(b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="a.pdf"\r\n')
    head = _HEAD.format(subject="Broken", message_id="broken-boundary").encode()
    return (
        head
        + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        + b"--outer\r\n"
        + _TEXT_PART
        + b"\r\n"
        + b"--outer\r\n"
        + good
        + b"\r\n"
        + b'--outer\r\nContent-Type: multipart/alternative; boundary="never-closed"\r\n\r\n'
        + b"--wrong\r\nContent-Type: text/plain\r\n\r\nlost\r\n"
    )


def lying_charsets() -> bytes:
    """Subject in an unknown charset, a From in raw UTF-8, a body declared UTF-8 but written in Latin-1."""
    return (
        b"From: =?x-unknown?Q?M=FCller?= <mueller@supplier.example>\r\n"
        b"To: invoices@contoso.example\r\n"
        b"Subject: =?utf-8?B?/w==?= =?no-such-charset?Q?Rechnung_M=E4rz?=\r\n"
        b"Date: " + DATE.encode() + b"\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGr\xfc\xdfe\r\n"
        b'--b1\r\nContent-Type: application/pdf; name="r.pdf"; charset=bogus\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(make_pdf("r")).replace(b"\n", b"\r\n")
        + b"\r\n--b1--\r\n"
    )


def without_message_id_or_date() -> bytes:
    """No Message-ID and no Date: identity falls back to a digest, the date to the newest Received."""
    return (
        b"Received: from mx2.contoso.example by mx1.contoso.example; Wed, 05 Mar 2025 10:00:00 +0000\r\n"
        b"Received: from mail.supplier.example by mx2.contoso.example; Wed, 05 Mar 2025 09:59:00 +0000\r\n"
        b"From: billing@supplier.example\r\n"
        b"Subject: ohne ID\r\n"
        b"Content-Type: text/plain\r\n\r\nkein Anhang\r\n"
    )


ALL_SAMPLES: dict[str, Callable[[], bytes]] = {
    "invoice_with_pdf": invoice_with_pdf,
    "pdf_as_octet_stream_without_extension": pdf_as_octet_stream_without_extension,
    "inline_logo_and_signature": inline_logo_and_signature,
    "pdf_marked_inline": pdf_marked_inline,
    "forwarded_message_with_pdf": forwarded_message_with_pdf,
    "winmail_dat_message": winmail_dat_message,
    "corrupt_winmail_dat_message": corrupt_winmail_dat_message,
    "no_attachments": no_attachments,
    "duplicate_names": duplicate_names,
    "mixed_attachments": mixed_attachments,
    "rfc2231_filename": rfc2231_filename,
    "rfc2231_continued_filename": rfc2231_continued_filename,
    "rfc2047_filename": rfc2047_filename,
    "path_traversal_filename": path_traversal_filename,
    "latin1_raw_filename": latin1_raw_filename,
    "bad_base64": bad_base64,
    "broken_boundary": broken_boundary,
    "lying_charsets": lying_charsets,
    "without_message_id_or_date": without_message_id_or_date,
}


XRECHNUNG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
    b'<ubl:Invoice xmlns:ubl="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2">'
    b"<cbc:ID>2025-0042</cbc:ID></ubl:Invoice>\r\n"
)


def unnamed_text_documents() -> bytes:
    """An XRechnung sent as text/xml and a CSV as text/csv, neither with a file name nor Content-Disposition, and
    a mailing list's footer as a second text/plain part: the two documents are documents, the footer is text."""
    return _raw(
        "XRechnung 2025-0042",
        "xrechnung-unnamed",
        [
            _TEXT_PART,
            b"Content-Type: text/xml; charset=utf-8\r\n\r\n" + XRECHNUNG,
            b"Content-Type: text/csv; charset=utf-8\r\n\r\nPos;Artikel;Betrag\r\n1;Schrauben;12,50\r\n",
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n-- \r\nsupplier-list mailing list\r\n",
        ],
    )


def xrechnung_as_the_whole_message() -> bytes:
    """The invoice is the message: a single text/xml part, no multipart at all."""
    head = _HEAD.format(subject="XRechnung 2025-0043", message_id="xrechnung-whole").encode()
    return head + b"Content-Type: text/xml; charset=utf-8\r\n\r\n" + XRECHNUNG


ALL_SAMPLES.update(
    {
        "unnamed_text_documents": unnamed_text_documents,
        "xrechnung_as_the_whole_message": xrechnung_as_the_whole_message,
    }
)
