"""What the MIME code shares: the limits, the part types it tells apart, and :class:`Candidate`, a part that may
become a document (from the MIME walk or from Graph's attachment list)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import DocumentError
from ..model import Blob
from .filenames import DEFAULT_STEM

MAX_NESTING_DEPTH = 20
# tnefparse reads a winmail.dat whole, and its files besides: a bigger one is uploaded as it came, not unpacked.
MAX_TNEF_BYTES = 64 * 1024 * 1024
# More documents than this in one message is not a mail anyone sends by hand (a zip-bomb-like part count): the
# message goes to the failed folder with the reason instead of flooding DOC².
MAX_DOCUMENTS_PER_MESSAGE = 500  # attached messages inside attached messages
WHOLE_MESSAGE_PATH = "0"  # the mime_path of the whole message as .eml; parts are numbered from 1
MESSAGE_TYPE = "message/rfc822"
# An attached mail: message/global is message/rfc822 with UTF-8 headers (RFC 6532), kept as .eml the same way.
ATTACHED_MESSAGE_TYPES = frozenset({MESSAGE_TYPE, "message/global"})
TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
# Detached signatures (multipart/signed): skipped with the note "signature", never uploaded as documents.
SIGNATURE_TYPES = frozenset(
    {"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature"}
)
# Text that is read as the message's own text when it has no file name and is not an attachment; any other part
# that is not the body is a document candidate (an XRechnung sent as text/xml, a CSV as text/csv).
BODY_TEXT_TYPES = frozenset({"text/plain", "text/html", "text/enriched"})
# Far beyond anything a mail client writes; guards the walk against a crafted, absurdly deep tree.
MAX_MULTIPART_DEPTH = 64
# The file name stem of an attached message that has no name of its own (MIME and Graph item attachments alike).
FORWARDED_STEM = "forwarded message"


class UndecodablePart(DocumentError):
    """The bytes of one part cannot be decoded (broken base64, unreadable structure).

    :func:`select_documents` reports such a part as skipped; a ``Candidate.load`` may raise it. Any other
    exception from ``load`` (a download that timed out, say) propagates to the caller.
    """


@dataclass(frozen=True)
class Candidate:
    """A part that may become a document: what the message says about it, and its bytes on demand.

    ``filename`` is decoded but not yet sanitised; ``content_type`` is the declared one (sniffing decides
    unless ``trusted_type``). ``mime_path`` is a stable position within the message ("1.2.3" for MIME, the
    attachment id for Graph) and becomes the first half of ``Document.key``. When ``size`` is known, an
    oversized part is filtered without calling ``load``.
    """

    filename: str | None
    content_type: str
    mime_path: str
    load: Callable[[], bytes | Blob]  # a Blob for big content (a temporary file), else bytes
    size: int | None = None
    is_inline: bool = False
    content_id: str | None = None
    fallback_stem: str = DEFAULT_STEM
    # False only for the whole message as .eml: the attachment filters do not apply to it.
    is_attachment: bool = True
    # True when the caller made the bytes itself (an .eml) and knows their type.
    trusted_type: bool = False

    @classmethod
    def from_bytes(
        cls,
        filename: str | None,
        content_type: str,
        mime_path: str,
        content: bytes,
        *,
        is_inline: bool = False,
        content_id: str | None = None,
        fallback_stem: str = DEFAULT_STEM,
        is_attachment: bool = True,
        trusted_type: bool = False,
    ) -> Candidate:
        """A candidate whose bytes are already at hand."""
        return cls(
            filename,
            content_type,
            mime_path,
            lambda: content,
            len(content),
            is_inline=is_inline,
            content_id=content_id,
            fallback_stem=fallback_stem,
            is_attachment=is_attachment,
            trusted_type=trusted_type,
        )
