"""Change notifications (``/v1.0/subscriptions``) for the Graph emulator, delivered over real HTTPS as Graph does.

* ``POST /subscriptions`` with ``changeType``, ``notificationUrl`` (https only), optional ``lifecycleNotificationUrl``,
  ``resource`` (``users/{id}/mailFolders('{id}')/messages``, ``/users/{id}/mailFolders/{id}/messages``, ``me/...``),
  ``expirationDateTime`` (at most :attr:`Subscriptions.max_minutes` ahead) and ``clientState`` (128 characters at
  most). Before answering 201 the emulator makes the validation request Graph makes: ``POST notificationUrl?
  validationToken=...`` (and the same for the lifecycle URL), and refuses the subscription (400) unless the answer is
  200, ``text/plain``, exactly the token, within 10 s. The token's identity must be allowed on the mailbox: an
  app-only token with Mail.ReadWrite, or a delegated one of the mailbox's own user (a delegated token cannot
  subscribe to another user's mailbox, as in Exchange).
* ``GET /subscriptions`` (the caller app's, and for a delegated token the user's), ``GET|PATCH|DELETE
  /subscriptions/{id}``; PATCH takes a new ``expirationDateTime``. An expired subscription is gone (404).
* A message arriving in (or moved into) a subscribed folder is notified (``changeType`` ``created``) to the
  notification URL in a background thread. :attr:`Subscriptions.delivery` decides how: ``normal``, ``lost`` (never
  sent), ``duplicated`` (sent twice), ``late`` (after :attr:`Subscriptions.late_seconds`). Every attempt is kept in
  :attr:`Subscriptions.sent` with the answer's status and time.
* :meth:`Subscriptions.expire` ends a subscription (with a ``subscriptionRemoved`` lifecycle notification when it
  has a lifecycle URL); :meth:`Subscriptions.lifecycle` sends ``reauthorizationRequired`` or ``missed``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from .graph_server import GraphProblem
from .https_emulator import Request, Response

if TYPE_CHECKING:
    from .entra_server import IssuedToken
    from .graph_server import GraphEmulator, MailboxStore, Message

VALIDATION_TIMEOUT_SECONDS = 10.0
DELIVERY_TIMEOUT_SECONDS = 10.0
MAX_CLIENT_STATE = 128
_RESOURCE = re.compile(
    r"^/?(?:users/(?P<user>[^/]+)|(?P<me>me))/mailFolders(?:\('(?P<quoted>[^']+)'\)|/(?P<plain>[^/]+))/messages$",
    re.IGNORECASE,
)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


@dataclass
class Subscription:
    id: str
    resource: str
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: dt.datetime
    app_id: str
    tenant: str
    username: str | None  # the signed-in user of a delegated token
    mailbox: str
    folder_id: str

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app_id,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": _iso(self.expires),
            "creatorId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.username or self.app_id)),
            "latestSupportedTlsVersion": "v1_2",
        }


@dataclass
class Sent:
    """One delivery attempt of a notification POST."""

    url: str
    payload: dict[str, Any]
    kind: str  # "created", a lifecycle event, or "validation"
    status: int = 0  # 0: no answer (refused, timed out)
    seconds: float = 0.0
    at: float = field(default_factory=time.time)


class Subscriptions:
    def __init__(self, graph: GraphEmulator) -> None:
        self.graph = graph
        self.items: dict[str, Subscription] = {}
        self.sent: list[Sent] = []
        self.lost: list[dict[str, Any]] = []
        self.delivery = "normal"  # normal | lost | duplicated | late
        self.late_seconds = 5.0
        self.max_minutes = 10080  # Outlook messages: under 7 days
        self.client_context: ssl.SSLContext | None = None  # trust for the notification URLs (the test CA)
        self._lock = threading.RLock()
        self._threads: list[threading.Thread] = []

    # --- the API ----------------------------------------------------------------------------------------------

    def handle(self, request: Request, segments: list[str], token: IssuedToken) -> Response:
        self._drop_expired()
        method = request.method
        if not segments and method == "POST":
            return self._create(request, token)
        if not segments and method == "GET":
            mine = [s.json() for s in self.items.values() if self._owned(s, token)]
            return Response.json(200, {"value": mine})
        if len(segments) == 1:
            found = self.items.get(segments[0])
            if found is None or not self._owned(found, token):
                raise GraphProblem(404, "ResourceNotFound", f"The object was not found: {segments[0]}")
            if method == "GET":
                return Response.json(200, found.json())
            if method == "PATCH":
                body = request.json() or {}
                found.expires = self._expiry(body.get("expirationDateTime"))
                return Response.json(200, found.json())
            if method == "DELETE":
                with self._lock:
                    self.items.pop(found.id, None)
                return Response(204)
        raise GraphProblem(400, "BadRequest", f"Unsupported request {method} on subscriptions")

    @staticmethod
    def _owned(subscription: Subscription, token: IssuedToken) -> bool:
        if subscription.app_id != token.client_id:
            return False
        return token.username is None or (subscription.username or "").lower() == token.username.lower()

    def _expiry(self, value: Any) -> dt.datetime:
        try:
            expires = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise GraphProblem(400, "InvalidRequest", "expirationDateTime is not a date and time.") from None
        now = dt.datetime.now(dt.UTC)
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        if expires <= now or expires > now + dt.timedelta(minutes=self.max_minutes):
            raise GraphProblem(
                400,
                "InvalidRequest",
                f"Subscription expiration can only be {self.max_minutes} minutes in the future.",
            )
        return expires

    def _create(self, request: Request, token: IssuedToken) -> Response:
        body = request.json() or {}
        match = _RESOURCE.match(str(body.get("resource") or ""))
        if match is None:
            raise GraphProblem(400, "InvalidRequest", "The resource is not a folder's messages.")
        store = self.graph._mailbox(token, "me" if match["me"] else match["user"])
        folder = store.find(match["quoted"] or match["plain"])
        if folder is None:
            raise GraphProblem(404, "ResourceNotFound", "The folder of the resource was not found.")
        change_type = str(body.get("changeType") or "")
        if not change_type or set(change_type.split(",")) - {"created", "updated", "deleted"}:
            raise GraphProblem(400, "InvalidRequest", "changeType must be created, updated or deleted.")
        client_state = body.get("clientState")
        if client_state is not None and len(str(client_state)) > MAX_CLIENT_STATE:
            raise GraphProblem(400, "InvalidRequest", "clientState is longer than 128 characters.")
        expires = self._expiry(body.get("expirationDateTime"))
        urls = [str(body.get("notificationUrl") or ""), str(body.get("lifecycleNotificationUrl") or "")]
        for url in filter(None, urls):
            problem = self.validate(url)
            if problem:
                raise GraphProblem(400, "InvalidRequest", f"Subscription validation request failed. {problem}")
        subscription = Subscription(
            id=str(uuid.uuid4()),
            resource=str(body["resource"]),
            change_type=change_type,
            notification_url=urls[0],
            lifecycle_url=urls[1] or None,
            client_state=client_state,
            expires=expires,
            app_id=token.client_id,
            tenant=token.tenant,
            username=token.username,
            mailbox=store.address,
            folder_id=folder.id,
        )
        with self._lock:
            self.items[subscription.id] = subscription
        return Response.json(201, subscription.json())

    def validate(self, url: str) -> str | None:
        """Graph's validation request to ``url``: None when answered right, else what was wrong."""
        if urlsplit(url).scheme != "https":
            return "Notification endpoint must be https."
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token)}"
        record = Sent(url, {}, "validation")
        status, content_type, text = self._post(target, b"", "text/plain; charset=utf-8", record)
        if status != 200:
            return f"Response status code does not indicate success: {status or 'no answer'}."
        if not content_type.lower().startswith("text/plain"):
            return "Response content type must be text/plain."
        if text != token:
            return "Response must exactly match validationToken query parameter."
        return None

    def _drop_expired(self) -> None:
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            for key in [key for key, s in self.items.items() if s.expires <= now]:
                del self.items[key]

    # --- notifications ----------------------------------------------------------------------------------------

    def changed(self, store: MailboxStore, message: Message, left: str | None) -> None:
        """A message arrived in (or was moved into) a folder: notify its subscriptions on ``created``."""
        self._drop_expired()
        with self._lock:
            watching = [
                s
                for s in self.items.values()
                if s.mailbox.lower() == store.address.lower()
                and s.folder_id == message.folder_id
                and "created" in s.change_type.split(",")
            ]
        for subscription in watching:
            resource = f"Users/{subscription.mailbox}/Messages/{message.immutable_id}"
            item = {
                "subscriptionId": subscription.id,
                "subscriptionExpirationDateTime": _iso(subscription.expires),
                "changeType": "created",
                "resource": resource,
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Message",
                    "@odata.id": resource,
                    "@odata.etag": 'W/"CQAAABYAAAA"',
                    "id": message.immutable_id,
                },
                "clientState": subscription.client_state,
                "tenantId": subscription.tenant,
            }
            self.notify(subscription.notification_url, {"value": [item]}, "created")

    def lifecycle(self, subscription_id: str, event: str) -> None:
        """Send a lifecycle notification (``reauthorizationRequired``, ``missed``, ``subscriptionRemoved``)."""
        subscription = self.items[subscription_id]
        item = {
            "subscriptionId": subscription.id,
            "subscriptionExpirationDateTime": _iso(subscription.expires),
            "tenantId": subscription.tenant,
            "clientState": subscription.client_state,
            "lifecycleEvent": event,
        }
        self.notify(subscription.lifecycle_url or subscription.notification_url, {"value": [item]}, event)

    def expire(self, subscription_id: str) -> None:
        """The subscription ends now (Graph removed it); its lifecycle URL hears ``subscriptionRemoved``."""
        subscription = self.items[subscription_id]
        if subscription.lifecycle_url:
            self.lifecycle(subscription_id, "subscriptionRemoved")
        with self._lock:
            self.items.pop(subscription_id, None)

    def notify(self, url: str, payload: dict[str, Any], kind: str) -> None:
        """Deliver ``payload`` as :attr:`delivery` says, in the background."""
        mode = self.delivery
        if mode == "lost":
            with self._lock:
                self.lost.append(payload)
            return
        copies = 2 if mode == "duplicated" else 1
        delay = self.late_seconds if mode == "late" else 0.0

        def deliver() -> None:
            if delay:
                time.sleep(delay)
            for _ in range(copies):
                record = Sent(url, payload, kind)
                self._post(url, json.dumps(payload).encode(), "application/json", record)

        thread = threading.Thread(target=deliver, name="graph-notification", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def wait_for_deliveries(self, timeout: float = 30.0) -> None:
        """Until every notification started so far has been answered (or given up)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _post(self, url: str, body: bytes, content_type: str, record: Sent) -> tuple[int, str, str]:
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})  # noqa: S310 - https URLs of the test
        started = time.monotonic()
        status, answer_type, text = 0, "", ""
        timeout = VALIDATION_TIMEOUT_SECONDS if record.kind == "validation" else DELIVERY_TIMEOUT_SECONDS
        try:
            opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self.client_context)
            )
            with opener.open(request, timeout=timeout) as answer:
                status, answer_type = answer.status, answer.headers.get("Content-Type", "")
                text = answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            status, answer_type = err.code, err.headers.get("Content-Type", "")
        except (OSError, ValueError):
            status = 0
        record.status, record.seconds = status, time.monotonic() - started
        with self._lock:
            self.sent.append(record)
        return status, answer_type, text


def random_client_state() -> str:
    return secrets.token_urlsafe(32)
