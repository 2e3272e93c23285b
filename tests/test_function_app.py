"""function_app.py indexes with the azure-functions package, and its handlers run the real pipeline."""

from __future__ import annotations

import importlib
import json

import pytest
from azure.functions.timer import TimerRequest

from .mail import invoice_mail


@pytest.fixture
def functions():
    """Indexes function_app as the Functions host does (get_functions may run once per app object)."""
    import function_app

    app = importlib.reload(function_app).app
    return {f.get_function_name(): f for f in app.get_functions()}


def test_functions_index_with_their_triggers(functions):
    assert {"mail_import_timer", "graph_import_timer"} <= set(functions)
    for name, setting in (
        ("mail_import_timer", "%MAIL_TIMER_SCHEDULE%"),
        ("graph_import_timer", "%GRAPH_TIMER_SCHEDULE%"),
    ):
        (trigger,) = functions[name].get_bindings()
        assert trigger.type == "timerTrigger"
        assert trigger.schedule == setting
        binding = json.loads(functions[name].get_function_json())["bindings"][0]
        assert binding["schedule"] == setting


def test_mail_timer_imports_imap_and_pop3_accounts_only(functions, scenario, monkeypatch):
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account())
    for key, value in scenario.environ().items():
        monkeypatch.setenv(key, value)

    functions["mail_import_timer"].get_user_function()(TimerRequest(past_due=True))

    assert [u.filename for u in scenario.doc2.uploads] == ["invoice-1.pdf"]
    assert len(scenario.messages("Processed")) == 1

    # The Graph timer leaves IMAP accounts alone.
    scenario.append(invoice_mail(2))
    functions["graph_import_timer"].get_user_function()(TimerRequest())
    assert len(scenario.doc2.uploads) == 1
