"""Graph change notifications end to end through the Function App host emulator on Azurite: the Graph emulator
validates and notifies the app's anonymous HTTP function over real HTTPS, the function queues an import job, the
queue trigger imports the account by delta query into the local DOC² server. Notifications lost, duplicated, late
or forged change nothing about what arrives, only when."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from ingest.graph.subscriptions import LIFETIME, RENEW_BEFORE, STATUS_CURSOR
from ingest.live import keep_subscription
from ingest.notifications import client_state
from ingest.operations import account_status
from ingest.service import load
from ingest.settings import Settings
from ingest.state.factory import open_state_store
from tests.support.graph_server import FileAttachment, Message
from tests.support.microsoft import MicrosoftCloud

from .functions_host import FunctionsHost

ACCOUNT = "m365"


class Live:
    """The test's world: the host serving its HTTP functions over TLS, the Microsoft cloud notifying it."""

    def __init__(self, scenario: Any, host: FunctionsHost, cloud: MicrosoftCloud, monkeypatch: Any, ca: Any) -> None:
        self.scenario, self.host, self.cloud, self.ca = scenario, host, cloud, ca
        self.base_url = host.serve_http(ca.server_context())
        cloud.graph.subscriptions.client_context = ca.client_context()
        self.secret = secrets.token_urlsafe(32)
        for key, value in {
            "AUTHORITY_HOST": cloud.entra.base_url,
            "GRAPH_ENDPOINT": cloud.graph.endpoint,
            "GRAPH_CLIENT_ID": cloud.secrets["graph-client-id"],
            "GRAPH_CLIENT_SECRET": cloud.secrets["graph-client-secret"],
            "GRAPH_NOTIFICATION_CLIENT_STATE": self.secret,
            "INGEST_PUBLIC_BASE_URL": self.base_url,
        }.items():
            monkeypatch.setenv(key, value)
        self.numbers = iter(range(1, 10_000))

    def configure(self, *accounts: dict[str, Any]) -> None:
        self.scenario.write_config(*(accounts or (self.account(),)))

    def account(self, name: str = ACCOUNT, **fields: Any) -> dict[str, Any]:
        return self.cloud.account(name=name, **fields).model_dump(mode="json", by_alias=True, exclude_none=True)

    def mail(self, mailbox: Any = None) -> Message:
        number = next(self.numbers)
        return (mailbox or self.cloud.mailbox).add_message(
            subject=f"Invoice {number}",
            attachments=[
                FileAttachment(f"live-{number}.pdf", b"%PDF-1.4 live " + str(number).encode(), "application/pdf")
            ],
        )

    def timer(self) -> list[Any]:
        self.host.call("graph_import_timer", TimerRequest())
        return self.deliver()

    def deliver(self) -> list[Any]:
        deliveries = self.host.deliver("account_import_job")
        assert all(d.error is None for d in deliveries), [d.error for d in deliveries]
        return deliveries

    def notified(self) -> None:
        self.cloud.graph.subscriptions.wait_for_deliveries()

    def uploaded(self) -> list[str]:
        return sorted(u.filename for u in self.scenario.doc2.uploads)

    def post(self, payload: Any, account: str = ACCOUNT) -> int:
        url = f"{self.base_url}/api/graph/notifications?account={account}"
        request = urllib.request.Request(  # noqa: S310 - the local test host
            url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self.ca.client_context())
        )
        try:
            with opener.open(request, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as err:
            return err.code

    def subscription(self) -> Any:
        (only,) = self.cloud.graph.subscriptions.items.values()
        return only


@pytest.fixture
def live(scenario, host, test_ca, monkeypatch) -> Iterator[Live]:
    cloud = MicrosoftCloud.start(test_ca)
    try:
        yield Live(scenario, host, cloud, monkeypatch, test_ca)
    finally:
        cloud.stop()


def test_a_mail_reaches_doc2_by_notification_once_however_often_it_is_notified(live: Live) -> None:
    live.mail()
    live.configure()
    live.timer()  # the first run: imports what is there, subscribes (Graph validates the URL through the host)

    assert live.uploaded() == ["live-1.pdf"]
    subscription = live.subscription()
    assert subscription.notification_url.startswith(f"{live.base_url}/api/graph/notifications?account={ACCOUNT}&v=")
    assert subscription.change_type == "created" and subscription.client_state == client_state(live.secret, ACCOUNT)
    validations = [s for s in live.cloud.graph.subscriptions.sent if s.kind == "validation"]
    assert [v.status for v in validations] == [200, 200]  # the notification URL, and the same as lifecycle URL

    live.mail()
    live.notified()
    jobs = live.host.queued()
    assert [(j["account"], j["trigger"]) for j in jobs] == [(ACCOUNT, "graph_notification")]
    live.deliver()
    assert live.uploaded() == ["live-1.pdf", "live-2.pdf"]
    assert live.cloud.mailbox.messages_in("Inbox") == []

    live.cloud.graph.subscriptions.delivery = "duplicated"
    live.mail()
    live.notified()
    created = [s for s in live.cloud.graph.subscriptions.sent if s.kind == "created"]
    assert len(created) == 3 and all(s.status == 202 for s in created)
    assert len(live.host.queued()) == 1  # the duplicate is folded into the job already waiting
    live.deliver()

    live.cloud.graph.subscriptions.delivery = "late"
    live.cloud.graph.subscriptions.late_seconds = 1.0
    live.mail()
    live.mail()
    live.notified()
    assert len(live.host.queued()) == 1
    live.deliver()
    assert live.uploaded() == [f"live-{n}.pdf" for n in range(1, 6)]
    assert all(len(c) == 1 for c in live.scenario.doc2.uploads_by_custom_doc_id().values())
    assert max(s.seconds for s in live.cloud.graph.subscriptions.sent) < 3  # answered well within Graph's limit


def test_with_notifications_lost_the_mail_still_arrives_by_the_timer(live: Live) -> None:
    live.configure()
    live.timer()
    live.cloud.graph.subscriptions.delivery = "lost"
    live.mail()
    live.notified()

    assert live.host.queued() == [] and live.uploaded() == []
    assert len(live.cloud.graph.subscriptions.lost) == 1

    live.timer()
    assert live.uploaded() == ["live-1.pdf"]


def test_a_forged_notification_changes_nothing(live: Live) -> None:
    live.configure()
    live.timer()
    live.cloud.graph.subscriptions.delivery = "lost"
    live.mail()  # notified to nobody: only forged notifications follow
    subscription = live.subscription()

    def notification(state: Any) -> dict[str, Any]:
        item = {"subscriptionId": subscription.id, "changeType": "created", "resource": "Users/x/Messages/y"}
        return {"value": [item | ({} if state is None else {"clientState": state})]}

    forged = [
        notification("not-the-client-state"),
        notification(None),
        notification(client_state("a guessed secret", ACCOUNT)),
        notification(client_state(live.secret, "other-account")),  # another account's state does not fit this one
        {"value": [{"clientState": "x", "lifecycleEvent": "subscriptionRemoved", "subscriptionId": subscription.id}]},
    ]
    assert [live.post(payload) for payload in forged] == [202] * len(forged)
    assert live.post("not a batch") == 400
    assert live.post(notification(client_state(live.secret, "ghost")), account="ghost") == 202  # no such account

    assert live.host.queued() == []
    assert live.uploaded() == []
    assert live.subscription().id == subscription.id  # nothing renewed or recreated

    assert live.post(notification(client_state(live.secret, ACCOUNT))) == 202  # the real thing, for contrast
    assert [j["trigger"] for j in live.host.queued()] == ["graph_notification"]


def test_lifecycle_notifications_renew_recreate_and_catch_up(live: Live) -> None:
    live.configure()
    live.timer()
    first = live.subscription()
    before = first.expires
    time.sleep(1.1)  # expiry times are in whole seconds

    live.cloud.graph.subscriptions.lifecycle(first.id, "reauthorizationRequired")
    live.notified()
    assert [j["trigger"] for j in live.host.queued()] == ["graph_subscription"]
    live.deliver()
    assert live.subscription().id == first.id and live.subscription().expires > before

    live.cloud.graph.subscriptions.delivery = "lost"
    live.mail()  # arrives while the subscription is being removed
    live.cloud.graph.subscriptions.delivery = "normal"
    live.cloud.graph.subscriptions.expire(first.id)
    live.notified()
    live.deliver()
    assert live.subscription().id != first.id  # made again
    assert live.uploaded() == ["live-1.pdf"]  # and the import of that job caught up with the lost notification

    live.cloud.graph.subscriptions.delivery = "lost"
    live.mail()
    live.cloud.graph.subscriptions.delivery = "normal"
    live.cloud.graph.subscriptions.lifecycle(live.subscription().id, "missed")
    live.notified()
    assert [j["trigger"] for j in live.host.queued()] == ["graph_missed"]
    live.cloud.graph.reset_counters()
    live.deliver()
    assert live.uploaded() == ["live-1.pdf", "live-2.pdf"]
    (listing,) = [r for r in live.cloud.graph.requests if r.path.endswith("/messages/delta")]
    assert "$deltatoken" not in listing.query  # after "missed": a full round, not Graph's change tracking


def test_accounts_removed_or_turned_off_lose_their_subscription_and_status_says_why(live: Live) -> None:
    second = live.cloud.graph.add_mailbox("payables@contoso.example")
    live.configure(live.account(), live.account("payables", mailbox=second.address))
    live.timer()
    owners = sorted(
        s.notification_url.split("account=")[1].split("&")[0] for s in live.cloud.graph.subscriptions.items.values()
    )
    assert owners == [ACCOUNT, "payables"]

    live.configure(live.account())  # payables leaves the accounts file
    live.timer()
    assert [s.mailbox for s in live.cloud.graph.subscriptions.items.values()] == [live.cloud.mailbox.address]

    live.configure(live.account(notifications=False))
    live.timer()
    assert live.cloud.graph.subscriptions.items == {}
    state = open_state_store(os.environ["INGEST_STATE_URL"])  # the Table store on Azurite
    try:
        note = json.loads(state.cursor(ACCOUNT, STATUS_CURSOR) or "{}")
    finally:
        state.close()
    assert note["action"] == "off" and "notifications: false" in note["why_off"]
    settings = Settings.from_environ()
    state = open_state_store(settings.state_url)
    try:
        (status,) = account_status(load(settings), state, [ACCOUNT], settings)
    finally:
        state.close()
    assert not status["notifications"]["on"] and "notifications: false" in status["notifications"]["why_off"]
    live.mail()
    live.timer()  # the timer alone
    assert live.uploaded() == ["live-1.pdf"]


def test_the_subscription_is_renewed_well_before_it_lapses_and_made_again_when_graph_forgot_it(live: Live) -> None:
    live.configure()
    live.timer()
    first = live.subscription()
    made_until = first.expires
    settings = Settings.from_environ()
    config = load(settings)

    state = open_state_store(settings.state_url)
    try:
        (status,) = account_status(config, state, [ACCOUNT], settings)
    finally:
        state.close()
    assert status["notifications"]["on"] and status["notifications"]["subscription"]["id"] == first.id

    soon = datetime.now(UTC) + LIFETIME - RENEW_BEFORE - timedelta(hours=1)  # 35 h before it lapses: kept
    assert keep_subscription(settings, config, ACCOUNT, now=soon).action == "kept"
    later = datetime.now(UTC) + LIFETIME - RENEW_BEFORE + timedelta(hours=1)  # 37 h before: renewed
    renewed = keep_subscription(settings, config, ACCOUNT, now=later)
    assert (renewed.action, renewed.subscription_id) == ("renewed", first.id)
    assert live.subscription().expires > made_until + timedelta(hours=30)  # PATCHed to 70 h after "later"

    del live.cloud.graph.subscriptions.items[first.id]  # Graph dropped it without telling
    again = keep_subscription(settings, config, ACCOUNT, renew=True)
    assert again.action == "created" and live.subscription().id != first.id


def test_a_public_url_graph_cannot_validate_leaves_the_timer_importing(live: Live, monkeypatch, caplog) -> None:
    monkeypatch.setenv("INGEST_PUBLIC_BASE_URL", "https://127.0.0.1:9")  # nothing answers there
    live.mail()
    live.configure()
    with caplog.at_level(logging.WARNING, logger="ingest"):
        live.timer()

    assert live.uploaded() == ["live-1.pdf"]
    assert live.cloud.graph.subscriptions.items == {}
    (refused,) = [s for s in live.cloud.graph.subscriptions.sent if s.kind == "validation"]
    assert refused.status == 0
    assert any("change notifications not kept up" in r.getMessage() for r in caplog.records)
