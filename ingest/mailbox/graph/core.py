"""What every part of the Graph mailbox shares: the account, the Graph session of a with-block, the state of a
session, and what a failed Graph request means for the run (``GraphCore._translate``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from ...config import GraphAccount
from ...errors import AccountError, ConnectionLost, DocumentError, IngestError
from ...filters import message_passes_filters
from ...graph.client import GraphFailure, GraphSession, failure_of
from ...graph.delta import CursorStore
from ...graph.request_guard import RETRY_STATUSES
from ...graph.token_cache import TokenCacheStore
from ...model import Blob, MessageHeaders
from ...network import Proxies
from ...retry import default_policy
from .messages import GraphMessage

if TYPE_CHECKING:
    from msgraph.graph_service_client import GraphServiceClient

    from .fetch import Window
    from .listing import ChangeRun

log = logging.getLogger("ingest.mailbox.graph")

DEFAULT_PAGE_SIZE = 50


class GraphCore:
    def __init__(
        self,
        account: GraphAccount,
        secrets: Callable[[str], str],
        *,
        authority_host: str,
        graph_endpoint: str,
        ca_file: str | None,
        deadline: float | None,
        token_cache: TokenCacheStore | None = None,
        assertion_credential: Any = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        cursors: CursorStore | None = None,
        keep_cursor: bool = True,
        proxies: Proxies | None = None,
        clock: Callable[[], datetime] | None = None,
        timeout: float | None = None,
    ) -> None:
        """With ``cursors`` (the state store) the source folder is read by delta query (``ingest.graph.delta``),
        and unless ``keep_cursor`` is False (a dry run) the cursor moves on when the session ends without an
        exception; without, every listing is a full one. ``clock`` is the time the account's message filters are
        decided by (:meth:`passes_filters`, the pipeline's decision from ``ingest.filters``) and ``max_age_days`` is
        asked of Graph by: give it the pipeline's clock; by default the current time. ``timeout`` bounds each request
        to Entra ID and Graph (TEST LOGIN's short time-outs); by default those of a run."""
        self.account = account
        self._secrets = secrets
        self._authority_host = authority_host
        self._graph_endpoint = graph_endpoint.rstrip("/")
        self._ca_file = ca_file
        self._proxies = proxies or Proxies()
        self._clock = clock or _utc_now
        self._deadline = deadline
        self._timeout = timeout
        self._token_cache = token_cache
        self._assertion_credential = assertion_credential
        self._page_size = page_size
        self._where = f"account {account.name} (mailbox {account.mailbox})"
        self._session: GraphSession | None = None
        self._folders: dict[str, str] = {}  # lower-cased path -> folder id
        # The listing, for reading without a request: message id -> listed message (until read), and the order.
        self._listed: dict[str, GraphMessage] = {}
        self._order: list[str] = []
        self._position: dict[str, int] = {}
        # Small attachments fetched ahead: message id -> attachment id -> content, or why it could not be fetched.
        self._fetched: dict[str, dict[str, bytes | IngestError]] = {}
        self._windows: dict[str, Window] = {}  # message id -> the batch of attachments planned for it
        self._fetch_lock = threading.Lock()
        self._cursors = cursors
        self._keep_cursor = keep_cursor
        self._changes: ChangeRun | None = None  # this session's delta round, for the cursor at its end
        self._settled: set[str] = set()  # ids moved out of the source folder by this session
        self._left: set[str] = set()  # ids the pipeline leaves in the folder on purpose (a rule said skip)

    def passes_filters(self, headers: MessageHeaders, now: datetime | None = None) -> bool:
        """Whether the pipeline takes this message rather than leaving it for the account's message filters: the
        decision of ``ingest.filters`` at ``now`` (default: the mailbox's clock), never one of our own."""
        return message_passes_filters(headers, self.account.filters, self._clock() if now is None else now) is None

    @property
    def session(self) -> GraphSession:
        if self._session is None:
            raise RuntimeError("GraphMailbox used outside its with-block")
        return self._session

    @property
    def _user(self) -> Any:
        client: GraphServiceClient = self.session.client
        return client.users.by_user_id(self.account.mailbox)

    @property
    def _user_path(self) -> str:
        return f"/users/{quote(self.account.mailbox, safe='')}"

    def _call(self, action: str, make: Callable[[], Any], *, message_level: bool = False) -> Any:
        try:
            return self.session.run(make)
        except Exception as err:
            raise self._translate(err, action, message_level=message_level) from err

    def _translate(self, err: Exception, action: str, *, message_level: bool) -> Exception:
        if isinstance(err, IngestError):
            return err
        where = self._where
        failure = failure_of(err)
        if failure is None:
            if isinstance(err, httpx.TimeoutException):
                return ConnectionLost(f"{where}: Graph did not answer in time while {action}")
            if isinstance(err, httpx.TransportError):
                return ConnectionLost(
                    f"{where}: connection to Graph ({self._graph_endpoint}) failed while {action}: "
                    f"{type(err).__name__}: {err}"
                )
            return err
        detail = f"{failure.status} {failure.code}: {failure.message}".strip()
        if failure.status == 401:
            return AccountError(
                f"{where}: Graph refused the access token while {action} ({detail}), even after renewing it; check "
                "the app registration's API permissions and GRAPH_ENDPOINT"
            )
        if failure.status == 403:
            return AccountError(
                f"{where}: Graph denied access to the mailbox while {action} ({detail}): {self._access_advice()}"
            )
        if failure.status == 404 and failure.code in (
            "ErrorInvalidUser",
            "MailboxNotEnabledForRESTAPI",
            "ResourceNotFound",
        ):
            return AccountError(
                f"{where}: mailbox {self.account.mailbox!r} not found ({detail}): check 'mailbox' (the user principal "
                "name or primary address of an Exchange Online mailbox)"
            )
        if failure.status in RETRY_STATUSES or failure.status >= 500:
            return ConnectionLost(
                f"{where}: Graph still answers {detail} after retries while {action}; the rest waits for the next run"
            )
        if message_level:
            return DocumentError(f"{where}: Graph refused {action}: {detail}")
        return AccountError(f"{where}: Graph refused {action}: {detail}")

    def _access_advice(self) -> str:
        if self.account.auth in ("password", "device_code"):
            return (
                "the signed-in user must own the mailbox or have full access to it, and the app needs the delegated "
                "permission Mail.ReadWrite"
            )
        return (
            "the app registration needs the application permission Mail.ReadWrite with admin consent, and when "
            "Exchange limits the app to some mailboxes (RBAC for Applications management scope, or an application "
            "access policy) this mailbox must be in that scope"
        )

    def _get_json(
        self, action: str, url: str, query: dict[str, str] | None = None, *, message_level: bool = False
    ) -> Any:
        try:
            return self.session.get_json(url, query)
        except Exception as err:
            raise self._translate(err, action, message_level=message_level) from err

    def _refusal(self, failure: GraphFailure, action: str) -> IngestError:
        problem = self._translate(failure, action, message_level=True)
        return problem if isinstance(problem, IngestError) else DocumentError(f"{self._where}: {action}: {failure}")

    def download_blob(self, path: str, *, what: str, limit: int | None = None, spill: bool = True) -> Blob:
        """The body of ``path`` (below the user), in memory or, when big, a temporary file; retried when the
        connection breaks in the middle."""
        policy = default_policy()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.session.download_blob(self._user_path + path, limit=limit, spill=spill)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout) as err:
                # The connection broke in the middle of the body, which the request guard does not see.
                if attempt >= policy.attempts:
                    raise self._translate(err, f"downloading {what}", message_level=True) from err
                log.info("%s: download of %s broke off (%s); trying again", self._where, what, err)
                policy.sleep(policy.delay(attempt))
            except Exception as err:
                raise self._translate(err, f"downloading {what}", message_level=True) from err


def _utc_now() -> datetime:
    return datetime.now(UTC)
