"""Upkeep of an account's Graph change-notification subscription: one per account, on the source folder's messages,
``changeType: created``, delivering to this app's notification URL (``ingest.notifications``).

:func:`maintain` runs with the account's timer job (and when a lifecycle notification asks for it). It lists the
app's subscriptions (``GET /subscriptions``: those of the app in the tenant, or of the signed-in user) and:

* keeps the account's subscription, renewing it (PATCH ``expirationDateTime``) once it has less than
  :data:`RENEW_BEFORE` left of its :data:`LIFETIME`: with an hourly timer it is renewed a day and a half before it
  would lapse; a renewal Graph no longer knows (404) makes a new one;
* creates one when there is none (Graph checks the URL with its validation request before it answers);
* deletes the ones that point at this app for an account no longer in the accounts file, or with notifications
  off, and the account's stale ones (another folder, a rotated client-state secret: the URL's ``v`` differs).

A subscription made for an account whose app registration is another one cannot be seen, so it cannot be deleted:
it lapses within :data:`LIFETIME`, and its notifications name an account that no longer exists, which changes
nothing. The timer stays the safety net whatever happens here: notifications only make mail come sooner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..config import GraphAccount
from ..notifications import NOTIFICATION_ROUTE, notification_url
from ..settings import Settings

if TYPE_CHECKING:
    from ..mailbox.graph import GraphMailbox

log = logging.getLogger(__name__)

LIFETIME = timedelta(minutes=4200)  # under Graph's limit for Outlook messages (it was 4230 minutes, now 10080)
RENEW_BEFORE = timedelta(hours=36)
STATUS_CURSOR = "graph-subscription"  # state store: the account's subscription as last seen, for status
_DELEGATED = ("password", "device_code")


def support(account: GraphAccount, settings: Settings) -> str | None:
    """None when the account gets change notifications; else why not (``check`` and ``status`` show it)."""
    if account.notifications is False:
        return "off (notifications: false): the timer alone"
    if not settings.public_base_url:
        return "off: no public URL (INGEST_PUBLIC_BASE_URL, or WEBSITE_HOSTNAME in Azure): the timer alone"
    if account.auth in _DELEGATED and (account.username or "").lower() != account.mailbox.lower():
        return (
            f"off: a delegated sign-in ({account.auth}) can subscribe only to the signed-in user's own mailbox "
            "(set username to the mailbox, or sign in app-only): the timer alone"
        )
    return None


@dataclass(frozen=True)
class Upkeep:
    """What :func:`maintain` did: ``created``, ``renewed``, ``kept``, ``removed`` or ``off``."""

    action: str
    subscription_id: str | None = None
    expires: datetime | None = None
    removed: int = 0  # subscriptions deleted (other accounts', stale ones)


def maintain(
    mailbox: GraphMailbox,
    *,
    base_url: str | None,
    state: str | None,
    configured: set[str],
    renew: bool = False,
    now: datetime | None = None,
) -> Upkeep:
    """Bring the account's subscription to what it should be. ``state`` is its client state (None: notifications
    off for it), ``configured`` the accounts that keep theirs, ``renew`` renews now (``reauthorizationRequired``).
    Raises AccountError/ConnectionLost as the mailbox does."""
    now = now or datetime.now(UTC)
    account = mailbox.account
    try:
        listed = _list(mailbox) if base_url else []
        ours = [s for s in listed if base_url and str(s.get("notificationUrl") or "").startswith(_prefix(base_url))]
        removed = 0
        for subscription in ours:
            owner = _account_of(subscription)
            if owner != account.name and owner not in configured:
                _delete(mailbox, subscription, f"account {owner!r} is no longer in the accounts file")
                removed += 1
        mine = [s for s in ours if _account_of(s) == account.name]
        if state is None or not base_url:
            for subscription in mine:
                _delete(mailbox, subscription, "notifications are off for this account")
            return Upkeep("off", removed=removed + len(mine))
        url = notification_url(base_url, account.name, state)
        resource = f"users/{account.mailbox}/mailFolders('{mailbox.source_folder_id()}')/messages"
        keep = next((s for s in mine if _matches(s, url, resource)), None)
        for subscription in mine:
            if subscription is not keep:
                _delete(mailbox, subscription, "it is stale (another folder or client state)")
                removed += 1
        if keep is not None:
            expires = _time(keep.get("expirationDateTime"))
            if not renew and expires is not None and expires - now > RENEW_BEFORE:
                return Upkeep("kept", str(keep["id"]), expires, removed)
            renewed = _renew(mailbox, str(keep["id"]), now + LIFETIME)
            if renewed is not None:
                return Upkeep("renewed", str(keep["id"]), renewed, removed)
        body = {
            "changeType": "created",
            "notificationUrl": url,
            "lifecycleNotificationUrl": url,
            "resource": resource,
            "expirationDateTime": _odata(now + LIFETIME),
            "clientState": state,
            "latestSupportedTlsVersion": "v1_2",
        }
        made = mailbox.session.send_json("POST", "/subscriptions", body)
    except Exception as err:
        raise mailbox.failure(err, "keeping its change-notification subscription") from err
    log.info("account %s: change notifications subscribed until %s", account.name, made.get("expirationDateTime"))
    return Upkeep("created", str(made.get("id")), _time(made.get("expirationDateTime")), removed)


def _list(mailbox: GraphMailbox) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    page = mailbox.session.get_json("/subscriptions")
    while True:
        found.extend(s for s in page.get("value") or [] if isinstance(s, dict) and s.get("id"))
        next_link = page.get("@odata.nextLink")
        if not next_link:
            return found
        page = mailbox.session.get_json(str(next_link))


def _renew(mailbox: GraphMailbox, subscription_id: str, until: datetime) -> datetime | None:
    """The new expiry; None when Graph no longer knows the subscription (it lapsed or was removed)."""
    from .client import failure_of

    try:
        answer = mailbox.session.send_json(
            "PATCH", f"/subscriptions/{subscription_id}", {"expirationDateTime": _odata(until)}
        )
    except Exception as err:
        failure = failure_of(err)
        if failure is not None and failure.status == 404:
            log.info("account %s: the subscription lapsed; making a new one", mailbox.account.name)
            return None
        raise
    log.info("account %s: change notifications renewed until %s", mailbox.account.name, _odata(until))
    return _time((answer or {}).get("expirationDateTime")) or until


def _delete(mailbox: GraphMailbox, subscription: dict[str, Any], why: str) -> None:
    from .client import failure_of

    try:
        mailbox.session.send_json("DELETE", f"/subscriptions/{subscription['id']}")
    except Exception as err:
        failure = failure_of(err)
        if failure is None or failure.status != 404:
            raise
    log.info("account %s: deleted subscription %s: %s", mailbox.account.name, subscription["id"], why)


def _prefix(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/api/{NOTIFICATION_ROUTE}?"


def _account_of(subscription: dict[str, Any]) -> str:
    query = parse_qs(urlsplit(str(subscription.get("notificationUrl") or "")).query)
    return (query.get("account") or [""])[0]


def _matches(subscription: dict[str, Any], url: str, resource: str) -> bool:
    return (
        subscription.get("notificationUrl") == url
        and str(subscription.get("resource") or "").lstrip("/").lower() == resource.lower()
        and subscription.get("changeType") == "created"
    )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if "." in text:  # Graph sends up to seven fraction digits; Python reads six
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits) :]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _odata(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
