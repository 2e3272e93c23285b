"""A mail body rendered as a PDF document (``body_to_pdf``): sender, date and subject on top, then the HTML (or
text) body with its inline images. No network, ever: only ``cid:`` images of the message itself are drawn.

Renderer: fpdf2 (pure Python; fontTools and Pillow come as wheels), so it runs on Flex Consumption's Linux image
with no system library and no browser. Mail HTML is not fed to it as it is: :class:`_Sanitiser` rebuilds a small
HTML from it that fpdf2 lays out reliably (paragraphs, headings, bold, lists, tables, line breaks, images) and
drops everything else: scripts, styles, forms, frames, links' targets, and every image that is not a ``cid:``
part of the mail (those become ``data:`` URIs; the rest is replaced by its alt text). fpdf2's own resource access
is switched off too (``ResourceAccessPolicy.NONE``), so not even a local file can be read through the HTML.
Layout tables (tables holding tables) are flattened; the innermost tables stay tables. What fpdf2 still cannot lay
out, and bodies too big to lay out in reasonable time, are rendered as plain text instead (the text is all there;
the layout is simpler).

Font: WenQuanYi Micro Hei, a TrueType font covering Latin, Greek, Cyrillic, Chinese, Japanese (kana and kanji, in
Chinese glyph shapes) and Korean, from the wheel ``paperang-p2-fonts-cjk``. TrueType matters: PDF text extractors
(and so DOC²) read the text back from it; the CFF-based Noto CJK fonts on PyPI render but extract as spaced
letters or nothing. Without that package the core font Helvetica is used and characters outside Latin-1 become
"?": the PDF is still made, and says so.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from .mime.body import MailBody
from .mime.filenames import sanitise_filename
from .model import BytesBlob, Document, MessageHeaders

if TYPE_CHECKING:
    from fpdf import FPDF

log = logging.getLogger(__name__)

BODY_DOCUMENT_PATH = "body"  # Document.key is "body:<digest of the body>": stable for the same message
# HTML bigger than this (after sanitising) is rendered as plain text: fpdf2 lays out ~40 KB of HTML a second.
MAX_LAYOUT_HTML = 200 * 1024
# Text beyond this many characters is left out with a note (about 250 pages).
MAX_TEXT_CHARS = 500_000
MAX_IMAGE_WIDTH_PX = 500  # inline images are scaled down to the page
MAX_NESTING = 100  # elements nested deeper than this are not kept as elements (their text is)
_FONT_FAMILY = "body"
_FALLBACK_FAMILY = "helvetica"


def body_document(body: MailBody, headers: MessageHeaders) -> Document | None:
    """The body as a PDF document named after the subject, or None for a message without any body."""
    if not (body.html or "").strip() and not (body.text or "").strip():
        return None
    digest = hashlib.sha256((body.html or "").encode("utf-8", "replace") + b"\0" + (body.text or "").encode())
    pdf = render(body, headers)
    name = sanitise_filename(f"{headers.subject.strip() or 'message'}.pdf", "application/pdf", "message")
    return Document(name, "application/pdf", BytesBlob(pdf), f"{BODY_DOCUMENT_PATH}:{digest.hexdigest()[:16]}")


def render(body: MailBody, headers: MessageHeaders) -> bytes:
    """A PDF of the body with sender, date and subject on top."""
    markup: str | None = None
    if body.html and body.html.strip():
        try:
            markup = _Sanitiser.clean(body.html, body.images)
        except Exception as err:  # noqa: BLE001 - a mail no parser makes sense of is still rendered as its text
            log.info("mail body HTML could not be read (%s): rendered as plain text", type(err).__name__)
            markup = ""
    if markup and len(markup) <= MAX_LAYOUT_HTML:
        try:
            return _Page(headers).html(markup)
        except Exception as err:  # noqa: BLE001 - what fpdf2 cannot lay out is rendered as text below
            log.info("mail body HTML could not be laid out (%s): rendered as plain text", type(err).__name__)
    text = body.plain_text() if markup is not None else (body.text or "")
    return _Page(headers).text(text)


class _Page:
    """One PDF: the header block, then the body."""

    def __init__(self, headers: MessageHeaders) -> None:
        from fpdf import FPDF  # ~0.3 s of imports: paid by the first body rendered, not by every start
        from fpdf.enums import ResourceAccessPolicy

        self.pdf = FPDF(format="A4")
        self.pdf.resource_access_policy = ResourceAccessPolicy.NONE
        self.pdf.set_creation_date(headers.received or datetime(2000, 1, 1, tzinfo=UTC))  # same bytes every time
        self.pdf.set_title(headers.subject or "message")
        self.pdf.set_auto_page_break(auto=True, margin=15)
        self.pdf.add_page()
        self.family = _add_fonts(self.pdf)
        self._header(headers)

    def _header(self, headers: MessageHeaders) -> None:
        when = headers.received.strftime("%Y-%m-%d %H:%M %z") if headers.received else "unknown"
        for label, value in (("From", headers.sender), ("Date", when), ("Subject", headers.subject)):
            self.pdf.set_font(self.family, style="B", size=10)
            self.pdf.cell(22, 6, self._safe(f"{label}:"))
            self.pdf.set_font(self.family, size=10)
            self.pdf.multi_cell(0, 6, self._safe(value or "-"), new_x="LMARGIN", new_y="NEXT")
        self.pdf.ln(2)
        y = self.pdf.get_y()
        self.pdf.line(self.pdf.l_margin, y, self.pdf.w - self.pdf.r_margin, y)
        self.pdf.ln(4)
        self.pdf.set_font(self.family, size=10)

    def html(self, markup: str) -> bytes:
        from fpdf.fonts import TextStyle

        self.pdf.write_html(
            markup if self.family == _FONT_FAMILY else self._safe(markup),
            font_family=self.family,
            tag_styles={tag: TextStyle(font_family=self.family) for tag in ("pre", "code")},
        )
        return bytes(self.pdf.output())

    def text(self, text: str) -> bytes:
        if len(text) > MAX_TEXT_CHARS:
            text = text[:MAX_TEXT_CHARS] + f"\n\n[... {len(text) - MAX_TEXT_CHARS} more characters not rendered]"
        text = re.sub(r"[^\S\n]+", " ", text.replace("\r\n", "\n").replace("\r", "\n"))
        self.pdf.multi_cell(0, 5, self._safe(text), new_x="LMARGIN", new_y="NEXT")
        return bytes(self.pdf.output())

    def _safe(self, text: str) -> str:
        if self.family == _FONT_FAMILY:
            return text
        return text.encode("latin-1", "replace").decode("latin-1")


def _add_fonts(pdf: FPDF) -> str:
    font = _font_file()
    if font is None:
        return _FALLBACK_FAMILY
    for style in ("", "B"):
        pdf.add_font(_FONT_FAMILY, style=style, fname=str(font), collection_font_number=0)
    return _FONT_FAMILY


def _font_file() -> Path | None:
    try:
        path = Path(str(files("paperang_p2_fonts_cjk") / "fonts" / "wqy-microhei.ttc"))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        log.warning("font package paperang-p2-fonts-cjk missing: mail bodies render in Latin-1 only")
        return None
    return path


# --- HTML sanitising ------------------------------------------------------------------------------------------

# Everything inside these is dropped, text included.
_DROPPED = frozenset(
    {
        "script", "style", "head", "title", "template", "noscript", "iframe", "frame", "frameset", "object",
        "embed", "applet", "svg", "math", "select", "textarea", "button", "audio", "video", "canvas", "map",
    }
)  # fmt: skip
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "base", "col", "wbr", "area", "source", "param"})
_BLOCKS = frozenset(
    {"p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "blockquote", "address", "center",
     "dl", "dt", "dd", "figure", "figcaption", "form", "fieldset", "body", "html"}
)  # fmt: skip
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_BOLD = frozenset({"b", "strong"})
_LISTS = frozenset({"ul", "ol"})


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[_Node | str] = field(default_factory=list)
    parent: _Node | None = None


class _Sanitiser(HTMLParser):
    """Mail HTML -> the small HTML fpdf2 lays out reliably (see the module docstring)."""

    def __init__(self, images: dict[str, tuple[str, bytes]]) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("root")
        self._current = self.root
        self._dropping = 0
        self._depth = 0
        self._images = images

    @classmethod
    def clean(cls, markup: str, images: dict[str, tuple[str, bytes]]) -> str:
        parser = cls(images)
        parser.feed(markup)
        parser.close()
        return parser._emit_children(parser.root, in_cell=False).strip()

    # -- building a tree of the elements we keep ----------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._dropping:
            if tag in _DROPPED and tag not in _VOID:
                self._dropping += 1
            return
        if tag in _DROPPED:
            self._dropping = 1
            return
        if self._depth >= MAX_NESTING and tag not in _VOID:
            return  # deeper than any real mail: the tag is ignored, its text stays
        node = _Node(tag, {k: v or "" for k, v in attrs}, parent=self._current)
        self._current.children.append(node)
        if tag not in _VOID:
            self._current = node
            self._depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self._dropping and tag not in _DROPPED:
            self._current.children.append(_Node(tag, {k: v or "" for k, v in attrs}, parent=self._current))

    def handle_endtag(self, tag: str) -> None:
        if self._dropping:
            if tag in _DROPPED:
                self._dropping -= 1
            return
        node: _Node | None = self._current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:  # close it (and whatever was left open inside it)
            while self._current is not node.parent and self._current.parent is not None:
                self._current = self._current.parent
                self._depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._dropping:
            self._current.children.append(data)

    # -- writing the small HTML -----------------------------------------------------------------------------------

    def _emit_children(self, node: _Node, *, in_cell: bool) -> str:
        return "".join(self._emit(child, in_cell=in_cell) for child in node.children)

    def _emit(self, child: _Node | str, *, in_cell: bool) -> str:
        if isinstance(child, str):
            return html.escape(re.sub(r"\s+", " ", child), quote=False)
        tag = child.tag
        if tag == "br":
            return "<br>"
        if tag == "img":
            return self._image(child, in_cell=in_cell)
        if tag == "table" and not in_cell:
            return self._table(child)
        if tag in _LISTS and not in_cell:
            items = "".join(self._emit(c, in_cell=False) for c in child.children if isinstance(c, _Node))
            return f"<{tag}>{items}</{tag}>" if items else ""
        inner = self._emit_children(child, in_cell=in_cell)  # each element's content is written once
        if in_cell:  # fpdf2 table cells hold text: block structure becomes line breaks
            if tag in _BLOCKS or tag in _HEADINGS or tag in ("li", "tr", "table", "p"):
                return f" {inner} "
            return inner
        if tag == "hr":
            return "<hr>"
        if tag in _HEADINGS:
            return f"<{tag}>{inner}</{tag}>" if inner.strip() else ""
        if tag in _BLOCKS or tag == "p":
            return f"<p>{inner}</p>" if inner.strip() else ""
        if tag == "pre":
            return f"<pre>{inner}</pre>"
        if tag in _BOLD:
            return f"<b>{inner}</b>" if inner.strip() else inner
        if tag == "li":
            return f"<li>{inner}</li>"
        return inner  # span, font, a, u, i, em and the like: their text

    def _table(self, table: _Node) -> str:
        rows = _rows(table)
        if any(_holds(cell, "table") for row in rows for cell in row):
            # A layout table: its cells' content one after another.
            return "".join(f"<p>{self._emit_children(cell, in_cell=False)}</p>" for row in rows for cell in row)
        cells = [[self._emit_children(cell, in_cell=True).strip() for cell in row] for row in rows]
        cells = [row for row in cells if any(text for text in row)]
        if not cells:
            return ""
        width = max(len(row) for row in cells)
        body = "".join(
            "<tr>" + "".join(f"<td>{text}</td>" for text in row + [""] * (width - len(row))) + "</tr>" for row in cells
        )
        return f'<table border="1">{body}</table>'

    def _image(self, node: _Node, *, in_cell: bool) -> str:
        alt = html.escape(node.attrs.get("alt", "").strip(), quote=False)
        source = node.attrs.get("src", "").strip()
        if not source.lower().startswith("cid:"):
            return f"[{alt}]" if alt else ""  # a remote (or any other) image is never fetched
        found = self._images.get(source[4:].strip("<>").lower())
        if found is None or in_cell:
            return f"[{alt}]" if alt else ""
        content_type, data = found
        size = _image_size(data)
        if size is None:
            return f"[{alt}]" if alt else ""
        width, height = size
        if width > MAX_IMAGE_WIDTH_PX:
            width, height = MAX_IMAGE_WIDTH_PX, max(1, height * MAX_IMAGE_WIDTH_PX // width)
        uri = f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
        return f'<img src="{uri}" width="{width}" height="{height}"><br>'


def _rows(table: _Node) -> list[list[_Node]]:
    """The rows of a table, each a list of cells; anything else inside it (text outside a cell, say) becomes a cell
    of its own, so no text is lost."""
    rows: list[list[_Node]] = []
    for child in table.children:
        if isinstance(child, _Node) and child.tag in ("thead", "tbody", "tfoot"):
            rows.extend(_rows(child))
        elif isinstance(child, _Node) and child.tag == "tr":
            rows.append([_as_cell(c) for c in child.children if _has_content(c)])
        elif _has_content(child):
            rows.append([_as_cell(child)])
    return [row for row in rows if row]


def _as_cell(child: _Node | str) -> _Node:
    if isinstance(child, _Node) and child.tag in ("td", "th"):
        return child
    return _Node("td", children=[child])


def _has_content(child: _Node | str) -> bool:
    return isinstance(child, _Node) or bool(child.strip())


def _holds(node: _Node, tag: str) -> bool:
    return any(isinstance(c, _Node) and (c.tag == tag or _holds(c, tag)) for c in node.children)


def _image_size(data: bytes) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError  # Pillow comes with fpdf2

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("PNG", "JPEG", "GIF"):
                return None
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None
