"""function_app.py indexes with the azure-functions package with the triggers, routes and auth levels intended,
host.json says what the app relies on, and the HTTP handlers run the real pipeline (Dovecot, local DOC²).

The queue and timer handlers against Azurite are in tests/azure/."""

from __future__ import annotations

import json
import re

import pytest

from ingest import jobs
from ingest.state.sqlite import SqliteStateStore
from tests.azure.functions_host import HOST_JSON, binding, http_request, indexed_functions

from .mail import invoice_mail


@pytest.fixture
def functions():
    return indexed_functions()


@pytest.fixture
def app_env(scenario, monkeypatch):
    """The scenario's settings in os.environ, as the Functions host provides app settings."""
    for key in ("APPLICATIONINSIGHTS_CONNECTION_STRING", "KEY_VAULT_URL", "INGEST_RUN_BUDGET_SECONDS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in scenario.environ().items():
        monkeypatch.setenv(key, value)
    return scenario


def _post(functions, name: str, account: str, action: str):
    route = f"accounts/{account}/{action}"
    response = functions[name].get_user_function()(http_request("POST", route, {"name": account}))
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


def test_functions_index_with_their_triggers(functions):
    assert set(functions) == {
        "mail_import_timer",
        "graph_import_timer",
        "account_import_job",
        "account_import_poison",
        "account_test_login",
        "account_import",
        "graph_notifications",
        "accounts_status",
        "account_failed",
        "account_retry",
        "health",
    }
    for name, setting in (
        ("mail_import_timer", "%MAIL_TIMER_SCHEDULE%"),
        ("graph_import_timer", "%GRAPH_TIMER_SCHEDULE%"),
    ):
        (trigger,) = functions[name].get_bindings()
        assert trigger.type == "timerTrigger"
        assert binding(functions[name], "timerTrigger")["schedule"] == setting

    for name, queue in (
        ("account_import_job", "%INGEST_QUEUE_NAME%"),
        ("account_import_poison", "%INGEST_QUEUE_NAME%-poison"),
    ):
        trigger = binding(functions[name], "queueTrigger")
        assert (trigger["queueName"], trigger["connection"]) == (queue, "AzureWebJobsStorage")

    for name, route in (("account_test_login", "accounts/{name}/test"), ("account_import", "accounts/{name}/import")):
        trigger = binding(functions[name], "httpTrigger")
        assert trigger["route"] == route
        assert trigger["methods"] == ["POST"]
        assert trigger["authLevel"] == "FUNCTION"
        assert binding(functions[name], "http")["direction"] == "OUT"

    # Graph cannot send a function key: the notification endpoint is anonymous and checks each clientState.
    notifications = binding(functions["graph_notifications"], "httpTrigger")
    assert (notifications["route"], notifications["methods"]) == ("graph/notifications", ["POST"])
    assert notifications["authLevel"] == "ANONYMOUS"


def test_host_json_settings_the_app_relies_on():
    assert HOST_JSON["version"] == "2.0"
    hours, minutes, seconds = map(int, HOST_JSON["functionTimeout"].split(":"))
    timeout = hours * 3600 + minutes * 60 + seconds
    assert timeout >= jobs.QUEUE_RUN_BUDGET_SECONDS + 120  # a queue job ends its run before the host kills it
    # A job queued by a change notification is picked up within seconds (the host polls an idle queue this often).
    polling = HOST_JSON["extensions"]["queues"]["maxPollingInterval"]
    assert int(polling.split(":")[2]) <= 2 and polling.startswith("00:00:")
    sampling = HOST_JSON["logging"]["applicationInsights"]["samplingSettings"]
    assert {"Request", "Exception"} <= set(sampling["excludedTypes"].split(";"))  # failures are never sampled
    levels = HOST_JSON["logging"]["logLevel"]
    assert levels["Host.Results"] == "Information"  # every invocation, failed or not, in the requests table
    assert levels["default"] in ("Warning", "Information")  # warnings are kept
    queues = HOST_JSON["extensions"]["queues"]
    assert 1 <= queues["maxDequeueCount"] <= 5
    assert queues["messageEncoding"] == "base64"
    assert 1 <= queues["batchSize"] <= 32
    # A job retried after a crash finds the crashed run's lease (60 s) expired.
    assert re.fullmatch(r"00:0[1-9]:00", queues["visibilityTimeout"])
    bundle = HOST_JSON["extensionBundle"]
    assert bundle["id"] == "Microsoft.Azure.Functions.ExtensionBundle" and bundle["version"].startswith("[4.")


def test_test_login_endpoint(functions, app_env, monkeypatch):
    app_env.write_config(app_env.imap_account("mail"))

    status, body = _post(functions, "account_test_login", "mail", "test")
    assert status == 200
    assert (body["account"], body["type"], body["ok"]) == ("mail", "imap", True)

    status, body = _post(functions, "account_test_login", "nobody", "test")
    assert status == 404 and "no account named 'nobody'" in body["error"]

    monkeypatch.setenv("MAIL_PASSWORD", "not-the-password")
    status, body = _post(functions, "account_test_login", "mail", "test")
    assert status == 502 and body["ok"] is False and body["detail"]
    assert "not-the-password" not in json.dumps(body)


def test_import_endpoint(functions, app_env, monkeypatch):
    app_env.append(invoice_mail(1))
    app_env.write_config(app_env.imap_account("mail"))

    status, report = _post(functions, "account_import", "mail", "import")
    assert status == 200
    assert report["totals"]["messages_imported"] == 1 and report["accounts"][0]["outcome"] == "ok"
    assert [u.filename for u in app_env.doc2.uploads] == ["invoice-1.pdf"]
    assert len(app_env.messages("Processed")) == 1

    status, body = _post(functions, "account_import", "nobody", "import")
    assert status == 404 and "no account named 'nobody'" in body["error"]

    # Busy: another run (here the CLI's lock on the same SQLite state) is working on the account.
    app_env.append(invoice_mail(2))
    store = SqliteStateStore(app_env.tmp / "state.sqlite3")
    try:
        with store.account_lock("mail"):
            status, report = _post(functions, "account_import", "mail", "import")
    finally:
        store.close()
    assert status == 409 and report["accounts"][0]["outcome"] == "busy"
    assert len(app_env.doc2.uploads) == 1

    monkeypatch.setenv("DOC2_API_KEY", "rejected-key")
    status, report = _post(functions, "account_import", "mail", "import")
    assert status == 502 and report["accounts"][0]["outcome"] == "account_failed"
    assert "rejected-key" not in json.dumps(report)
    assert len(app_env.doc2.uploads) == 1 and app_env.messages("INBOX")  # the mail is left untouched


def test_invalid_accounts_file_answers_500(functions, app_env):
    app_env.config_path.write_text("accounts: [", encoding="utf-8")
    status, body = _post(functions, "account_import", "mail", "import")
    assert status == 500 and "invalid configuration" in body["error"]


def test_http_import_leaves_time_for_the_answer(app_env):
    # Azure ends an HTTP request after 230 s: an HTTP import stops starting messages well before.
    assert jobs.HTTP_RUN_BUDGET_SECONDS <= 200
    settings = jobs._with_budget(app_env.settings(), jobs.HTTP_RUN_BUDGET_SECONDS)
    assert settings.run_time_budget_seconds == jobs.HTTP_RUN_BUDGET_SECONDS
    assert jobs._with_budget(settings, 1000).run_time_budget_seconds == jobs.HTTP_RUN_BUDGET_SECONDS


def test_importing_the_function_app_loads_no_graph_client():
    """msgraph-sdk, kiota and msal load only when a Graph account runs: function_app's import (every cold start) and
    IMAP/POP3 jobs do not pay their ~370 modules (docs/PERFORMANCE.md, start-up). A fresh interpreter, as the host's."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, function_app\n"
        "function_app.app.get_functions()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('msgraph', 'msgraph_core', "
        "'kiota_abstractions', 'kiota_http', 'msal')}))\n"
    )
    root = Path(__file__).resolve().parents[1]
    loaded = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
