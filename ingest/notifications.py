"""Graph change notifications as this app receives them: hints that mail arrived, never the truth.

Graph POSTs to ``{public base URL}/api/graph/notifications?account=NAME`` (an anonymous HTTP function: Graph sends no
function key). What arrives there is handled by :func:`receive`, which does no mailbox work at all and answers
within milliseconds (Graph wants 2xx within about 3 s, or it retries and at length stops delivering):

* a validation request (``?validationToken=...``, when a subscription is made) is answered 200 ``text/plain`` with
  the token, as Graph requires;
* every notification's ``clientState`` is compared in constant time with the one the account's subscription was
  made with: :func:`client_state`, an HMAC of the account name keyed by the secret :data:`CLIENT_STATE_SECRET`
  (Key Vault, or the environment locally). A notification that does not carry it (forged, or from a subscription
  made with a rotated secret) changes nothing; it is logged without its content;
* a valid one only asks for an import job of its account (``enqueue``): the delta query of that job finds what
  changed, whatever the notification said. Notifications arriving while a job of the account is already waiting are
  folded into it (:func:`should_enqueue`). Lifecycle notifications ask for subscription upkeep
  (``reauthorizationRequired``: renew, ``subscriptionRemoved``: create again) and an import; ``missed`` asks for an
  import that lists the whole folder.

The answer is 202 for every well-formed batch, forged or not (Graph only needs to know it arrived); 400 for a body
that is not a notification batch.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

log = logging.getLogger(__name__)

CLIENT_STATE_SECRET = "graph-notification-client-state"  # noqa: S105 - the NAME of the secret
NOTIFICATION_ROUTE = "graph/notifications"
NOTIFICATION_TRIGGER = "graph_notification"  # a job asked for by a notification of new mail
UPKEEP_TRIGGER = "graph_subscription"  # a job asked for by a lifecycle notification: renew or recreate, then import
MISSED_TRIGGER = "graph_missed"  # Graph could not deliver some notifications: import with a full round
PENDING_CURSOR = "notification-job"  # state store: when the account's waiting notification job was queued
PENDING_FOR = timedelta(minutes=10)  # a waiting job older than this is taken as lost: queue another
MAX_VALIDATION_TOKEN = 4096
MAX_BODY = 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str


def notification_url(base_url: str, account: str, state: str) -> str:
    """The URL an account's subscription delivers to. ``v`` changes with the client state (a rotated secret), so
    upkeep sees a subscription made with an old one and replaces it; it is a hash prefix, not the secret."""
    version = hashlib.sha256(state.encode()).hexdigest()[:8]
    return f"{base_url.rstrip('/')}/api/{NOTIFICATION_ROUTE}?account={quote(account, safe='')}&v={version}"


def client_state(secret: str, account: str) -> str:
    """The clientState of an account's subscription (43 characters; Graph allows 128)."""
    digest = hmac.new(secret.encode(), b"graph-notifications\0" + account.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def receive(
    query: Mapping[str, str],
    body: bytes,
    *,
    secret: Callable[[], str | None],
    enqueue: Callable[[str, str], None],
) -> Answer:
    """Answer one POST from Graph; ``enqueue(account, trigger)`` for each account and kind of job it asks for."""
    token = query.get("validationToken")
    if token is not None:
        if len(token) > MAX_VALIDATION_TOKEN:
            return Answer(400, "validation token too long", "text/plain")
        log.info("Graph validation request answered")
        return Answer(200, token, "text/plain")
    account = query.get("account") or ""
    items = _items(body)
    if items is None:
        return Answer(400, "not a Graph notification batch", "text/plain")
    key = secret()
    expected = client_state(key, account) if key and account else None
    triggers: set[str] = set()
    forged = 0
    for item in items:
        given = item.get("clientState")
        if expected is None or not isinstance(given, str) or not hmac.compare_digest(given, expected):
            forged += 1
            continue
        event = str(item.get("lifecycleEvent") or "")
        if event in ("reauthorizationRequired", "subscriptionRemoved"):
            triggers.add(UPKEEP_TRIGGER)
        elif event == "missed":
            triggers.add(MISSED_TRIGGER)
        elif not event:
            triggers.add(NOTIFICATION_TRIGGER)
        else:
            log.info("account %s: Graph lifecycle notification %r ignored", account, event[:40])
    if forged:
        log.warning(
            "account %s: %d Graph notification(s) without the right clientState ignored%s",
            account if _NAME.fullmatch(account) else "(not an account name)",
            forged,
            "" if key else f" (secret {CLIENT_STATE_SECRET!r} not available)",
        )
    for trigger in sorted(triggers):
        enqueue(account, trigger)
    return Answer(202, "", "text/plain")


def _items(body: bytes) -> list[dict[str, object]] | None:
    if len(body) > MAX_BODY:
        return None
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    value = data.get("value") if isinstance(data, dict) else None
    if not isinstance(value, list):
        return None
    return [item for item in value if isinstance(item, dict)]


def should_enqueue(pending: str | None, now: datetime) -> bool:
    """Whether a notification job is to be queued, given when the account's waiting one was (``pending``, ISO 8601,
    from the state store): not while one waits, unless it is so old that it must have been lost."""
    if not pending:
        return True
    try:
        queued = datetime.fromisoformat(pending)
    except ValueError:
        return True
    return now - queued > PENDING_FOR


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class SecretCache:
    """The client-state secret, read once and kept for :attr:`ttl` seconds (a notification must be answered fast;
    Key Vault is a round trip away). A missing secret is asked for again on the next notification."""

    def __init__(self, read: Callable[[], str | None], ttl: float = 300.0) -> None:
        self._read, self._ttl = read, ttl
        self._value: str | None = None
        self._until = 0.0

    def __call__(self) -> str | None:
        if self._value is None or time.monotonic() > self._until:
            self._value = self._read()
            self._until = time.monotonic() + self._ttl
        return self._value
