"""The DOC² client: one upload request per document, retried when the failure is transient.

POST {base_url}/document/process   X-API-KEY   multipart: file, source, metadata (JSON text)
"""

from __future__ import annotations

import json
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import httpx

from .errors import AccountError, Doc2Unavailable, DocumentError
from .model import Document
from .retry import RetryPolicy, default_policy, parse_retry_after

log = logging.getLogger(__name__)

UPLOAD_PATH = "/document/process"
STATUS_PATH = "/document/status"
CONNECT_TIMEOUT = 10.0
_RETRY_STATUSES = {429, 500, 502, 503, 504}
_NO_DOCUMENT = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class UploadMetadata:
    custom_doc_id: str
    email_from: str
    email_subject: str
    email_received: str | None
    email_message_id: str | None
    mailbox: str
    # A routing rule's additions (document_type, its metadata); config refuses names that clash with the above.
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> str:
        fields = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return json.dumps(self.extra | fields, ensure_ascii=False)


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._retry = retry or default_policy()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"X-API-KEY": api_key, "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )

    def __enter__(self) -> Doc2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

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
        if response.status_code >= 500:
            raise AccountError(f"DOC² at {self.base_url} answered HTTP {response.status_code}; try again later")

    def upload(self, document: Document, source: str, metadata: UploadMetadata) -> dict[str, Any]:
        """Upload one document. Returns DOC²'s JSON answer.

        Raises AccountError (key rejected), DocumentError (DOC² refused this document) or Doc2Unavailable
        (still failing after every retry: the message stays for the next run).
        """
        last_problem = ""
        for attempt in range(1, self._retry.attempts + 1):
            retry_after: float | None = None
            # A document in a temporary file is streamed from a fresh reader on every attempt; httpx still sends
            # a Content-Length (it takes the file's size), so DOC² reads one plain body.
            body: bytes | BinaryIO = document.blob.read() if document.blob.in_memory else document.open()
            try:
                request = self._http.build_request(
                    "POST",
                    UPLOAD_PATH,
                    data={"source": source, "metadata": metadata.as_json()},
                    files={"file": (document.filename, body, document.content_type)},
                )
                if isinstance(body, bytes):
                    # A document in memory goes as one piece: the form's dozen short lines each took a write to
                    # the socket of their own (and a turn of the GIL), which cost more CPU than the document.
                    request.read()
                response = self._http.send(request)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as err:
                if _certificate_refused(err):
                    # Not transient and not this document's fault: stop the account, count no attempt.
                    raise AccountError(self._untrusted(err)) from err
                last_problem = _describe(err)
            else:
                if response.status_code in _RETRY_STATUSES:
                    last_problem = f"HTTP {response.status_code}"
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                else:
                    return self._accept(response, document)
            finally:
                if not isinstance(body, bytes):
                    body.close()
            if attempt < self._retry.attempts:
                pause = self._retry.delay(attempt, retry_after)
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

    def _accept(self, response: httpx.Response, document: Document) -> dict[str, Any]:
        if response.status_code in (401, 403):
            raise AccountError(self._key_rejected(response))
        if not response.is_success:
            raise DocumentError(
                f"DOC² refused {document.filename!r}: HTTP {response.status_code} {_detail(response)}".rstrip()
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if isinstance(body, dict) and body.get("success") is False:
            raise DocumentError(f"DOC² did not accept {document.filename!r}: {_detail(response) or 'success: false'}")
        return body if isinstance(body, dict) else {"result": body}

    def _untrusted(self, err: Exception) -> str:
        return (
            f"DOC² at {self.base_url}: TLS certificate not trusted ({_describe(err)}); "
            f"set doc2.ca_file (or SSL_CERT_FILE) for a private CA"
        )

    def _key_rejected(self, response: httpx.Response) -> str:
        return (
            f"DOC² at {self.base_url} rejected the API key (HTTP {response.status_code}): check the secret named in "
            f"doc2.api_key_secret and that the key is active in DOC² (Settings > Integration)"
        )


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
