"""The DOC² client: one upload request per document, retried when the failure is transient.

POST {base_url}/document/process   X-API-KEY   multipart: file, source, metadata (JSON text)
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any, BinaryIO

import httpx

from . import telemetry
from .doc2_wire import LeanSender
from .errors import AccountError, Doc2Unavailable, DocumentError, OutOfTime
from .model import Document, UploadMetadata
from .retry import RetryPolicy, bounded_wait, default_policy, parse_retry_after

log = logging.getLogger(__name__)

UPLOAD_PATH = "/document/process"
STATUS_PATH = "/document/status"
CONNECT_TIMEOUT = 10.0
PROBE_TIMEOUT = 10.0
_RETRY_STATUSES = {429, 500, 502, 503, 504}
_NO_DOCUMENT = "00000000-0000-0000-0000-000000000000"


class Doc2Client:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        verify: ssl.SSLContext | str | bool = True,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        deadline: float | None = None,
        proxy: str | None = None,
    ) -> None:
        """``proxy``: as :class:`ingest.network.Proxies` chose for ``base_url``; httpx's own reading of the
        environment is off, so that every client of the product follows the same proxy and trust rules."""
        self.base_url = base_url.rstrip("/")
        self._retry = retry or default_policy()
        self._timeout = timeout
        self._deadline = deadline  # time.monotonic() after which no request or wait is started (the run's budget)
        self._settings: dict[str, Any] = dict(
            base_url=self.base_url,
            headers={"X-API-KEY": api_key, "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            verify=verify,
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            proxy=proxy,
        )
        # httpx's client is made when first needed (the key check, the probe, a document in a temporary file, a
        # proxy or a test transport): making it costs ~50 ms of CPU (httpcore and h2 imported, its pool).
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        # Uploads in memory go through a leaner sender (ingest.doc2_wire: same bytes, one write, less CPU) unless a
        # proxy or a test transport must see them. It sends what httpx's client would: the template is a request
        # of a client of the same settings that sends nothing.
        self._lean = (
            LeanSender(httpx.URL(self.base_url), verify, CONNECT_TIMEOUT, template=self._upload_template())
            if proxy is None and transport is None
            else None
        )

    @property
    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(**self._settings)
            return self._client

    def _upload_template(self) -> httpx.Request:
        settings = dict(self._settings, transport=httpx.MockTransport(_sends_nothing))
        with httpx.Client(**settings) as client:
            return client.build_request("POST", UPLOAD_PATH)

    def __enter__(self) -> Doc2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
        if self._lean is not None:
            self._lean.close()

    def check_key(self) -> None:
        """TEST LOGIN for DOC²: an authenticated request that creates nothing. Raises AccountError when refused."""
        try:
            response = self._http.get(STATUS_PATH, params={"doc_id": _NO_DOCUMENT})
        except httpx.HTTPError as err:
            if _certificate_refused(err):
                raise AccountError(self._untrusted(err)) from err
            raise AccountError(f"DOC² at {self.base_url} not reachable: {_describe(err)}") from err
        if response.status_code in (401, 403):
            raise AccountError(self._key_rejected(response))
        if response.is_redirect:
            raise AccountError(self._redirected(response))
        if response.status_code >= 500:
            raise AccountError(f"DOC² at {self.base_url} answered HTTP {response.status_code}; try again later")
        if response.status_code in (200, 404) and not _json_object(response):
            raise AccountError(self._not_doc2(response))

    def probe(self) -> str | None:
        """A cheap look whether DOC² answers at all (the request of :meth:`check_key`, which creates nothing).

        None when it answers; else what went wrong (unreachable, time-out, 429 or 5xx). Used to tell a DOC² outage
        from a document DOC² keeps failing: see ingest.outage."""
        try:
            response = self._http.get(
                STATUS_PATH,
                params={"doc_id": _NO_DOCUMENT},
                timeout=httpx.Timeout(PROBE_TIMEOUT, connect=min(PROBE_TIMEOUT, CONNECT_TIMEOUT)),
            )
        except httpx.HTTPError as err:
            return _describe(err)
        if response.status_code == 429 or response.status_code >= 500:
            return f"HTTP {response.status_code} to a status request"
        return None

    def upload(self, document: Document, source: str, metadata: UploadMetadata) -> str | None:
        """Upload one document. Returns DOC²'s id of it, read from DOC²'s JSON answer (None when it names none).

        Raises AccountError (key rejected, or DOC² is not at base_url: a redirect), DocumentError (DOC² refused this
        document), Doc2Unavailable (still failing after every retry: whose fault that is, ingest.outage decides) or
        OutOfTime (the run's time budget leaves no time for the next try). No wait and no request outlasts the
        budget: a Retry-After beyond it ends the retries at once.
        """
        last_problem = ""
        for attempt in range(1, self._retry.attempts + 1):
            retry_after: float | None = None
            timeout = self._request_timeout(last_problem)
            # A document in a temporary file is streamed from a fresh reader on every attempt; httpx still sends
            # a Content-Length (it takes the file's size), so DOC² reads one plain body.
            body: bytes | BinaryIO = document.blob.read() if document.blob.in_memory else document.open()
            sent = time.monotonic()
            try:
                if isinstance(body, bytes) and self._lean is not None:
                    # A document in memory: the form built and sent by the lean sender, in one write.
                    response = self._lean.post_form(
                        [("source", source), ("metadata", metadata.as_json())],
                        ("file", document.filename, body, document.content_type),
                        timeout.read or self._timeout if timeout else self._timeout,
                    )
                else:
                    request = self._http.build_request(
                        "POST",
                        UPLOAD_PATH,
                        data={"source": source, "metadata": metadata.as_json()},
                        files={"file": (document.filename, body, document.content_type)},
                        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                    )
                    if isinstance(body, bytes):
                        # A document in memory goes as one piece: the form's dozen short lines each took a write
                        # to the socket of their own (and a turn of the GIL), which cost more CPU than the document.
                        request.read()
                    response = self._http.send(request)
                telemetry.record_doc2_request(time.monotonic() - sent, str(response.status_code))
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as err:
                telemetry.record_doc2_request(
                    time.monotonic() - sent, "timeout" if isinstance(err, httpx.TimeoutException) else "network"
                )
                if _certificate_refused(err):
                    # Not transient and not this document's fault: stop the account, count no attempt.
                    raise AccountError(self._untrusted(err)) from err
                last_problem = _describe(err)
            else:
                if response.status_code in _RETRY_STATUSES:
                    last_problem = f"HTTP {response.status_code}"
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                else:
                    return doc2_id(self._accept(response, document))
            finally:
                if not isinstance(body, bytes):
                    body.close()
            if attempt < self._retry.attempts:
                pause = bounded_wait(self._retry.delay(attempt, retry_after), self._deadline)
                if pause is None:
                    raise OutOfTime(
                        f"DOC² at {self.base_url}: {last_problem}; the run's time budget leaves no time to try "
                        f"{document.filename!r} again"
                        + (f" after the {retry_after:.0f} s DOC² asked to wait" if retry_after is not None else "")
                    )
                log.warning(
                    "DOC² upload of %s (custom_doc_id %s) failed (%s); retry %d/%d in %.1fs",
                    document.filename,
                    metadata.custom_doc_id,
                    last_problem,
                    attempt,
                    self._retry.attempts - 1,
                    pause,
                )
                self._retry.sleep(pause)
        raise Doc2Unavailable(
            f"DOC² at {self.base_url} still failing after {self._retry.attempts} attempts ({last_problem})"
        )

    def _request_timeout(self, last_problem: str) -> httpx.Timeout | None:
        """The request's time-out: the configured one, cut to what is left of the run's budget (None: unchanged)."""
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise OutOfTime(
                f"DOC² at {self.base_url}: the run's time budget is used up"
                + (f" (last try: {last_problem})" if last_problem else "")
            )
        if left >= self._timeout:
            return None
        return httpx.Timeout(left, connect=min(CONNECT_TIMEOUT, left))

    def _accept(self, response: httpx.Response, document: Document) -> dict[str, Any]:
        if response.status_code in (401, 403):
            raise AccountError(self._key_rejected(response))
        if response.is_redirect or 300 <= response.status_code < 400:
            raise AccountError(self._redirected(response))
        if not response.is_success:
            raise DocumentError(
                f"DOC² refused {document.filename!r}: HTTP {response.status_code} {_detail(response)}".rstrip()
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # Not DOC²'s answer (a web page, a proxy's login page, an app that answers 200 to any path): taking it
            # for success would move mail whose documents never reached DOC². The configuration's fault.
            raise AccountError(self._not_doc2(response))
        if body.get("success") is False:
            raise DocumentError(f"DOC² did not accept {document.filename!r}: {_detail(response) or 'success: false'}")
        return body

    def _not_doc2(self, response: httpx.Response) -> str:
        kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
        return (
            f"DOC² at {self.base_url} answered HTTP {response.status_code} with {kind}, not DOC²'s JSON: this is not "
            f"DOC²'s API; set doc2.base_url (or DOC2_BASE_URL) to the API's address (e.g. https://api.polydocs.io)"
        )

    def _untrusted(self, err: Exception) -> str:
        return (
            f"DOC² at {self.base_url}: TLS certificate not trusted ({_describe(err)}); "
            f"set doc2.ca_file (or SSL_CERT_FILE) for a private CA"
        )

    def _redirected(self, response: httpx.Response) -> str:
        # A redirect is never followed: the API key would go to wherever it points, and a POST may be replayed as a
        # GET. It is the configuration's fault (an old or wrong base_url), not the document's.
        location = response.headers.get("Location", "")
        target = httpx.URL(location).copy_with(query=None, fragment=None) if location else None
        return (
            f"DOC² at {self.base_url} answered HTTP {response.status_code}"
            + (f" pointing to {target}" if target else "")
            + ": DOC²'s API is not at this address; set doc2.base_url (or DOC2_BASE_URL) to the API's address"
        )

    def _key_rejected(self, response: httpx.Response) -> str:
        return (
            f"DOC² at {self.base_url} rejected the API key (HTTP {response.status_code}): check the secret named in "
            f"doc2.api_key_secret and that the key is active in DOC² (Settings > Integration)"
        )


def _sends_nothing(request: httpx.Request) -> httpx.Response:
    raise RuntimeError("the upload template is never sent")


def doc2_id(answer: dict[str, Any]) -> str | None:
    """DOC²'s id of the document it accepted, from its JSON answer (the first of the names DOC² has used for it)."""
    for key in ("doc_id", "document_id", "id"):
        if answer.get(key):
            return str(answer[key])
    return None


def _json_object(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json(), dict)
    except ValueError:
        return False


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            if key in body:
                return str(body[key])[:300]
    return str(body)[:200]


def _certificate_refused(err: BaseException) -> bool:
    """True when the TLS handshake failed because the server's certificate was not trusted."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _describe(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}" if text != type(err).__name__ else text
