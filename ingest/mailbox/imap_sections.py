"""Reading a large IMAP message without the attachments that are over the account's size limit.

BODYSTRUCTURE tells every part's encoded size before any content is fetched. A leaf part that is certainly larger
than ``max_attachment_mb`` once decoded is left out: the message is put back together from its other sections
(header, each part's MIME header and content), the left-out part keeping its MIME header with an empty body, and
extraction is told its size, so the size filter refuses it without its bytes ever being read. Part numbers stay
those of the whole message, so document keys (and custom_doc_ids) are the ones a full fetch gives.

No network here: :func:`plan` reads a BODYSTRUCTURE and says what to fetch, :func:`assemble` puts the fetched
sections together.

IMAP section numbers (RFC 3501 6.4.5): the parts of a multipart are ``1``, ``2``... (``2.1``... inside part 2);
the body of a single-part message is ``1``; an attached message ``n`` has ``n.HEADER`` and its body's parts are
``n.1``, ``n.2``... (``n.1`` alone for a single-part body); ``n.MIME`` is part n's own MIME header.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CRLF = b"\r\n"
# What a part's decoded size is at least, per byte of its encoded size: base64 gives 3 bytes per 4 characters,
# less the line breaks (76-character lines; 0.69 leaves room for lines down to ~50 characters); quoted-printable
# at worst 1 per 3; anything else about 1 per 1 (a margin for line-end differences).
_DECODED_AT_LEAST = {"base64": 0.69, "quoted-printable": 1 / 3}
_OTHER_ENCODINGS = 0.95


class StructureError(ValueError):
    """The BODYSTRUCTURE does not have a shape this module knows; fetch the message whole instead."""


@dataclass
class Part:
    """One node of a message's structure, numbered as IMAP numbers sections."""

    section: str  # "" for the top-level message
    kind: str  # "multipart", "message" (an attached message/rfc822) or "leaf"
    maintype: str = ""
    subtype: str = ""
    names: tuple[str, ...] = ()  # its name and filename parameters, lower-cased
    encoding: str = ""
    size: int = 0
    boundary: bytes = b""
    children: list[Part] = field(default_factory=list)  # multipart: its parts; message: [its body]

    def leaves(self) -> list[Part]:
        if self.kind == "leaf":
            return [self]
        return [leaf for child in self.children for leaf in child.leaves()]


@dataclass(frozen=True)
class Plan:
    """What to fetch to rebuild a message without its oversized parts."""

    omitted: dict[str, int]  # section -> at least this many bytes once decoded
    items: list[bytes]  # FETCH items, e.g. b"BODY.PEEK[HEADER]", b"BODY.PEEK[2.MIME]"
    structure: Part


def decoded_size_at_least(encoding: str, size: int) -> int:
    return int(size * _DECODED_AT_LEAST.get(encoding.lower(), _OTHER_ENCODINGS))


def parse(bodystructure: Sequence[Any]) -> Part:
    """The structure of a whole message from imapclient's BODYSTRUCTURE value."""
    return _body(bodystructure, "")


def plan(bodystructure: Sequence[Any], limit: int) -> Plan | None:
    """None when no part is certainly over ``limit`` bytes (fetch the message whole), else what to fetch."""
    structure = parse(bodystructure)
    omitted = {
        leaf.section: decoded_size_at_least(leaf.encoding, leaf.size)
        for leaf in structure.leaves()
        # Text parts are bodies more often than attachments, and the body decides which images are inline; a
        # winmail.dat is a container whose files the limit applies to, one by one, once it is unpacked.
        if leaf.maintype != "text"
        and not _is_container(leaf)
        and decoded_size_at_least(leaf.encoding, leaf.size) > limit
    }
    if not omitted:
        return None
    items = [b"BODY.PEEK[HEADER]"]
    _items_for_body(structure, omitted, items)
    return Plan(omitted, items, structure)


def assemble(plan_: Plan, fetched: Mapping[bytes, bytes]) -> bytes:
    """The message rebuilt from the sections ``plan_.items`` named (keys as imapclient returns them: b"BODY[1]")."""
    return _section(fetched, "HEADER") + _body_bytes(plan_.structure, plan_.omitted, fetched)


# --- structure ---------------------------------------------------------------------------------------------


def _body(raw: Sequence[Any], container: str) -> Part:
    """The body of a message (the top one when ``container`` is "", else the attached message ``container``)."""
    children, rest = _split_multipart(raw)
    if children is None:
        return _leaf_or_message(raw, _child(container, 1))
    part = Part(container, "multipart", boundary=_boundary(rest))
    part.children = [_part(child, _child(container, number)) for number, child in enumerate(children, 1)]
    return part


def _part(raw: Sequence[Any], section: str) -> Part:
    children, rest = _split_multipart(raw)
    if children is None:
        return _leaf_or_message(raw, section)
    part = Part(section, "multipart", boundary=_boundary(rest))
    part.children = [_part(child, f"{section}.{number}") for number, child in enumerate(children, 1)]
    return part


def _leaf_or_message(raw: Sequence[Any], section: str) -> Part:
    if len(raw) < 7:
        raise StructureError(f"part {section}: too few fields")
    maintype, subtype = _text(raw[0]).lower(), _text(raw[1]).lower()
    encoding, size = _text(raw[5]).lower(), raw[6]
    if not isinstance(size, int):
        raise StructureError(f"part {section}: size is not a number")
    if (maintype, subtype) == ("message", "rfc822") and len(raw) > 8 and isinstance(raw[8], (list, tuple)):
        part = Part(section, "message", maintype, subtype, (), encoding, size)
        part.children = [_body(raw[8], section)]
        return part
    return Part(section, "leaf", maintype, subtype, _names(raw), encoding, size)


def _names(raw: Sequence[Any]) -> tuple[str, ...]:
    """The values of name/filename parameters anywhere in a leaf's fields (type parameters, disposition)."""
    found: list[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, (list, tuple)):
            pairs = list(value)
            for key, item in zip(pairs[::2], pairs[1::2], strict=False):
                if isinstance(key, bytes) and key.lower().rstrip(b"*") in (b"name", b"filename"):
                    found.append(_text(item).lower())
            for item in pairs:
                visit(item)

    for field_value in raw[2:]:
        visit(field_value)
    return tuple(found)


def _is_container(leaf: Part) -> bool:
    if leaf.maintype == "application" and leaf.subtype in ("ms-tnef", "vnd.ms-tnef"):
        return True
    return any(name.endswith(".dat") for name in leaf.names)


def _split_multipart(raw: Sequence[Any]) -> tuple[list[Sequence[Any]] | None, Sequence[Any]]:
    if not raw:
        raise StructureError("empty structure")
    first = raw[0]
    if isinstance(first, list):  # imapclient's BodyData gathers the parts of the top multipart in a list
        return first, raw[1:]
    if isinstance(first, tuple):  # nested multiparts: the parts lead, then the subtype
        count = next((n for n, item in enumerate(raw) if not isinstance(item, tuple)), len(raw))
        return list(raw[:count]), raw[count:]
    return None, raw


def _boundary(rest: Sequence[Any]) -> bytes:
    params = rest[1] if len(rest) > 1 and isinstance(rest[1], (list, tuple)) else ()
    for name, value in zip(params[::2], params[1::2], strict=False):
        if _text(name).lower() == "boundary" and value:
            return value if isinstance(value, bytes) else str(value).encode()
    raise StructureError("multipart without a boundary")


def _child(container: str, number: int) -> str:
    return f"{container}.{number}" if container else str(number)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return "" if value is None else str(value)


# --- what to fetch and how to put it together -------------------------------------------------------------


def _holds_omitted(part: Part, omitted: Mapping[str, int]) -> bool:
    return any(leaf.section in omitted for leaf in part.leaves())


def _items_for_body(body: Part, omitted: Mapping[str, int], items: list[bytes]) -> None:
    if body.kind != "multipart":
        _items_for_part(body, omitted, items)
        return
    for child in body.children:
        items.append(_item(f"{child.section}.MIME"))
        _items_for_part(child, omitted, items)


def _items_for_part(part: Part, omitted: Mapping[str, int], items: list[bytes]) -> None:
    if part.section in omitted:
        return
    if not _holds_omitted(part, omitted):
        items.append(_item(part.section))
    elif part.kind == "message":
        items.append(_item(f"{part.section}.HEADER"))
        _items_for_body(part.children[0], omitted, items)
    else:
        _items_for_body(part, omitted, items)


def _body_bytes(body: Part, omitted: Mapping[str, int], fetched: Mapping[bytes, bytes]) -> bytes:
    if body.kind != "multipart":
        return _part_bytes(body, omitted, fetched)
    delimiter = b"--" + body.boundary
    out = bytearray()
    for child in body.children:
        out += delimiter + CRLF + _section(fetched, f"{child.section}.MIME")
        out += _part_bytes(child, omitted, fetched) + CRLF
    out += delimiter + b"--" + CRLF
    return bytes(out)


def _part_bytes(part: Part, omitted: Mapping[str, int], fetched: Mapping[bytes, bytes]) -> bytes:
    if part.section in omitted:
        return b""
    if not _holds_omitted(part, omitted):
        return _section(fetched, part.section)
    if part.kind == "message":
        return _section(fetched, f"{part.section}.HEADER") + _body_bytes(part.children[0], omitted, fetched)
    return _body_bytes(part, omitted, fetched)


def _item(section: str) -> bytes:
    return f"BODY.PEEK[{section}]".encode()


def _section(fetched: Mapping[bytes, bytes], section: str) -> bytes:
    value = fetched.get(f"BODY[{section}]".encode())
    if value is None:
        raise StructureError(f"section {section} missing from the server's answer")
    return bytes(value)
