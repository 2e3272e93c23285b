"""The emulators' own wire behaviour where the adapter does not exercise it: $batch, Graph's query rules, mutable
ids, and Key Vault's challenge."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.microsoft import MAILBOX, MicrosoftCloud


@pytest.fixture
def graph(cloud: MicrosoftCloud) -> Iterator[httpx.Client]:
    token = httpx.post(
        f"{cloud.entra.authority(cloud.tenant)}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": cloud.app.client_id,
            "client_secret": cloud.client_secret,
            "scope": "https://graph.microsoft.com/.default",
        },
        verify=str(cloud.ca.ca_cert),
    ).json()["access_token"]
    with httpx.Client(
        base_url=f"{cloud.graph.endpoint}/v1.0",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(cloud.ca.ca_cert),
    ) as client:
        yield client


def test_batch_answers_each_request(cloud: MicrosoftCloud, graph: httpx.Client) -> None:
    message = cloud.mailbox.add_message(subject="batched")
    answer = graph.post(
        "/$batch",
        json={
            "requests": [
                {
                    "id": "1",
                    "method": "GET",
                    "url": f"/users/{MAILBOX}/messages/{message.immutable_id}?$select=subject",
                },
                {"id": "2", "method": "GET", "url": f"/users/{MAILBOX}/mailFolders/nowhere"},
            ]
        },
    )
    assert answer.status_code == 200
    first, second = answer.json()["responses"]
    assert (first["id"], first["status"], first["body"]["subject"]) == ("1", 200, "batched")
    assert (second["status"], second["body"]["error"]["code"]) == (404, "ErrorItemNotFound")

    too_many = graph.post(
        "/$batch", json={"requests": [{"id": str(n), "method": "GET", "url": "/me"} for n in range(21)]}
    )
    assert too_many.status_code == 400


def test_batch_fault_fails_one_request_and_counts_four_per_mailbox(cloud: MicrosoftCloud, graph: httpx.Client) -> None:
    messages = [cloud.mailbox.add_message(subject=f"m{n}") for n in range(6)]
    cloud.graph.inject(429, retry_after=3, path_contains=f"/messages/{messages[2].immutable_id}")
    cloud.graph.reset_counters()
    answer = graph.post(
        "/$batch",
        json={
            "requests": [
                {"id": str(n), "method": "GET", "url": f"/users/{MAILBOX}/messages/{m.immutable_id}"}
                for n, m in enumerate(messages)
            ]
        },
    )

    assert answer.status_code == 200
    statuses = [r["status"] for r in answer.json()["responses"]]
    assert statuses == [200, 200, 429, 200, 200, 200]
    assert answer.json()["responses"][2]["headers"]["Retry-After"] == "3"
    assert [r.status for r in cloud.graph.batched] == statuses
    assert len(cloud.graph.requests) == 1
    # Graph runs four requests of a batch at once: the batch counts as four on the mailbox, not one or six
    assert cloud.graph.peak_concurrency == {MAILBOX: 4}


def test_orderby_must_lead_the_filter(cloud: MicrosoftCloud, graph: httpx.Client) -> None:
    answer = graph.get(
        f"/users/{MAILBOX}/mailFolders/inbox/messages",
        params={"$filter": "hasAttachments eq true", "$orderby": "receivedDateTime asc"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "InefficientFilter"


def test_rest_ids_change_on_move_unless_immutable(cloud: MicrosoftCloud, graph: httpx.Client) -> None:
    cloud.mailbox.add_message(subject="moving")
    listed = graph.get(f"/users/{MAILBOX}/mailFolders/inbox/messages").json()["value"][0]["id"]
    moved = graph.post(f"/users/{MAILBOX}/messages/{listed}/move", json={"destinationId": "archive"})
    assert moved.status_code == 201
    assert moved.json()["id"] != listed
    assert graph.get(f"/users/{MAILBOX}/messages/{listed}").status_code == 404

    immutable = {"Prefer": 'IdType="ImmutableId"'}
    kept = graph.get(f"/users/{MAILBOX}/mailFolders/archive/messages", headers=immutable).json()["value"][0]["id"]
    graph.post(f"/users/{MAILBOX}/messages/{kept}/move", json={"destinationId": "inbox"}, headers=immutable)
    assert graph.get(f"/users/{MAILBOX}/messages/{kept}", headers=immutable).json()["id"] == kept


def test_expired_token_is_refused_with_graphs_error(cloud: MicrosoftCloud, graph: httpx.Client) -> None:
    cloud.entra.expire_access_tokens()
    answer = graph.get(f"/users/{MAILBOX}/mailFolders/inbox")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer ")


def test_key_vault_challenge_names_the_authority(cloud: MicrosoftCloud) -> None:
    answer = httpx.get(f"{cloud.keyvault.vault_url}/secrets/x/?api-version=7.6", verify=str(cloud.ca.ca_cert))
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{cloud.entra.base_url}/{cloud.tenant}", resource="https://vault.azure.net"'
    )


def test_entra_error_json_is_entras(cloud: MicrosoftCloud) -> None:
    answer = httpx.post(
        f"{cloud.entra.authority(cloud.tenant)}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": cloud.app.client_id,
            "client_secret": "wrong",
            "scope": "https://graph.microsoft.com/.default",
        },
        verify=str(cloud.ca.ca_cert),
    )
    assert answer.status_code == 401
    body = answer.json()
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= set(body)


def test_delta_pages_reports_removals_and_expires_its_tokens(cloud: MicrosoftCloud, graph: httpx.Client) -> None:
    for number in range(5):
        cloud.mailbox.add_message(subject=f"m{number}")
    inbox = f"/users/{MAILBOX}/mailFolders/inbox/messages/delta"
    prefer = {"Prefer": 'odata.maxpagesize=2, IdType="ImmutableId"'}
    first = graph.get(inbox, params={"$select": "subject"}, headers=prefer)
    assert first.headers["Preference-Applied"].endswith("odata.maxpagesize=2")
    pages, link = [first.json()], first.json()["@odata.nextLink"]
    while link:
        page = graph.get(link, headers=prefer).json()
        pages.append(page)
        link = page.get("@odata.nextLink")
    assert [len(p["value"]) for p in pages] == [2, 2, 1]
    assert sorted(m["subject"] for p in pages for m in p["value"]) == [f"m{n}" for n in range(5)]
    assert all(set(m) <= {"id", "subject", "@odata.etag"} for p in pages for m in p["value"])  # $select lives on
    delta_link = pages[-1]["@odata.deltaLink"]

    moved = cloud.mailbox.messages_in("Inbox")[0]
    cloud.mailbox.move(moved, cloud.mailbox.folder("Inbox/Processed", create=True))
    cloud.mailbox.add_message(subject="new")
    changes = graph.get(delta_link, headers=prefer).json()
    assert [m.get("subject") for m in changes["value"] if "@removed" not in m] == ["new"]
    assert [m["id"] for m in changes["value"] if "@removed" in m] == [moved.immutable_id]
    assert "@odata.deltaLink" in changes

    cloud.graph.expire_delta_tokens()
    gone = graph.get(changes["@odata.deltaLink"], headers=prefer)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "syncStateNotFound"
    assert graph.get(inbox, params={"$filter": "subject eq 'x'"}).status_code == 400  # delta filters by date only


def test_subscriptions_are_refused_without_https_or_beyond_their_lifetime(
    cloud: MicrosoftCloud, graph: httpx.Client
) -> None:
    import datetime as dt

    body = {
        "changeType": "created",
        "notificationUrl": "http://127.0.0.1:9/hook",
        "resource": f"users/{MAILBOX}/mailFolders('inbox')/messages",
        "expirationDateTime": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(),
        "clientState": "x",
    }
    plain = graph.post("/subscriptions", json=body)
    assert plain.status_code == 400 and "must be https" in plain.json()["error"]["message"]
    too_long = graph.post(
        "/subscriptions",
        json=body | {"expirationDateTime": (dt.datetime.now(dt.UTC) + dt.timedelta(days=8)).isoformat()},
    )
    assert too_long.status_code == 400 and "minutes in the future" in too_long.json()["error"]["message"]
    unreachable = graph.post("/subscriptions", json=body | {"notificationUrl": "https://127.0.0.1:9/hook"})
    assert unreachable.status_code == 400 and "validation request failed" in unreachable.json()["error"]["message"]
    assert graph.get("/subscriptions").json()["value"] == []
