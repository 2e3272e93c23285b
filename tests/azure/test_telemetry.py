"""Telemetry of a run as Application Insights would receive it: OpenTelemetry's in-memory metric reader and log
exporter stand in for the Azure Monitor exporter (log attributes become customDimensions, instruments become
customMetrics). A queue job runs one account for real (Dovecot, local DOC², Table state store on Azurite)."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from ingest import telemetry
from ingest.queueing import Job
from tests.mail import invoice_mail
from tests.support.doc2_server import Respond


@pytest.fixture(scope="session")
def metric_reader():
    """A process-wide meter provider that keeps every data point in memory (it can be set once per process)."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)
    if metrics.get_meter_provider() is not provider:
        pytest.fail("another meter provider was installed before this test session's", pytrace=False)
    return reader


@pytest.fixture
def exported_logs() -> Iterator[Any]:
    """The ``ingest`` logger exported through OpenTelemetry, with the handler the Azure Monitor distro installs."""
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger = logging.getLogger(telemetry.LOGGER_NAME)
    saved_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    telemetry.install_account_filter(logger)
    try:
        yield exporter
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        provider.shutdown()


def _records(exporter) -> list[tuple[str, int, dict[str, Any]]]:
    """(body, severity number, attributes) of every exported record."""
    return [
        (str(r.log_record.body), r.log_record.severity_number.value, dict(r.log_record.attributes or {}))
        for r in exporter.get_finished_logs()
    ]


def _points(reader, account: str) -> dict[str, Any]:
    """The data point of each metric for this account."""
    found: dict[str, Any] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    if point.attributes.get("account") == account:
                        found[metric.name] = (metric.unit, point)
    return found


def _job(account: str) -> QueueMessage:
    job = Job(account=account, type="imap", trigger="mail_timer")
    return QueueMessage(id="1", body=job.to_json().encode(), dequeue_count=1)


def test_a_run_yields_its_metrics_one_summary_record_and_no_secret(scenario, host, metric_reader, exported_logs):
    account = f"tele-{secrets.token_hex(3)}"  # the cumulative metrics of this account are this test's alone
    scenario.append(invoice_mail(1))
    scenario.append(invoice_mail(2))
    scenario.write_config(scenario.imap_account(account))
    scenario.doc2.plan(Respond(422, {"detail": "unsupported document"}))  # the first upload is refused

    host.call("account_import_job", _job(account))

    points = _points(metric_reader, account)
    assert points.keys() >= {"messages_imported", "documents_uploaded", "messages_failed", "run_duration"}
    assert points["messages_imported"][1].value == 1
    assert points["documents_uploaded"][1].value == 1
    assert points["messages_failed"][1].value == 1
    unit, duration = points["run_duration"]
    assert unit == "s" and duration.count == 1 and duration.sum > 0
    assert dict(points["messages_failed"][1].attributes) == {
        "account": account,
        "account_type": "imap",
        "outcome": "failed",
        "trigger": "mail_timer",
    }

    records = _records(exported_logs)
    (summary,) = [attributes for _, _, attributes in records if attributes.get("event") == "run_summary"]
    assert summary["account"] == account and summary["trigger"] == "mail_timer"
    assert (summary["accounts"], summary["accounts_failed"]) == (1, 0)
    assert (summary["messages_imported"], summary["documents_uploaded"], summary["messages_failed"]) == (1, 1, 1)
    (result,) = [attributes for _, _, attributes in records if attributes.get("event") == "account_result"]
    assert result["outcome"] == "failed" and result["messages_failed"] == 1
    # Account on every line; the failed message named by its reference.
    assert all(attributes.get("account") == account for _, _, attributes in records)
    assert any(f"account {account} message " in body and "failed" in body for body, _, _ in records)

    _assert_no_secret(scenario, records, points)


def test_a_failing_account_yields_an_account_failed_record(scenario, host, metric_reader, exported_logs, monkeypatch):
    account = f"tele-{secrets.token_hex(3)}"
    wrong_password = f"wrong-{secrets.token_hex(8)}"
    monkeypatch.setenv("MAIL_PASSWORD", wrong_password)
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account(account))

    host.call("account_import_job", _job(account))  # completes: the failure is reported, not retried

    records = _records(exported_logs)
    failed = [(body, severity, a) for body, severity, a in records if a.get("outcome") == "account_failed"]
    assert len(failed) == 1
    body, severity, attributes = failed[0]
    assert attributes["account"] == account and severity >= 17  # ERROR
    assert "login" in body.lower() or "authentication" in body.lower()
    (summary,) = [a for _, _, a in records if a.get("event") == "run_summary"]
    assert summary["accounts_failed"] == 1
    assert all(wrong_password not in json.dumps([b, a], default=str) for b, _, a in records)
    assert scenario.doc2.uploads == []


def _assert_no_secret(scenario, records, points) -> None:
    secret_values = [scenario.password, scenario.doc2.api_key]
    exported = json.dumps([records, {name: dict(point.attributes) for name, (_, point) in points.items()}], default=str)
    for value in secret_values:
        assert value not in exported


def test_exporter_is_configured_only_with_a_connection_string_and_gets_the_managed_identity(monkeypatch):
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("azure.monitor.opentelemetry.configure_azure_monitor", lambda **kw: calls.append(kw))
    monkeypatch.setattr(telemetry, "_configured", False)
    for name in ("ingest", "azure"):  # configure() sets these two levels; put them back afterwards
        monkeypatch.setattr(logging.getLogger(name), "setLevel", lambda level: None)

    assert telemetry.configure({}) is False
    assert calls == []

    connection = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"
    client_id = "11111111-2222-3333-4444-555555555555"
    environ = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": connection,
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": f"ClientId={client_id};Authorization=AAD",
        "AZURE_CLIENT_ID": client_id,
    }
    assert telemetry.configure(environ) is True
    (kwargs,) = calls
    assert kwargs["connection_string"] == connection and kwargs["logger_name"] == "ingest"
    from azure.identity import ManagedIdentityCredential

    assert isinstance(kwargs["credential"], ManagedIdentityCredential)
    assert telemetry.configure(environ) is True and len(calls) == 1  # once per process


def _doc2_statuses(reader) -> dict[str, int]:
    """Requests to DOC² so far, by status (cumulative over the session)."""
    found: dict[str, int] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == telemetry.DOC2_REQUEST_METRIC:
                    assert metric.unit == "s"
                    for point in metric.data.data_points:
                        found[str(point.attributes["status"])] = point.count
    return found


def test_what_the_workbook_and_alerts_read(scenario, host, metric_reader, exported_logs):
    """A message moved to Failed is one record with its reason; each account result says whether the run succeeded
    and how many failed in a row; every request to DOC² is timed with its status."""
    account = f"tele-{secrets.token_hex(3)}"
    before = _doc2_statuses(metric_reader)
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account(account, max_attempts=1))
    scenario.doc2.plan(Respond(422, {"detail": "unsupported document"}))
    host.call("account_import_job", _job(account))
    host.call("account_import_job", _job(account))  # nothing left to do: a success
    scenario.append(invoice_mail(2))
    host.call("account_import_job", _job(account))

    records = _records(exported_logs)
    (moved,) = [a for _, _, a in records if a.get("event") == telemetry.MESSAGE_MOVED_TO_FAILED_EVENT]
    assert moved["account"] == account and moved["message_ref"] and "HTTP 422" in moved["reason"]
    results = [a for _, _, a in records if a.get("event") == "account_result"]
    assert [(r["outcome"], r["run_succeeded"], r["failures_in_a_row"]) for r in results] == [
        ("failed", "false", 1),
        ("ok", "true", 0),
        ("ok", "true", 0),
    ]
    after = _doc2_statuses(metric_reader)
    assert after.get("422", 0) - before.get("422", 0) == 1
    assert after.get("200", 0) - before.get("200", 0) == 1
