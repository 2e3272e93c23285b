"""Delta query on a folder's messages for the Graph emulator (``GET .../mailFolders/{id}/messages/delta``).

As Graph does it:

* A round without a token is the initial synchronisation: every message now in the folder. A round with the
  ``$deltatoken`` of the previous round's ``@odata.deltaLink`` brings what changed since: messages that arrived (or
  were moved in, or changed) with their selected fields, and ``{"id", "@removed": {"reason": "deleted"}}`` for
  messages that left the folder (moved or deleted).
* Pages follow ``@odata.nextLink`` (``$skiptoken``); the last page holds ``@odata.deltaLink``. Page size from
  ``Prefer: odata.maxpagesize=N`` (answered in ``Preference-Applied``), else ``$top``, else 10. The query options of
  the first request (``$select``, ``$expand``, ``$filter``) live on in the tokens, not in the links.
* ``$filter`` supports ``receivedDateTime ge|gt`` only, ``$orderby`` ``receivedDateTime desc`` only; other options
  answer 400. Items come newest first, not in the order a client may want.
* Tokens are opaque and expire: after ``GraphEmulator.expire_delta_tokens()`` every earlier one answers
  ``410 syncStateNotFound``, and the client must start a new round.
"""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .graph_server import GraphProblem, compare, message_value, parse_filter
from .https_emulator import Request, Response

if TYPE_CHECKING:
    from .graph_server import Folder, GraphEmulator, MailboxStore, Message

DEFAULT_PAGE_SIZE = 10
_MAX_PAGE_SIZE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)
_OPTIONS = ("$select", "$expand", "$filter")


def _encode(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(token: str) -> dict[str, Any]:
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        raise GraphProblem(400, "BadRequest", "The delta token is not valid.") from None
    if not isinstance(state, dict):
        raise GraphProblem(400, "BadRequest", "The delta token is not valid.")
    return state


def delta_page(
    graph: GraphEmulator,
    request: Request,
    store: MailboxStore,
    folder: Folder,
    immutable: bool,
    headers: dict[str, str],
) -> Response:
    token = request.query.get("$deltatoken") or request.query.get("$skiptoken")
    if token:
        state = _decode(token)
        if state.get("gen") != graph.delta_generation or state.get("f") != folder.id:
            raise GraphProblem(410, "syncStateNotFound", "The sync state generation is not found.")
    else:
        _check_options(request.query)
        state = {
            "f": folder.id,
            "gen": graph.delta_generation,
            "since": None,  # the initial round
            "upto": len(store.changes),
            "off": 0,
            "q": {k: v for k, v in request.query.items() if k in _OPTIONS},
        }
        if request.query.get("$top"):
            state["top"] = int(request.query["$top"])
    if "$deltatoken" in request.query:  # a new round: what changed since the last one ended
        state = dict(state, since=state["upto"], upto=len(store.changes), off=0)
    size = _page_size(request, state)
    items = _items(store, folder, state)
    offset = int(state.get("off") or 0)
    view = Request(request.method, request.raw_path, request.path, dict(state["q"]), request.headers, b"", "")
    page = [
        {"id": i, "@removed": {"reason": "deleted"}}
        if removed
        else graph._message_json(view, store.messages[i], immutable)
        for i, removed in items[offset : offset + size]
    ]
    base = f"{request.base_url}{request.raw_path}"
    payload: dict[str, Any] = {
        "@odata.context": f"{request.base_url}/v1.0/$metadata#Collection(message)",
        "value": page,
    }
    if offset + size < len(items):
        payload["@odata.nextLink"] = f"{base}?$skiptoken={quote(_encode(dict(state, off=offset + size)))}"
    else:
        payload["@odata.deltaLink"] = f"{base}?$deltatoken={quote(_encode(dict(state, off=0, since=None)))}"
    answer_headers = dict(headers)
    if _MAX_PAGE_SIZE.search(request.header("Prefer")):
        applied = f"odata.maxpagesize={size}"
        answer_headers["Preference-Applied"] = ", ".join(filter(None, [headers.get("Preference-Applied"), applied]))
    return Response.json(200, payload, answer_headers)


def _check_options(query: dict[str, str]) -> None:
    for prop, op, _ in parse_filter(query.get("$filter", "")):
        if prop.lower() != "receiveddatetime" or op not in ("ge", "gt"):
            raise GraphProblem(400, "ErrorInvalidUrlQueryFilter", "The filter is not supported by delta.")
    orderby = query.get("$orderby", "").strip().lower()
    if orderby and orderby != "receiveddatetime desc":
        raise GraphProblem(400, "ErrorInvalidUrlQuery", "Only $orderby=receivedDateTime desc is supported by delta.")
    if "$skip" in query or "$search" in query:
        raise GraphProblem(400, "ErrorInvalidUrlQuery", "The query option is not supported by delta.")


def _page_size(request: Request, state: dict[str, Any]) -> int:
    preferred = _MAX_PAGE_SIZE.search(request.header("Prefer"))
    if preferred:
        return max(1, min(int(preferred.group(1)), 1000))
    return int(state.get("top") or DEFAULT_PAGE_SIZE)


def _items(store: MailboxStore, folder: Folder, state: dict[str, Any]) -> list[tuple[str, bool]]:
    """The round's ids with "removed?", newest first (the removed ones after), the same for every page of it."""
    conditions = parse_filter(state["q"].get("$filter", ""))

    def wanted(message: Message) -> bool:
        return message.folder_id == folder.id and all(
            compare(message_value(message, prop), op, value) for prop, op, value in conditions
        )

    since, upto = state.get("since"), int(state["upto"])
    if since is None:
        present = [m for m in store.messages.values() if wanted(m)]
        return [(m.immutable_id, False) for m in sorted(present, key=lambda m: m.received, reverse=True)]
    touched = dict.fromkeys(c.message_id for c in store.changes[int(since) : upto] if folder.id in c.folders)
    present = [m for i in touched if (m := store.messages.get(i)) is not None and wanted(m)]
    kept = {m.immutable_id for m in present}
    gone = [i for i in touched if i not in kept]
    newest_first = sorted(present, key=lambda m: m.received, reverse=True)
    return [(m.immutable_id, False) for m in newest_first] + [(i, True) for i in gone]
