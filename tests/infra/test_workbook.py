"""The Azure Monitor workbook (infra/app/workbook.bicep + workbook.json) and the alerts read telemetry the app really
emits: every event, custom dimension and metric their queries name is in ingest/telemetry.py. Deployed by
main.bicep on the Application Insights component, with the sections an operator needs."""

from __future__ import annotations

import json
import re

from .bicep_model import INFRA, body, call, parse, ref

ROOT = INFRA.parent
TELEMETRY = (ROOT / "ingest" / "telemetry.py").read_text(encoding="utf-8")
WORKBOOK = json.loads((INFRA / "app" / "workbook.json").read_text(encoding="utf-8"))
# Columns of the Application Insights tables themselves, not the app's dimensions.
TABLE_COLUMNS = {"timestamp", "message", "name", "valueSum", "valueCount", "valueMax"}


def _queries() -> dict[str, str]:
    return {item["name"]: item["content"]["query"] for item in WORKBOOK["items"] if item["type"] == 3}


def _alert_queries() -> list[str]:
    """The KQL of every alert rule, format()'s placeholders filled from the parameter defaults (event names)."""
    alerts = parse("app/alerts.bicep")
    queries = []
    for rule in alerts.resources_of_type("Microsoft.Insights/scheduledQueryRules").values():
        kind, args = call(rule["properties"]["criteria"]["allOf"][0]["query"])
        assert kind == "format"
        text = alerts.variable(args["format_string"])
        values = [args[k] for k in sorted(k for k in args if k.startswith("arg_"))]
        for index, value in enumerate(values):
            filled = alerts.param_default(value) if value in alerts.params else value
            text = text.replace("{" + str(index) + "}", str(filled))
        queries.append(text)
    return queries


def _emitted(name: str) -> bool:
    """Whether telemetry.py emits this name: a key of a record's extra, an event or a metric (as a literal)."""
    if f'"{name}"' in TELEMETRY:
        return True
    constant = re.search(rf'^([A-Z_]+) = "{re.escape(name)}"$', TELEMETRY, re.MULTILINE)
    return constant is not None


def test_the_workbook_has_the_sections_an_operator_needs():
    titles = {item["content"].get("title", "") for item in WORKBOOK["items"] if item["type"] == 3}
    for wanted in (
        "Runs per account",
        "Documents uploaded per day",
        "Messages moved to the failed folder, with the reason",
        "DOC² request latency (seconds)",
        "DOC² requests that failed, by status",
        "Accounts whose last successful run is older than 3 schedule periods",
    ):
        assert wanted in titles
    assert "last_success < ago(3 * period)" in _queries()["stale-accounts"]
    (parameters,) = [item for item in WORKBOOK["items"] if item["type"] == 9]
    names = {p["name"]: p for p in parameters["content"]["parameters"]}
    assert names["ScheduleMinutes"]["value"] == "__SCHEDULE_MINUTES__"  # filled by workbook.bicep
    assert WORKBOOK["fallbackResourceIds"] == ["__APPLICATION_INSIGHTS_ID__"]


def test_every_name_a_query_reads_is_emitted_by_the_app():
    queries = [*_queries().values(), *_alert_queries()]
    assert len(queries) >= 10
    dimensions: set[str] = set()
    literals: set[str] = set()
    for query in queries:
        dimensions |= set(re.findall(r"customDimensions\.(\w+)", query))
        literals |= set(re.findall(r"(?:event\) ==|name ==) '(\w+)'", query))
    assert {"account", "event", "run_succeeded", "failures_in_a_row", "reason", "message_ref", "status"} <= dimensions
    missing = sorted(name for name in dimensions | literals if not _emitted(name))
    assert not missing, f"queries name what ingest/telemetry.py never emits: {missing}"
    # The events and metrics by the constants the app uses for them.
    from ingest import telemetry

    assert {
        telemetry.ACCOUNT_RESULT_EVENT,
        telemetry.MESSAGE_MOVED_TO_FAILED_EVENT,
        telemetry.DOC2_REQUEST_METRIC,
    } <= literals | {"account_result"}


def test_a_name_the_app_does_not_emit_is_caught():
    assert not _emitted("messages_lost_forever")
    assert _emitted("documents_uploaded") and _emitted("message_moved_to_failed")


def test_main_deploys_the_workbook_on_application_insights():
    main = parse("main.bicep")
    params = body(main.modules["workbook"])["params"]
    assert ref(params["applicationInsightsId"]) == "monitoring.outputs.applicationInsightsId"
    assert params["runIntervalMinutes"] == "runIntervalMinutes"
    workbook = parse("app/workbook.bicep")
    (resource,) = workbook.resources_of_type("Microsoft.Insights/workbooks").values()
    properties = resource["properties"]
    assert (resource["kind"], properties["category"]) == ("shared", "workbook")
    assert ref(properties["sourceId"]) == "applicationInsightsId"
