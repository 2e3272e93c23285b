"""body_to_pdf's renderer: real sample bodies rendered to PDF and read back with a PDF text extractor (pypdf);
no request leaves for any URL in a mail."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from pypdf import PdfReader

from ingest.bodypdf import MAX_LAYOUT_HTML, body_document
from ingest.mime.item import MimeMailItem
from ingest.model import Document

from .bodies import GERMAN_HTML, JAPANESE_HTML, big_html, hostile_html, html_mail, invoice_html, png


def _render(raw: bytes) -> Document:
    item = MimeMailItem(raw)
    document = body_document(item.facts().body, item.headers)
    assert document is not None
    return document


def _text(document: Document) -> str:
    reader = PdfReader(io.BytesIO(document.content))
    return "\n".join(page.extract_text() for page in reader.pages)


def _squeezed(text: str) -> str:
    return "".join(text.split())


def test_german_body_with_sender_date_and_subject_on_top() -> None:
    document = _render(html_mail(GERMAN_HTML, subject="Rechnung für Größe XL"))
    assert document.filename == "Rechnung für Größe XL.pdf"
    assert document.content_type == "application/pdf" and document.content.startswith(b"%PDF-")
    text = _text(document)
    first_lines = text.splitlines()[:3]
    assert first_lines == [
        "From: billing@supplier-x.example",
        "Date: 2024-05-01 08:00 +0000",
        "Subject: Rechnung für Größe XL",
    ]
    for expected in ("Grüße aus Köln, Müller & Söhne", "Straße 5, 50667 Köln", "1.234,56 €"):
        assert expected in text


def test_japanese_body_in_iso_2022_jp_renders_its_text() -> None:
    text = _text(_render(html_mail(JAPANESE_HTML, subject="請求書の送付", charset="iso-2022-jp")))
    assert "Subject: 請求書の送付" in text
    assert "株式会社サンプル 御中" in text
    assert "請求書を送付いたします。" in _squeezed(text)
    assert "合計金額：１２，３４５円（税込）" in _squeezed(text)


def test_table_heavy_invoice_keeps_every_row_and_total() -> None:
    document = _render(html_mail(invoice_html(rows=25)))
    text = _text(document)
    squeezed = _squeezed(text)
    for expected in ("Supplier X GmbH", "Rechnung Nr. RE-2024-0815", "Gesamtbetrag: 11.753,08 €", "Bestellnummer"):
        assert _squeezed(expected) in squeezed
    for n in (1, 13, 25):
        assert _squeezed(f"Artikel {n:03d} Schraube") in squeezed
        assert _squeezed(f"{n * n * 2.5:.2f} €") in squeezed
    assert "Pos" in text and "Einzelpreis" in text
    reader = PdfReader(io.BytesIO(document.content))
    assert len(reader.pages) >= 1


def test_two_megabyte_html_renders_all_its_text_as_plain_text() -> None:
    html = big_html()
    assert len(html) >= 2 * 1024 * 1024 > MAX_LAYOUT_HTML
    document = _render(html_mail(html, subject="Report"))
    text = _text(document)
    assert "BEGIN-OF-BIG-MAIL" in text and "END-OF-BIG-MAIL" in text
    assert "Zeile 7000: Lieferung geprüft" in text
    assert "font-family" not in text and "border-bottom" not in text  # styles are not text


def test_inline_image_embedded_scripts_ignored() -> None:
    html = '<p>Logo below</p><img src="cid:logo@x" alt="Logo"><script>var hidden = "SCRIPT-TEXT";</script>'
    document = _render(html_mail(html, images={"logo@x": png()}))
    reader = PdfReader(io.BytesIO(document.content))
    assert [image.image.size for image in reader.pages[0].images if image.image] == [(120, 40)]
    text = _text(document)
    assert "Logo below" in text and "SCRIPT-TEXT" not in text


def test_a_text_only_mail_renders_its_text_and_an_empty_one_gives_no_document() -> None:
    from .mail import invoice_mail

    text = _text(_render(invoice_mail(5, attachments=[])))
    assert "Please find invoice 5 attached." in text
    empty = MimeMailItem(invoice_mail(6, attachments=[]).replace(b"Please find invoice 6 attached.\r\n", b""))
    assert body_document(empty.facts().body, empty.headers) is None


def test_the_same_body_renders_to_the_same_document() -> None:
    raw = html_mail(invoice_html(rows=3))
    first, second = _render(raw), _render(raw)
    assert first.key == second.key and first.key.startswith("body:")
    assert first.content == second.content


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(png())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_recorder_records_requests(recorder: tuple[str, list[str]]) -> None:
    """The check below could fail: the recording server does see a request made to it."""
    import urllib.request

    base, seen = recorder
    with urllib.request.urlopen(f"{base}/probe", timeout=5) as answer:  # noqa: S310 - our own loopback server
        assert answer.status == 200
    assert seen == ["/probe"]


@pytest.mark.parametrize("layout", ["html", "plain text"])
def test_no_request_leaves_for_any_url_in_the_mail(recorder: tuple[str, list[str]], layout: str) -> None:
    base, seen = recorder
    html = hostile_html(base)
    if layout == "plain text":
        html = html.replace("</body>", f"<p>{'x' * (MAX_LAYOUT_HTML + 10)}</p></body>")
    text = _text(_render(html_mail(html)))
    assert "Rechnungstext bleibt." in text
    assert "Link text" in text
    if layout == "html":
        assert "[tracking pixel]" in text and "[Logo]" in text  # alt text stands in for the image
    assert seen == []


def test_absurdly_nested_html_still_renders_its_text() -> None:
    deep = "<div>" * 50_000 + "<p>tief verschachtelt</p>" + "</div>" * 50_000
    tables = "<table><tr><td>" * 2_000 + "Zelle innen" + "</td></tr></table>" * 2_000
    text = _text(_render(html_mail(deep + tables, subject="Verschachtelt")))
    assert "tief verschachtelt" in text and "Zelle innen" in text
