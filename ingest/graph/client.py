"""The Microsoft Graph client of one mailbox: msgraph-sdk over an httpx client of ours, usable from plain code.

msgraph-sdk is asynchronous and the rest of the product is not, so a :class:`GraphSession` owns an event loop in a
background thread and :meth:`GraphSession.run` waits for a coroutine on it. Every request, the SDK's and our own
attachment downloads alike, passes :class:`~ingest.graph.request_guard.RequestGuard`:

* at most :data:`~ingest.graph.request_guard.MAX_CONCURRENT_REQUESTS` in flight per mailbox (Exchange allows an
  app 4 per mailbox); a slot is held until the response body has been read or closed; a ``$batch`` takes one slot
  per request it holds, up to all four, since Graph hands up to four of a batch's requests to Exchange at once;
* ``Prefer: IdType="ImmutableId"`` on every request, so message ids survive moves;
* 429, 503 and 504 are retried after ``Retry-After`` (or a back-off), broken connections and time-outs too, as
  the shared :mod:`ingest.retry` policy says; a wait that would end after the run's deadline is not started;
* a 401 renews the token once (expired early, revoked) and sends the request again.

A whole URL from Graph (``@odata.nextLink``) is followed only on the configured endpoint (same scheme, host and
port, under ``/v1.0``): anything else is an :class:`~ingest.errors.AccountError` and the bearer token stays here.

The request adapter is msgraph's own, handed our httpx client (test-CA aware, ``trust_env = False`` with the proxy
:class:`ingest.network.Proxies` chose for the endpoint, connect and read time-outs) and a bearer-token provider
backed by :class:`ingest.graph.auth.TokenSource`.

Besides the SDK, :class:`GraphSession` sends JSON batches itself (:meth:`GraphSession.batch`: at most
:data:`MAX_BATCH` requests each, the requests Graph answered 429/503/504 sent again after their ``Retry-After``) and
streams downloads into memory or, past :data:`~ingest.model.BLOB_MEMORY_LIMIT`, a temporary file
(:meth:`GraphSession.download_blob`). The request adapter makes these requests too (its public
``convert_to_native_async``: token, request options), and we send them on the same httpx client, streamed: the
adapter's own sending reads a body whole, and its models cost milliseconds a message in a listing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import (
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware import (
    BaseMiddleware,
    ParametersNameDecodingHandler,
    RedirectHandler,
    UserAgentHandler,
)
from msgraph_core import GraphClientFactory
from msgraph_core.middleware import GraphTelemetryHandler

from ..errors import AccountError
from ..model import Blob, BlobWriter
from ..retry import bounded_wait, default_policy, parse_retry_after
from ..tls import client_context
from .auth import TokenSource
from .request_guard import (
    BATCH_PATH,
    IMMUTABLE_ID,
    MAX_CONCURRENT_REQUESTS,
    RETRY_STATUSES,
    RequestGuard,
    TokenProvider,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 15.0
READ_TIMEOUT_SECONDS = 120.0
DOWNLOAD_CHUNK = 256 * 1024
MAX_BATCH = 20  # requests in one $batch: Graph's limit

T = TypeVar("T")


@dataclass
class GraphFailure(Exception):
    """A Graph answer with an error status, from a request made outside the SDK (downloads)."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def failure_of(err: BaseException) -> GraphFailure | None:
    """Status, Graph error code and message of an SDK or download error; None for anything else."""
    if isinstance(err, GraphFailure):
        return err
    if isinstance(err, APIError):
        main = getattr(err, "error", None)
        code = str(getattr(main, "code", None) or "")
        message = str(getattr(main, "message", None) or err.message or "")
        return GraphFailure(int(err.response_status_code or 0), code, message)
    return None


@dataclass(frozen=True)
class BatchRequest:
    """One request of a JSON batch; ``url`` is relative to ``/v1.0`` (``/users/.../messages/.../move``)."""

    method: str
    url: str
    body: Any = None  # sent as JSON


@dataclass(frozen=True)
class BatchAnswer:
    """Graph's answer to one request of a batch (after the retries of :meth:`GraphSession.batch`)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # parsed JSON, or base64 text for other content

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def failure(self) -> GraphFailure:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        error = error if isinstance(error, dict) else {}
        return GraphFailure(self.status, str(error.get("code") or ""), str(error.get("message") or ""))


class GraphSession:
    """One mailbox's GraphServiceClient with its event loop; :meth:`close` never raises."""

    def __init__(
        self,
        graph_endpoint: str,
        tokens: TokenSource,
        *,
        ca_file: str | None,
        deadline: float | None,
        where: str,
        proxy: str | None = None,
        read_timeout: float | None = None,
    ) -> None:
        from msgraph.graph_request_adapter import GraphRequestAdapter  # lazy: importing msgraph takes seconds
        from msgraph.graph_service_client import GraphServiceClient

        self.base_url = graph_endpoint.rstrip("/") + "/v1.0"
        self.tokens = tokens
        self._deadline = deadline
        self._where = where
        self._proxy = proxy
        self._read_timeout = read_timeout or READ_TIMEOUT_SECONDS
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"graph {where}", daemon=True)
        self._thread.start()
        try:
            self.client = self._build(GraphServiceClient, GraphRequestAdapter, ca_file, deadline, where)
        except BaseException:
            self._stop_loop()
            raise

    def _build(self, service: Any, adapter_type: Any, ca_file: str | None, deadline: float | None, where: str) -> Any:
        http = httpx.AsyncClient(
            base_url=self.base_url,
            verify=client_context(ca_file),
            timeout=httpx.Timeout(self._read_timeout, connect=min(CONNECT_TIMEOUT_SECONDS, self._read_timeout)),
            limits=httpx.Limits(
                max_connections=MAX_CONCURRENT_REQUESTS * 2, max_keepalive_connections=MAX_CONCURRENT_REQUESTS
            ),
            trust_env=False,
            proxy=self._proxy,
        )
        middleware: list[BaseMiddleware] = [
            RequestGuard(self.tokens, deadline=deadline, where=where),
            RedirectHandler(),
            ParametersNameDecodingHandler(),
            UserAgentHandler(),
            GraphTelemetryHandler(),
        ]
        self.http = GraphClientFactory.create_with_custom_middleware(middleware=middleware, client=http)
        host = urlsplit(self.base_url).hostname or ""
        self._adapter = adapter_type(
            BaseBearerTokenAuthenticationProvider(TokenProvider(self.tokens, host)), client=self.http
        )
        self._adapter.base_url = self.base_url
        return service(request_adapter=self._adapter)

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Runs ``make()`` on the session's loop and waits for its result (or exception)."""
        return self.start(make).result()

    def start(self, make: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Starts ``make()`` on the session's loop; its result (or exception) comes with the future."""

        async def call() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(call(), self._loop)

    async def _request(
        self, method: str, url: str, headers: dict[str, str] | None = None, body: Any = None
    ) -> httpx.Request:
        """A request of our own (download, JSON listing, batch) as msgraph's request adapter makes one, through its
        public ``convert_to_native_async``: the bearer token from the adapter's authentication provider and the
        request options that send it through the middleware chain, as for the SDK's own requests. We send it with
        :attr:`http`, so a download streams: the adapter's ``send_primitive_async(..., "bytes")`` reads it whole."""
        info = RequestInformation(Method(method))
        info.url = url
        for name, value in (headers or {}).items():
            info.headers.try_add(name, value)
        if body is not None:
            info.set_stream_content(json.dumps(body, separators=(",", ":")).encode("utf-8"), "application/json")
        request: httpx.Request = await self._adapter.convert_to_native_async(info)
        return request

    def download_blob(self, path: str, *, limit: int | None = None, spill: bool = True) -> Blob:
        """GET ``base_url + path`` (``/$value`` of a message or attachment), streamed in chunks, into a
        :class:`~ingest.model.Blob`: with ``spill``, a body bigger than :data:`~ingest.model.BLOB_MEMORY_LIMIT`
        goes to a temporary file chunk by chunk, never whole in memory.

        With ``limit``, reading stops once more than ``limit`` bytes arrived: the caller sees a too-large body
        without it ever being held whole.
        """
        with BlobWriter() if spill else BlobWriter(memory_limit=sys.maxsize) as writer:
            self.run(lambda: self._download(path, limit, writer))
        return writer.finish()

    async def _download(self, path: str, limit: int | None, sink: BlobWriter) -> None:
        response = await self.http.send(await self._request("GET", self.base_url + path), stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise _failure_from_response(response)
            expected = int(response.headers.get("Content-Length") or 0)
            async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK):
                sink.write(chunk)
                if limit is not None and sink.size > limit:
                    break
            if limit is None and expected and sink.size != expected:
                raise httpx.RemoteProtocolError(f"body ended after {sink.size} of {expected} bytes")
        finally:
            await response.aclose()

    def get_json(self, url: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Any:
        """GET ``url`` (``base_url`` + a path, or a whole ``@odata.nextLink`` / ``@odata.deltaLink``) and return its
        JSON, bypassing the SDK's models: msgraph-sdk spends milliseconds deserialising each message, which for a
        listing of thousands is seconds. Raises :class:`GraphFailure` for an error status."""
        return self.run(lambda: self._send_json("GET", url, params=params, headers=headers))

    def send_json(self, method: str, url: str, body: Any = None) -> Any:
        """``method`` on ``url`` with ``body`` as JSON (subscriptions); Graph's JSON answer, None for an empty one.
        Raises :class:`GraphFailure` for an error status."""
        return self.run(lambda: self._send_json(method, url, body=body))

    async def _send_json(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        url = str(httpx.URL(self._on_endpoint(url)).copy_merge_params(params or {}))
        response = await self.http.send(
            await self._request(method, url, {"Accept": "application/json", **(headers or {})}, body)
        )
        if response.status_code >= 400:
            raise _failure_from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as err:
            raise httpx.RemoteProtocolError(f"Graph's answer is not JSON: {err}") from err

    def _on_endpoint(self, url: str) -> str:
        """``url`` made absolute; a whole URL (``@odata.nextLink``) only when it lies on the configured Graph
        endpoint: same scheme, host and port, under its ``/v1.0``. Our bearer token never goes anywhere else."""
        if "://" not in url and not url.startswith("//"):
            return self.base_url + url
        link, base = httpx.URL(url), httpx.URL(self.base_url)
        if _origin(link) != _origin(base) or not link.path.startswith(base.path.rstrip("/") + "/"):
            raise AccountError(
                f"{self._where}: Graph answered with a link to {_origin_text(link)}{link.path}, outside "
                f"GRAPH_ENDPOINT {_origin_text(base)}{base.path}; refusing to follow it with the access token"
            )
        return url

    def batch(self, requests: Sequence[BatchRequest]) -> list[BatchAnswer]:
        """Send ``requests`` in JSON batches of at most :data:`MAX_BATCH`, one batch after another, and return
        Graph's answer to each, in order.

        A request answered 429, 503 or 504 is sent again (in a later batch) after the longest ``Retry-After`` of
        its batch, or a back-off, as the shared retry policy says; a wait that would end after the run's deadline
        is not started and the last answer stands. The batch request itself is retried by the request guard.
        """
        return self.run(lambda: self._batch(requests))

    def start_batch(self, requests: Sequence[BatchRequest]) -> concurrent.futures.Future[list[BatchAnswer]]:
        """:meth:`batch` in the background: the answers come with the future."""
        return self.start(lambda: self._batch(requests))

    async def _batch(self, requests: Sequence[BatchRequest]) -> list[BatchAnswer]:
        answers: list[BatchAnswer | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        policy = default_policy()
        attempt = 0
        while pending:
            attempt += 1
            retry: list[int] = []
            waits: list[float] = []
            for start in range(0, len(pending), MAX_BATCH):
                chunk = pending[start : start + MAX_BATCH]
                for index, answer in zip(
                    chunk, await self._send_batch_again([requests[i] for i in chunk]), strict=True
                ):
                    answers[index] = answer
                    if answer.status in RETRY_STATUSES:
                        retry.append(index)
                        waits.append(policy.delay(attempt, parse_retry_after(_header(answer.headers, "Retry-After"))))
            if not retry or attempt >= policy.attempts:
                break
            delay = max(waits)
            if bounded_wait(delay, self._deadline) is None:
                log.warning(
                    "%s: %d requests of a batch throttled; a retry in %.0fs would overrun this run's time budget",
                    self._where,
                    len(retry),
                    delay,
                )
                break
            log.info(
                "%s: Graph throttled %d requests of a batch; retrying them in %.1fs", self._where, len(retry), delay
            )
            await asyncio.sleep(delay)
            pending = retry
        return [answer if answer is not None else BatchAnswer(0) for answer in answers]

    async def _send_batch_again(self, requests: Sequence[BatchRequest]) -> list[BatchAnswer]:
        """:meth:`_send_batch`, sent again when the connection breaks in the middle of the answer (which the request
        guard does not see). Safe for moves too: one already done answers 404 and is found in its folder."""
        policy = default_policy()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._send_batch(requests)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout) as err:
                delay = policy.delay(attempt)
                if attempt >= policy.attempts or bounded_wait(delay, self._deadline) is None:
                    raise
                log.info("%s: a batch's answer broke off (%s); sending it again", self._where, err)
                await asyncio.sleep(delay)

    async def _send_batch(self, requests: Sequence[BatchRequest]) -> list[BatchAnswer]:
        items = []
        for number, item in enumerate(requests, 1):
            # Each request of a batch has its own headers: the immutable ids are asked for on every one of them.
            entry: dict[str, Any] = {
                "id": str(number),
                "method": item.method,
                "url": item.url,
                "headers": {"Prefer": IMMUTABLE_ID},
            }
            if item.body is not None:
                entry["body"] = item.body
                entry["headers"]["Content-Type"] = "application/json"
            items.append(entry)
        response = await self.http.send(
            await self._request("POST", self.base_url + BATCH_PATH, body={"requests": items})
        )
        if response.status_code >= 400:
            raise _failure_from_response(response)
        try:
            by_id = {str(r.get("id")): r for r in response.json().get("responses") or []}
        except (ValueError, AttributeError) as err:
            raise httpx.RemoteProtocolError(f"Graph's $batch answer is not JSON batching: {err}") from err
        answers = []
        for number in range(1, len(requests) + 1):
            found = by_id.get(str(number))
            if found is None:  # Graph answered for fewer requests than it was sent: treat as throttled
                answers.append(BatchAnswer(503, {}, {"error": {"code": "MissingResponse", "message": "no answer"}}))
                continue
            headers = {str(k): str(v) for k, v in (found.get("headers") or {}).items()}
            answers.append(BatchAnswer(int(found.get("status") or 0), headers, found.get("body")))
        return answers

    def close(self) -> None:
        try:
            self.run(self.http.aclose)
        except Exception as err:  # noqa: BLE001 - closing must not hide the error that ended the session
            log.debug("closing the Graph client failed: %s", err)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"https": 443, "http": 80}.get(url.scheme)
    return url.scheme, url.host.lower(), url.port or default


def _origin_text(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace').rpartition('@')[2]}"


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _failure_from_response(response: httpx.Response) -> GraphFailure:
    code, message = "", response.reason_phrase
    try:
        error = response.json().get("error") or {}
        code, message = str(error.get("code") or ""), str(error.get("message") or message)
    except ValueError:
        pass
    return GraphFailure(response.status_code, code, message)
