"""Graph's JSON for a listed message: its id, the headers the pipeline needs, its attachments' metadata."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ...errors import DocumentError
from ...model import MessageHeaders

LIST_FIELDS = [
    "id", "internetMessageId", "subject", "from", "sender", "receivedDateTime", "hasAttachments", "toRecipients",
    "ccRecipients",
]  # fmt: skip
ATTACHMENT_FIELDS = "id,name,contentType,size,isInline"
# Graph's attachment size counts the attachment's properties too; only well above the limit is it surely too big.
SIZE_SLACK = 256 * 1024


@dataclass(frozen=True)
class GraphAttachment:
    """An attachment as listed: what Graph says about it, never its content."""

    id: str
    kind: str  # "file", "item", "reference", or Graph's type for anything else
    name: str | None
    content_type: str | None
    size: int  # Graph's figure: the content and the attachment's properties
    is_inline: bool
    content_id: str | None = None


@dataclass(frozen=True)
class GraphMessage:
    """A message as listed: its id, the headers the pipeline needs, its attachments' metadata."""

    id: str
    headers: MessageHeaders
    attachments: tuple[GraphAttachment, ...]
    recipients: tuple[str, ...] = ()  # the addresses of To and Cc


def message_of(data: Any) -> GraphMessage:
    if not isinstance(data, dict) or not data.get("id"):
        raise DocumentError(f"Graph sent a message without an id: {str(data)[:200]}")
    return GraphMessage(
        id=str(data["id"]),
        headers=_headers(data),
        attachments=tuple(_attachment(a) for a in data.get("attachments") or [] if isinstance(a, dict)),
        recipients=_recipients(data),
    )


def _recipients(data: dict[str, Any]) -> tuple[str, ...]:
    found = []
    for field in ("toRecipients", "ccRecipients"):
        for recipient in data.get(field) or []:
            address = ((recipient if isinstance(recipient, dict) else {}).get("emailAddress") or {}).get("address")
            if isinstance(address, str) and "@" in address:
                found.append(address.strip())
    return tuple(found)


def _attachment(data: dict[str, Any]) -> GraphAttachment:
    return GraphAttachment(
        id=str(data.get("id") or ""),
        kind=_kind(str(data.get("@odata.type") or "")),
        name=data.get("name"),
        content_type=data.get("contentType"),
        size=int(data.get("size") or 0),
        is_inline=bool(data.get("isInline")),
        content_id=data.get("contentId"),
    )


def _kind(odata_type: str) -> str:
    odata_type = odata_type.lower()
    for kind in ("file", "item", "reference"):
        if odata_type.endswith(f"{kind}attachment"):
            return kind
    return odata_type or "unknown"


def _headers(data: dict[str, Any]) -> MessageHeaders:
    sender = ""
    for field in ("from", "sender"):
        address = ((data.get(field) or {}).get("emailAddress") or {}).get("address")
        if address:
            sender = str(address)
            break
    internet_id = "".join(str(data.get("internetMessageId") or "").split()).strip("<>") or None
    received = _graph_time(data.get("receivedDateTime"))
    return MessageHeaders(
        message_id=internet_id, sender=sender, subject=str(data.get("subject") or ""), received=received
    )


def _graph_time(value: Any) -> datetime | None:
    """Graph's ``2024-05-01T08:00:00Z`` (fractions of up to seven digits, or an offset), as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())  # Python reads at most six fraction digits
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def odata_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
