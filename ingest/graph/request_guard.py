"""What every Graph request of one mailbox passes (msgraph-sdk's and our own alike), as an httpx middleware of
kiota's chain: the concurrency limit per mailbox, immutable ids, retries after ``Retry-After`` and token renewal
(see :mod:`ingest.graph.client` for the rules); and the bearer-token provider the request adapter asks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator
from kiota_http.middleware import BaseMiddleware

from ..retry import bounded_wait, default_policy, parse_retry_after
from .auth import TokenSource

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 4  # Exchange allows an app 4 concurrent requests per mailbox
RETRY_STATUSES = frozenset({429, 503, 504})
IMMUTABLE_ID = 'IdType="ImmutableId"'
BATCH_PATH = "/$batch"


class _Slots:
    """The mailbox's concurrency slots; a request may take several at once (a $batch), gathered one at a time under
    a lock so that two such requests never each hold part of what they need."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = asyncio.Semaphore(total)
        self._gathering = asyncio.Lock()

    async def acquire(self, count: int) -> None:
        if count == 1:
            await self._free.acquire()
            return
        taken = 0
        try:
            async with self._gathering:
                while taken < count:
                    await self._free.acquire()
                    taken += 1
        except BaseException:
            self.release(taken)
            raise

    def release(self, count: int) -> None:
        for _ in range(count):
            self._free.release()


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives back its concurrency slots when it is closed."""

    def __init__(self, stream: Any, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._release()


class RequestGuard(BaseMiddleware):
    """Concurrency limit, immutable ids, retries and token renewal for every Graph request of one mailbox."""

    def __init__(self, tokens: TokenSource, *, deadline: float | None, where: str) -> None:
        super().__init__()
        self._tokens = tokens
        self._deadline = deadline
        self._where = where
        self._slots = _Slots(MAX_CONCURRENT_REQUESTS)

    async def send(self, request: httpx.Request, transport: httpx.AsyncBaseTransport) -> httpx.Response:
        prefer = request.headers.get("Prefer")
        if not prefer:
            request.headers["Prefer"] = IMMUTABLE_ID
        elif "idtype" not in prefer.lower():
            request.headers["Prefer"] = f"{prefer}, {IMMUTABLE_ID}"
        policy = default_policy()
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._send_once(request, transport)
            except httpx.TransportError as err:
                if attempt >= policy.attempts or not await self._wait(policy.delay(attempt), request, str(err)):
                    raise
                continue
            if response.status_code == 401 and not renewed and request.headers.get("Authorization"):
                renewed = True
                await response.aclose()
                rejected = request.headers["Authorization"].removeprefix("Bearer ").strip()
                log.info("%s: Graph refused the access token (expired?); renewing it", self._where)
                fresh = await asyncio.to_thread(self._tokens.renew, rejected)
                request.headers["Authorization"] = f"Bearer {fresh}"
                continue
            if response.status_code in RETRY_STATUSES and attempt < policy.attempts:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                reason = f"{response.status_code} from Graph"
                if await self._wait(policy.delay(attempt, retry_after), request, reason):
                    await response.aclose()
                    continue
            return response

    async def _send_once(self, request: httpx.Request, transport: httpx.AsyncBaseTransport) -> httpx.Response:
        weight = self._weight(request)
        await self._slots.acquire(weight)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._slots.release(weight)

        try:
            response = await super().send(request, transport)
        except BaseException:
            release()
            raise
        response.stream = _ReleasingStream(response.stream, release)
        return response

    def _weight(self, request: httpx.Request) -> int:
        """Slots a request takes: one, or for a $batch one per request it holds (Graph runs up to four at once)."""
        if not request.url.path.endswith(BATCH_PATH):
            return 1
        try:
            held = len(json.loads(request.content)["requests"])
        except (ValueError, KeyError, TypeError, httpx.RequestNotRead):
            held = self._slots.total
        return max(1, min(held, self._slots.total))

    async def _wait(self, delay: float, request: httpx.Request, reason: str) -> bool:
        """Sleeps before a retry; False (no retry) when the wait would end after the run's deadline."""
        if bounded_wait(delay, self._deadline) is None:
            log.warning("%s: %s; a retry in %.0fs would overrun this run's time budget", self._where, reason, delay)
            return False
        log.info("%s: %s on %s %s; retrying in %.1fs", self._where, reason, request.method, request.url.path, delay)
        request.headers["Retry-Attempt"] = str(int(request.headers.get("Retry-Attempt", "0")) + 1)
        await asyncio.sleep(delay)
        return True


class TokenProvider(AccessTokenProvider):
    """Bearer tokens from our :class:`~ingest.graph.auth.TokenSource`, for the configured Graph host only."""

    def __init__(self, tokens: TokenSource, host: str) -> None:
        self._tokens = tokens
        self._hosts = AllowedHostsValidator([host])  # a list: kiota rejects other iterables

    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        if not self._hosts.is_url_host_valid(uri):
            return ""
        return await asyncio.to_thread(self._tokens.token)

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts
