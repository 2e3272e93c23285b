"""The operator's HTTP endpoints of the Function App, indexed from function_app.py and called as the host calls
them, on the Azure Table state store (Azurite) with a real Dovecot mailbox: the same JSON as the CLI's
``status --json`` / ``failed --json``, a retry that moves the mail back, and an anonymous health check that
reveals nothing."""

from __future__ import annotations

import json

import azure.functions as func

from tests.mail import invoice_mail
from tests.support.azurite import ACCOUNT_KEY, ACCOUNT_NAME
from tests.support.doc2_server import Refuse

from .functions_host import binding


def _call(host, function: str, method: str, route: str, params: dict[str, str] | None = None, body: bytes = b""):
    request = func.HttpRequest(method, f"http://localhost:7071/api/{route}", route_params=params or {}, body=body)
    response = host.call(function, request)
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


def _cli_json(scenario, *args: str) -> dict:
    result = scenario.cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_routes_and_auth_levels(host):
    for name, route, method, auth in (
        ("accounts_status", "status", "GET", "FUNCTION"),
        ("account_failed", "accounts/{name}/failed", "GET", "FUNCTION"),
        ("account_retry", "accounts/{name}/retry", "POST", "FUNCTION"),
        ("health", "health", "GET", "ANONYMOUS"),
    ):
        trigger = binding(host.functions[name], "httpTrigger")
        assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, [method], auth)


def test_status_failed_and_retry_answer_as_the_cli_does(host, scenario):
    scenario.append_many([invoice_mail(1, subject="Invoice one"), invoice_mail(2, subject="Invoice two")])
    scenario.write_config(scenario.imap_account("mail", max_attempts=1), scenario.pop3_account("pop"))
    scenario.doc2.always(Refuse(415))
    assert scenario.cli("import", "mail").returncode == 1

    status, body = _call(host, "accounts_status", "GET", "status")
    assert status == 200
    assert body == _cli_json(scenario, "status")
    mail, pop = body["accounts"]
    assert (mail["name"], mail["outcome"], mail["failed_messages"]) == ("mail", "failed", 2)
    assert (pop["name"], pop["last_run"], pop["failed_messages"]) == ("pop", None, 0)

    status, body = _call(host, "account_failed", "GET", "accounts/mail/failed", {"name": "mail"})
    assert status == 200
    assert body == _cli_json(scenario, "failed", "mail")
    assert [f["subject"] for f in body["failed"]] == ["Invoice one", "Invoice two"]
    first = body["failed"][0]["ref"]
    assert _call(host, "account_failed", "GET", "accounts/nobody/failed", {"name": "nobody"})[0] == 404

    scenario.doc2.clear_faults()
    bad = _call(host, "account_retry", "POST", "accounts/mail/retry", {"name": "mail"}, b"[1, 2]")
    assert bad[0] == 400
    unknown = _call(host, "account_retry", "POST", "accounts/mail/retry", {"name": "mail"}, b'{"refs": ["x:1"]}')
    assert unknown[0] == 422 and unknown[1]["retried"] == [] and "x:1" in unknown[1]["problems"][0]
    status, body = _call(
        host, "account_retry", "POST", "accounts/mail/retry", {"name": "mail"}, json.dumps({"refs": [first]}).encode()
    )
    assert (status, body["retried"], body["ok"]) == (200, [first], True)
    assert len(scenario.messages("INBOX")) == 1 and len(scenario.messages("Failed")) == 1

    assert scenario.cli("import", "mail").returncode == 0
    assert [u.filename for u in scenario.doc2.uploads] == ["invoice-1.pdf"]
    status, body = _call(host, "account_retry", "POST", "accounts/mail/retry", {"name": "mail"})  # all the rest
    assert status == 200 and len(body["retried"]) == 1
    assert scenario.cli("import", "mail").returncode == 0
    assert _call(host, "account_failed", "GET", "accounts/mail/failed", {"name": "mail"})[1] == {"failed": []}
    (mail, _pop) = _call(host, "accounts_status", "GET", "status")[1]["accounts"]
    assert (mail["outcome"], mail["failed_messages"], mail["failures_in_a_row"]) == ("ok", 0, 0)


def test_health_says_only_whether_configuration_and_state_can_be_read(host, scenario, monkeypatch):
    scenario.write_config(scenario.imap_account("secret-project-mailbox"))
    status, body = _call(host, "health", "GET", "health")
    assert (status, body) == (200, {"status": "healthy", "configuration": "ok", "state_store": "ok"})

    monkeypatch.setenv(
        "INGEST_STATE_URL",
        f"azuretable+connstr:ingeststate;DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};"
        f"AccountKey={ACCOUNT_KEY};TableEndpoint=http://127.0.0.1:9/{ACCOUNT_NAME};"
        f"BlobEndpoint=http://127.0.0.1:9/{ACCOUNT_NAME}",
    )
    status, body = _call(host, "health", "GET", "health")
    assert (status, body) == (503, {"status": "unhealthy", "configuration": "ok", "state_store": "unreachable"})

    scenario.config_path.write_text("accounts:\n  - name: secret-project-mailbox\n    type: nope\n", encoding="utf-8")
    status, body = _call(host, "health", "GET", "health")
    assert status == 503 and body["configuration"] == "invalid"
    assert "secret-project-mailbox" not in json.dumps(body) and ACCOUNT_KEY not in json.dumps(body)
