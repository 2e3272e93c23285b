"""The notification endpoint's decisions without any server: the validation answer, clientState checks, folding
of waiting jobs, and which accounts get change notifications at all."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingest.config import GraphAccount
from ingest.graph.subscriptions import support
from ingest.notifications import (
    MISSED_TRIGGER,
    NOTIFICATION_TRIGGER,
    UPKEEP_TRIGGER,
    client_state,
    notification_url,
    receive,
    should_enqueue,
)
from ingest.settings import Settings

SECRET = "s3cr3t-for-tests-only"


def _receive(
    query: dict[str, str], payload: Any, secret: str | None = SECRET
) -> tuple[int, str, list[tuple[str, str]]]:
    queued: list[tuple[str, str]] = []
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    answer = receive(query, body, secret=lambda: secret, enqueue=lambda a, t: queued.append((a, t)))
    return answer.status, answer.body, queued


def test_the_validation_request_is_answered_with_the_token_as_plain_text() -> None:
    token = "Validation: Testing client application reachability for subscription Request-Id: 1"
    answer = receive({"validationToken": token}, b"", secret=lambda: None, enqueue=lambda a, t: None)
    assert (answer.status, answer.body, answer.content_type) == (200, token, "text/plain")
    assert receive({"validationToken": "x" * 5000}, b"", secret=lambda: None, enqueue=lambda a, t: None).status == 400


def test_only_notifications_with_the_accounts_client_state_queue_a_job_and_each_kind_once() -> None:
    good = client_state(SECRET, "ap")
    items = [
        {"clientState": good, "changeType": "created"},
        {"clientState": good, "changeType": "created"},  # Graph batches several: one job
        {"clientState": good, "lifecycleEvent": "reauthorizationRequired"},
        {"clientState": good, "lifecycleEvent": "missed"},
        {"clientState": "forged"},
    ]
    status, _, queued = _receive({"account": "ap"}, {"value": items})
    assert status == 202
    assert sorted(queued) == sorted([("ap", MISSED_TRIGGER), ("ap", UPKEEP_TRIGGER), ("ap", NOTIFICATION_TRIGGER)])

    assert _receive({"account": "ap"}, {"value": [{"clientState": good}]}, secret=None)[2] == []  # no secret: none
    assert _receive({"account": "other"}, {"value": [{"clientState": good}]})[2] == []
    assert _receive({}, {"value": [{"clientState": good}]})[2] == []
    for broken in (b"not json", {"value": "x"}, [1], b"\xff"):
        assert _receive({"account": "ap"}, broken)[0] == 400


def test_client_states_differ_per_account_and_secret_and_fit_graphs_limit() -> None:
    states = {client_state(secret, account) for secret in ("a", "b") for account in ("x", "y")}
    assert len(states) == 4 and all(len(s) <= 128 for s in states)
    assert client_state("a", "x") == client_state("a", "x")
    url = notification_url("https://app.example/", "ap invoices", client_state("a", "x"))
    assert url.startswith("https://app.example/api/graph/notifications?account=ap%20invoices&v=")
    assert client_state("a", "x") not in url and url.rsplit("=", 1)[1] != "a"


def test_a_waiting_job_folds_notifications_until_it_must_have_been_lost() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert should_enqueue(None, now)
    assert not should_enqueue((now - timedelta(minutes=2)).isoformat(), now)
    assert should_enqueue((now - timedelta(minutes=30)).isoformat(), now)
    assert should_enqueue("garbage", now)


def _account(**fields: Any) -> GraphAccount:
    data = {"name": "ap", "type": "graph", "tenant_id": "t", "client_id_secret": "cid", "mailbox": "ap@contoso.example"}
    return GraphAccount.model_validate(data | {"client_secret_secret": "cs"} | fields)


@pytest.mark.parametrize(
    ("fields", "environ", "expected"),
    [
        ({}, {"INGEST_PUBLIC_BASE_URL": "https://app.example"}, None),
        ({}, {"WEBSITE_HOSTNAME": "func-x.azurewebsites.net"}, None),
        ({}, {}, "no public URL"),
        ({"notifications": False}, {"INGEST_PUBLIC_BASE_URL": "https://app.example"}, "notifications: false"),
        (
            {"auth": "password", "username": "someone@contoso.example", "password_secret": "pw"},
            {"INGEST_PUBLIC_BASE_URL": "https://app.example"},
            "signed-in user's own mailbox",
        ),
        (
            {"auth": "password", "username": "AP@contoso.example", "password_secret": "pw"},
            {"INGEST_PUBLIC_BASE_URL": "https://app.example"},
            None,
        ),
        ({"auth": "device_code"}, {"INGEST_PUBLIC_BASE_URL": "https://app.example"}, "signed-in user's own mailbox"),
    ],
)
def test_which_accounts_get_notifications(
    fields: dict[str, Any], environ: dict[str, str], expected: str | None
) -> None:
    reason = support(_account(**fields), Settings.from_environ(environ))
    assert reason == expected if expected is None else expected in (reason or "")


def test_a_public_url_must_be_https() -> None:
    settings = Settings.from_environ({"INGEST_PUBLIC_BASE_URL": "http://app.example"})
    assert settings.public_base_url is None and settings.problems
