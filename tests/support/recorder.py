"""A server that only records what reaches it: proof that a request (and its bearer token) did NOT go somewhere."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from .https_emulator import Emulator, Request, Response


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str


class RequestRecorder(Emulator):
    """Answers every request with an empty Graph-like page and remembers it (HTTPS with a context, else HTTP)."""

    name = "recorder"

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_context)
        self.seen: list[Seen] = []

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.seen.append(Seen(request.method, request.path, request.header("Authorization")))
        return Response.json(200, {"value": []})
