"""Telemetry of the runs: structured log records and custom metrics, exported to Application Insights with
OpenTelemetry (the ``azure-monitor-opentelemetry`` distro) when the app runs in Azure.

Why the distro in the worker, and not only the Functions host's own Application Insights logging: the host
receives a Python log line as text (plus category, level and invocation id); it cannot carry the custom
dimensions the alerts query (``customDimensions.event == "run_summary"``, ``customDimensions.outcome ==
"account_failed"`` with ``customDimensions.account``) nor custom metrics from a Python worker. The host's
OpenTelemetry mode (host.json ``telemetryMode``) still needs an SDK in the worker for that. The distro is
Microsoft's supported way: log records become ``traces`` with their ``extra`` fields as customDimensions, and
OpenTelemetry counters and histograms become ``customMetrics``. Application Insights accepts only Entra ID
tokens here (local auth off) and the exporter does not read ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``, so it
is handed a ``ManagedIdentityCredential`` for ``AZURE_CLIENT_ID`` itself.

- Nothing is configured without ``APPLICATIONINSIGHTS_CONNECTION_STRING`` (the CLI, tests, ``func start``): the
  OpenTelemetry API is then a no-op and the log records go to the usual handlers only.
- Only the ``ingest`` logger is exported (``logger_name``), so SDK chatter is not paid for twice; host.json keeps
  the host's own copy of the worker's lines to warnings and errors.
- Log records are not sampled (trace-based sampling of logs stays off): a summary or a failure is never dropped.
- Every exported record carries ``account`` (the account being run, from ``account_context``); records name
  messages by reference (folder/UID, UIDL, Graph id), never their content, and never a secret.

Records and metrics of one run (``record_run``):

- per account: a record with ``event = "account_result"``, ``account``, ``account_type``, ``outcome`` (``ok``,
  ``failed``, ``partial``, ``busy``, ``account_failed``), its counts, ``run_succeeded`` (``true`` for ``ok``,
  ``false`` for ``failed``/``account_failed``, empty for ``partial``/``busy``) and ``failures_in_a_row`` (from the
  state store); level ERROR for ``account_failed``;
- per message moved to the failed folder: a record with ``event = "message_moved_to_failed"``, ``account``,
  ``message_ref`` and ``reason``;
- one record per run with ``event = "run_summary"``, ``trigger``, ``accounts``, ``accounts_failed``,
  ``accounts_busy``, ``duration_seconds`` and every total of the run report (``messages_failed`` ...);
- counters ``messages_imported``, ``documents_uploaded``, ``messages_failed`` and the histogram ``run_duration``
  (seconds per account run), each with the attributes ``account``, ``account_type``, ``outcome``, ``trigger``;
- the histogram ``doc2_request_duration`` (seconds of each HTTP request to DOC²) with the attribute ``status``
  (``record_doc2_request``, called by the DOC² client).

The workbook and the alerts in infra/ query these names; tests/infra/test_workbook.py checks they exist here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .report import AccountReport, RunReport
from .settings import TelemetrySettings
from .state.base import run_verdict

log = logging.getLogger(__name__)

LOGGER_NAME = "ingest"
METER_NAME = "ingest"
RUN_SUMMARY_EVENT = "run_summary"
ACCOUNT_RESULT_EVENT = "account_result"
JOB_POISONED_EVENT = "job_poisoned"
MESSAGE_MOVED_TO_FAILED_EVENT = "message_moved_to_failed"
DOC2_REQUEST_METRIC = "doc2_request_duration"
ACCOUNT_FAILED_OUTCOME = "account_failed"
FLUSH_TIMEOUT_MILLIS = 10_000

_current_account: ContextVar[str | None] = ContextVar("ingest_account", default=None)
_configured = False


@contextmanager
def account_context(account: str) -> Iterator[None]:
    """Every record logged meanwhile (in this thread or task) carries ``account``."""
    token = _current_account.set(account)
    try:
        yield
    finally:
        _current_account.reset(token)


class AccountContextFilter(logging.Filter):
    """Adds ``account`` from ``account_context`` to records that do not name one themselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        account = _current_account.get()
        if account is not None and not hasattr(record, "account"):
            record.account = account
        return True


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Export to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set. Returns whether it does."""
    global _configured
    found = TelemetrySettings.from_environ(environ)  # not Settings: a bad setting must not stop the app
    logging.getLogger(LOGGER_NAME).setLevel(logging.INFO)
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs log every HTTP request at INFO
    if _configured or not found.connection_string:
        return _configured
    from azure.monitor.opentelemetry import configure_azure_monitor

    credential = None
    if found.client_id:
        from azure.identity import ManagedIdentityCredential

        credential = ManagedIdentityCredential(client_id=found.client_id)
    configure_azure_monitor(
        connection_string=found.connection_string,
        credential=credential,
        logger_name=LOGGER_NAME,
        enable_live_metrics=False,
    )
    install_account_filter(logging.getLogger(LOGGER_NAME))
    _configured = True
    log.info("telemetry to Application Insights configured (%s)", "managed identity" if credential else "no identity")
    return True


def install_account_filter(logger: logging.Logger) -> None:
    """Puts AccountContextFilter on the logger's handlers (the exporter's handler among them)."""
    for handler in logger.handlers:
        if not any(isinstance(f, AccountContextFilter) for f in handler.filters):
            handler.addFilter(AccountContextFilter())


class _Instruments:
    def __init__(self) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter(METER_NAME)
        self.messages_imported = meter.create_counter(
            "messages_imported", unit="{message}", description="Messages whose documents are all in DOC², settled"
        )
        self.documents_uploaded = meter.create_counter(
            "documents_uploaded", unit="{document}", description="Documents uploaded to DOC²"
        )
        self.messages_failed = meter.create_counter(
            "messages_failed", unit="{message}", description="Failed attempts to import a message"
        )
        self.run_duration = meter.create_histogram(
            "run_duration", unit="s", description="Duration of one account's run"
        )
        self.doc2_request_duration = meter.create_histogram(
            DOC2_REQUEST_METRIC, unit="s", description="One HTTP request to DOC² (an upload try), by its status"
        )


_instruments: _Instruments | None = None
_instruments_lock = threading.Lock()


def _metrics() -> _Instruments:
    global _instruments
    with _instruments_lock:  # uploads record from several threads at once
        if _instruments is None:
            _instruments = _Instruments()
    return _instruments


def record_doc2_request(seconds: float, status: str) -> None:
    """One request to DOC² and its outcome: the HTTP status ("200", "429", "503"...), or "timeout" / "network"."""
    _metrics().doc2_request_duration.record(seconds, {"status": status})


def record_run(report: RunReport, *, trigger: str) -> None:
    """The records and metrics of one run (see the module docstring). Dry runs change nothing and record nothing."""
    if report.dry_run:
        return
    instruments = _metrics()
    for account in report.accounts:
        attributes = {"account": account.account, "account_type": account.type, "outcome": account.outcome}
        attributes["trigger"] = trigger
        instruments.messages_imported.add(account.messages_imported, attributes)
        instruments.documents_uploaded.add(account.documents_uploaded, attributes)
        instruments.messages_failed.add(account.messages_failed, attributes)
        instruments.run_duration.record(account.duration_seconds, attributes)
        _log_account_result(account, trigger)
    totals = report.totals()
    failed = len(report.failed_accounts)
    busy = sum(1 for a in report.accounts if a.outcome == "busy")
    summary: dict[str, Any] = {
        "event": RUN_SUMMARY_EVENT,
        "trigger": trigger,
        "accounts": len(report.accounts),
        "accounts_failed": failed,
        "accounts_busy": busy,
        "duration_seconds": round(report.duration_seconds, 3),
        **totals,
    }
    if len(report.accounts) == 1:
        summary.setdefault("account", report.accounts[0].account)
    log.info(
        "run summary (%s): %d accounts (%d failed, %d busy), %d messages imported, %d documents uploaded, "
        "%d messages failed, %.1f s",
        trigger,
        len(report.accounts),
        failed,
        busy,
        totals["messages_imported"],
        totals["documents_uploaded"],
        totals["messages_failed"],
        report.duration_seconds,
        extra=summary,
    )


def _log_account_result(account: AccountReport, trigger: str) -> None:
    extra: dict[str, Any] = {
        "event": ACCOUNT_RESULT_EVENT,
        "account": account.account,
        "account_type": account.type,
        "outcome": account.outcome,
        "trigger": trigger,
        "messages_imported": account.messages_imported,
        "documents_uploaded": account.documents_uploaded,
        "messages_failed": account.messages_failed,
        "messages_moved_to_failed": account.messages_moved_to_failed,
        "messages_deferred": account.messages_deferred,
        "duration_seconds": round(account.duration_seconds, 3),
        # what the workbook and the alerts ask: did the run succeed, and how many failed in a row (state store)
        "run_succeeded": {True: "true", False: "false", None: ""}[run_verdict(account.outcome, account.error)],
        "failures_in_a_row": account.failures_in_a_row,
    }
    for problem in account.problems:
        if problem.moved_to_failed:
            log.warning(
                "account %s: message %s moved to the failed folder: %s",
                account.account,
                problem.message,
                problem.error,
                extra={
                    "event": MESSAGE_MOVED_TO_FAILED_EVENT,
                    "account": account.account,
                    "account_type": account.type,
                    "message_ref": problem.message,
                    "reason": problem.error,
                    "trigger": trigger,
                },
            )
    if account.outcome == ACCOUNT_FAILED_OUTCOME:
        log.error("account %s failed: %s", account.account, account.error, extra=extra)
    elif account.outcome == "busy":
        log.warning("account %s: skipped, another run is working on it", account.account, extra=extra)
    else:
        level = logging.WARNING if account.messages_failed or account.outcome == "partial" else logging.INFO
        log.log(
            level,
            "account %s: %s; %d messages imported, %d documents uploaded, %d messages failed%s",
            account.account,
            account.outcome,
            account.messages_imported,
            account.documents_uploaded,
            account.messages_failed,
            f" ({account.error})" if account.error else "",
            extra=extra,
        )


def report_account_failed(account: str, error: str, **dimensions: str | int) -> None:
    """An account failure found outside a run report (a job given up in the poison queue)."""
    log.error(
        "account %s failed: %s",
        account,
        error,
        extra={**dimensions, "account": account, "outcome": ACCOUNT_FAILED_OUTCOME},
    )


def flush() -> None:
    """Send what is buffered now: an instance of a serverless app may be stopped soon after a function returns."""
    if not _configured:
        return
    from opentelemetry import _logs, metrics, trace

    for provider in (metrics.get_meter_provider(), _logs.get_logger_provider(), trace.get_tracer_provider()):
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is None:
            continue
        try:
            force_flush(FLUSH_TIMEOUT_MILLIS)
        except Exception as err:  # noqa: BLE001 - telemetry must never fail an import
            log.warning("telemetry flush failed: %s", err)
