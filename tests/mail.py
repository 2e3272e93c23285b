"""Small builders for the end-to-end tests (the extraction corpus lives in tests/samples.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid


def pdf_bytes(text: str) -> bytes:
    body = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]/Contents 4 0 R>>endobj\n"
        + f"4 0 obj<</Length {len(body)}>>stream\n".encode()
        + body
        + b"\nendstream endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


def invoice_mail(
    number: int | str,
    *,
    sender: str = "billing@supplier.example",
    subject: str | None = None,
    attachments: list[tuple[str, bytes, str]] | None = None,
    date: datetime | None = None,
) -> bytes:
    message = EmailMessage()
    message["From"] = f"Supplier <{sender}>"
    message["To"] = "invoices@contoso.example"
    message["Subject"] = subject if subject is not None else f"Invoice {number}"
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message["Message-ID"] = make_msgid(f"inv{number}", domain="supplier.example")
    message.set_content(f"Please find invoice {number} attached.\n")
    for name, content, content_type in (
        attachments
        if attachments is not None
        else [(f"invoice-{number}.pdf", pdf_bytes(f"Invoice {number}"), "application/pdf")]
    ):
        maintype, subtype = content_type.split("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes(policy=SMTP)
